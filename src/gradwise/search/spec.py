"""A search config: the base training config, the space and the settings, loaded and checked
before any trial runs, and the training config of one trial.

A search config is trusted as much as a script: the base, a choice or an override may name
``python:module:function``, which runs that code. Everything that decides what a trial runs
comes from here, never from a storage (see :mod:`gradwise.search.study`).
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from .. import train
from ..config import Config, read_yaml, set_key, split_key, validate
from ..errors import UserError
from .space import Space, parse_space
from .stages import Settings, parse_settings


@dataclass(frozen=True)
class SearchSpec:
    """A search config: the base training config (a dict), the space and the settings."""

    name: str
    base: dict
    space: Space
    settings: Settings

    def fingerprint(self) -> str:
        """A hash of what decides the trials (not the heartbeat); workers must agree on it."""
        s = self.settings
        data = {"base": self.base, "space": self.space.to_json(),
                "stages": [asdict(st) for st in s.stages], "sampler": s.sampler,
                "metric": s.metric, "pruner": s.pruner, "seed": s.seed, "margin": s.margin,
                "min_width": s.min_width}
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def load_search(source: str | Path | dict, overrides: dict | None = None,
                check: bool = True) -> SearchSpec:
    """The SearchSpec of a YAML file (or dict): the usual config keys (or a ``base:``
    mapping) beside ``space:`` and ``search:``. ``overrides`` set base keys
    (``train.epochs``), search settings (``search.sampler``) or ranges
    (``space.optimizer.lr``). With ``check``, :func:`check_spec` runs, so that a bad key,
    option or choice fails here, before any trial runs."""
    raw = read_yaml(Path(source)) if not isinstance(source, dict) else copy.deepcopy(source)
    if "space" not in raw:
        raise UserError("a search config needs a 'space:' section, e.g. "
                        "space: {optimizer.lr: loguniform(1e-4, 1e-1)}")
    overrides = dict(overrides or {})
    space_raw, search_raw = raw.pop("space"), raw.pop("search", None)
    for key in list(overrides):
        parts = split_key(key, f"--set {key}")
        if parts[0] not in ("space", "search"):
            continue
        value = overrides.pop(key)
        rest = ".".join(parts[1:])
        if parts[0] == "space" and rest and isinstance(space_raw, dict):
            space_raw = {**space_raw, rest: value}
        elif parts[0] == "search" and len(parts) == 2 and isinstance(search_raw or {}, dict):
            search_raw = {**(search_raw or {}), rest: value}
        else:
            raise UserError(f"--set {key}: set one range (space.optimizer.lr=...) or one "
                            "whole search setting (search.sampler=grid, "
                            "search.stages=[{trials: 8, epochs: 2}])")
    space = parse_space(space_raw)
    settings = parse_settings(search_raw)
    if "base" in raw:
        extra = set(raw) - {"base", "name"}
        if extra:
            raise UserError(f"with 'base:', the config keys go inside it; move "
                            f"{', '.join(sorted(extra))} into base")
        name = raw.get("name")
        raw = dict(raw["base"] or {})
        if name is not None:
            raw["name"] = name
    for key, value in overrides.items():
        set_key(raw, key, value, where="--set")
    name = str(raw.get("name") or (Path(source).stem if not isinstance(source, dict)
                                   else "search"))
    spec = SearchSpec(name, raw, space, settings)
    if settings.plot:
        numeric = [d.key for d in space if d.kind != "choice"]
        for key in settings.plot:
            if key not in numeric:
                raise UserError(f"search.plot: {key!r} is not a numeric key of the space "
                                f"(numeric keys: {', '.join(numeric) or 'none'})")
    if check:
        check_spec(spec)
    return spec


def check_spec(spec: SearchSpec) -> None:
    """Raise a UserError for a space whose keys or values the training config rejects.

    The config at each bound of every numeric range is validated; the config at the middle of
    the ranges, and the one for each value of each choice (the other keys at the middle), go
    through :func:`gradwise.train.check` (the Trainer a trial builds: data, model, optimizer,
    schedule; the global random state left as it was), so an unknown option, model or
    ``python:module:function`` fails here, not at trial time."""
    epochs = spec.settings.stages[0].epochs
    middle = spec.space.midpoint()
    for dim in spec.space:
        if dim.kind != "choice":
            for bound in (dim.low, dim.high):
                _checked_config(spec, {**middle, dim.key: dim.decode(bound)}, epochs)
    configs = [("the config at the middle of the ranges", middle)]
    configs += [(f"the config with {dim.key}={value!r}", {**middle, dim.key: value})
                for dim in spec.space if dim.kind == "choice" for value in dim.choices[1:]]
    for what, params in configs:
        config = _checked_config(spec, params, epochs)
        try:
            train.check(config)
        except UserError as exc:
            raise UserError(f"space: {what} is rejected: {exc}") from None


def trial_config(spec: SearchSpec, params: dict, epochs: int) -> Config:
    """The training Config of one trial: the base, the trial's values, the stage's epochs."""
    raw = copy.deepcopy(spec.base)
    for key, value in params.items():
        set_key(raw, key, value, where="space:")
    set_key(raw, "train.epochs", epochs, where="space:")
    raw.setdefault("name", spec.name)
    return validate(raw)


def with_settings(spec: SearchSpec, **changes: Any) -> SearchSpec:
    """``spec`` with some settings replaced (e.g. ``sampler="grid"`` for a comparison)."""
    return replace(spec, settings=replace(spec.settings, **changes))


def _checked_config(spec: SearchSpec, params: dict, epochs: int) -> Config:
    try:
        return trial_config(spec, params, epochs)
    except UserError as exc:
        shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
        raise UserError(f"space: a config of the space is rejected ({shown}): {exc}") from None
