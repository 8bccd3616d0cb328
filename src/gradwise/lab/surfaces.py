"""The lab's 2-D loss surfaces, and the ``python:module:function`` loader for a user's own.

Every surface is a function ``f(x, y)`` of two float64 tensors built from elementwise torch
operations, so the same code gives the loss at one point (with autograd, for the optimizers)
and on a whole grid (for the contour plots).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from .._checks import number
from ..errors import UserError

Fn = Callable[[Tensor, Tensor], Tensor]

#: The learning-rate families: each first-order optimizer takes its family's default rate.
LR_FAMILIES = {"sgd": "sgd", "momentum": "momentum", "nesterov": "nesterov",
               "adagrad": "adagrad", "rmsprop": "rmsprop", "adam": "adam", "adamw": "adam",
               "adam-nobc": "adam", "newton": "newton", "lbfgs": "lbfgs"}


@dataclass(frozen=True)
class Surface:
    """A 2-D loss ``f(x, y)`` with what the lab needs to run and draw on it.

    ``minimum`` is the global minimiser (None where the surface is unbounded below or it is
    unknown), ``saddle`` a saddle point the pictures are about (or None). ``lrs`` holds the
    default learning rate per family (see :data:`LR_FAMILIES`), ``steps`` the default run length.
    """

    name: str
    formula: str
    fn: Fn
    start: tuple[float, float]
    window: tuple[float, float, float, float] | None
    minimum: tuple[float, float] | None = None
    saddle: tuple[float, float] | None = None
    lrs: dict[str, float] = field(default_factory=dict)
    steps: int = 100
    params: dict[str, float] = field(default_factory=dict)

    def __call__(self, xy: Tensor) -> Tensor:
        """The loss at ``xy`` (last dimension 2)."""
        return self.fn(xy[..., 0], xy[..., 1])

    @property
    def minimum_value(self) -> float | None:
        if self.minimum is None:
            return None
        return float(self(torch.tensor(self.minimum, dtype=torch.float64)))

    def default_lr(self, optimizer: str) -> float | None:
        """The learning rate that shows ``optimizer`` well here (None: no family known)."""
        family = LR_FAMILIES.get(optimizer)
        return None if family is None else self.lrs.get(family, 1.0)

    def grid(self, window: tuple[float, float, float, float],
             n: int = 160) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(X, Y, Z)`` numpy arrays of the loss on an ``n x n`` grid over ``window``
        (a coarser one, point by point, for a user's function that takes only scalars)."""
        X, Y = _mesh(window, n)
        with torch.no_grad():
            try:
                Z = self.fn(X, Y)
                ok = isinstance(Z, Tensor) and Z.shape == X.shape
            except Exception:
                ok = False
            if not ok:
                X, Y = _mesh(window, min(n, 60))
                Z = torch.tensor([[float(self.fn(a, b)) for a, b in zip(rx, ry, strict=True)]
                                  for rx, ry in zip(X, Y, strict=True)], dtype=torch.float64)
        return X.numpy(), Y.numpy(), Z.numpy()


def _mesh(window: tuple[float, float, float, float], n: int) -> tuple[Tensor, Tensor]:
    x0, x1, y0, y1 = window
    xs = torch.linspace(x0, x1, n, dtype=torch.float64)
    ys = torch.linspace(y0, y1, n, dtype=torch.float64)
    X, Y = torch.meshgrid(xs, ys, indexing="xy")
    return X, Y


@dataclass(frozen=True)
class Param:
    """A surface parameter: its default and the accepted range."""

    default: float
    low: float = -math.inf
    high: float = math.inf
    open_low: bool = False
    help: str = ""


def _rotate(point, degrees: float) -> tuple[float, float]:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    x, y = point
    return (c * x - s * y, s * x + c * y)


def _lrs(sgd, momentum, nesterov, adagrad, rmsprop, adam) -> dict[str, float]:
    return dict(sgd=sgd, momentum=momentum, nesterov=nesterov, adagrad=adagrad,
                rmsprop=rmsprop, adam=adam, newton=1.0, lbfgs=1.0)


TACO_START = (-4.0, 1.5)
TACO_WINDOW = (-5.0, 5.0, -2.0, 2.0)


