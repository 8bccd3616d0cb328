"""The lecture's optimizers, drop-in for torch.optim.

First order: :class:`SGD` (plain, momentum, Nesterov), :class:`Adagrad`, :class:`RMSprop`,
:class:`Adam`, :class:`AdamW`. Second order: :class:`Newton`, :class:`LBFGS`. Param groups:
:func:`param_groups`. Each first-order update rule is a pure function (:func:`sgd`,
:func:`adagrad`, :func:`rmsprop`, :func:`adam`) that runs on the ``reference``, ``foreach``,
``fused`` (compiled) or ``native`` (torch's fused kernel) backend; ``backend="auto"`` picks.
:mod:`gradwise.optim.registry` lists them all by name, with their hyperparameters.
"""

from . import registry
from ._backends import BACKENDS
from ._base import Optimizer
from .adagrad import Adagrad, adagrad
from .adam import Adam, AdamW, adam
from .groups import param_groups
from .lbfgs import LBFGS
from .newton import Newton
from .rmsprop import RMSprop, rmsprop
from .sgd import SGD, sgd

__all__ = [
    "BACKENDS", "Optimizer", "registry",
    "SGD", "Adagrad", "RMSprop", "Adam", "AdamW", "Newton", "LBFGS", "param_groups",
    "sgd", "adagrad", "rmsprop", "adam",
]
