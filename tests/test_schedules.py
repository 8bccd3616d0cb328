"""Learning-rate schedules against their formulas and against torch.optim.lr_scheduler.

Oracles: each closed form written out here, and torch's schedulers stepping a real
``torch.optim.SGD``. torch's cosine and linear schedulers are recursive, so they agree to
rounding (rtol 1e-6); the others agree to 1e-12.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import digits_mlp
from torch.optim import lr_scheduler as tl

import gradwise.optim as go
from gradwise.errors import UserError
from gradwise.schedules import (
    SCHEDULES,
    Constant,
    Cosine,
    CosineRestarts,
    Cyclic,
    Exponential,
    InverseTime,
    LRScheduler,
    MultiStep,
    OneCycle,
    Step,
    Warmup,
    build_schedule,
)

STEPS = 300
BASE_LR = 0.2


def restarts(t, period, mult, final):
    """SGDR by walking the cycles one by one."""
    start, length = 0, period
    while t >= start + length:
        start, length = start + length, length * mult
    return final + (1 - final) * (1 + math.cos(math.pi * (t - start) / length)) / 2


def onecycle(t, total, peak_at, div, final_div):
    """torch's two phases: up to step ``peak_at * total - 1``, then down to step ``total - 1``."""
    lo, hi, end = 1 / div, 1.0, 1 / (div * final_div)
    peak, last = peak_at * total - 1, total - 1
    t = min(t, last)
    if t <= peak:
        pct = t / peak if peak > 0 else 1.0
        return hi + (lo - hi) * (1 + math.cos(math.pi * pct)) / 2
    pct = (t - peak) / (last - peak)
    return end + (hi - end) * (1 + math.cos(math.pi * pct)) / 2


def triangle(t, period, low):
    x = t % period / period
    return low + (1 - low) * (2 * x if x <= 0.5 else 2 - 2 * x)


