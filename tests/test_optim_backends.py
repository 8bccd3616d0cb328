"""Every backend runs the same rule: foreach, fused (compiled) and native against reference."""

from __future__ import annotations

import pytest
import torch
from helpers import digits_mlp, rel_diff, train

import gradwise.optim as go
from gradwise.optim import _backends

# Options torch has and options it lacks (velocity form, eps inside, no bias correction).
CASES = [
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.5)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, momentum_form="velocity")),
    ("Adagrad", dict(lr=0.05, lr_decay=1e-2, weight_decay=1e-3)),
    ("Adagrad", dict(lr=0.05, eps_inside=True, eps=1e-7)),
    ("RMSprop", dict(lr=1e-3, momentum=0.9, centered=True, weight_decay=1e-3)),
    ("RMSprop", dict(lr=1e-3, eps_inside=True)),
    ("Adam", dict(lr=1e-3, amsgrad=True, weight_decay=1e-3)),
    ("Adam", dict(lr=1e-3, bias_correction=False)),
    ("AdamW", dict(lr=1e-3, eps_inside=True, maximize=True)),
]
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for name, kw in CASES]


@pytest.mark.parametrize(("name", "kw"), CASES, ids=IDS)
def test_backends_agree_with_reference(digits, name, kw):
    def run(backend):
        model = digits_mlp()
        return train(model, getattr(go, name)(model.parameters(), backend=backend, **kw),
                     digits, 40)

    want = run("reference")
    for backend in ("foreach", "fused"):
        assert rel_diff(run(backend), want) <= 1e-5, backend
    probe = getattr(go, name)(digits_mlp().parameters(), **kw)
    if probe._native(probe.param_groups[0], torch.device("cpu")) is not None:
        assert rel_diff(run("native"), want) <= 1e-5


def test_changing_learning_rate_never_recompiles(digits):
    from torch._dynamo.utils import counters

    model = digits_mlp()
    opt = go.RMSprop(model.parameters(), lr=1e-3, backend="fused")
    train(model, opt, digits, 2)
    graphs = counters["stats"]["unique_graphs"]

    def decay(i, opt):
        opt.param_groups[0]["lr"] *= 0.9

    train(model, opt, digits, 5, on_step=decay)
    assert counters["stats"]["unique_graphs"] == graphs


def test_fused_kernel_is_shape_generic():
    """A second model with other shapes (same tensor count) reuses the compiled kernel."""
    from torch._dynamo.utils import counters

    def step(sizes):
        params = [torch.nn.Parameter(torch.ones(n)) for n in sizes]
        for p in params:
            p.grad = torch.full_like(p, 0.5)
        go.Adagrad(params, lr=0.1, eps_inside=True, backend="fused").step()
        return params

    step([10, 20, 30])
    graphs = counters["stats"]["unique_graphs"]
    params = step([7, 1000, 3])
    assert counters["stats"]["unique_graphs"] == graphs
    # sum = 0.25, update = 0.1 * 0.5 / sqrt(0.25 + 1e-10)
    assert torch.allclose(params[1], torch.full((1000,), 1 - 0.1 * 0.5 / 0.5))


def test_fused_handles_any_number_of_tensors():
    """11 tensors run as chunks 8 + 2 + 1; every tensor is updated exactly as by reference."""
    torch.manual_seed(0)
    shapes = [(3,), (5, 2), (7,), (1,), (4, 4), (2,), (9,), (3, 3), (6,), (1, 1), (8,)]
    assert _backends._chunk_sizes(len(shapes)) == [8, 2, 1]
    grads = [torch.randn(s) for s in shapes]
    results = []
    for backend in ("reference", "fused"):
        params = [torch.nn.Parameter(torch.ones(s)) for s in shapes]
        opt = go.RMSprop(params, lr=0.01, backend=backend)
        for _ in range(3):
            for p, g in zip(params, grads, strict=True):
                p.grad = g.clone()
            opt.step()
        results.append(torch.cat([p.detach().flatten() for p in params]))
    assert torch.allclose(results[0], results[1], rtol=1e-6, atol=1e-7)


