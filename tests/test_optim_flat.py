"""Flat storage (``flat=True``): the same iterates, state dicts and behaviour as per-tensor storage.

Oracles: the same optimizer without flat storage (bit for bit in fp32, same backend) and
torch.optim (trajectories and state dicts both ways).
"""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import digits_mlp, flat, rel_diff, train
from test_optim_backends import CASES as OWN_OPTIONS
from test_optim_parity import CASES as TORCH_OPTIONS

import gradwise.optim as go

ALL = OWN_OPTIONS + [case for case in TORCH_OPTIONS if case not in OWN_OPTIONS]
ALL_IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for name, kw in ALL]


def _safe(kw):
    return {**kw, "lr": kw["lr"] * 0.1} if kw.get("maximize") else kw


@pytest.mark.parametrize(("name", "kw"), ALL, ids=ALL_IDS)
def test_flat_iterates_equal_per_tensor_ones_bit_for_bit(digits, name, kw):
    """gradwise's own kernels (reference: eager ops; fused: the compiled rule) give the same
    bits on one flat buffer as per tensor. torch's fused kernels (native) round an element
    differently in their scalar tail than in their vector body, and a flat buffer puts
    elements elsewhere relative to the vector width: there the two agree to rounding."""
    kw = _safe(kw)
    for backend in ("reference", "fused", "native"):
        def run(flat_storage, backend=backend):
            model = digits_mlp()
            opt = getattr(go, name)(model.parameters(), backend=backend, flat=flat_storage, **kw)
            return train(model, opt, digits, 100)

        try:
            want = run(False)
        except ValueError:  # backend="native" where torch has no kernel for these options
            continue
        got = run(True)
        if backend == "native":
            assert rel_diff(got, want) <= 1e-6
        else:
            assert torch.equal(got, want), backend


@pytest.mark.parametrize(("name", "kw"), TORCH_OPTIONS,
                         ids=[ALL_IDS[ALL.index(case)] for case in TORCH_OPTIONS])
def test_flat_follows_torch(digits, name, kw):
    kw = _safe(kw)
    ours, theirs = digits_mlp(), digits_mlp()
    got = train(ours, getattr(go, name)(ours.parameters(), flat=True, **kw), digits, 100)
    want = train(theirs, getattr(torch.optim, name)(theirs.parameters(), **kw), digits, 100)
    assert rel_diff(got, want) <= 1e-5


@pytest.mark.parametrize("direction", ["torch->flat", "flat->torch"])
@pytest.mark.parametrize(("name", "kw"), [("SGD", dict(lr=0.05, momentum=0.9)),
                                          ("Adagrad", dict(lr=0.05)),
                                          ("RMSprop", dict(lr=1e-3, centered=True)),
                                          ("Adam", dict(lr=1e-3, amsgrad=True))],
                         ids=["SGD", "Adagrad", "RMSprop", "Adam"])
def test_state_dict_moves_to_and_from_torch(digits, name, kw, direction):
    """50 steps in one library, model and optimizer state moved to the other, 50 more: the
    same weights as 100 torch steps, and the same state keys and shapes."""
    uninterrupted = digits_mlp(torch.float64)
    want = train(uninterrupted, getattr(torch.optim, name)(uninterrupted.parameters(), **kw),
                 digits, 100)
    ours = lambda m: getattr(go, name)(m.parameters(), flat=True, **kw)  # noqa: E731
    theirs = lambda m: getattr(torch.optim, name)(m.parameters(), **kw)  # noqa: E731
    make = [theirs, ours] if direction == "torch->flat" else [ours, theirs]
    first = digits_mlp(torch.float64)
    opt = make[0](first)
    train(first, opt, digits, 50)
    saved = copy.deepcopy(opt.state_dict())
    second = digits_mlp(torch.float64)
    second.load_state_dict(first.state_dict())
    opt2 = make[1](second)
    opt2.load_state_dict(saved)
    for i, state in saved["state"].items():
        mine = opt2.state_dict()["state"][i]
        assert mine.keys() == state.keys()
        for key, value in state.items():
            assert torch.equal(mine[key], value), (i, key)
    assert rel_diff(train(second, opt2, digits, 50, start=50), want) <= 1e-10
    if direction == "torch->flat":  # the loaded state lives in the flat buffers
        bucket = opt2._buckets[0][0]
        assert bucket.state is not None
        assert bucket.steps is None if name == "SGD" else bucket.t == 100 == bucket.steps[0]
        for p in second.parameters():
            for key, buffer in bucket.state.items():
                assert opt2.state[p][key].untyped_storage().data_ptr() == \
                    buffer.untyped_storage().data_ptr()


