"""The search space: ``KEY: loguniform(a, b)`` lines of a YAML config, parsed and checked.

Forms (KEY is any dotted config key, e.g. ``optimizer.lr``, ``model.dropout``)::

    optimizer.lr: loguniform(1e-4, 1e-1)     # log10 x uniform in [log10 a, log10 b], a > 0
    model.dropout: uniform(0.0, 0.5)         # x uniform in [a, b]
    train.batch_size: int(32, 256)           # an integer in [a, b], uniform
    optimizer.name: choice([adam, sgd])      # one of the listed values

Each dimension is a :class:`Dimension`; a :class:`Space` maps keys to dimensions, knows its
midpoint (the centre of every range, on the log scale for loguniform: ``sqrt(a * b)``), and
turns values into the plain form Optuna stores (:meth:`Dimension.encode`) and back, refusing a
stored value that is not in the space (:meth:`Dimension.decode`): a value read from a shared
storage becomes one of this config's own values or nothing.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..errors import UserError

KINDS = ("loguniform", "uniform", "int", "choice")
_CALL = re.compile(r"^\s*([A-Za-z_]+)\s*\((.*)\)\s*$", re.S)
_PRIMITIVE = (str, int, float, bool, type(None))
#: integer bounds beyond this lose precision in a float (Optuna stores params as floats)
MAX_INT = 2 ** 53


@dataclass(frozen=True)
class Dimension:
    """One searched key: ``kind`` with ``[low, high]`` (numbers) or ``choices``."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple = field(default=())

    @property
    def log(self) -> bool:
        return self.kind == "loguniform"

    @property
    def bounds(self) -> tuple[float, float]:
        """``(low, high)`` of a range; a ValueError for a choice, which has none."""
        if self.low is None or self.high is None:
            raise ValueError(f"{self.key}: {self.kind}(...) has no range")
        return self.low, self.high

    def midpoint(self) -> Any:
        """The centre: ``sqrt(low * high)`` (log), ``(low + high) / 2`` or the first choice."""
        if self.kind == "choice":
            return self.choices[0]
        low, high = self.bounds
        if self.log:  # sqrt(low) * sqrt(high): low * high may underflow
            return math.sqrt(low) * math.sqrt(high)
        mid = (low + high) / 2
        return round(mid) if self.kind == "int" else mid

    def text(self) -> str:
        """The YAML form, ``loguniform(0.0001, 0.1)``."""
        if self.kind == "choice":
            return f"choice({yaml.safe_dump(list(self.choices), default_flow_style=True).strip()})"
        return f"{self.kind}({self.low:.6g}, {self.high:.6g})"

    def encode(self, value: object) -> str | int | float | bool | None:
        """``value`` as Optuna stores it: a plain scalar as is, a list or mapping as JSON text.

        >>> Dimension("model.hidden", "choice", choices=([32], [64])).encode([32])
        '[32]'
        """
        return value if isinstance(value, _PRIMITIVE) else json.dumps(value)

    def decode(self, stored: object) -> Any:
        """The config value of a value read from the storage: one of this dimension's own
        choices, or a number inside its range (to a relative 1e-9, for rounding); a
        ValueError for anything else.

        >>> Dimension("optimizer.name", "choice", choices=("adam", "sgd")).decode("sgd")
        'sgd'
        >>> Dimension("lr", "loguniform", 1e-4, 1e-1).decode(0.5)
        Traceback (most recent call last):
        ...
        ValueError: lr: 0.5 is outside loguniform(0.0001, 0.1)
        """
        if self.kind == "choice":
            for choice in self.choices:
                encoded = self.encode(choice)
                if type(encoded) is type(stored) and encoded == stored:
                    return choice
            raise ValueError(f"{self.key}: {stored!r} is not one of the choices")
        low, high = self.bounds
        slack = 1e-9 * (abs(low) + abs(high))
        if (not isinstance(stored, int | float) or isinstance(stored, bool)
                or not math.isfinite(stored) or not low - slack <= stored <= high + slack
                or (self.kind == "int" and stored != int(stored))):
            raise ValueError(f"{self.key}: {stored!r} is outside {self.text()}")
        return int(stored) if self.kind == "int" else float(stored)

    def to_json(self) -> dict:
        if self.kind == "choice":
            return {"kind": self.kind, "choices": list(self.choices)}
        return {"kind": self.kind, "low": self.low, "high": self.high}

    def with_range(self, low: float | None = None, high: float | None = None,
                   choices: Iterable[object] | None = None) -> Dimension:
        return Dimension(self.key, self.kind, self.low if low is None else low,
                         self.high if high is None else high,
                         self.choices if choices is None else tuple(choices))