def _quadratic_lrs(cond: float) -> dict[str, float]:
    # L = cond: plain GD just under its limit 2/L (the zig-zag), the momentum methods at a
    # rate well inside their stability limits (heavy ball lr*L < 2(1+mu) = 3.8, Nesterov
    # lr*L < 2(1+mu)/(1+2mu) = 1.36 for mu = 0.9).
    return _lrs(sgd=1.8 / cond, momentum=0.3 / cond, nesterov=0.3 / cond,
                adagrad=1.0, rmsprop=0.1, adam=0.1)


def taco(cond: float = 50.0) -> Surface:
    """The taco-shell valley ``f = (x^2 + cond * y^2) / 2``: Hessian ``diag(1, cond)``."""
    return Surface(
        name="taco", formula=f"(x^2 + {cond:g} y^2) / 2",
        fn=lambda x, y: 0.5 * (x * x + cond * y * y),
        start=TACO_START, window=TACO_WINDOW, minimum=(0.0, 0.0),
        lrs=_quadratic_lrs(cond), steps=150, params={"cond": cond})


def rotated(cond: float = 50.0, angle: float = 45.0) -> Surface:
    """The taco valley turned by ``angle`` degrees: ``f = (u^2 + cond * v^2) / 2`` with
    ``(u, v)`` the point rotated back by ``angle``. The start is the taco's start rotated the
    same way, so a rotation-invariant method (GD, momentum, Newton) takes the same path, turned.
    """
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))

    def fn(x, y):
        u = c * x + s * y
        v = -s * x + c * y
        return 0.5 * (u * u + cond * v * v)

    x0, x1, y0, y1 = TACO_WINDOW
    corners = [_rotate(p, angle) for p in ((x0, y0), (x0, y1), (x1, y0), (x1, y1))]
    half = max(max(abs(a) for a, _ in corners), max(abs(b) for _, b in corners))
    return Surface(
        name="rotated", formula=f"taco (cond {cond:g}) rotated by {angle:g} deg", fn=fn,
        start=_rotate(TACO_START, angle), window=(-half, half, -half * 0.8, half * 0.8),
        minimum=(0.0, 0.0), lrs=_quadratic_lrs(cond), steps=150,
        params={"cond": cond, "angle": angle})


def saddle() -> Surface:
    """``f = x^2 - y^2``: a saddle point at the origin, unbounded below along y."""
    return Surface(
        name="saddle", formula="x^2 - y^2", fn=lambda x, y: x * x - y * y,
        start=(0.8, 1e-3), window=(-1.0, 1.0, -1.5, 1.5), saddle=(0.0, 0.0),
        lrs=_lrs(sgd=0.01, momentum=0.01, nesterov=0.01, adagrad=0.1, rmsprop=0.01,
                 adam=0.01), steps=400)


def monkey() -> Surface:
    """The monkey saddle ``f = x^3 - 3 x y^2``: gradient and Hessian both vanish at the origin."""
    return Surface(
        name="monkey", formula="x^3 - 3 x y^2", fn=lambda x, y: x ** 3 - 3 * x * y * y,
        start=(0.8, 1e-3), window=(-1.5, 1.5, -1.5, 1.5), saddle=(0.0, 0.0),
        lrs=_lrs(sgd=0.01, momentum=0.01, nesterov=0.01, adagrad=0.1, rmsprop=0.01,
                 adam=0.01), steps=200)


def wells(tilt: float = 0.3) -> Surface:
    """Two wells: ``f = x^4/4 - x^2/2 + tilt * x + y^2/2``. For ``0 < tilt < 0.38`` it has a
    global minimum (x < 0), a local minimum (x > 0) and a saddle point between them."""
    roots = sorted(r.real for r in np.roots([1.0, 0.0, -1.0, tilt]) if abs(r.imag) < 1e-12)
    if len(roots) == 3:
        minimum = (roots[0] if tilt >= 0 else roots[2], 0.0)
        saddle_point = (roots[1], 0.0)
    else:
        minimum, saddle_point = (roots[0], 0.0), None
    return Surface(
        name="wells", formula=f"x^4/4 - x^2/2 + {tilt:g} x + y^2/2",
        fn=lambda x, y: 0.25 * x ** 4 - 0.5 * x * x + tilt * x + 0.5 * y * y,
        start=(2.0, 1.0), window=(-2.0, 2.2, -1.2, 1.2), minimum=minimum, saddle=saddle_point,
        lrs=_lrs(sgd=0.05, momentum=0.05, nesterov=0.05, adagrad=0.5, rmsprop=0.02,
                 adam=0.05), steps=150, params={"tilt": tilt})