def test_parameters_gradients_and_state_are_views_of_one_buffer(digits):
    model = digits_mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    names = [n for n, _ in model.named_parameters()]
    opt = go.Adam(model.parameters(), flat=True)
    assert model.state_dict().keys() == before.keys() and names == \
        [n for n, _ in model.named_parameters()]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    (bucket,) = opt._buckets[0]
    storage = bucket.param.untyped_storage().data_ptr()
    for p, off in zip(model.parameters(), bucket.offsets, strict=True):
        assert p.untyped_storage().data_ptr() == storage and p.storage_offset() == off
        assert off % 16 == 0  # 64-byte aligned
    train(model, opt, digits, 1)
    for p in model.parameters():
        assert p.grad.untyped_storage().data_ptr() == bucket.grad.untyped_storage().data_ptr()
        assert opt.state[p]["exp_avg"].untyped_storage().data_ptr() == \
            bucket.state["exp_avg"].untyped_storage().data_ptr()
    padding = torch.ones_like(bucket.param, dtype=torch.bool)
    for p, off in zip(model.parameters(), bucket.offsets, strict=True):
        padding[off:off + p.numel()] = False
    assert padding.any() and bucket.param[padding].eq(0).all()  # padding stays zero


def test_channels_last_weights_keep_their_layout():
    conv = torch.nn.Conv2d(3, 8, 3).to(memory_format=torch.channels_last)
    weight = conv.weight.detach().contiguous()
    go.SGD(conv.parameters(), lr=0.1, flat=True)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous() and torch.equal(conv.weight, weight)


def test_gradient_accumulation_over_micro_batches(digits):
    """Two micro-batches per step accumulate into the gradient views exactly as into
    per-tensor gradients."""
    x, y = digits
    x = x.float()

    def run(flat_storage):
        model = digits_mlp()
        opt = go.Adam(model.parameters(), lr=1e-3, flat=flat_storage)
        for i in range(30):
            opt.zero_grad(set_to_none=False)
            for half in (slice(i * 64, i * 64 + 32), slice(i * 64 + 32, i * 64 + 64)):
                (torch.nn.functional.cross_entropy(model(x[half]), y[half]) / 2).backward()
            opt.step()
        return flat(model)

    assert torch.equal(run(True), run(False))


def _unused_branch_model():
    torch.manual_seed(0)
    return torch.nn.ModuleDict({"used": torch.nn.Linear(64, 10), "unused": torch.nn.Linear(64, 10)})


def _steps(model, opt, digits, n, zero):
    x, y = digits
    for i in range(n):
        zero()
        xb = x[i * 32:(i + 1) * 32].float()
        torch.nn.functional.cross_entropy(model["used"](xb), y[i * 32:(i + 1) * 32]).backward()
        opt.step()


