"""The lecture's whole procedure in one call, within a time budget: look at the data, check
that the model can overfit 20 examples, find the learning rate's range, search coarse then
fine, train the best configuration with weight averaging (several seeds for an ensemble where
the time allows) for the rest of the budget, and tell
the story on one page.

    summary = run("mnist1d", "10m", "runs/recipe-mnist1d")      # gradwise recipe mnist1d
    summary["test_accuracy"], summary["test_accuracy_ci95"]      # also OUT/summary.json

* :mod:`.budget` the budget's text form, its split across the phases, the interval;
* :mod:`.look` the look at the data and what it decides (family, augmentations, space);
* :mod:`.plan` the search as the plan records it;
* :mod:`.core` the phases, the folder and ``--resume``;
* :mod:`.ensemble` the final phase's runs (a seed ensemble where the time allows) and the
  one test evaluation;
* :mod:`.page` the report page.
"""

from .budget import MIN_SECONDS, PHASES, SHARES, parse_budget, phase_seconds, wilson_interval
from .core import Recipe, SanityFailed, run
from .ensemble import plan_members
from .look import augment_choices, look_at_data, model_choices, search_space
from .plan import spec_of

__all__ = ["MIN_SECONDS", "PHASES", "SHARES", "Recipe", "SanityFailed", "augment_choices",
           "look_at_data", "model_choices", "parse_budget", "phase_seconds", "plan_members",
           "run", "search_space", "spec_of", "wilson_interval"]
