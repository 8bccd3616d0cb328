"""Training: the Trainer, `fit(config)`, progress output and the run directory."""

from .progress import Progress
from .trainer import Trainer, fit

__all__ = ["Trainer", "fit", "Progress"]
