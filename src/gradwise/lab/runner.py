"""Runs of gradwise's own optimizers on a 2-D surface, and their metrics.

Each run drives the real optimizer class on one float64 parameter tensor of 2 elements, so a
path is exactly what the library does. Optional gradient noise (the minibatch picture) adds
``noise * N(0, I)`` to every gradient: the closure returns ``f(x) + xi . x`` with a fresh
``xi``, which shifts the gradient by ``xi`` and leaves the Hessian (Newton) unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch.optim.optimizer import ParamsT

from .._checks import integer, number
from ..config import MAX_SEED
from ..errors import UserError
from ..optim import registry
from ..optim.registry import Hyper
from .surfaces import Surface

#: Updates one run may take (each keeps its point on the path).
MAX_STEPS = 100_000

#: A run stops ("diverged") once the parameters leave this radius or stop being finite.
DIVERGED = 1e6


@dataclass(frozen=True)
class LabOptimizer:
    """A lab optimizer: a registered optimizer (:mod:`gradwise.optim.registry`) with some of
    its hyperparameters fixed (``fixed``), others shown with the lab's own defaults
    (``defaults``; ``lr`` None: the surface's), e.g. ``momentum`` = SGD with ``momentum=0.9``
    and ``nesterov=False``. ``build(params, values)`` makes the optimizer."""

    name: str
    title: str
    optimizer: str
    shown: tuple[str, ...]
    fixed: dict = field(default_factory=dict)
    defaults: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    @property
    def entry(self) -> registry.Entry:
        return registry.get(self.optimizer)

    @property
    def hypers(self) -> tuple[Hyper, ...]:
        """The hyperparameters a user may set, with the lab's defaults."""
        defaults = {"lr": None, **self.defaults}
        return tuple(replace(self.entry.hyper(n), default=defaults[n]) if n in defaults
                     else self.entry.hyper(n) for n in self.shown)

    @property
    def newton(self) -> bool:
        """Whether the closure is evaluated without backward (Newton builds its Hessian)."""
        return self.optimizer == "newton"

    def hyper(self, key: str) -> Hyper:
        """The hyperparameter ``key``; a UserError lists the accepted ones."""
        return registry.find_hyper(self.name, self.hypers, key)

    def build(self, params: ParamsT, values: dict) -> torch.optim.Optimizer:
        return self.entry.build(params, {**values, **self.fixed}, **self.extra)


_ADAM = ("lr", "beta1", "beta2", "eps", "eps_inside", "weight_decay", "amsgrad")

#: The lecture's variants, by lab name: registered optimizers with some settings fixed.
PRESETS: dict[str, LabOptimizer] = {o.name: o for o in (
    LabOptimizer("sgd", "SGD", "sgd", ("lr", "weight_decay"), fixed={"momentum": 0.0}),
    LabOptimizer("momentum", "SGD + momentum", "sgd",
                 ("lr", "momentum", "form", "dampening", "weight_decay"),
                 fixed={"nesterov": False}, defaults={"momentum": 0.9}),
    LabOptimizer("nesterov", "Nesterov momentum", "sgd", ("lr", "momentum", "form",
                                                          "weight_decay"),
                 fixed={"nesterov": True}, defaults={"momentum": 0.9}),
    LabOptimizer("adagrad", "AdaGrad", "adagrad",
                 ("lr", "lr_decay", "eps", "eps_inside", "initial_accumulator_value",
                  "weight_decay")),
    LabOptimizer("rmsprop", "RMSProp", "rmsprop",
                 ("lr", "alpha", "eps", "eps_inside", "momentum", "centered", "weight_decay")),
    LabOptimizer("adam", "Adam", "adam", _ADAM),
    LabOptimizer("adamw", "AdamW", "adamw", _ADAM),
    LabOptimizer("adam-nobc", "Adam, no bias correction", "adam", _ADAM,
                 extra={"bias_correction": False}),
    LabOptimizer("newton", "Newton", "newton", ("lr", "damping"), defaults={"lr": 1.0}),
    LabOptimizer("lbfgs", "L-BFGS", "lbfgs", ("lr", "history_size", "line_search"),
                 defaults={"lr": 1.0, "history_size": 10},
                 extra={"max_iter": 1, "tolerance_grad": 1e-12, "tolerance_change": 1e-15}),
)}


class _LabOptimizers(Mapping):
    """Lab name -> :class:`LabOptimizer`: the presets, then every other registered optimizer
    with all its hyperparameters (read live, so a newly registered one shows up)."""

    def _plain(self) -> list[str]:
        return [n for n in registry.names() if n not in PRESETS]

    def __getitem__(self, name: str) -> LabOptimizer:
        if name in PRESETS:
            return PRESETS[name]
        if name in self._plain():
            entry = registry.get(name)
            return LabOptimizer(name, name, name, tuple(h.name for h in entry.hypers))
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter([*PRESETS, *self._plain()])

    def __len__(self) -> int:
        return len(PRESETS) + len(self._plain())


#: The lab's optimizers, by lab name.
OPTIMIZERS: Mapping[str, LabOptimizer] = _LabOptimizers()


def get_optimizer(name: str) -> LabOptimizer:
    if name not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {name!r}; accepted: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name]


