"""Training: the Trainer, `fit(config)`, progress output, the run directory, and the tools that
watch a run (monitor, diagnosis, sanity check, LR range test)."""

from .diagnosis import diagnose
from .lr_find import lr_find, lr_range_test
from .progress import Progress
from .sanity import sanity_check
from .trainer import Trainer, check, fit

__all__ = ["Trainer", "check", "fit", "Progress", "diagnose", "lr_find", "lr_range_test",
           "sanity_check"]