def rosenbrock(a: float = 1.0, b: float = 100.0) -> Surface:
    """Rosenbrock's banana ``f = (a - x)^2 + b (y - x^2)^2``, minimum at ``(a, a^2)``."""
    return Surface(
        name="rosenbrock", formula=f"({a:g} - x)^2 + {b:g} (y - x^2)^2",
        fn=lambda x, y: (a - x) ** 2 + b * (y - x * x) ** 2,
        start=(-1.5, 2.0), window=(-2.0, 2.0, -1.0, 3.0), minimum=(a, a * a),
        lrs=_lrs(sgd=1e-3, momentum=1e-3, nesterov=1e-3, adagrad=0.5, rmsprop=1e-2,
                 adam=0.1), steps=1000, params={"a": a, "b": b})


def beale() -> Surface:
    """Beale's function, minimum 0 at ``(3, 0.5)``."""

    def fn(x, y):
        return ((1.5 - x + x * y) ** 2 + (2.25 - x + x * y * y) ** 2
                + (2.625 - x + x * y ** 3) ** 2)

    return Surface(
        name="beale", formula="(1.5 - x + xy)^2 + (2.25 - x + xy^2)^2 + (2.625 - x + xy^3)^2",
        fn=fn, start=(1.0, 1.5), window=(-4.5, 4.5, -4.5, 4.5), minimum=(3.0, 0.5),
        lrs=_lrs(sgd=3e-2, momentum=3e-3, nesterov=3e-3, adagrad=1.0, rmsprop=3e-2,
                 adam=0.1), steps=500)


#: The built-in surfaces: factory and parameters (name -> Param).
SURFACES: dict[str, tuple[Callable[..., Surface], dict[str, Param]]] = {
    "taco": (taco, {"cond": Param(50.0, 1.0, help="condition number L/mu")}),
    "rotated": (rotated, {"cond": Param(50.0, 1.0, help="condition number L/mu"),
                          "angle": Param(45.0, -360.0, 360.0, help="rotation in degrees")}),
    "saddle": (saddle, {}),
    "monkey": (monkey, {}),
    "wells": (wells, {"tilt": Param(0.3, 0.0, 0.38, open_low=True,
                                    help="linear tilt: which well is deeper")}),
    "rosenbrock": (rosenbrock, {"a": Param(1.0), "b": Param(100.0, 0.0, open_low=True)}),
    "beale": (beale, {}),
}


def surface_names() -> tuple[str, ...]:
    return (*SURFACES, "python:MODULE:FUNCTION")


def get_surface(spec: str, params: dict | None = None) -> Surface:
    """The surface named ``spec`` (one of :data:`SURFACES` or ``python:module:function``)
    with parameters ``params`` (numbers or strings), validated."""
    params = dict(params or {})
    if not isinstance(spec, str):
        raise UserError(f"surface {spec!r} is invalid; accepted: {', '.join(surface_names())}")
    if spec.startswith("python:"):
        if params:
            raise UserError(f"surface {spec!r} takes no parameters (got "
                            f"{', '.join(sorted(params))}); give them defaults in the function")
        return load_python(spec)
    if spec not in SURFACES:
        raise UserError(f"unknown surface {spec!r}; accepted: {', '.join(surface_names())}")
    factory, accepted = SURFACES[spec]
    values = {}
    for key, raw in params.items():
        if key not in accepted:
            raise UserError(f"surface {spec!r} has no parameter {key!r}; accepted: "
                            f"{', '.join(accepted) or 'none'}")
        p = accepted[key]
        values[key] = number(f"surface.{key}", _as_number(raw), p.low, p.high,
                             open_low=p.open_low)
    return factory(**values)