def test_fused_takes_a_real_models_mix_of_ranks_and_layouts():
    """Conv weights (channels-last too), norms and linear layers in one group: the compiled
    graphs do not depend on the ranks (before, each mix of ranks in a chunk was a new graph
    until dynamo's recompile limit failed the step), and the update is the reference one."""
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    kinds = [(8, 3, 3, 3), (8,), (8,), (16, 8, 1, 1), (16,), (10, 16), (10,)]
    shapes = [kinds[(i * 5) % len(kinds)] for i in range(64)]  # ranks mixed in every chunk
    grads = [torch.randn(s) for s in shapes]
    results = []
    for backend in ("reference", "fused"):
        params = [torch.nn.Parameter(torch.ones(s)) for s in shapes]
        for p in params[::4]:
            if p.dim() == 4:
                p.data = p.data.to(memory_format=torch.channels_last)
        opt = go.RMSprop(params, lr=0.01, momentum=0.5, backend=backend)
        graphs = counters["stats"]["unique_graphs"]
        for _ in range(3):
            for p, g in zip(params, grads, strict=True):
                p.grad = torch.empty_like(p).copy_(g)  # in the parameter's layout, as autograd
            opt.step()
        if backend == "fused":
            # chunks of 8 only: one graph, and one more where dynamo's duck sizing first took
            # a bias of length 8 for the chunk length
            assert counters["stats"]["unique_graphs"] - graphs <= 2
        results.append(torch.cat([p.detach().flatten() for p in params]))
    assert torch.allclose(results[0], results[1], rtol=1e-6, atol=1e-7)


def test_chunk_sizes():
    assert _backends._chunk_sizes(0) == []
    assert _backends._chunk_sizes(8) == [8]
    assert _backends._chunk_sizes(21) == [8, 8, 4, 1]
    assert sum(_backends._chunk_sizes(1000)) == 1000


def test_auto_picks_native_where_torch_has_the_rule_and_reference_for_small_models():
    model = digits_mlp()
    params = list(model.parameters())
    assert go.Adam(params)._choose_backend(go.Adam(params).param_groups[0], params) == "native"
    rms = go.RMSprop(params)
    assert rms._choose_backend(rms.param_groups[0], params) == "reference"  # small: no compile
    variant = go.Adam(params, eps_inside=True)
    assert variant._choose_backend(variant.param_groups[0], params) == "reference"


def test_auto_picks_fused_for_large_models_without_a_torch_kernel():
    big = [torch.nn.Parameter(torch.zeros(_backends.FUSED_MIN_NUMEL))]
    rms = go.RMSprop(big)
    assert rms._choose_backend(rms.param_groups[0], big) == "fused"


def test_torch_flags_map_to_backends():
    params = list(digits_mlp().parameters())
    adam = go.Adam(params, fused=True)
    assert adam._choose_backend(adam.param_groups[0], params) == "native"
    variant = go.Adam(params, fused=True, eps_inside=True)  # no torch kernel: gradwise's own
    assert variant._choose_backend(variant.param_groups[0], params) == "fused"
    sgd = go.SGD(params, lr=0.1, foreach=True)
    assert sgd._choose_backend(sgd.param_groups[0], params) == "foreach"


def test_tensor_list_arithmetic_matches_tensors():
    torch.manual_seed(0)
    a, b = [torch.rand(4) + 0.5, torch.rand(3) + 0.5], [torch.rand(4) + 0.5, torch.rand(3) + 0.5]
    A, B = _backends.TensorList(a), _backends.TensorList(b)

    def f(x, y):
        return (1 - x) * 2 + y / x - 3 / y + (-x).lerp(y, 0.3) + x.sqrt().maximum(y) - 0.5

    for got, x, y in zip(f(A, B).tensors, a, b, strict=True):
        assert torch.allclose(got, f(x, y))