CLOSED_FORMS = [
    (Constant(), lambda t: 1.0),
    (Step(30), lambda t: 0.1 ** (t // 30)),
    (Step(7, gamma=0.8), lambda t: 0.8 ** (t // 7)),
    (MultiStep([200, 50, 120]), lambda t: 0.1 ** ((t >= 50) + (t >= 120) + (t >= 200))),
    (MultiStep([40, 40], gamma=0.5), lambda t: 0.25 if t >= 40 else 1.0),
    (Exponential(0.99), lambda t: 0.99**t),
    (InverseTime(0.5), lambda t: 1 / (1 + 0.5 * t)),
    (InverseTime(1.0, decay_steps=100), lambda t: 1 / (1 + t / 100)),
    (Cosine(250), lambda t: (1 + math.cos(math.pi * min(t, 250) / 250)) / 2),
    (Cosine(100, final=0.1),
     lambda t: 0.1 + 0.9 * (1 + math.cos(math.pi * min(t, 100) / 100)) / 2),
    (CosineRestarts(50), lambda t: restarts(t, 50, 1, 0.0)),
    (CosineRestarts(10, period_mult=2, final=0.05), lambda t: restarts(t, 10, 2, 0.05)),
    (CosineRestarts(8, period_mult=1.5), lambda t: restarts(t, 8, 1.5, 0.0)),
    (CosineRestarts(1, period_mult=3), lambda t: restarts(t, 1, 3, 0.0)),
    (Cyclic(40), lambda t: triangle(t, 40, 0.1)),
    (Cyclic(25, low=0.0), lambda t: triangle(t, 25, 0.0)),
    (OneCycle(250), lambda t: onecycle(t, 250, 0.3, 25.0, 1e4)),
    (OneCycle(7, peak_at=0.3), lambda t: onecycle(t, 7, 0.3, 25.0, 1e4)),
    (OneCycle(100, peak_at=0.01, div_factor=10, final_div_factor=100),
     lambda t: onecycle(t, 100, 0.01, 10, 100)),
    (Warmup(20), lambda t: min(t / 20, 1.0)),
    (Warmup(10, then=Exponential(0.98), start=0.2),
     lambda t: 0.2 + 0.08 * t if t < 10 else 0.98 ** (t - 10)),
    (Warmup(0, then=Step(5)), lambda t: 0.1 ** (t // 5)),
    (Warmup(5, then=Warmup(5, start=0.5)),
     lambda t: t / 5 if t < 5 else 0.5 + 0.1 * (t - 5) if t < 10 else 1.0),
]


@pytest.mark.parametrize(("schedule", "formula"), CLOSED_FORMS,
                         ids=[repr(s) for s, _ in CLOSED_FORMS])
def test_closed_form(schedule, formula):
    got = [schedule(t) for t in range(400)]
    assert got == pytest.approx([formula(t) for t in range(400)], rel=1e-12, abs=1e-15)
    assert all(isinstance(f, float) for f in got)


def sgd(lr=BASE_LR):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr)


def torch_lrs(make, steps=STEPS):
    """lrs of torch's scheduler ``make(optimizer)`` at steps 0 .. steps - 1."""
    opt = sgd()
    sched = make(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def our_lrs(schedule, steps=STEPS):
    opt = sgd()
    sched = LRScheduler(opt, schedule)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


TORCH_CASES = [
    (Step(30, gamma=0.5), lambda o: tl.StepLR(o, step_size=30, gamma=0.5), 1e-12),
    (MultiStep([50, 120, 120, 200], gamma=0.3),
     lambda o: tl.MultiStepLR(o, milestones=[50, 120, 120, 200], gamma=0.3), 1e-12),
    (Exponential(0.99), lambda o: tl.ExponentialLR(o, gamma=0.99), 1e-12),
    (Cosine(STEPS - 1), lambda o: tl.CosineAnnealingLR(o, T_max=STEPS - 1), 1e-6),
    (Cosine(200, final=0.05),
     lambda o: tl.CosineAnnealingLR(o, T_max=200, eta_min=0.05 * BASE_LR), 1e-6),
    (CosineRestarts(50, final=0.1),
     lambda o: tl.CosineAnnealingWarmRestarts(o, T_0=50, eta_min=0.1 * BASE_LR), 1e-12),
    (CosineRestarts(20, period_mult=2),
     lambda o: tl.CosineAnnealingWarmRestarts(o, T_0=20, T_mult=2), 1e-12),
    (Cyclic(40, low=0.2),
     lambda o: tl.CyclicLR(o, base_lr=0.2 * BASE_LR, max_lr=BASE_LR, step_size_up=20,
                           cycle_momentum=False), 1e-12),
    (Cyclic(25),
     lambda o: tl.CyclicLR(o, base_lr=0.1 * BASE_LR, max_lr=BASE_LR, step_size_up=12.5,
                           cycle_momentum=False), 1e-12),
    (OneCycle(STEPS),
     lambda o: tl.OneCycleLR(o, max_lr=BASE_LR, total_steps=STEPS, cycle_momentum=False), 1e-12),
    (OneCycle(STEPS, peak_at=0.25, div_factor=10.0, final_div_factor=100.0),
     lambda o: tl.OneCycleLR(o, max_lr=BASE_LR, total_steps=STEPS, pct_start=0.25,
                             div_factor=10.0, final_div_factor=100.0, cycle_momentum=False),
     1e-12),
    (Warmup(25, start=0.1), lambda o: tl.LinearLR(o, start_factor=0.1, total_iters=25), 1e-6),
    (Warmup(10, then=Cosine(STEPS - 10), start=0.1),
     lambda o: tl.SequentialLR(o, [tl.LinearLR(o, start_factor=0.1, total_iters=10),
                                   tl.CosineAnnealingLR(o, T_max=STEPS - 10)], milestones=[10]),
     1e-6),
    (Warmup(10, then=Exponential(0.98), start=0.5),
     lambda o: tl.SequentialLR(o, [tl.LinearLR(o, start_factor=0.5, total_iters=10),
                                   tl.ExponentialLR(o, gamma=0.98)], milestones=[10]), 1e-6),
]


@pytest.mark.parametrize(("schedule", "make", "rtol"), TORCH_CASES,
                         ids=[repr(s) for s, *_ in TORCH_CASES])
def test_matches_torch(schedule, make, rtol):
    # torch's cosine turns back up after T_max: compare up to the end of the schedule
    steps = schedule.total_steps + 1 if isinstance(schedule, Cosine) else STEPS
    assert our_lrs(schedule, steps) == pytest.approx(torch_lrs(make, steps), rel=rtol, abs=1e-15)


def test_schedule_is_a_lambda_lr():
    schedule = Warmup(10, then=CosineRestarts(15, period_mult=2))
    assert torch_lrs(lambda o: tl.LambdaLR(o, schedule)) == our_lrs(schedule)


def mlp_and_groups(opt_cls, lrs):
    model = digits_mlp(torch.float64)
    groups = [{"params": model[0].parameters(), "lr": lrs[0]},
              {"params": model[2].parameters(), "lr": lrs[1]}]
    return model, opt_cls(groups)


def run(model, opt, sched, data, steps, lrs_seen):
    x, y = data
    for i in range(steps):
        lrs_seen.append(sched.lr() if isinstance(sched, LRScheduler) else sched.get_last_lr())
        lo = i * 64 % (len(x) - 64)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[lo:lo + 64]), y[lo:lo + 64]).backward()
        opt.step()
        sched.step()
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


@pytest.mark.parametrize("opt_cls", [go.Adam, torch.optim.SGD], ids=["gradwise.Adam", "torch.SGD"])
def test_drives_optimizer_with_two_groups(opt_cls, digits):
    """Weights and lrs equal those of torch's ``MultiStepLR`` driving the same optimizer."""
    schedule, steps, bases = MultiStep([10, 25], gamma=0.5), 40, (1e-2, 3e-3)
    model, opt = mlp_and_groups(opt_cls, bases)
    ours = []
    w = run(model, opt, LRScheduler(opt, schedule), digits, steps, ours)
    model, opt = mlp_and_groups(opt_cls, bases)
    theirs = []
    w_torch = run(model, opt, tl.MultiStepLR(opt, [10, 25], gamma=0.5), digits, steps, theirs)
    flat_ours = [lr for step in ours for lr in step]
    flat_theirs = [lr for step in theirs for lr in step]
    assert flat_ours == pytest.approx(flat_theirs, rel=1e-12)
    assert ours == [[b * schedule(t) for b in bases] for t in range(steps)]
    assert torch.equal(w, w_torch)


@pytest.mark.parametrize("opt_cls", [go.Adam, torch.optim.SGD], ids=["gradwise.Adam", "torch.SGD"])
def test_resume_gives_the_same_lrs(opt_cls):
    schedule = Warmup(30, then=OneCycle(250), start=0.1)
    _, opt = mlp_and_groups(opt_cls, (0.1, 0.02))
    sched = LRScheduler(opt, schedule)
    whole = []
    for _ in range(STEPS):
        whole.append(sched.lr())
        sched.step()

    _, opt = mlp_and_groups(opt_cls, (0.1, 0.02))
    sched = LRScheduler(opt, schedule)
    resumed = []
    for _ in range(120):
        resumed.append(sched.lr())
        sched.step()
    state = sched.state_dict()
    assert state == {"step_count": 120, "base_lrs": [0.1, 0.02]}
    _, opt = mlp_and_groups(opt_cls, (0.1, 0.02))
    sched = LRScheduler(opt, schedule)
    sched.load_state_dict(state)
    assert sched.step_count == 120
    for _ in range(STEPS - 120):
        resumed.append(sched.lr())
        sched.step()
    assert resumed == whole
    assert [g["lr"] for g in opt.param_groups] == [0.1 * schedule(STEPS), 0.02 * schedule(STEPS)]


def test_tensor_lr_is_updated_in_place():
    opt = sgd(torch.tensor(0.5))
    lr = opt.param_groups[0]["lr"]
    sched = LRScheduler(opt, Step(2, gamma=0.5))
    for _ in range(5):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] is lr
    assert lr.item() == 0.5 * 0.25
    assert opt.param_groups[0]["initial_lr"].item() == 0.5  # a copy, not the live lr
    assert sched.lr() == [0.125]


def test_existing_initial_lr_is_the_base():
    opt = sgd(0.3)
    opt.param_groups[0]["initial_lr"] = 0.1
    sched = LRScheduler(opt, Exponential(0.5))
    assert sched.lr() == [0.1]
    sched.step()
    assert sched.lr() == [0.05]


def test_load_state_dict_checks_the_groups():
    sched = LRScheduler(sgd(), Constant())
    with pytest.raises(UserError, match="2 base lrs but the optimizer has 1 param groups"):
        sched.load_state_dict({"step_count": 3, "base_lrs": [0.1, 0.2]})


def test_build_schedule():
    assert set(SCHEDULES) == {"constant", "step", "multistep", "exponential", "inverse_time",
                              "cosine", "cosine_restarts", "cyclic", "onecycle"}
    assert build_schedule("step", step_size=10, gamma=0.5) == Step(10, 0.5)
    assert build_schedule("constant") == Constant()
    assert build_schedule("cosine", total_steps=100, warmup_steps=10, warmup_start=0.1) == (
        Warmup(10, Cosine(100), start=0.1))
    assert build_schedule("multistep", milestones=[30, 10])(15) == pytest.approx(0.1)


@pytest.mark.parametrize(("name", "kw", "match"), [
    ("cosin", {}, r"unknown schedule 'cosin'; accepted: constant, step, multistep, exponential, "
                  r"inverse_time, cosine, cosine_restarts, cyclic, onecycle"),
    ("step", dict(step_size=3, gama=0.5),
     r"'step' has no parameter 'gama'; accepted: step_size, gamma, warmup_steps, warmup_start"),
    ("cosine", dict(T_max=10), r"no parameter 'T_max'; accepted: total_steps, final"),
    ("onecycle", {}, r"schedule 'onecycle' needs total_steps"),
    ("step", dict(step_size=0), r"step_size=0 is invalid; step_size must be an integer >= 1"),
    ("step", dict(step_size=2.5), r"step_size=2.5 is invalid"),
    ("step", dict(step_size=True), r"step_size=True is invalid"),
    ("step", dict(step_size=5, gamma=0), r"gamma=0 is invalid; gamma must be a finite number > 0"),
    ("exponential", dict(gamma=-0.5), r"gamma=-0.5 is invalid"),
    ("exponential", dict(gamma="0.9"), r"gamma='0.9' is invalid"),
    ("multistep", dict(milestones=[10, -1]), r"milestones\[1\]=-1 is invalid; .* integer >= 0"),
    ("multistep", dict(milestones=10), r"milestones=10 is invalid; .* list of integers >= 0"),
    ("inverse_time", dict(decay=-1.0), r"decay=-1.0 is invalid; decay must be a finite number"),
    ("inverse_time", dict(decay=1.0, decay_steps=0), r"decay_steps=0 is invalid"),
    ("cosine", dict(total_steps=0), r"total_steps=0 is invalid; total_steps must be an integer"),
    ("cosine", dict(total_steps=10, final=-0.1), r"final=-0.1 is invalid; .* number >= 0"),
    ("cosine", dict(total_steps=10, final=math.inf), r"final=inf is invalid"),
    ("cosine_restarts", dict(period=10, period_mult=0.5), r"period_mult=0.5 is invalid; .* >= 1"),
    ("cyclic", dict(period=10, low=1.5), r"low=1.5 is invalid; low must be a number in \[0, 1\]"),
    ("cyclic", dict(period=0), r"period=0 is invalid"),
    ("onecycle", dict(total_steps=100, peak_at=1.2), r"peak_at=1.2 is invalid; .* \[0, 1\]"),
    ("onecycle", dict(total_steps=100, div_factor=0), r"div_factor=0 is invalid; .* > 0"),
    ("onecycle", dict(total_steps=100, final_div_factor=float("nan")),
     r"final_div_factor=nan is invalid"),
    ("constant", dict(warmup_steps=-5), r"warmup_steps=-5 is invalid; .* integer >= 0"),
    ("constant", dict(warmup_steps=5, warmup_start=2), r"warmup_start=2 is invalid; .* \[0, 1\]"),
])
def test_build_schedule_rejects_bad_input(name, kw, match):
    with pytest.raises(UserError, match=match):
        build_schedule(name, **kw)


@pytest.mark.parametrize(("make", "match"), [
    (lambda: Step(0), r"step_size=0 is invalid"),
    (lambda: Exponential(0.0), r"gamma=0.0 is invalid"),
    (lambda: Warmup(-1), r"steps=-1 is invalid"),
    (lambda: Warmup(5, start=-0.5), r"start=-0.5 is invalid"),
    (lambda: Warmup(5, then=0.5), r"then=0.5 is invalid; then must be a Schedule"),
    (lambda: LRScheduler(sgd(), lambda t: 1.0), r"schedule must be a Schedule"),
])
def test_constructors_reject_bad_input(make, match):
    with pytest.raises(UserError, match=match):
        make()
    assert issubclass(UserError, ValueError)
