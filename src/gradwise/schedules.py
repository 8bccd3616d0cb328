"""Learning-rate schedules: closed-form multipliers of the base learning rate.

A :class:`Schedule` maps the optimizer step ``t`` (0 for the first step) to a factor, so that
``lr(t) = base_lr * schedule(t)``. Being closed form, a resumed run restores exactly the right
value from the step count alone. :class:`LRScheduler` drives any ``torch.optim`` optimizer with
one; a schedule is also a valid ``lr_lambda`` of torch's ``LambdaLR``.

Example::

    >>> s = Warmup(5, then=Cosine(100))
    >>> s(0), s(5), s(55), s(105)
    (0.0, 1.0, 0.5, 0.0)
"""

from __future__ import annotations

import bisect
import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ._checks import integer, number
from .errors import UserError


def _anneal(start: float, end: float, pct: float) -> float:
    """Half a cosine from ``start`` (``pct = 0``) to ``end`` (``pct = 1``)."""
    return end + (start - end) * (1 + math.cos(math.pi * pct)) / 2


class Schedule:
    """A closed-form multiplier of the base learning rate: ``lr(t) = base_lr * schedule(t)``."""

    def __call__(self, step: int) -> float:
        """The factor at optimizer step ``step`` (0 for the first step)."""
        raise NotImplementedError


@dataclass
class Constant(Schedule):
    """``factor(t) = 1``."""

    def __call__(self, step: int) -> float:
        return 1.0


