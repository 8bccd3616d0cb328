"""Hyperparameter search, the lecture's way: random (not grid) sampling of log-uniform ranges,
a coarse stage of short runs, then finer stages of longer runs around the best, runs aborted
when their loss passes 3x the initial loss (and optionally pruned), on Optuna's studies and
storages.

    spec = load_search("examples/search-mnist1d.yaml")      # errors before any trial runs
    summary = Search(spec, "runs/search-mnist1d").run()       # or .run(workers=4)
    summary["best"]["params"]                                 # also runs/.../best.yaml

The config is a training config plus ``space:`` and ``search:`` (see :mod:`.space` and
:mod:`.stages`); the files written are listed in :mod:`.report`.
"""

from .space import Dimension, Space, parse_space
from .stages import Settings, Stage, narrow, narrow_space, parse_settings
from .study import Search, SearchSpec, grid_values, load_search, trial_config

__all__ = ["Dimension", "Space", "parse_space", "Settings", "Stage", "narrow", "narrow_space",
           "parse_settings", "Search", "SearchSpec", "grid_values", "load_search",
           "trial_config"]