@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad_keeps_views_and_an_unused_parameter_moves_as_torch_moves_it(digits,
                                                                               set_to_none):
    """After zero_grad the gradients are zeroed views (whatever set_to_none says): a parameter
    outside the forward has a zero gradient and is updated as torch updates it after
    zero_grad(set_to_none=False) (weight decay and momentum still act)."""
    ours, theirs = _unused_branch_model(), _unused_branch_model()
    kw = dict(lr=0.1, momentum=0.9, weight_decay=1e-2)
    opt = go.SGD(ours.parameters(), flat=True, **kw)
    ref = torch.optim.SGD(theirs.parameters(), **kw)
    for p in theirs.parameters():
        p.grad = torch.zeros_like(p)
    _steps(ours, opt, digits, 10, lambda: opt.zero_grad(set_to_none=set_to_none))
    _steps(theirs, ref, digits, 10, lambda: ref.zero_grad(set_to_none=False))
    assert rel_diff(flat(ours), flat(theirs)) <= 1e-6
    opt.zero_grad(set_to_none=set_to_none)
    assert all(p.grad is not None and not p.grad.any() for p in ours.parameters())
    assert opt._buckets[0][0].intact()


def test_a_gradient_set_to_none_skips_its_parameter_as_torch_does(digits):
    """Gradients dropped by other code (``module.zero_grad()`` sets them to None): that step
    skips the parameters without one, exactly like torch, and the views come back."""
    ours, theirs = _unused_branch_model(), _unused_branch_model()
    kw = dict(lr=1e-2)
    opt, ref = go.Adam(ours.parameters(), flat=True, **kw), torch.optim.Adam(theirs.parameters(),
                                                                             **kw)
    _steps(ours, opt, digits, 5, ours.zero_grad)
    _steps(theirs, ref, digits, 5, theirs.zero_grad)
    assert rel_diff(flat(ours), flat(theirs)) <= 1e-6
    assert torch.equal(ours["unused"].weight, _unused_branch_model()["unused"].weight)
    assert ours["unused"].weight not in opt.state or opt._buckets[0][0].t is None
    assert all(p.grad is not None for p in ours.parameters())  # views again after the step


def test_gradient_replaced_by_another_tensor_is_copied_back(digits):
    model = digits_mlp()
    opt = go.SGD(model.parameters(), lr=0.1, flat=True)
    twin = digits_mlp()
    ref = torch.optim.SGD(twin.parameters(), lr=0.1)
    for m in (model, twin):
        for p in m.parameters():
            p.grad = torch.full_like(p, 0.5)
    opt.step()
    ref.step()
    assert torch.equal(flat(model), flat(twin))
    assert opt._buckets[0][0].intact()


def test_param_group_added_later_is_flattened_too(digits):
    ours, theirs = digits_mlp(), digits_mlp()
    opt = go.Adam(ours[0].parameters(), lr=1e-3, flat=True)
    ref = torch.optim.Adam(theirs[0].parameters(), lr=1e-3)
    train(ours, opt, digits, 10)
    train(theirs, ref, digits, 10)
    opt.add_param_group({"params": ours[2].parameters(), "lr": 1e-2})
    ref.add_param_group({"params": theirs[2].parameters(), "lr": 1e-2})
    assert len(opt._buckets) == 2 and opt._buckets[1][0].params[0] is ours[2].weight
    got = train(ours, opt, digits, 20, start=10)
    assert rel_diff(got, train(theirs, ref, digits, 20, start=10)) <= 1e-5


def test_frozen_parameters_stay_outside_the_buffer_and_unchanged(digits):
    model = digits_mlp()
    model[0].weight.requires_grad_(False)
    frozen = model[0].weight.clone()
    opt = go.Adam(model.parameters(), flat=True)
    assert opt._loose[0] == [model[0].weight]
    assert all(p is not model[0].weight for p in opt._buckets[0][0].params)
    train(model, opt, digits, 5)
    assert torch.equal(model[0].weight, frozen) and model[0].weight not in opt.state


