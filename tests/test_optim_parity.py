"""gradwise.optim against torch.optim: same trajectory, same state dict, both ways.

Oracle: torch.optim itself (its default implementation). 100 minibatch steps of a 64-32-10 MLP
on scikit-learn's digits; the weights must agree to 1e-5 relative in fp32 and 1e-10 in fp64.
"""

from __future__ import annotations

import pytest
import torch
from helpers import digits_mlp, flat, rel_diff, train

import gradwise.optim as go

# Every optimizer with options that torch also has.
CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.5)),
    ("SGD", dict(lr=0.05, maximize=True)),
    ("Adagrad", dict(lr=0.05)),
    ("Adagrad", dict(lr=0.05, lr_decay=1e-3, weight_decay=1e-3, initial_accumulator_value=0.1)),
    ("RMSprop", dict(lr=1e-3)),
    ("RMSprop", dict(lr=1e-3, momentum=0.9, centered=True, weight_decay=1e-3)),
    ("RMSprop", dict(lr=1e-3, alpha=0.9, eps=1e-6, maximize=True)),
    ("Adam", dict(lr=1e-3)),
    ("Adam", dict(lr=1e-3, amsgrad=True, weight_decay=1e-3)),
    ("Adam", dict(lr=1e-3, decoupled_weight_decay=True, weight_decay=0.1, eps=1e-7)),
    ("AdamW", dict(lr=1e-3)),
    ("AdamW", dict(lr=1e-3, betas=(0.8, 0.99), amsgrad=True, maximize=True)),
]
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for name, kw in CASES]
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def _maximize_safe(kw):
    """With maximize=True the loss grows without bound; a small lr keeps it finite."""
    return {**kw, "lr": kw["lr"] * 0.1} if kw.get("maximize") else kw


def _pair(name, kw, dtype, backend):
    kw = _maximize_safe(kw)
    ours, theirs = digits_mlp(dtype), digits_mlp(dtype)
    return (ours, getattr(go, name)(ours.parameters(), backend=backend, **kw),
            theirs, getattr(torch.optim, name)(theirs.parameters(), **kw))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize(("name", "kw"), CASES, ids=IDS)
def test_same_trajectory_as_torch(digits, name, kw, dtype):
    backends = ["reference", "foreach", "auto"]
    for backend in backends:
        ours, opt, theirs, ref = _pair(name, kw, dtype, backend)
        got, want = train(ours, opt, digits, 100), train(theirs, ref, digits, 100)
        assert rel_diff(got, want) <= TOL[dtype], backend
        assert rel_diff(got, flat(digits_mlp(dtype))) > 1e-3  # it moved


@pytest.mark.parametrize(("name", "kw"), CASES, ids=IDS)
def test_learning_rate_changed_mid_run(digits, name, kw):
    def decay(i, opt):
        if i == 50:
            for group in opt.param_groups:
                group["lr"] *= 0.1

    ours, opt, theirs, ref = _pair(name, kw, torch.float64, "reference")
    got = train(ours, opt, digits, 100, on_step=decay)
    want = train(theirs, ref, digits, 100, on_step=decay)
    assert rel_diff(got, want) <= TOL[torch.float64]


@pytest.mark.parametrize("direction", ["torch->gradwise", "gradwise->torch"])
@pytest.mark.parametrize(("name", "kw"), CASES, ids=IDS)
def test_state_dict_round_trip(digits, name, kw, direction):
    """Train 50 steps with one library, move model and optimizer state to the other, train 50
    more: the result equals 100 uninterrupted torch steps."""
    kw = _maximize_safe(kw)
    uninterrupted = digits_mlp(torch.float64)
    want = train(uninterrupted, getattr(torch.optim, name)(uninterrupted.parameters(), **kw),
                 digits, 100)
    libs = [torch.optim, go] if direction == "torch->gradwise" else [go, torch.optim]
    first = digits_mlp(torch.float64)
    opt = getattr(libs[0], name)(first.parameters(), **kw)
    train(first, opt, digits, 50)
    saved = opt.state_dict()
    second = digits_mlp(torch.float64)
    second.load_state_dict(first.state_dict())
    opt2 = getattr(libs[1], name)(second.parameters(), **kw)
    opt2.load_state_dict(saved)
    keys = lambda sd: {i: set(state) for i, state in sd["state"].items()}  # noqa: E731
    assert keys(opt2.state_dict()) == keys(saved)
    got = train(second, opt2, digits, 50, start=50)
    assert rel_diff(got, want) <= TOL[torch.float64]


def test_state_dict_layout_matches_torch(digits):
    for name, kw in CASES:
        ours, opt, theirs, ref = _pair(name, kw, torch.float32, "auto")
        train(ours, opt, digits, 2)
        train(theirs, ref, digits, 2)
        mine, torchs = opt.state_dict(), ref.state_dict()
        assert mine["state"].keys() == torchs["state"].keys()
        for i, state in torchs["state"].items():
            assert mine["state"][i].keys() == state.keys(), name
            for key, value in state.items():
                assert mine["state"][i][key].dtype == value.dtype, (name, key)
                assert mine["state"][i][key].shape == value.shape, (name, key)
        # gradwise's groups hold every torch key (plus its own: backend, ...)
        assert set(torchs["param_groups"][0]) <= set(mine["param_groups"][0]), name


def test_param_groups_and_closure(digits):
    """Two groups with their own lr; step(closure) returns the closure's loss."""
    x, y = digits
    x = x.float()
    ours, theirs = digits_mlp(), digits_mlp()
    groups = lambda m: [{"params": m[0].parameters(), "lr": 0.01},  # noqa: E731
                        {"params": m[2].parameters()}]
    opt = go.Adam(groups(ours), lr=0.001)
    ref = torch.optim.Adam(groups(theirs), lr=0.001)
    for _ in range(20):
        for model, o in ((ours, opt), (theirs, ref)):
            def closure(model=model, o=o):
                o.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(x), y)
                loss.backward()
                return loss
            loss = o.step(closure)
            assert isinstance(loss, torch.Tensor)
    assert opt.param_groups[0]["lr"] == 0.01 and opt.param_groups[1]["lr"] == 0.001
    assert rel_diff(torch.cat([p.detach().flatten() for p in ours.parameters()]),
                    torch.cat([p.detach().flatten() for p in theirs.parameters()])) < 1e-5


def test_params_without_grad_are_skipped(digits):
    """A parameter without a gradient keeps its value and gets no state, as in torch."""
    model = digits_mlp()
    model[0].weight.requires_grad_(False)
    before = model[0].weight.clone()
    opt = go.Adam(model.parameters())
    train(model, opt, digits, 3)
    assert torch.equal(model[0].weight, before)
    assert model[0].weight not in opt.state and len(opt.state) == 3


def test_zero_grad_sets_none():
    w = torch.nn.Parameter(torch.ones(3))
    opt = go.SGD([w], lr=0.1)
    w.sum().backward()
    opt.step()
    opt.zero_grad()
    assert w.grad is None


def test_complex_parameters_match_torch():
    torch.manual_seed(0)
    target = torch.randn(5, dtype=torch.complex128)
    ws = [torch.zeros(5, dtype=torch.complex128, requires_grad=True) for _ in range(2)]
    opts = [go.Adam([ws[0]], lr=0.05, backend="reference"), torch.optim.Adam([ws[1]], lr=0.05)]
    for _ in range(30):
        for w, o in zip(ws, opts, strict=True):
            o.zero_grad()
            (w - target).abs().pow(2).sum().backward()
            o.step()
    assert torch.allclose(ws[0], ws[1], rtol=1e-10, atol=1e-12)