def _as_number(raw):
    if isinstance(raw, str):
        try:
            return float(raw)
        except ValueError:
            return raw
    return raw


def load_python(spec: str) -> Surface:
    """A user's surface from ``python:module:function``.

    The function takes two 0-d float64 tensors ``x, y`` and returns the loss as a 0-d tensor,
    written with torch operations so autograd can differentiate it (elementwise ones also let
    the contour plot evaluate it on a whole grid at once). Optional attributes of the function:
    ``start`` (default ``(1, 1)``), ``minimum``, ``saddle``, ``window`` ``(x0, x1, y0, y1)``
    (default: around the paths), ``lrs`` (default rate per family) and ``steps``.
    """
    parts = spec.split(":")
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise UserError(f"surface {spec!r} is invalid; expected python:MODULE:FUNCTION, e.g. "
                        "python:mysurfaces:bowl")
    _, module_name, attr = parts
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise UserError(f"surface {spec!r}: module {module_name!r} does not import "
                        f"({type(exc).__name__}: {exc})") from None
    fn = getattr(module, attr, None)
    if fn is None:
        names = [n for n in dir(module) if not n.startswith("_")
                 and callable(getattr(module, n))]
        raise UserError(f"surface {spec!r}: module {module_name!r} has no {attr!r}; its "
                        f"callables: {', '.join(names) or 'none'}")
    if not callable(fn):
        raise UserError(f"surface {spec!r}: {attr!r} is a {type(fn).__name__}, not callable; "
                        "give a function f(x, y) -> 0-d tensor")
    start = _point(spec, "start", getattr(fn, "start", (1.0, 1.0)))
    minimum = getattr(fn, "minimum", None)
    saddle_point = getattr(fn, "saddle", None)
    window = getattr(fn, "window", None)
    if window is not None:
        window = tuple(number(f"{spec} window", w) for w in window)
        if len(window) != 4 or window[0] >= window[1] or window[2] >= window[3]:
            raise UserError(f"surface {spec!r}: window={window!r} must be (x0, x1, y0, y1) "
                            "with x0 < x1 and y0 < y1")
    lrs = _lrs(sgd=0.01, momentum=0.01, nesterov=0.01, adagrad=0.1, rmsprop=0.01, adam=0.01)
    lrs.update(getattr(fn, "lrs", {}))
    surface = Surface(
        name=spec, formula=spec, fn=fn, start=start, window=window,
        minimum=None if minimum is None else _point(spec, "minimum", minimum),
        saddle=None if saddle_point is None else _point(spec, "saddle", saddle_point),
        lrs=lrs, steps=int(getattr(fn, "steps", 100)))
    check_scalar(surface, start)
    return surface


def _point(spec: str, what: str, value) -> tuple[float, float]:
    try:
        x, y = value
        return (number(f"{spec} {what}[0]", x), number(f"{spec} {what}[1]", y))
    except (TypeError, ValueError):
        raise UserError(f"surface {spec!r}: {what}={value!r} must be a pair of finite numbers "
                        "(x, y)") from None


def check_scalar(surface: Surface, point: tuple[float, float]) -> None:
    """Raise UserError unless the surface returns a finite, differentiable scalar at ``point``."""
    xy = torch.tensor(point, dtype=torch.float64, requires_grad=True)
    try:
        value = surface(xy)
    except Exception as exc:
        raise UserError(f"surface {surface.name!r} fails at {tuple(point)} "
                        f"({type(exc).__name__}: {exc}); it must take two 0-d tensors x, y") \
            from None
    if not isinstance(value, Tensor) or value.numel() != 1:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise UserError(f"surface {surface.name!r} returns {shape} at {tuple(point)}; it must "
                        "return a scalar (a 0-d tensor computed with torch from x and y)")
    if not value.requires_grad:
        raise UserError(f"surface {surface.name!r} returns a value autograd cannot "
                        "differentiate; compute it with torch operations on x and y")
    if not math.isfinite(float(value.detach())):
        raise UserError(f"surface {surface.name!r} is {float(value.detach())} at the start "
                        f"{tuple(point)}; it must be finite there")
