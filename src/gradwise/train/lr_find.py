"""The learning-rate range test: sweep the LR exponentially over a few hundred steps and read
the loss curve.

At step ``i`` of ``n`` the learning rate is ``start * (end / start) ** (i / (n - 1))``. The sweep
stops once a bias-corrected exponential moving average of the loss (``beta = 0.98``) passes
``stop_factor`` x its minimum. The curve is then read after a centred Gaussian smoothing over
``SMOOTHING_DECADES`` (0.2) of a decade of learning rate: unlike the moving average, it does not
lag, and a lag of a decade or two (what ``beta = 0.98`` gives a 200-step sweep) moves every
reading by as much. Two classic readings:

- ``steepest``: the LR where the smoothed loss falls fastest per decade of LR;
- ``min_over_10``: the LR of the smoothed loss's minimum, divided by 10.

:func:`lr_find` repeats the sweep from fresh models for a few seeds, reports the spread of each
suggestion and warns when the seeds (or the two readings) disagree. It suggests ``min_over_10``,
the more conservative reading in our measurements (docs/diagnosis.md).
"""

from __future__ import annotations

import copy
import itertools
import math
import statistics
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import _checks
from ..config import Config, load_config
from ..errors import UserError
from ..optim import registry

SMOOTHING_DECADES = 0.2
SEED_SPREAD_WARNING = 3.0      # max/min of one suggestion over the seeds
READINGS_SPREAD_WARNING = 10.0  # steepest vs min_over_10


def lr_range_test(model: nn.Module, optimizer: torch.optim.Optimizer,
                  batches: Iterator, loss_fn: Callable, *, start: float = 1e-7,
                  end: float = 10.0, steps: int = 200, beta: float = 0.98,
                  stop_factor: float = 4.0) -> dict:
    """Sweep one model; returns ``{"lrs", "loss"}`` (as long as the sweep ran).

    ``batches`` yields ``(x, y)``; ``loss_fn(model, x, y)`` returns the loss. The model's and
    optimizer's state are restored afterwards: the weights are left untouched.
    """
    start = _checks.number("start", start, 0, open_low=True)
    end = _checks.number("end", end, start, open_low=True)
    steps = _checks.integer("steps", steps, 2)
    saved_model = copy.deepcopy(model.state_dict())
    saved_optimizer = copy.deepcopy(optimizer.state_dict())
    was_training = model.training
    lrs, losses = [], []
    average, best = 0.0, math.inf
    try:
        model.train()
        for i in range(steps):
            lr = start * (end / start) ** (i / (steps - 1))
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = next(batches)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model, x, y)
            loss.backward()
            optimizer.step()
            value = float(loss.detach())
            if not math.isfinite(value):
                break
            average = beta * average + (1 - beta) * value
            smooth = average / (1 - beta ** (i + 1))
            lrs.append(lr)
            losses.append(value)
            best = min(best, smooth)
            if smooth > stop_factor * best:
                break
    finally:
        model.load_state_dict(saved_model)
        optimizer.load_state_dict(saved_optimizer)
        model.train(was_training)
    return {"lrs": lrs, "loss": losses}


def smooth(values: list[float], sigma: float) -> list[float]:
    """Centred Gaussian smoothing with a width of ``sigma`` steps (no lag, edges renormalised).

    >>> smooth([0.0, 0.0, 3.0, 0.0, 0.0], sigma=1e-3)
    [0.0, 0.0, 3.0, 0.0, 0.0]
    """
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return []
    offsets = np.arange(len(x))[:, None] - np.arange(len(x))[None, :]
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    return (weights @ x / weights.sum(1)).tolist()


