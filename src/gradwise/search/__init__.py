"""Hyperparameter search, the lecture's way: random (not grid) sampling of log-uniform ranges,
a coarse stage of short runs, then finer stages of longer runs around the best, runs aborted
when their loss passes 3x the initial loss (and optionally pruned), on Optuna's studies and
storages.

    spec = load_search("examples/search-mnist1d.yaml")      # errors before any trial runs
    summary = Search(spec, "runs/search-mnist1d").run()       # or .run(workers=4)
    summary["best"]["params"]                                 # also runs/.../best.yaml

One module per concept, each importing only those above it:

* :mod:`.space` the ranges (``optimizer.lr: loguniform(1e-4, 1e-1)``) and their values;
* :mod:`.stages` the ``search:`` settings and coarse-to-fine narrowing;
* :mod:`.spec` the search config, checked before any trial, and a trial's training config;
* :mod:`.grid` grid stages;
* :mod:`.workers` how workers share a stage (slots, heartbeats, re-runs, processes);
* :mod:`.storage` the Optuna storage and its studies;
* :mod:`.report` the files written (results.csv, best.yaml, report.html, ...);
* :mod:`.study` the :class:`Search`, which plans each stage and runs them in order.
"""

from .grid import grid_points, grid_values
from .space import Dimension, Space, parse_space
from .spec import SearchSpec, check_spec, load_search, trial_config, with_settings
from .stages import Settings, Stage, narrow, narrow_space, parse_settings
from .study import Search, check_workers

__all__ = ["Dimension", "Space", "parse_space", "Settings", "Stage", "narrow", "narrow_space",
           "parse_settings", "Search", "SearchSpec", "check_spec", "check_workers",
           "grid_points", "grid_values", "load_search", "trial_config", "with_settings"]
