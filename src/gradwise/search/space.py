"""The search space: ``KEY: loguniform(a, b)`` lines of a YAML config, parsed and checked.

Forms (KEY is any dotted config key, e.g. ``optimizer.lr``, ``model.dropout``)::

    optimizer.lr: loguniform(1e-4, 1e-1)     # log10 x uniform in [log10 a, log10 b], a > 0
    model.dropout: uniform(0.0, 0.5)         # x uniform in [a, b]
    train.batch_size: int(32, 256)           # an integer in [a, b], uniform
    optimizer.name: choice([adam, sgd])      # one of the listed values

Each dimension is a :class:`Dimension`; a :class:`Space` maps keys to dimensions, knows its
midpoint (the centre of every range, on the log scale for loguniform: ``sqrt(a * b)``) and
writes sampled values into a config dict.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..errors import UserError

KINDS = ("loguniform", "uniform", "int", "choice")
_CALL = re.compile(r"^\s*([A-Za-z_]+)\s*\((.*)\)\s*$", re.S)
_SHORTHAND = {"data": "source", "model": "name", "optimizer": "name", "schedule": "name"}


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

    def midpoint(self):
        """The centre: ``sqrt(low * high)`` (log), ``(low + high) / 2`` or the first choice."""
        if self.kind == "choice":
            return self.choices[0]
        if self.log:
            return math.sqrt(self.low * self.high)
        mid = (self.low + self.high) / 2
        return round(mid) if self.kind == "int" else mid

    def text(self) -> str:
        """The YAML form, ``loguniform(0.0001, 0.1)``."""
        if self.kind == "choice":
            return f"choice({yaml.safe_dump(list(self.choices), default_flow_style=True).strip()})"
        return f"{self.kind}({self.low:.6g}, {self.high:.6g})"

    def to_json(self) -> dict:
        if self.kind == "choice":
            return {"kind": self.kind, "choices": list(self.choices)}
        return {"kind": self.kind, "low": self.low, "high": self.high}

    def with_range(self, low=None, high=None, choices=None) -> Dimension:
        return Dimension(self.key, self.kind, self.low if low is None else low,
                         self.high if high is None else high,
                         self.choices if choices is None else tuple(choices))


@dataclass(frozen=True)
class Space:
    """The searched keys, in the order the config lists them."""

    dims: tuple[Dimension, ...]

    def __iter__(self):
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

    @classmethod
    def from_json(cls, data: dict) -> Space:
        return cls(tuple(Dimension(key, v["kind"], v.get("low"), v.get("high"),
                                   tuple(v.get("choices", ()))) for key, v in data.items()))


def parse_space(raw) -> Space:
    """The Space of a config's ``space:`` mapping; a UserError names the first bad entry.

    >>> parse_space({"optimizer.lr": "loguniform(1e-4, 1e-1)"})["optimizer.lr"].high
    0.1
    """
    if not isinstance(raw, dict) or not raw:
        raise UserError("space: expected a mapping of config keys to ranges, e.g. "
                        "'optimizer.lr: loguniform(1e-4, 1e-1)'")
    return Space(tuple(parse_dimension(str(key), value) for key, value in raw.items()))


def parse_dimension(key: str, text) -> Dimension:
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
    if kind == "int":
        low, high = (_integer(where, a) for a in args)
    else:
        low, high = (_number(where, a) for a in args)
    if not low < high:
        raise UserError(f"{where}: {kind}({args[0]}, {args[1]}): low must be < high")
    if kind == "loguniform" and low <= 0:
        raise UserError(f"{where}: loguniform({args[0]}, {args[1]}): both bounds must be > 0 "
                        "(the range is uniform on the log scale)")
    return Dimension(key, kind, low, high)


def set_key(raw: dict, key: str, value) -> None:
    """Write ``value`` at the dotted ``key`` of a config dict (shorthands like
    ``optimizer: adamw`` are expanded to ``{name: adamw}`` first).

    >>> raw = {"optimizer": "adamw"}; set_key(raw, "optimizer.lr", 0.01); raw
    {'optimizer': {'name': 'adamw', 'lr': 0.01}}
    """
    parts = key.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if isinstance(child, str) and i == 0 and part in _SHORTHAND:
            child = {_SHORTHAND[part]: child}
        if child is None:
            child = {}
        if not isinstance(child, dict):
            raise UserError(f"space: {key}: {'.'.join(parts[:i + 1])} is not a config section")
        node[part] = child = dict(child)
        node = child
    node[parts[-1]] = value


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
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise UserError(f"{where}: int(low, high) takes integers (got {value!r})")
    return int(value)