def test_model_moved_after_flattening_is_rebuilt_with_its_state(digits):
    """``model.double()`` (as ``.to(device)``) replaces the parameters' storage: the next step
    rebuilds the buffers where the parameters now live, state included, and continues as a
    per-tensor optimizer whose state was cast the same way."""
    def run(flat_storage):
        model = digits_mlp()
        opt = go.Adam(model.parameters(), lr=1e-3, flat=flat_storage, backend="reference")
        train(model, opt, digits, 20)
        model.double()
        if not flat_storage:  # torch's way to move state: load it (cast to the parameters)
            opt.load_state_dict(opt.state_dict())
        return train(model, opt, digits, 20, start=20), opt

    got, opt = run(True)
    want, _ = run(False)
    assert torch.equal(got, want)
    (bucket,) = opt._buckets[0]
    assert bucket.param.dtype == torch.float64 and bucket.state["exp_avg"].dtype == torch.float64
    assert bucket.intact() and bucket.t == 40


def test_hooks_and_compiled_models_work_on_views(digits):
    x, y = digits
    x = x[:64].float()
    model, twin = digits_mlp(), digits_mlp()
    opt = go.SGD(model.parameters(), lr=0.1, flat=True)
    ref = torch.optim.SGD(twin.parameters(), lr=0.1)
    for m in (model, twin):
        m[0].weight.register_hook(lambda g: 2 * g)
    compiled = torch.compile(model, backend="aot_eager")
    for m, o in ((compiled, opt), (twin, ref)):
        for _ in range(3):
            o.zero_grad()
            torch.nn.functional.cross_entropy(m(x), y[:64]).backward()
            o.step()
    assert rel_diff(flat(model), flat(twin)) <= 1e-6


def test_a_copy_of_a_flat_optimizer_steps_per_tensor(digits):
    model = digits_mlp()
    opt = go.Adam(model.parameters(), flat=True)
    train(model, opt, digits, 5)
    twin_model, twin_opt = copy.deepcopy((model, opt))
    assert twin_opt.flat is False
    want = train(model, opt, digits, 5, start=5)
    assert torch.equal(train(twin_model, twin_opt, digits, 5, start=5), want)


def test_bad_flat_values_are_refused():
    with pytest.raises(ValueError, match="flat='yes' is invalid"):
        go.SGD(digits_mlp().parameters(), lr=0.1, flat="yes")
    z = torch.nn.Parameter(torch.zeros(3, dtype=torch.complex64))
    with pytest.raises(ValueError, match="complex64; flat storage takes real"):
        go.Adam([z], flat=True)


class _Crash(Exception):
    pass


def test_trainer_with_flat_storage_trains_and_resumes_bit_for_bit(tmp_path):
    """``optimizer: {flat: true}`` in a config: the same weights as per-tensor storage (to
    torch's kernel rounding), and a run stopped after epoch 1 then resumed equals an
    uninterrupted one bit for bit (the checkpoint's optimizer state goes back into the flat
    buffers)."""
    from gradwise.train import Trainer

    config = {"seed": 1, "data": {"source": "digits", "val_fraction": 0.1, "train_size": 400},
              "model": {"name": "mlp", "hidden": [32]},
              "optimizer": {"name": "adamw", "lr": 3e-3, "weight_decay": 0.01, "flat": True},
              "train": {"epochs": 3, "batch_size": 32, "monitor_every": 0}}
    per_tensor = {**config, "optimizer": {**config["optimizer"], "flat": False}}

    def weights(trainer):
        state = trainer.model.state_dict().values()
        return torch.cat([v.detach().flatten().float() for v in state])

    whole = Trainer(config, tmp_path / "whole", quiet=True)
    whole.fit()
    assert whole.optimizer.flat
    plain = Trainer(per_tensor, tmp_path / "plain", quiet=True)
    plain.fit()
    assert rel_diff(weights(whole), weights(plain)) <= 1e-5

    def crash(trainer, record):
        if record["epoch"] == 1:
            raise _Crash

    with pytest.raises(_Crash):
        Trainer(config, tmp_path / "cut", quiet=True, callbacks=[crash]).fit()
    resumed = Trainer(config, tmp_path / "cut", quiet=True)
    resumed.fit(resume=True)
    assert torch.equal(weights(resumed), weights(whole))
    assert resumed.optimizer._buckets[0][0].intact()
