"""The ``search:`` section (sampler, metric, pruner, stages) and coarse-to-fine narrowing.

Narrowing one range around the top-k values ``v_1..v_k`` of the previous stage, on the scale
``s`` of the dimension (``s = log10`` for loguniform, the identity otherwise)::

    lo, hi = min s(v_i), max s(v_i)
    pad    = max(margin * (hi - lo), min_width * (s(high) - s(low)) / 2)
    range  = [max(s(low), lo - pad), min(s(high), hi + pad)]      (back through s^-1)

With ``loguniform(1e-4, 1e-1)``, top-k learning rates 1e-3 and 4e-3, ``margin=0.5`` and
``min_width=0.2``: ``pad = max(0.5 * 0.602, 0.1 * 3) = 0.301`` decades, so the next stage
searches ``[5e-4, 8e-3]``. Integers round outwards; a choice keeps the values seen in the top-k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from .. import _checks
from ..errors import UserError
from .space import Dimension, Space

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

SAMPLERS = ("random", "grid", "tpe")
PRUNERS = ("none", "median", "halving")
METRICS: dict[str, Literal["minimize", "maximize"]] = {"val_accuracy": "maximize",
                                                       "val_loss": "minimize"}
_SEARCH_KEYS = ("sampler", "metric", "pruner", "stages", "seed", "margin", "min_width",
                "heartbeat", "grace", "plot")
_STAGE_KEYS = ("name", "trials", "epochs", "top_k")


@dataclass(frozen=True)
class Stage:
    """``trials`` runs of ``epochs`` epochs; a later stage narrows around the ``top_k`` best."""

    name: str
    trials: int
    epochs: int
    top_k: int = 3


@dataclass(frozen=True)
class Settings:
    """The parsed ``search:`` section."""

    stages: tuple[Stage, ...]
    sampler: str = "random"
    metric: str = "val_accuracy"
    pruner: str = "none"
    seed: int = 0
    margin: float = 0.5
    min_width: float = 0.2
    heartbeat: int = 5        # seconds between a running trial's heartbeats
    grace: int = 20           # a running trial without a heartbeat this long is dead
    plot: tuple[str, str] | None = None   # (x key, y key) of the scatter

    @property
    def direction(self) -> Literal["minimize", "maximize"]:
        return METRICS[self.metric]


def parse_settings(raw: object) -> Settings:
    """The Settings of a config's ``search:`` mapping (all keys optional but ``stages``).

    >>> parse_settings({"stages": [{"trials": 8, "epochs": 2}]}).stages[0]
    Stage(name='stage1', trials=8, epochs=2, top_k=3)
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError("search: expected a mapping (sampler, metric, pruner, stages, ...)")
    _known("search", raw, _SEARCH_KEYS)
    stages_raw = raw.get("stages", [{"name": "coarse", "trials": 20, "epochs": 3}])
    if not isinstance(stages_raw, list) or not stages_raw:
        raise UserError("search.stages: expected a non-empty list, e.g. "
                        "[{name: coarse, trials: 16, epochs: 3}, {name: fine, trials: 6, "
                        "epochs: 12, top_k: 4}]")
    stages = []
    for i, item in enumerate(stages_raw):
        where = f"search.stages[{i}]"
        if not isinstance(item, dict):
            raise UserError(f"{where}: expected a mapping with trials and epochs")
        _known(where, item, _STAGE_KEYS)
        for needed in ("trials", "epochs"):
            if needed not in item:
                raise UserError(f"{where}: {needed} is missing")
        name = str(item.get("name", f"stage{i + 1}"))
        if not name or any(c in name for c in "/: "):
            raise UserError(f"{where}: name {name!r} must be non-empty, without '/', ':' or ' '")
        stages.append(Stage(name, _checks.integer(f"{where}.trials", item["trials"], 1),
                            _checks.integer(f"{where}.epochs", item["epochs"], 1),
                            _checks.integer(f"{where}.top_k", item.get("top_k", 3), 1)))
    if len({s.name for s in stages}) != len(stages):
        raise UserError("search.stages: two stages have the same name")
    plot = raw.get("plot")
    if plot is not None:
        if not (isinstance(plot, dict) and set(plot) <= {"x", "y"} and len(plot) == 2):
            raise UserError("search.plot: expected {x: KEY, y: KEY}, e.g. "
                            "{x: optimizer.lr, y: optimizer.weight_decay}")
        plot = (str(plot["x"]), str(plot["y"]))
    heartbeat = _checks.integer("search.heartbeat", raw.get("heartbeat", 5), 1)
    return Settings(
        stages=tuple(stages),
        sampler=_checks.choice("search.sampler", raw.get("sampler", "random"), SAMPLERS),
        metric=_checks.choice("search.metric", raw.get("metric", "val_accuracy"),
                              tuple(METRICS)),
        pruner=_checks.choice("search.pruner", str(raw.get("pruner", "none")), PRUNERS),
        seed=_checks.integer("search.seed", raw.get("seed", 0), 0),
        margin=_checks.number("search.margin", raw.get("margin", 0.5), 0),
        min_width=_checks.number("search.min_width", raw.get("min_width", 0.2), 0, 1),
        heartbeat=heartbeat,
        grace=_checks.integer("search.grace", raw.get("grace", 4 * heartbeat), heartbeat + 1),
        plot=plot)