def default_lr(surface: Surface, name: str) -> float:
    """The learning rate the lab starts optimizer ``name`` with on ``surface``: the surface's
    choice for its family, else the optimizer's registered default."""
    lr = surface.default_lr(name)
    return get_optimizer(name).entry.hyper("lr").default if lr is None else lr


def resolve_hypers(name: str, surface: Surface, given: dict | None = None) -> dict:
    """All hyperparameters of optimizer ``name``: ``given`` (validated) over the defaults,
    with the surface's default learning rate."""
    spec = get_optimizer(name)
    values = {h.name: h.default for h in spec.hypers}
    if values.get("lr") is None:
        values["lr"] = default_lr(surface, name)
    for key, raw in (given or {}).items():
        values[key] = spec.hyper(key).parse(name, raw)
    return values


@dataclass
class Run:
    """One optimizer's run: the path ``x_0 .. x_n`` (``(n+1, 2)``), the loss at each point
    (without noise) and the metrics."""

    optimizer: str
    hypers: dict
    path: np.ndarray
    loss: np.ndarray
    evals: int
    status: str
    tol: float
    minimum: tuple[float, float] | None
    saddle: tuple[float, float] | None
    escape_radius: float = 1.0
    noise: float = 0.0
    #: Evaluations done when each point of the path was reached (``evals_per_step[0] = 0``).
    evals_per_step: np.ndarray | None = None

    @property
    def steps(self) -> int:
        """Updates taken (fewer than asked where the run diverged)."""
        return len(self.path) - 1

    @property
    def step_sizes(self) -> np.ndarray:
        """``|x_{t+1} - x_t|`` for each update."""
        return np.linalg.norm(np.diff(self.path, axis=0), axis=1)

    @property
    def first_step(self) -> float | None:
        return float(self.step_sizes[0]) if self.steps else None

    @property
    def distances(self) -> np.ndarray | None:
        """``|x_t - x*|`` to the global minimum, or None where the surface has none."""
        if self.minimum is None:
            return None
        return np.linalg.norm(self.path - np.asarray(self.minimum), axis=1)

    @property
    def final_distance(self) -> float | None:
        d = self.distances
        return None if d is None else float(d[-1])

    @property
    def final_loss(self) -> float:
        return float(self.loss[-1])

    @property
    def steps_to_tol(self) -> int | None:
        """The first step ``t`` with ``|x_t - x*| <= tol`` (None: never, or no minimum)."""
        d = self.distances
        if d is None:
            return None
        hits = np.flatnonzero(d <= self.tol)
        return int(hits[0]) if len(hits) else None

    @property
    def evals_to_tol(self) -> int | None:
        """Loss and gradient evaluations up to :attr:`steps_to_tol` (Newton's also build a
        Hessian; L-BFGS's line search takes several per step)."""
        t = self.steps_to_tol
        if t is None or self.evals_per_step is None:
            return None
        return int(self.evals_per_step[t])

    @property
    def escape_step(self) -> int | None:
        """The first step that leaves the saddle point's neighbourhood (radius
        ``escape_radius``) after the path has been inside it (None: never inside, never out
        again, or no saddle)."""
        if self.saddle is None:
            return None
        inside = np.linalg.norm(self.path - np.asarray(self.saddle), axis=1) <= self.escape_radius
        if not inside.any():
            return None
        entered = int(np.argmax(inside))
        out = np.flatnonzero(~inside[entered:])
        return entered + int(out[0]) if len(out) else None

    @property
    def tail_distance(self) -> float | None:
        """The root-mean-square distance to the minimum over the last fifth of the run: where
        the gradient is noisy, a steadier number than the final distance."""
        d = self.distances
        if d is None:
            return None
        tail = d[len(d) - max(1, len(d) // 5):]
        return float(np.sqrt(np.mean(tail ** 2)))

    @property
    def rate(self) -> float | None:
        """The measured per-step contraction over the second half of the run (see
        :func:`measured_rate`)."""
        d = self.distances
        if d is None or self.steps < 4:
            return None
        return measured_rate(d, self.steps // 2, self.steps)

    def summary(self) -> dict:
        """The metrics as plain numbers (None where they do not apply)."""
        return dict(optimizer=self.optimizer, settings=settings_text(self.hypers),
                    steps=self.steps, evals=self.evals, first_step=self.first_step,
                    final_loss=self.final_loss, final_distance=self.final_distance,
                    tail_distance=self.tail_distance, steps_to_tol=self.steps_to_tol,
                    evals_to_tol=self.evals_to_tol, escape_step=self.escape_step,
                    rate=self.rate, status=self.status)


def measured_rate(distances: ArrayLike, first: int, last: int,
                  floor: float = 1e-250) -> float | None:
    """The geometric-mean contraction per step, ``(d_last / d_first) ** (1 / (last - first))``,
    of the distances ``d_t = |x_t - x*|``; the window ends early where ``d_t`` reaches
    ``floor`` (underflow) and the rate is None where fewer than 2 steps are left."""
    d = np.asarray(distances, dtype=np.float64)
    last = min(last, len(d) - 1)
    tiny = np.flatnonzero(d[first:last + 1] <= floor)
    if len(tiny):
        last = first + int(tiny[0]) - 1
    if last - first < 2 or d[first] <= 0:
        return None
    return float((d[last] / d[first]) ** (1.0 / (last - first)))


def settings_text(hypers: dict) -> str:
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in hypers.items())


def run(surface: Surface, optimizer: str, steps: int | None = None, *, hypers: dict | None = None,
        start: Sequence[float] | None = None, noise: float = 0.0, seed: int = 0, tol: float = 1e-3,
        escape_radius: float = 1.0) -> Run:
    """Run lab optimizer ``optimizer`` (see :data:`OPTIMIZERS`) for ``steps`` updates from
    ``start`` (default: the surface's) and return the :class:`Run`.

    One update is one ``opt.step`` (for L-BFGS one iteration with its line search: several
    evaluations, counted in ``evals``). The run stops early where the parameters stop being
    finite or leave ``|x| <= 1e6`` (status ``diverged``) or where Newton's system is singular.
    """
    steps = integer("steps", surface.steps if steps is None else steps, 1, maximum=MAX_STEPS)
    noise = number("noise", noise, 0)
    tol = number("tol", tol, 0, open_low=True)
    escape_radius = number("escape_radius", escape_radius, 0, open_low=True)
    seed = integer("seed", seed, 0, maximum=MAX_SEED)
    spec = get_optimizer(optimizer)
    values = resolve_hypers(optimizer, surface, hypers)
    x0 = surface.start if start is None else start
    p = torch.tensor([float(x0[0]), float(x0[1])], dtype=torch.float64, requires_grad=True)
    try:
        opt = spec.build([p], values)
    except ValueError as exc:
        raise UserError(f"optimizer {optimizer!r}: {exc}") from None
    gen = torch.Generator().manual_seed(seed)
    evals = 0

    def objective():
        nonlocal evals
        evals += 1
        try:
            loss = surface(p)
        except Exception as exc:  # a user's function that fails somewhere on the path
            point = tuple(round(float(v), 6) for v in p.detach())
            raise UserError(f"surface {surface.name!r} fails at {point} "
                            f"({type(exc).__name__}: {exc})") from None
        if noise:
            xi = noise * torch.randn(2, generator=gen, dtype=torch.float64)
            loss = loss + (xi * p).sum()
        return loss

    def closure():
        opt.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    path = [p.detach().clone()]
    counts = [0]
    status = "ok"
    for t in range(1, steps + 1):
        try:
            if spec.newton:
                opt.step(objective)
            elif optimizer == "lbfgs":
                opt.step(closure)
            else:
                closure()
                opt.step()
        except torch.linalg.LinAlgError:
            status = f"singular Hessian at step {t}"
            break
        x = p.detach().clone()
        if not bool(torch.isfinite(x).all()) or float(x.abs().max()) > DIVERGED:
            status = f"diverged at step {t}"
            break
        path.append(x)
        counts.append(evals)
    path_np = torch.stack(path).numpy()
    return Run(optimizer=optimizer, hypers=values, path=path_np, loss=_losses(surface, path_np),
               evals=evals, status=status, evals_per_step=np.array(counts), tol=tol,
               minimum=surface.minimum, saddle=surface.saddle, escape_radius=escape_radius,
               noise=noise)


def _losses(surface: Surface, path: np.ndarray) -> np.ndarray:
    """``f`` at each point of the path, without noise (all at once where ``f`` is
    elementwise, else point by point)."""
    points = torch.from_numpy(path)
    with torch.no_grad():
        try:
            loss = surface(points)
            if isinstance(loss, torch.Tensor) and loss.shape == (len(path),):
                return loss.numpy()
        except Exception:
            pass
        return np.array([float(surface(row)) for row in points])


def compare(surface: Surface, optimizers: str | Iterable[str], steps: int | None = None, *,
            hypers: dict | None = None, **kwargs: Any) -> list[Run]:
    """:func:`run` for each of ``optimizers`` from the same start; ``hypers`` maps an
    optimizer name to its settings. Everything is validated before the first run."""
    optimizers = parse_optimizers(optimizers)
    hypers = dict(hypers or {})
    for name in hypers:
        if name not in optimizers:
            raise UserError(f"settings given for {name!r}, which is not among the optimizers "
                            f"run ({', '.join(optimizers)})")
    for name in optimizers:
        resolve_hypers(name, surface, hypers.get(name))
    return [run(surface, name, steps, hypers=hypers.get(name), **kwargs) for name in optimizers]


def parse_optimizers(optimizers: str | Iterable[str]) -> list[str]:
    """A list of known, distinct optimizer names from a list or a comma-separated string."""
    if isinstance(optimizers, str):
        optimizers = [o.strip() for o in optimizers.split(",") if o.strip()]
    names = list(optimizers)
    if not names:
        raise UserError(f"no optimizers given; accepted: {', '.join(OPTIMIZERS)}")
    for name in names:
        get_optimizer(name)
    if len(set(names)) != len(names):
        raise UserError(f"optimizers {','.join(names)!r} name one twice; give each once")
    return names
