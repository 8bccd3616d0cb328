"""Weight averaging and ensembles (gradwise.ensemble), each against an independent oracle: numpy
closed forms of the EMA and the uniform average, torch's ``swa_utils`` (``AveragedModel``,
``update_bn``), a from-scratch recomputation of batch-norm statistics, gradwise's own cosine
schedule with restarts, and hand-made predictions."""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch
from torch import nn
from torch.optim import swa_utils

from gradwise.ensemble import (
    EMA,
    SWA,
    SWASchedule,
    disagreement,
    ensemble_predict,
    majority_vote,
    member_probabilities,
    snapshot_steps,
    update_bn,
)
from gradwise.errors import UserError
from gradwise.schedules import CosineRestarts


def small_model(seed: int = 0, batch_norm: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(5, 8)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(8))
    layers += [nn.ReLU(), nn.Linear(8, 3)]
    return nn.Sequential(*layers)


def params(model: nn.Module) -> list[np.ndarray]:
    return [p.detach().numpy().astype(np.float64) for p in model.parameters()]


def new_weights(model: nn.Module, generator: torch.Generator) -> None:
    """Stands for an optimizer step: fresh random values in every parameter."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))


def averaged_params(average: EMA | SWA) -> list[np.ndarray]:
    with average.swapped() as model:
        return params(model)


# -- EMA -----------------------------------------------------------------------------------

def test_decay_zero_follows_the_live_model():
    model, g = small_model(), torch.Generator().manual_seed(1)
    ema = EMA(model, decay=0.0)
    for _ in range(3):
        new_weights(model, g)
        ema.update()
        live = [p.detach().clone() for p in model.parameters()]
        with ema.swapped():
            assert all(torch.equal(a, b) for a, b in zip(model.parameters(), live, strict=True))


def ema_closed_form(snapshots: list[list[np.ndarray]], d: float) -> list[np.ndarray]:
    """``avg_n = d^n w_0 + sum_{k=1..n} (1 - d) d^(n-k) w_k`` in float64."""
    n = len(snapshots) - 1
    return [d**n * snapshots[0][j] + sum((1 - d) * d ** (n - k) * snapshots[k][j]
                                         for k in range(1, n + 1))
            for j in range(len(snapshots[0]))]


@pytest.mark.parametrize("decay", [0.9, 0.5, 1 - 1e-7])
def test_ema_after_n_updates_is_the_closed_form(decay):
    model, g = small_model(), torch.Generator().manual_seed(2)
    ema = EMA(model, decay=decay)
    snapshots = [params(model)]
    for _ in range(20):
        new_weights(model, g)
        ema.update()
        snapshots.append(params(model))
    expected = ema_closed_form(snapshots, decay)
    for got, want in zip(averaged_params(ema), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
    if decay > 0.999:  # a decay close to 1 keeps the first weights
        for got, first in zip(averaged_params(ema), snapshots[0], strict=True):
            np.testing.assert_allclose(got, first, rtol=0, atol=2e-5)
    assert ema.n_updates == 20


@pytest.mark.parametrize("gamma, power", [(1.0, 0.75), (10.0, 2 / 3), (0.5, 1.0)])
def test_warmup_decay_is_the_formula(gamma, power):
    model, g = small_model(), torch.Generator().manual_seed(3)
    ema = EMA(model, decay=0.99, warmup=True, gamma=gamma, power=power)
    t = np.arange(200, dtype=np.float64)
    want = np.minimum(0.99, 1 - (1 + t / gamma) ** -power)
    np.testing.assert_allclose([ema.decay_at(int(s)) for s in t], want, rtol=0, atol=1e-15)
    assert ema.decay_at(0) == 0.0 and ema.decay_at(10**9) == 0.99
    # the average follows the recurrence with these decays; the first update copies the model
    avg = None
    for step in range(6):
        new_weights(model, g)
        ema.update()
        w = params(model)
        avg = w if avg is None else [want[step] * a + (1 - want[step]) * b
                                     for a, b in zip(avg, w, strict=True)]
        if step == 0:
            assert all(np.array_equal(a, b) for a, b in zip(averaged_params(ema), w,
                                                             strict=True))
    for got, expected in zip(averaged_params(ema), avg, strict=True):
        np.testing.assert_allclose(got, expected, rtol=0, atol=2e-6)


def test_ema_averages_float_buffers_and_copies_integer_ones():
    model, g = small_model(batch_norm=True), torch.Generator().manual_seed(4)
    bn = model[1]
    averaging, copying = EMA(model, 0.5), EMA(model, 0.5, buffers="copy")
    first = bn.running_mean.clone()
    model.train()
    model(torch.randn(16, 5, generator=g))
    averaging.update()
    copying.update()
    with averaging.swapped():
        averaged_mean = bn.running_mean.clone()
        assert int(bn.num_batches_tracked) == 1
    torch.testing.assert_close(averaged_mean, 0.5 * first + 0.5 * bn.running_mean)
    with copying.swapped():
        copied_mean = bn.running_mean.clone()
    assert torch.equal(copied_mean, bn.running_mean)


# -- SWA -----------------------------------------------------------------------------------

def test_swa_is_the_mean_of_the_snapshots_from_its_start():
    model, g = small_model(), torch.Generator().manual_seed(5)
    swa = SWA(model, start=3, buffers="copy")
    snapshots = []
    for call in range(10):
        new_weights(model, g)
        averaged = swa.update()
        assert averaged == (call >= 3)
        if averaged:
            snapshots.append(params(model))
    assert (swa.calls, swa.n_updates) == (10, 7)
    for j, got in enumerate(averaged_params(swa)):
        np.testing.assert_allclose(got, np.mean([s[j] for s in snapshots], axis=0),
                                   rtol=0, atol=1e-6)


def test_swa_equals_torchs_averaged_model():
    model, g = small_model(batch_norm=True), torch.Generator().manual_seed(6)
    ours, theirs = SWA(model, buffers="copy"), swa_utils.AveragedModel(model)
    for _ in range(12):
        new_weights(model, g)
        ours.update()
        theirs.update_parameters(model)
    with ours.swapped():
        for a, b in zip(model.parameters(), theirs.module.parameters(), strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def bn_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4, momentum=0.3), nn.ReLU(),
                         nn.Flatten(), nn.Linear(4 * 4 * 4, 6), nn.BatchNorm1d(6, momentum=None),
                         nn.Dropout(0.5), nn.Linear(6, 2))


def test_update_bn_equals_torchs_and_restores_momentum_and_modes():
    g = torch.Generator().manual_seed(7)
    batches = [(torch.randn(8, 2, 6, 6, generator=g) * 3 + 1, torch.zeros(8)) for _ in range(5)]
    ours = bn_net()
    ours.eval()
    ours[6].train()  # one module in its own mode: it must get it back
    theirs = copy.deepcopy(ours)
    torch.manual_seed(0)  # dropout draws
    assert update_bn(ours, batches) == 5
    torch.manual_seed(0)
    swa_utils.update_bn(batches, theirs)
    for a, b in zip(ours.buffers(), theirs.buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert int(ours[1].num_batches_tracked) == 5
    assert ours[1].momentum == 0.3 and ours[5].momentum is None
    assert [m.training for m in ours.modules()] == [False] * 7 + [True, False]


def test_update_bn_with_bad_batches_leaves_the_statistics_alone():
    model = bn_net()
    before = [b.clone() for b in model.buffers()]
    with pytest.raises(UserError, match="no batches"):
        update_bn(model, [])
    with pytest.raises(UserError, match="batch 1 is a str"):
        update_bn(model, [torch.randn(4, 2, 6, 6), "oops"])
    with pytest.raises(RuntimeError):  # the model fails on a wrong shape
        update_bn(model, [torch.randn(4, 2, 6, 6), torch.randn(4, 3, 6, 6)])
    assert all(torch.equal(a, b) for a, b in zip(model.buffers(), before, strict=True))
    assert model[1].momentum == 0.3 and model.training


def digits_split():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16
    y = torch.tensor(digits.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train, test = order[:1200], order[1200:]
    return x[train], y[train], x[test], y[test]


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def test_recomputed_statistics_match_a_recomputation_from_scratch_and_beat_stale_ones():
    """An MLP with batch norm on scikit-learn's digits, SGD at a high learning rate, SWA from
    the very first step: the average spans weights far apart (early and late), so the running
    statistics of the last live weights (copied) do not fit the averaged weights."""
    x_train, y_train, x_test, y_test = digits_split()
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(),
                          nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    stale, recomputed = SWA(model, buffers="copy"), SWA(model, buffers="recompute")
    batches = [(x_train[i:i + 64], y_train[i:i + 64]) for i in range(0, len(x_train), 64)]
    snapshots = []
    for _ in range(3):
        model.train()
        for xb, yb in batches:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            optimizer.step()
            stale.update()
            recomputed.update()
            snapshots.append(params(model))
    with pytest.raises(UserError, match="stale"):
        recomputed.module()
    assert recomputed.recompute_bn(batches) == len(batches)
    averaged = recomputed.module()

    # the oracle: the numpy mean of the snapshots in a fresh copy, torch's update_bn
    scratch = copy.deepcopy(model)
    with torch.no_grad():
        for j, p in enumerate(scratch.parameters()):
            p.copy_(torch.from_numpy(np.mean([s[j] for s in snapshots], axis=0)))
    swa_utils.update_bn(batches, scratch)
    for a, b in zip(averaged.buffers(), scratch.buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    acc_live, acc_stale = accuracy(model, x_test, y_test), accuracy(stale.module(), x_test,
                                                                     y_test)
    acc_averaged, acc_scratch = accuracy(averaged, x_test, y_test), accuracy(scratch, x_test,
                                                                             y_test)
    assert acc_averaged == acc_scratch
    assert acc_averaged > acc_stale + 0.03, (acc_live, acc_stale, acc_averaged)
    assert acc_averaged >= acc_live
    # the live model kept its own statistics and momentum
    assert model[1].momentum == 0.1 and int(model[1].num_batches_tracked) == 3 * len(batches)


# -- swapping, guards, checkpoints -----------------------------------------------------------

@pytest.mark.parametrize("make", [lambda m: EMA(m, 0.9), lambda m: SWA(m, start=2)])
def test_nothing_is_swapped_in_before_the_first_update(make):
    model = small_model(batch_norm=True)
    average = make(model)
    for use in (lambda: average.swapped().__enter__(), average.module,
                lambda: average.recompute_bn([torch.randn(4, 5)])):
        with pytest.raises(UserError, match="no update yet|averaged nothing yet"):
            use()
    if isinstance(average, SWA):
        average.update()
        average.update()
        with pytest.raises(UserError, match="skips its first 2 update"):
            average.module()


def test_swap_in_and_out_is_bit_exact():
    model, g = small_model(batch_norm=True), torch.Generator().manual_seed(8)
    ema = EMA(model, decay=0.7)
    for _ in range(3):
        new_weights(model, g)
        model.train()
        model(torch.randn(6, 5, generator=g))
        ema.update()
    live = {k: v.clone() for k, v in model.state_dict().items()}
    held = {k: v.clone() for k, v in ema.state_dict()["tensors"].items()}
    with ema.swapped() as inside:
        assert inside is model
        assert all(torch.equal(v, held[k]) for k, v in model.state_dict().items())
        with torch.no_grad():  # changes inside the block are undone
            model[0].weight.add_(1.0)
        model(torch.randn(6, 5, generator=g))
        with pytest.raises(UserError, match="inside EMA.swapped"):
            ema.update()
    assert all(torch.equal(v, live[k]) for k, v in model.state_dict().items())
    assert all(torch.equal(v, held[k]) for k, v in ema.state_dict()["tensors"].items())
    twin = ema.module()  # a standalone copy: the live model is untouched
    assert all(torch.equal(v, held[k]) for k, v in twin.state_dict().items())
    assert all(torch.equal(v, live[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("make", [
    lambda m: EMA(m, 0.9, warmup=True, gamma=2.0),
    lambda m: SWA(m, start=2, buffers="average"),
])
def test_state_dict_round_trip_resumes_bit_for_bit(make):
    def run(stop_at: int | None) -> dict[str, torch.Tensor]:
        model, g = small_model(batch_norm=True), torch.Generator().manual_seed(9)
        average = make(model)
        for step in range(10):
            if step == stop_at:  # a checkpoint, a new process, a restore
                buffer = io.BytesIO()
                torch.save(average.state_dict(), buffer)
                buffer.seek(0)
                average = make(model)
                average.load_state_dict(torch.load(buffer, weights_only=True))
            new_weights(model, g)
            model.train()
            model(torch.randn(6, 5, generator=g))
            average.update()
        return {k: v.clone() for k, v in average.state_dict()["tensors"].items()}

    uninterrupted, resumed = run(None), run(5)
    assert all(torch.equal(uninterrupted[k], resumed[k]) for k in uninterrupted)


def test_load_state_dict_refuses_another_state():
    ema = EMA(small_model(), 0.9)
    with pytest.raises(UserError, match="not of a 'EMA'"):
        ema.load_state_dict(SWA(small_model()).state_dict())
    with pytest.raises(UserError, match="other tensors"):
        ema.load_state_dict(EMA(small_model(batch_norm=True)).state_dict())
    with pytest.raises(UserError, match="not a EMA state"):
        ema.load_state_dict({"weights": 1})
    before = {k: v.clone() for k, v in ema.state_dict()["tensors"].items()}
    bad = copy.deepcopy(EMA(small_model(seed=3)).state_dict()) | {"n_updates": -1}
    with pytest.raises(UserError, match="n_updates=-1 is invalid"):
        ema.load_state_dict(bad)  # refused before anything is loaded
    assert all(torch.equal(v, before[k]) for k, v in ema.state_dict()["tensors"].items())


def test_a_changed_model_is_named():
    model = small_model()
    ema = EMA(model)
    model.double()
    with pytest.raises(UserError, match=r"'0.weight' is \(8, 5\) torch.float64"):
        ema.update()


@pytest.mark.parametrize("make, message", [
    (lambda m: EMA(m, decay=1.0), r"decay=1.0 is invalid; decay must be a number in \[0, 1\)"),
    (lambda m: EMA(m, decay=-0.1), r"decay=-0.1 is invalid"),
    (lambda m: EMA(m, decay=float("nan")), r"decay=nan is invalid"),
    (lambda m: EMA(m, decay="0.9"), r"decay='0.9' is invalid"),
    (lambda m: EMA(m, buffers="mean"),
     r"buffers='mean' is invalid; accepted: 'average', 'copy', 'recompute'"),
    (lambda m: SWA(m, buffers=None), r"buffers=None is invalid; accepted"),
    (lambda m: EMA(m, warmup=True, gamma=0), r"gamma=0 is invalid; gamma must be a finite "
                                             r"number > 0"),
    (lambda m: EMA(m, power=-1), r"power=-1 is invalid; power must be a finite number > 0"),
    (lambda m: EMA(m, warmup="yes"), r"warmup='yes' is invalid"),
    (lambda m: SWA(m, start=-1), r"start=-1 is invalid; start must be an integer >= 0"),
    (lambda m: EMA(nn.ReLU()), r"no parameters"),
    (lambda m: EMA("model"), r"model='model' is invalid"),
])
def test_bad_settings_are_one_clear_error(make, message):
    with pytest.raises(UserError, match=message):
        make(small_model())


def test_swa_schedule_is_constant_or_cyclic():
    constant = SWASchedule(start=3, low=0.05, before=lambda t: 1 - t / 10)
    assert [constant(t) for t in range(6)] == [1.0, 0.9, 0.8, 0.05, 0.05, 0.05]
    assert all(constant.averages_at(t) == (t >= 3) for t in range(8))
    cyclic = SWASchedule(start=0, low=0.1, high=0.5, cycle=4)
    # Izmailov et al.: alpha(i) = (1 - s) alpha_1 + s alpha_2, s = (mod(i - 1, c) + 1) / c
    for i in range(1, 13):
        s = ((i - 1) % 4 + 1) / 4
        assert cyclic(i - 1) == pytest.approx((1 - s) * 0.5 + s * 0.1)
    assert [t for t in range(12) if cyclic.averages_at(t)] == [3, 7, 11]
    with pytest.raises(UserError, match="cycle=0 is invalid"):
        SWASchedule(start=0, low=0.1, cycle=0)


# -- snapshot ensembles --------------------------------------------------------------------

@pytest.mark.parametrize("total, cycles", [(12, 3), (10, 3), (100, 7), (18, 9), (30, 1),
                                           (1000, 6), (5, 3)])
def test_snapshots_are_the_cycle_ends_of_the_cosine_schedule(total, cycles):
    schedule = CosineRestarts(period=math.ceil(total / cycles))
    lr = [schedule(t) for t in range(total + 1)]
    # a cycle ends where the next step restarts at the top, or where training ends
    ends = [t for t in range(total) if lr[t + 1] > lr[t] or t == total - 1]
    assert snapshot_steps(total, cycles) == ends
    assert len(ends) == cycles
    starts = [0] + [e + 1 for e in ends[:-1]]
    for start, end in zip(starts, ends, strict=True):  # each snapshot is its cycle's minimum
        assert lr[start] == 1.0
        assert min(lr[start:end + 1]) == lr[end]


@pytest.mark.parametrize("total, cycles, message", [
    (5, 4, "cycles=4 is invalid for total_steps=5"),
    (5, 6, r"cycles=6 is invalid; cycles must be an integer in \[1, 5\]"),
    (0, 1, "total_steps=0 is invalid"),
])
def test_snapshot_steps_refuse_cycles_that_do_not_fit(total, cycles, message):
    with pytest.raises(UserError, match=message):
        snapshot_steps(total, cycles)


# -- ensembles -----------------------------------------------------------------------------

def test_ensemble_probabilities_are_the_members_mean():
    members = [small_model(seed) for seed in range(3)]
    members[1] = nn.Sequential(*members[1], nn.Dropout(0.9))  # eval mode must switch it off
    members[1].train()
    x = torch.randn(25, 5, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        members[1].eval()
        logits = [m(x).double().numpy() for m in members]
        members[1].train()
    softmax = [np.exp(z - z.max(1, keepdims=True)) / np.exp(z - z.max(1, keepdims=True)).sum(
        1, keepdims=True) for z in logits]
    got = ensemble_predict(members, x, batch_size=7)
    np.testing.assert_allclose(got.numpy(), np.mean(softmax, axis=0), rtol=0, atol=1e-6)
    assert got.shape == (25, 3) and members[1].training and members[1][-1].training
    each = member_probabilities(members, x)
    for p, want in zip(each, softmax, strict=True):
        np.testing.assert_allclose(p.numpy(), want, rtol=0, atol=1e-6)
    with pytest.raises(UserError, match="non-empty list"):
        ensemble_predict([], x)


def test_majority_vote_and_disagreement_on_a_hand_made_case():
    def onehot_ish(labels, confident=0.7):
        p = torch.full((len(labels), 3), (1 - confident) / 2)
        p[torch.arange(len(labels)), torch.tensor(labels)] = confident
        return p

    # argmaxes of three members on five examples
    a, b, c = [0, 1, 2, 0, 1], [0, 1, 1, 2, 1], [0, 2, 1, 1, 1]
    members = [onehot_ish(a), onehot_ish(b), onehot_ish(c, confident=0.9)]
    # example 3 is a three-way tie: the most confident member (c, class 1) wins it
    assert majority_vote(members).tolist() == [0, 1, 1, 1, 1]
    # pairs: (a,b) differ on 2 of 5, (a,c) on 3, (b,c) on 2 -> mean of 2/5, 3/5, 2/5
    assert disagreement(members) == pytest.approx((2 + 3 + 2) / 15)
    assert disagreement(torch.stack(members[:1] * 2)) == 0.0
    with pytest.raises(UserError, match="at least 2 members"):
        disagreement(members[:1])
    with pytest.raises(UserError, match="one shape"):
        majority_vote([members[0], members[1][:3]])


def test_shared_modules_and_tied_weights_are_kept_once_under_their_names():
    torch.manual_seed(11)
    shared = nn.Linear(4, 4)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), shared, nn.ReLU(), shared,
                          nn.Linear(4, 4, bias=False), nn.BatchNorm1d(4))
    model[5].weight = model[2].weight  # a tied weight in another module
    model.register_buffer("scale", torch.tensor([2.0, 3.0]), persistent=False)
    ema = EMA(model, 0.5)
    expected = dict(model.named_parameters()) | dict(model.named_buffers())
    held = {k: v.clone() for k, v in ema.state_dict()["tensors"].items()}
    assert list(held) == list(expected)
    assert all(torch.equal(held[k], v) for k, v in expected.items())
    model.train()
    model(torch.randn(8, 3))
    ema.update()
    with ema.swapped():
        assert model[5].weight is model[2].weight
        averaged_mean = model[6].running_mean.clone()
    torch.testing.assert_close(averaged_mean,
                               0.5 * held["6.running_mean"] + 0.5 * model[6].running_mean)