@dataclass(frozen=True)
class Space:
    """The searched keys, in the order the config lists them."""

    dims: tuple[Dimension, ...]

    def __iter__(self) -> Iterator[Dimension]:
        return iter(self.dims)

    def __len__(self) -> int:
        return len(self.dims)

    def __getitem__(self, key: str) -> Dimension:
        for dim in self.dims:
            if dim.key == key:
                return dim
        raise KeyError(key)

    def keys(self) -> list[str]:
        return [d.key for d in self.dims]

    def midpoint(self) -> dict[str, Any]:
        return {d.key: d.midpoint() for d in self.dims}

    def to_json(self) -> dict:
        return {d.key: d.to_json() for d in self.dims}

    def decode(self, params: dict) -> dict[str, Any]:
        """A trial's stored params as config values (:meth:`Dimension.decode`), one per key of
        the space; a ValueError when a key is missing or a value is not in the space."""
        missing = [k for k in self.keys() if k not in params]
        if missing:
            raise ValueError(f"no value for {', '.join(missing)}")
        return {d.key: d.decode(params[d.key]) for d in self.dims}

    @classmethod
    def from_json(cls, data: dict) -> Space:
        return cls(tuple(Dimension(key, v["kind"], v.get("low"), v.get("high"),
                                   tuple(v.get("choices", ()))) for key, v in data.items()))


def parse_space(raw: object) -> Space:
    """The Space of a config's ``space:`` mapping; a UserError names the first bad entry.

    >>> parse_space({"optimizer.lr": "loguniform(1e-4, 1e-1)"})["optimizer.lr"].high
    0.1
    """
    if not isinstance(raw, dict) or not raw:
        raise UserError("space: expected a mapping of config keys to ranges, e.g. "
                        "'optimizer.lr: loguniform(1e-4, 1e-1)'")
    return Space(tuple(parse_dimension(str(key), value) for key, value in raw.items()))


def parse_dimension(key: str, text: object) -> Dimension:
    """One ``KEY: kind(args)`` entry.

    >>> parse_dimension("optimizer.lr", "loguniform(1e-4, 0.1)").text()
    'loguniform(0.0001, 0.1)'
    >>> parse_dimension("optimizer.name", "choice([adam, sgd])").choices
    ('adam', 'sgd')
    """
    where = f"space: {key}"
    if not key or not all(key.split(".")):
        raise UserError(f"{where}: the key is empty or has an empty part")
    if key == "train.epochs":
        raise UserError(f"{where}: the epochs are set by each stage (search.stages[].epochs), "
                        "not searched")
    match = _CALL.match(text) if isinstance(text, str) else None
    if match is None:
        raise UserError(f"{where}: expected one of {', '.join(k + '(...)' for k in KINDS)}, "
                        f"e.g. loguniform(1e-4, 1e-1) (got {text!r})")
    kind, inner = match.group(1), match.group(2).strip()
    if kind not in KINDS:
        raise UserError(f"{where}: unknown kind {kind!r}; accepted: {', '.join(KINDS)}")
    if kind == "choice":
        return Dimension(key, kind, choices=_choices(where, inner))
    args = _args(where, inner)
    if len(args) != 2:
        raise UserError(f"{where}: {kind}(low, high) takes two numbers (got {text!r})")
    low: float
    high: float
    if kind == "int":
        low, high = (_integer(where, a) for a in args)
    else:
        low, high = (_number(where, a) for a in args)
    shown = f"{kind}({args[0]}, {args[1]})"
    if not low < high:
        raise UserError(f"{where}: {shown}: low must be < high")
    if kind == "loguniform" and low <= 0:
        raise UserError(f"{where}: {shown}: both bounds must be > 0 "
                        "(the range is uniform on the log scale)")
    if not math.isfinite(high / low if kind == "loguniform" else high - low):
        raise UserError(f"{where}: {shown}: the range is too wide to sample and plot "
                        f"({'high / low' if kind == 'loguniform' else 'high - low'} overflows "
                        "a float)")
    return Dimension(key, kind, low, high)


def _args(where: str, inner: str) -> list:
    try:
        args = yaml.safe_load(f"[{inner}]")
    except yaml.YAMLError:
        raise UserError(f"{where}: cannot read the arguments {inner!r}") from None
    return args


def _choices(where: str, inner: str) -> tuple:
    try:
        value = yaml.safe_load(inner) if inner.startswith("[") else yaml.safe_load(f"[{inner}]")
    except yaml.YAMLError:
        raise UserError(f"{where}: cannot read the choices {inner!r}") from None
    if value is None:
        value = []
    if not isinstance(value, list):
        raise UserError(f"{where}: choice([...]) takes a list, e.g. choice([adam, sgd])")
    if not value:
        raise UserError(f"{where}: choice([]) is empty; list at least one value")
    values = tuple(_plain(v) for v in value)
    if len(set(map(repr, values))) != len(values):
        raise UserError(f"{where}: choice({list(value)}) lists a value twice")
    return values


def _plain(value):
    """YAML 1.1 reads ``1e-4`` as a string: such strings become floats."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _number(where: str, value) -> float:
    value = _plain(value)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UserError(f"{where}: {value!r} is not a finite number")
    return float(value)


def _integer(where: str, value) -> int:
    value = _plain(value)
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or value != int(value)):
        raise UserError(f"{where}: int(low, high) takes integers (got {value!r})")
    if abs(value) > MAX_INT:
        raise UserError(f"{where}: int(low, high): {value!r} is too large; the bounds must be "
                        f"within +-2**53 (exact as floats)")
    return int(value)