@dataclass
class Step(Schedule):
    """``factor(t) = gamma ** (t // step_size)``, torch's ``StepLR``."""

    step_size: int
    gamma: float = 0.1

    def __post_init__(self):
        self.step_size = integer("step_size", self.step_size, 1)
        self.gamma = number("gamma", self.gamma, 0, open_low=True)

    def __call__(self, step: int) -> float:
        return self.gamma ** (step // self.step_size)


@dataclass
class MultiStep(Schedule):
    """``factor(t) = gamma ** (number of milestones <= t)``, torch's ``MultiStepLR``."""

    milestones: list[int]
    gamma: float = 0.1

    def __post_init__(self):
        if isinstance(self.milestones, str) or not isinstance(self.milestones, Sequence):
            raise UserError(f"milestones={self.milestones!r} is invalid; milestones must be a "
                            "list of integers >= 0")
        self.milestones = sorted(integer(f"milestones[{i}]", m, 0)
                                 for i, m in enumerate(self.milestones))
        self.gamma = number("gamma", self.gamma, 0, open_low=True)

    def __call__(self, step: int) -> float:
        return self.gamma ** bisect.bisect_right(self.milestones, step)


@dataclass
class Exponential(Schedule):
    """``factor(t) = gamma ** t``, torch's ``ExponentialLR``."""

    gamma: float

    def __post_init__(self):
        self.gamma = number("gamma", self.gamma, 0, open_low=True)

    def __call__(self, step: int) -> float:
        return self.gamma**step


@dataclass
class InverseTime(Schedule):
    """``factor(t) = 1 / (1 + decay * t / decay_steps)``, the lecture's 1/t decay."""

    decay: float
    decay_steps: int = 1

    def __post_init__(self):
        self.decay = number("decay", self.decay, 0)
        self.decay_steps = integer("decay_steps", self.decay_steps, 1)

    def __call__(self, step: int) -> float:
        return 1 / (1 + self.decay * step / self.decay_steps)


@dataclass
class Cosine(Schedule):
    """``factor(t) = final + (1 - final) * (1 + cos(pi * min(t, T) / T)) / 2`` with
    ``T = total_steps``: torch's ``CosineAnnealingLR`` with ``eta_min = final * base_lr``,
    held at ``final`` after ``T``."""

    total_steps: int
    final: float = 0.0

    def __post_init__(self):
        self.total_steps = integer("total_steps", self.total_steps, 1)
        self.final = number("final", self.final, 0)

    def __call__(self, step: int) -> float:
        return _anneal(1.0, self.final, min(step, self.total_steps) / self.total_steps)


@dataclass
class CosineRestarts(Schedule):
    """SGDR, torch's ``CosineAnnealingWarmRestarts``: a cosine from 1 to ``final`` that restarts.

    Cycle ``n`` (from 0) lasts ``T_n = period * period_mult ** n`` steps and starts at
    ``S_n = T_0 + ... + T_{n-1}``; for ``S_n <= t < S_{n+1}``::

        factor(t) = final + (1 - final) * (1 + cos(pi * (t - S_n) / T_n)) / 2
    """

    period: int
    period_mult: float = 1
    final: float = 0.0

    def __post_init__(self):
        self.period = integer("period", self.period, 1)
        self.period_mult = number("period_mult", self.period_mult, 1)
        self.final = number("final", self.final, 0)

    def _start(self, n: int) -> float:
        """``S_n = period * (m ** n - 1) / (m - 1)``, the first step of cycle ``n``."""
        m = self.period_mult
        return self.period * (m**n - 1) / (m - 1)

    def __call__(self, step: int) -> float:
        p, m = self.period, self.period_mult
        if m == 1:
            return _anneal(1.0, self.final, (step % p) / p)
        n = int(math.log1p(step * (m - 1) / p) / math.log(m))
        # log may round across a cycle boundary: settle n so that S_n <= t < S_{n+1}
        if self._start(n) > step:
            n -= 1
        elif self._start(n + 1) <= step:
            n += 1
        return _anneal(1.0, self.final, (step - self._start(n)) / (p * m**n))


@dataclass
class Cyclic(Schedule):
    """Triangular cycles between ``low`` and 1, starting at ``low`` and peaking mid-period::

        factor(t) = low + (1 - low) * (1 - |2 * frac(t / period) - 1|)

    torch's ``CyclicLR`` (``mode="triangular"``, ``step_size_up = period / 2``) with
    ``max_lr = base_lr`` and its ``base_lr = low * base_lr``.
    """

    period: int
    low: float = 0.1

    def __post_init__(self):
        self.period = integer("period", self.period, 1)
        self.low = number("low", self.low, 0, 1)

    def __call__(self, step: int) -> float:
        x = (step % self.period) / self.period
        return self.low + (1 - self.low) * (1 - abs(2 * x - 1))


@dataclass
class OneCycle(Schedule):
    """The 1cycle policy, torch's ``OneCycleLR`` (cosine, two phases) with ``max_lr = base_lr``.

    With ``T = total_steps``, ``a = 1 / div_factor``, ``z = a / final_div_factor`` and the peak at
    ``p = peak_at * T - 1`` (torch's phase boundary; ``t`` is held at ``T - 1`` after the end)::

        factor(t) = a + (1 - a) * (1 - cos(pi * t / p)) / 2                 for t <= p
        factor(t) = z + (1 - z) * (1 + cos(pi * (t - p) / (T - 1 - p))) / 2  for t > p
    """

    total_steps: int
    peak_at: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4

    def __post_init__(self):
        self.total_steps = integer("total_steps", self.total_steps, 1)
        self.peak_at = number("peak_at", self.peak_at, 0, 1)
        self.div_factor = number("div_factor", self.div_factor, 0, open_low=True)
        self.final_div_factor = number("final_div_factor", self.final_div_factor, 0,
                                        open_low=True)

    def __call__(self, step: int) -> float:
        last = self.total_steps - 1
        t = min(step, last)
        peak = self.peak_at * self.total_steps - 1
        if t <= peak:
            return _anneal(1 / self.div_factor, 1.0, t / peak if peak > 0 else 1.0)
        end = 1 / (self.div_factor * self.final_div_factor)
        return _anneal(1.0, end, (t - peak) / (last - peak))


@dataclass
class Warmup(Schedule):
    """Linear warmup, then another schedule (torch's ``LinearLR`` then ``SequentialLR``)::

        factor(t) = start + (1 - start) * t / steps     for t < steps
        factor(t) = then(t - steps)                      for t >= steps
    """

    steps: int
    then: Schedule = field(default_factory=Constant)
    start: float = 0.0

    def __post_init__(self):
        self.steps = integer("steps", self.steps, 0)
        if not isinstance(self.then, Schedule):
            raise UserError(f"then={self.then!r} is invalid; then must be a Schedule")
        self.start = number("start", self.start, 0, 1)

    def __call__(self, step: int) -> float:
        if step < self.steps:
            return self.start + (1 - self.start) * step / self.steps
        return self.then(step - self.steps)


@dataclass
class SwitchTo(Schedule):
    """Another schedule until step ``at``, then a constant (SWA's constant learning rate from
    its start epoch on, ``factor = swa_lr / base_lr``)::

        factor(t) = before(t)     for t < at
        factor(t) = factor        for t >= at

    >>> s = SwitchTo(2, 0.5, before=Cosine(4))
    >>> [round(s(t), 3) for t in range(4)]
    [1.0, 0.854, 0.5, 0.5]
    """

    at: int
    factor: float
    before: Schedule = field(default_factory=Constant)

    def __post_init__(self):
        self.at = integer("at", self.at, 0)
        self.factor = number("factor", self.factor, 0)
        if not isinstance(self.before, Schedule):
            raise UserError(f"before={self.before!r} is invalid; before must be a Schedule")

    def __call__(self, step: int) -> float:
        return self.before(step) if step < self.at else self.factor


SCHEDULES: dict[str, type[Schedule]] = {
    "constant": Constant,
    "step": Step,
    "multistep": MultiStep,
    "exponential": Exponential,
    "inverse_time": InverseTime,
    "cosine": Cosine,
    "cosine_restarts": CosineRestarts,
    "cyclic": Cyclic,
    "onecycle": OneCycle,
}


def build_schedule(name: str, *, warmup_steps: int = 0, warmup_start: float = 0.0,
                   **kwargs: Any) -> Schedule:
    """The schedule ``SCHEDULES[name](**kwargs)``, after a linear warmup of ``warmup_steps``.

    Example: ``build_schedule("cosine", total_steps=1000, warmup_steps=100)``.
    """
    if name not in SCHEDULES:
        raise UserError(f"unknown schedule {name!r}; accepted: {', '.join(SCHEDULES)}")
    cls = SCHEDULES[name]
    params = inspect.signature(cls).parameters
    accepted = ", ".join([*params, "warmup_steps", "warmup_start"])
    for key in kwargs:
        if key not in params:
            raise UserError(f"schedule {name!r} has no parameter {key!r}; accepted: {accepted}")
    missing = [k for k, p in params.items() if p.default is p.empty and k not in kwargs]
    if missing:
        raise UserError(f"schedule {name!r} needs {', '.join(missing)}")
    warmup_steps = integer("warmup_steps", warmup_steps, 0)
    warmup_start = number("warmup_start", warmup_start, 0, 1)
    schedule = cls(**kwargs)
    return Warmup(warmup_steps, schedule, warmup_start) if warmup_steps else schedule


class LRScheduler:
    """Drive any torch.optim optimizer (torch's or gradwise's) with a Schedule:
    ``lr = base_lr * schedule(step)``.

    Each group's base lr is ``group["initial_lr"]`` (set from its ``lr`` if absent, as torch
    does). Call :meth:`step` after each ``optimizer.step()``. A tensor ``lr`` is updated in place.

    Example::

        sched = LRScheduler(opt, build_schedule("cosine", total_steps=1000, warmup_steps=100))
        loss.backward(); opt.step(); sched.step()
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: Schedule):
        if not isinstance(schedule, Schedule):
            raise UserError(f"schedule={schedule!r} is invalid; schedule must be a Schedule")
        self.optimizer = optimizer
        self.schedule = schedule
        for group in optimizer.param_groups:
            lr = group["lr"]
            group.setdefault("initial_lr", lr.clone() if isinstance(lr, torch.Tensor) else lr)
        self.base_lrs = [float(group["initial_lr"]) for group in optimizer.param_groups]
        #: Number of optimizer steps taken so far.
        self.step_count = 0
        self._apply()

    def _apply(self) -> None:
        factor = self.schedule(self.step_count)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            if isinstance(group["lr"], torch.Tensor):
                group["lr"].fill_(base * factor)
            else:
                group["lr"] = base * factor

    def step(self) -> None:
        """Advance to the next optimizer step and set its learning rates."""
        self.step_count += 1
        self._apply()

    def lr(self) -> list[float]:
        """The current learning rate of each param group."""
        return [float(group["lr"]) for group in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        return {"step_count": self.step_count, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state: dict) -> None:
        """Restore the step count and base lrs, and set the learning rates they give."""
        groups = len(self.optimizer.param_groups)
        if len(state["base_lrs"]) != groups:
            raise UserError(f"the scheduler state has {len(state['base_lrs'])} base lrs but the "
                            f"optimizer has {groups} param groups")
        self.step_count = int(state["step_count"])
        self.base_lrs = [float(lr) for lr in state["base_lrs"]]
        self._apply()
