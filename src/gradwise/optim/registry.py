"""The one registry of gradwise's optimizers: name -> class, tunable hyperparameters with their
defaults and bounds, and a one-line description.

The config's accepted names, the Trainer, the optimizer lab and the command line's help all read
it, so adding an optimizer is its file plus one :func:`register` call below::

    >>> get("adamw").cls.__name__
    'AdamW'
    >>> get("adamw").hyper("lr").parse("adamw", "3e-4")
    0.0003
    >>> names(trainable=True)
    ('sgd', 'adagrad', 'rmsprop', 'adam', 'adamw', 'lbfgs')
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.optim.optimizer import ParamsT

from .._checks import integer, number
from ..errors import UserError
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .lbfgs import LBFGS
from .newton import Newton
from .rmsprop import RMSprop
from .sgd import SGD

HYPER_KINDS = ("float", "int", "bool", "choice")


@dataclass(frozen=True)
class Hyper:
    """One tunable hyperparameter: its ``kind`` (``float``, ``int``, ``bool`` or ``choice``),
    its default and the accepted range ``[low, high]`` (ends excluded where ``open_low`` /
    ``open_high``) or ``choices``."""

    name: str
    default: Any
    kind: str = "float"
    low: float = 0.0
    high: float = math.inf
    open_low: bool = False
    open_high: bool = False
    choices: tuple = ()
    help: str = ""

    def parse(self, owner: str, raw: Any) -> Any:
        """``raw`` (command-line text or a JSON value) as this kind, checked; a UserError
        names ``owner.name`` and what is accepted."""
        name = f"{owner}.{self.name}"
        if self.kind == "bool":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("true", "1", "yes", "on"):
                return True
            if text in ("false", "0", "no", "off"):
                return False
            raise UserError(f"{name}={raw!r} is invalid; {name} must be true or false")
        if self.kind == "choice":
            if not isinstance(raw, str | int | float) or raw not in self.choices:
                raise UserError(f"{name}={raw!r} is invalid; accepted: "
                                f"{', '.join(map(str, self.choices))}")
            return raw
        value = raw
        if isinstance(raw, str):
            try:
                value = int(raw) if self.kind == "int" else float(raw)
            except ValueError:
                value = raw
        if self.kind == "int":
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            return integer(name, value, int(self.low))
        return number(name, value, self.low, self.high, open_low=self.open_low,
                      open_high=self.open_high)


def find_hyper(owner: str, hypers: tuple[Hyper, ...], key: str) -> Hyper:
    """The hyperparameter named ``key`` among ``hypers`` of optimizer ``owner``; a UserError
    lists the accepted names."""
    for h in hypers:
        if h.name == key:
            return h
    raise UserError(f"optimizer {owner!r} has no hyperparameter {key!r}; accepted: "
                    f"{', '.join(h.name for h in hypers)}")


def _identity(values: dict) -> dict:
    return dict(values)


@dataclass(frozen=True)
class Entry:
    """A registered optimizer.

    ``hypers`` are the tunable hyperparameters (the lab's sliders and ``--set`` keys); ``kwargs``
    turns their values into the class's keyword arguments (``beta1, beta2 -> betas``).
    ``full_batch``: it steps on the whole training set with a closure (L-BFGS).
    ``trainable``: the Trainer can train a network with it (Newton builds a dense Hessian and
    runs in the lab only).
    """

    name: str
    cls: type[torch.optim.Optimizer]
    description: str
    hypers: tuple[Hyper, ...]
    kwargs: Callable[[dict], dict] = field(default=_identity)
    full_batch: bool = False
    trainable: bool = True

    def hyper(self, key: str) -> Hyper:
        """The hyperparameter ``key``; a UserError lists the accepted ones."""
        return find_hyper(self.name, self.hypers, key)

    def defaults(self) -> dict:
        """Hyperparameter name -> default value."""
        return {h.name: h.default for h in self.hypers}

    def build(self, params: ParamsT, values: Mapping[str, Any],
              **extra: Any) -> torch.optim.Optimizer:
        """The optimizer over ``params`` with hyperparameter ``values`` (missing ones take
        their defaults) and further keyword arguments ``extra``."""
        return self.cls(params, **self.kwargs({**self.defaults(), **values}), **extra)


_REGISTRY: dict[str, Entry] = {}


def register(entry: Entry) -> Entry:
    """Add ``entry`` under ``entry.name`` (a name taken twice is an error)."""
    if entry.name in _REGISTRY:
        raise ValueError(f"an optimizer named {entry.name!r} is registered already")
    _REGISTRY[entry.name] = entry
    return entry


def unregister(name: str) -> None:
    """Remove ``name`` (for tests that register a throwaway optimizer)."""
    _REGISTRY.pop(name, None)


def names(trainable: bool | None = None) -> tuple[str, ...]:
    """Registered names in registration order; ``trainable=True``: those the Trainer takes."""
    return tuple(n for n, e in _REGISTRY.items()
                 if trainable is None or e.trainable == trainable)


def get(name: str, trainable: bool | None = None) -> Entry:
    """The entry of ``name``; an unknown name is a UserError listing the accepted ones."""
    accepted = names(trainable)
    if name not in accepted:
        raise UserError(f"unknown optimizer {name!r}; accepted: {', '.join(accepted)}")
    return _REGISTRY[name]


def describe(trainable: bool | None = None) -> str:
    """``name: description`` lines, for help texts and docs."""
    return "\n".join(f"{n}: {_REGISTRY[n].description}" for n in names(trainable))


# -- the optimizers --------------------------------------------------------------------------

def _lr(default: float | None, text: str = "learning rate") -> Hyper:
    return Hyper("lr", default, open_low=True, help=text)


_WD = Hyper("weight_decay", 0.0, help="L2 penalty added to the gradient")
_EPS_INSIDE = Hyper("eps_inside", False, kind="bool", help="sqrt(v + eps), not sqrt(v) + eps")
_BETAS = (Hyper("beta1", 0.9, high=1.0, open_high=True, help="first-moment decay"),
          Hyper("beta2", 0.999, high=1.0, open_high=True, help="second-moment decay"),
          Hyper("eps", 1e-8, open_low=True, help="added to sqrt(v)"), _EPS_INSIDE,
          Hyper("amsgrad", False, kind="bool", help="divide by the running max of v"))


def _sgd_kwargs(v: dict) -> dict:
    v = dict(v)
    v["momentum_form"] = v.pop("form")
    return v


def _adam_kwargs(v: dict) -> dict:
    v = dict(v)
    v["betas"] = (v.pop("beta1"), v.pop("beta2"))
    return v


def _lbfgs_kwargs(v: dict) -> dict:
    v = dict(v)
    search = v.pop("line_search")
    v["line_search_fn"] = None if search == "none" else search
    return v


register(Entry(
    "sgd", SGD, "SGD, with momentum (torch's or the velocity form) and Nesterov as options",
    (_lr(1e-3), Hyper("momentum", 0.0, high=1.0, open_high=True, help="momentum mu (rho)"),
     Hyper("dampening", 0.0, high=1.0, help="the gradient enters the buffer as (1 - d) g"),
     Hyper("nesterov", False, kind="bool", help="Nesterov's look-ahead gradient"),
     Hyper("form", "torch", kind="choice", choices=("torch", "velocity"),
           help="torch's b = mu b + g; x -= lr b, or the velocity form v = mu v - lr g; x += v"),
     _WD),
    kwargs=_sgd_kwargs))
register(Entry(
    "adagrad", Adagrad, "AdaGrad: divide by the root of the running sum of squared gradients",
    (_lr(1e-2), Hyper("lr_decay", 0.0, help="lr / (1 + (t - 1) lr_decay)"),
     Hyper("eps", 1e-10, open_low=True, help="added to sqrt(sum)"), _EPS_INSIDE,
     Hyper("initial_accumulator_value", 0.0, help="the sum's start"), _WD)))
register(Entry(
    "rmsprop", RMSprop, "RMSProp: divide by the root of a decaying mean of squared gradients",
    (_lr(1e-2), Hyper("alpha", 0.99, high=1.0, help="decay rate of the squares"),
     Hyper("eps", 1e-8, open_low=True, help="added to sqrt(v)"), _EPS_INSIDE,
     Hyper("momentum", 0.0, high=1.0, open_high=True, help="momentum on the scaled step"),
     Hyper("centered", False, kind="bool", help="divide by the variance, not the second moment"),
     _WD)))
register(Entry(
    "adam", Adam, "Adam: momentum + RMSProp + bias correction",
    (_lr(1e-3), *_BETAS, _WD), kwargs=_adam_kwargs))
register(Entry(
    "adamw", AdamW, "AdamW: Adam with decoupled weight decay",
    (_lr(1e-3), *_BETAS, Hyper("weight_decay", 1e-2, help="decoupled decay: x -= lr wd x")),
    kwargs=_adam_kwargs))
register(Entry(
    "lbfgs", LBFGS, "L-BFGS: quasi-Newton with a strong-Wolfe line search, for full batches",
    (_lr(1.0, "initial step of the line search"),
     Hyper("history_size", 100, kind="int", low=1, help="curvature pairs kept"),
     Hyper("line_search", "strong_wolfe", kind="choice", choices=("strong_wolfe", "none"),
           help="strong-Wolfe line search, or fixed steps of lr")),
    kwargs=_lbfgs_kwargs, full_batch=True))
register(Entry(
    "newton", Newton, "Newton's method: x -= lr H^-1 g with the exact Hessian (small problems)",
    (_lr(1.0, "step fraction"), Hyper("damping", 0.0, help="Levenberg-Marquardt shift of H")),
    trainable=False))
