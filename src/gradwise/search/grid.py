"""Grid stages: the grid's values and points, a stage's planned trial count, and the enqueueing
of the points as waiting trials (each with its ``grid_point`` index).

``n`` points per numeric range, ``n = floor((trials / choices) ** (1 / numeric keys))``, at the
centres of ``n`` equal cells (on the log scale for loguniform), times every choice; the points
in an order shuffled by the search's seed, the first ``trials`` of them.
"""

from __future__ import annotations

import itertools
import math
import random
from typing import TYPE_CHECKING

from .space import Space
from .stages import Settings, Stage

if TYPE_CHECKING:
    import optuna


def grid_values(space: Space, trials: int) -> dict[str, list]:
    """The grid of a stage: every choice, and ``n`` points per numeric range with
    ``n = floor((trials / choices) ** (1 / numeric dims))``, at the centres of ``n`` equal
    cells (on the log scale for loguniform): ``low * (high / low) ** ((i + 0.5) / n)``.
    Choices are given as Optuna stores them (:meth:`Dimension.encode`).

    >>> from gradwise.search.space import parse_space
    >>> grid_values(parse_space({"lr": "loguniform(1e-4, 1)"}), 2)["lr"]
    [0.001, 0.1]
    """
    numeric = [d for d in space if d.kind != "choice"]
    combos = math.prod(len(d.choices) for d in space if d.kind == "choice")
    per = max(1, math.floor((trials / combos) ** (1 / max(1, len(numeric))) + 1e-9))
    values: dict[str, list] = {}
    for dim in space:
        if dim.kind == "choice":
            values[dim.key] = [dim.encode(c) for c in dim.choices]
            continue
        low, high = dim.bounds
        if dim.log:
            ratio = high / low
            values[dim.key] = [float(f"{low * ratio ** ((i + 0.5) / per):.12g}")
                               for i in range(per)]
        else:
            points = [low + (high - low) * (i + 0.5) / per for i in range(per)]
            if dim.kind == "int":
                points = sorted({int(round(p)) for p in points})
            values[dim.key] = [float(f"{p:.12g}") if dim.kind != "int" else p for p in points]
    return values


def grid_points(space: Space, trials: int, seed: int) -> list[dict]:
    """The first ``trials`` points of the stage's grid (:func:`grid_values`, as Optuna stores
    them), in an order shuffled by ``seed``.

    >>> from gradwise.search.space import parse_space
    >>> grid_points(parse_space({"lr": "loguniform(1e-4, 1)"}), 2, seed=0)
    [{'lr': 0.001}, {'lr': 0.1}]
    """
    values = grid_values(space, trials)
    points = [dict(zip(values, combo, strict=True))
              for combo in itertools.product(*values.values())]
    random.Random(seed).shuffle(points)
    return points[:trials]


def planned_trials(settings: Settings, stage: Stage, space: Space) -> int:
    """The stage's trial count: ``stage.trials``, or the grid's size where that is smaller."""
    if settings.sampler != "grid":
        return stage.trials
    return len(grid_points(space, stage.trials, settings.seed))


def enqueue_grid(study: optuna.Study, points: list[dict], held: set) -> bool:
    """Enqueue in the Optuna ``study`` each of ``points`` whose index is not in ``held`` (the
    ``grid_point`` of every live trial); returns whether it enqueued any."""
    missing = [i for i in range(len(points)) if i not in held]
    for i in missing:
        study.enqueue_trial(points[i], user_attrs={"grid_point": i})
    return bool(missing)