def suggestions(lrs: list[float], smoothed: list[float]) -> dict[str, float]:
    """``{"steepest", "min_over_10"}`` read off one smoothed sweep.

    >>> lrs = [10 ** (k / 10) for k in range(-40, 1)]          # 1e-4 .. 1
    >>> loss = [2 / (1 + math.exp(3 * (math.log10(lr) + 2))) + 0.1 for lr in lrs]
    >>> s = suggestions(lrs, loss)
    >>> round(math.log10(s["steepest"]), 1), round(math.log10(s["min_over_10"]), 1)
    (-2.0, -1.0)
    """
    if len(smoothed) < 3:
        return {"steepest": lrs[0] if lrs else math.nan,
                "min_over_10": lrs[0] / 10 if lrs else math.nan}
    lowest = int(np.argmin(smoothed))
    slope = np.gradient(np.asarray(smoothed), np.log10(lrs))
    skip = min(len(lrs) // 10, max(lowest - 1, 0))  # the moving average's first steps
    steepest = skip + int(np.argmin(slope[skip:lowest + 1]))
    return {"steepest": lrs[steepest], "min_over_10": lrs[lowest] / 10}


def lr_find(config: Config | dict | str | Path, *, seeds: tuple[int, ...] = (0, 1, 2),
            start: float = 1e-7, end: float = 10.0, steps: int = 200) -> dict:
    """The range test of ``config``'s model, data and optimizer (schedule ignored), from a
    fresh model per seed. Returns the curves, both readings per seed and their medians, the
    suggested LR and a warning (or None)."""
    from .trainer import Trainer

    base = load_config(config)
    if not seeds:
        raise UserError("seeds is empty; give at least one seed")
    if registry.get(base.optimizer.name).full_batch:
        raise UserError(f"lr-find sweeps the learning rate of a minibatch optimizer; "
                        f"{base.optimizer.name} steps on the full batch and finds its step by "
                        f"line search")
    curves: list[dict] = []
    per_seed: dict[str, list[float]] = {"steepest": [], "min_over_10": []}
    for seed in seeds:
        trainer = Trainer(base.model_copy(update={"seed": seed}), out=None, quiet=True)
        sweep = lr_range_test(trainer.model, trainer.optimizer, _batches(trainer),
                              _loss_of(trainer), start=start, end=end, steps=steps)
        steps_per_decade = (steps - 1) / math.log10(end / start)
        sweep["smoothed"] = smooth(sweep["loss"], max(1.0, SMOOTHING_DECADES * steps_per_decade))
        for name, value in suggestions(sweep["lrs"], sweep["smoothed"]).items():
            per_seed[name].append(value)
        curves.append({"seed": seed, **sweep})
    readings = {name: {"value": statistics.median(values), "per_seed": values}
                for name, values in per_seed.items()}
    return {"lrs": curves[0]["lrs"], "curves": curves, "suggestions": readings,
            "suggested_lr": readings["min_over_10"]["value"],
            "warning": _disagreement(readings), "optimizer": base.optimizer.name,
            "start": start, "end": end, "steps": steps}


def _disagreement(readings: dict) -> str | None:
    problems = []
    for name, reading in readings.items():
        values = [v for v in reading["per_seed"] if v > 0 and math.isfinite(v)]
        if len(values) > 1 and max(values) / min(values) > SEED_SPREAD_WARNING:
            problems.append(f"the {name} reading varies {max(values) / min(values):.1f}x over "
                            "the seeds")
    a, b = readings["steepest"]["value"], readings["min_over_10"]["value"]
    if a > 0 and b > 0 and max(a, b) / min(a, b) > READINGS_SPREAD_WARNING:
        problems.append(f"steepest ({a:.2g}) and min/10 ({b:.2g}) differ "
                        f"{max(a, b) / min(a, b):.0f}x")
    if not problems:
        return None
    return "; ".join(problems) + ": the curve is noisy or has no clear valley; " \
        "treat the suggestion as a starting point and check it with a short run"


def _batches(trainer) -> Iterator:
    """The Trainer's minibatches (with its augmentation), epoch after epoch, forever."""
    for epoch in itertools.count():
        if trainer.full_batch:
            yield trainer.data.x_train, trainer.data.y_train
        else:
            for x, _, target in trainer.epoch_batches(epoch):
                yield x, target


def _loss_of(trainer) -> Callable:
    def loss_fn(model, x, target):
        with trainer._autocast():
            logits = model(trainer._layout(x))
        return trainer._with_penalty(trainer._loss(logits, target))
    return loss_fn
