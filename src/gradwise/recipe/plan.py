"""The recipe's search, as ``plan.json`` records it: the base config, the space and the two
stages, fixed once after the LR range test so that ``--resume`` runs the same search."""

from __future__ import annotations

from ..search import SearchSpec, Settings, Stage
from ..search.space import Space

#: Search heartbeat and grace (seconds): a killed trial is given back this soon on --resume.
HEARTBEAT, GRACE = 2, 6


def spec_of(plan: dict) -> SearchSpec | None:
    """The search of a recipe's plan (``plan.json``): random sampling, median pruning, the
    plan's stages; None where the plan has no stage (BASE fixes every searched key)."""
    if not plan.get("stages"):
        return None
    settings = Settings(stages=tuple(Stage(s["name"], s["trials"], s["epochs"], s["top_k"])
                                     for s in plan["stages"]),
                        sampler="random", metric="val_accuracy", pruner="median",
                        heartbeat=HEARTBEAT, grace=GRACE)
    return SearchSpec(plan["name"], plan["base"], Space.from_json(plan["space"]), settings)