def narrow(dim: Dimension, values: list, margin: float = 0.5,
           min_width: float = 0.2) -> Dimension:
    """``dim`` narrowed around ``values`` (the top-k of a stage), as the module doc says.

    >>> d = Dimension("optimizer.lr", "loguniform", 1e-4, 1e-1)
    >>> n = narrow(d, [1e-3, 4e-3]); round(n.low, 12), round(n.high, 12)
    (0.0005, 0.008)
    """
    if not values:
        return dim
    if dim.kind == "choice":
        seen = {repr(v) for v in values}
        return dim.with_range(choices=[c for c in dim.choices if repr(c) in seen])
    d_low, d_high = dim.bounds
    to, back = (math.log10, lambda x: 10.0 ** x) if dim.log else (float, float)
    s_low, s_high = to(d_low), to(d_high)
    points = [to(min(max(float(v), d_low), d_high)) for v in values]
    lo, hi = min(points), max(points)
    pad = max(margin * (hi - lo), min_width * (s_high - s_low) / 2)
    low, high = back(max(s_low, lo - pad)), back(min(s_high, hi + pad))
    if dim.log:  # 10 ** log10(x) may differ from x in the last bit: keep the bounds exact
        low = d_low if lo - pad <= s_low else low
        high = d_high if hi + pad >= s_high else high
    if dim.kind == "int":
        low, high = max(int(d_low), math.floor(low)), min(int(d_high), math.ceil(high))
    return dim.with_range(low=low, high=high)


def narrow_space(space: Space, top: list[dict], margin: float = 0.5,
                 min_width: float = 0.2) -> Space:
    """Every dimension narrowed around the values the ``top`` trials' params hold."""
    return Space(tuple(narrow(d, [p[d.key] for p in top if d.key in p], margin, min_width)
                       for d in space))


def ranked(study: optuna.Study, space: Space) -> list[FrozenTrial]:
    """The COMPLETE trials of an Optuna ``study`` with a value and with params inside
    ``space`` (:meth:`Space.decode`), best first (ties: the earlier trial). A trial whose
    params are not this config's values is never a stage's best, whatever the storage says."""
    sign = -1.0 if study.direction.name == "MAXIMIZE" else 1.0
    done = [((sign * t.value, t.number), t) for t in study.get_trials(deepcopy=False)
            if t.state.name == "COMPLETE" and t.value is not None and _fits(space, t.params)]
    return [t for _, t in sorted(done, key=lambda item: item[0])]


def _fits(space: Space, params: dict) -> bool:
    try:
        space.decode(params)
    except ValueError:
        return False
    return True


def _known(where: str, raw: dict, accepted: tuple[str, ...]) -> None:
    for key in raw:
        if key not in accepted:
            raise UserError(f"unknown key {where}.{key}; accepted: {', '.join(accepted)}")
