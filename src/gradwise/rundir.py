"""Output folders: the one rule for what gradwise may write into, and the run directory.

**The rule.** gradwise writes a run, a search, an LR range test or a lab picture set only into
a folder that is new, empty, or marked by gradwise as its own of the same kind (a small
``.gradwise.json`` marker, written by :func:`claim`). A folder of another kind, a folder with
files gradwise did not write, or a file in the way is refused with a message naming it, before
anything is written. Folders written before markers existed are recognised by their files.

**The run directory** (:class:`RunDir`) owns the layout of ``runs/<name>/``::

    config.yaml          the resolved config
    metrics.jsonl        one JSON object per line (step, epoch and monitor records)
    checkpoints/last.pt  after every epoch; checkpoints/best.pt: the best validation epoch
    checkpoints/snapshot-K.pt  the weights at the end of cycle K of a snapshot ensemble
    summary.json         final metrics, diagnosis, warnings
    report.html          the page built from the files above

    >>> import tempfile
    >>> run = RunDir.create(tempfile.mkdtemp() + "/demo", "seed: 0\\n")
    >>> run.append({"epoch": 1, "step": 10, "val_accuracy": 0.9})
    >>> run.read_metrics()
    [{'epoch': 1, 'step': 10, 'val_accuracy': 0.9}]
    >>> kind_of(run.path)
    'run'
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import _io
from .errors import UserError

MARKER = ".gradwise.json"
#: What an output folder can be: its kind -> the sets of files that mark an unmarked (older)
#: one (any set will do).
KINDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "run": (("config.yaml", "metrics.jsonl"),),
    "search": (("study.db",), ("stages.json", "results.csv")),
    "lr-find": (("lr_find.json",),),
    "lab": (("runs.json", "table.csv"),),
    "lab-gallery": (("tables.md", "taco"),),
    "seeds": (("seeds.json",),),
    "ensemble": (("ensemble.json",),),
    "recipe": (("recipe.json", "phases.json"),),
}
_MARKER_MAX_BYTES = 4096


def kind_of(path: str | Path) -> str | None:
    """The kind of output folder ``path`` is (None: not a folder gradwise wrote)."""
    path = Path(path)
    marker = path / MARKER
    if marker.is_file():
        try:
            with open(marker, "rb") as f:
                data = json.loads(f.read(_MARKER_MAX_BYTES).decode("utf-8"))
            kind = data.get("kind") if isinstance(data, dict) else None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        return kind if kind in KINDS else None
    if path.is_dir():
        for kind, alternatives in KINDS.items():
            if any(all((path / name).exists() for name in files) for files in alternatives):
                return kind
    return None


def _temporary(name: str) -> bool:
    """A temporary file of gradwise's atomic writes (``.NAME.XXXX.tmp``), left by a kill."""
    return name.startswith(".") and name.endswith(".tmp")


def claim(path: str | Path, kind: str, create: bool = True) -> Path:
    """Make ``path`` an output folder of ``kind`` (see the rule above) and return it: a new or
    empty folder is created and marked; a folder marked as ``kind`` is accepted; anything else
    is a UserError naming the path and what it holds. ``create=False`` only checks (call it
    before long work, then claim for real before writing)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; accepted: {', '.join(KINDS)}")
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"cannot write the {kind} into {str(path)!r}: a file is there; "
                        f"give a new or empty folder")
    found = kind_of(path)
    if found is not None and found != kind:
        raise UserError(f"{str(path)!r} holds a gradwise {found}, not a {kind}; gradwise never "
                        f"writes one kind over another: give another folder")
    if found is None and path.is_dir():
        try:
            held = sorted(p.name for p in path.iterdir() if not _temporary(p.name))
        except OSError as exc:
            raise UserError(f"cannot read {str(path)!r}: {_io.reason(exc)}") from None
        if held:
            shown = ", ".join(held[:5]) + (", ..." if len(held) > 5 else "")
            raise UserError(f"{str(path)!r} is a folder gradwise did not write (it holds "
                            f"{shown}); give a new or empty folder for the {kind}")
    if not create:
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not (path / MARKER).is_file():
            _io.write_json(path / MARKER, {"kind": kind, "written_by": "gradwise"})
    except OSError as exc:
        raise UserError(f"cannot write the {kind} into {str(path)!r}: "
                        f"{_io.reason(exc)}") from None
    return path


# -- the run directory --------------------------------------------------------------------------

@dataclass
class RunData:
    """What a run directory holds, read once; records sorted by step (or epoch)."""

    path: Path
    name: str
    config_text: str | None
    config: dict
    summary: dict | None
    steps: list[dict]      # {"step", "epoch", "loss", "lr"[, "grad_norm"]}
    epochs: list[dict]     # {"epoch", "step", "train_loss", ..., "elapsed_seconds"}
    monitors: list[dict]   # {"step", "epoch", "monitor": {...}}

    def last_epoch(self) -> dict:
        return self.epochs[-1] if self.epochs else {}


class RunDir:
    """The files of one training run (see the module docstring for the layout).

    :meth:`create` starts a run in a new folder, :meth:`open` reads or continues one. Every
    file is written atomically; ``metrics.jsonl`` is appended one record at a time (a torn last
    line of a killed writer is dropped on reading).
    """

    CONFIG = "config.yaml"
    METRICS = "metrics.jsonl"
    SUMMARY = "summary.json"
    REPORT = "report.html"
    CHECKPOINTS = "checkpoints"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- layout ---------------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.path / self.CONFIG

    @property
    def metrics_path(self) -> Path:
        return self.path / self.METRICS

    @property
    def summary_path(self) -> Path:
        return self.path / self.SUMMARY

    @property
    def report_path(self) -> Path:
        return self.path / self.REPORT

    def checkpoint_path(self, name: str) -> Path:
        """``checkpoints/NAME.pt`` (``last``, ``best``, ...)."""
        return self.path / self.CHECKPOINTS / f"{name}.pt"

    # -- creating and opening -------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | Path, config_text: str) -> RunDir:
        """Start a run in ``path`` (claimed as a ``run``): write its config and an empty
        metrics file. A folder that holds a run with a checkpoint or a summary is refused (it
        can be continued with ``--resume``); a run that stopped before its first checkpoint
        is simply started again."""
        run = cls(claim(path, "run"))
        if run.started():
            raise UserError(f"run directory {str(run.path)!r} already holds a run; continue it "
                            f"with --resume {run.path}, or choose another --out")
        run.remove_temporary()
        for stale in (run.summary_path, run.report_path):
            stale.unlink(missing_ok=True)
        _io.write_text(run.config_path, config_text)
        _io.write_text(run.metrics_path, "")
        return run

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """An existing run directory (its ``config.yaml`` must be there)."""
        path = Path(path)
        if not path.is_dir():
            raise UserError(f"run directory {str(path)!r} not found" if not path.exists() else
                            f"{str(path)!r} is not a directory; expected a run directory "
                            "written by gradwise train")
        run = cls(path)
        if not run.config_path.is_file():
            raise UserError(f"no run in {str(path)!r}: {cls.CONFIG} is missing")
        return run

    def started(self) -> bool:
        """Whether the run saved anything worth continuing: a checkpoint or a summary."""
        return self.checkpoint_path("last").is_file() or self.summary_path.is_file()

    def remove_temporary(self) -> None:
        """Delete the temporary files a killed writer left (``.NAME.*.tmp``)."""
        for folder in (self.path, self.path / self.CHECKPOINTS):
            if folder.is_dir():
                for tmp in folder.glob(".*.tmp"):
                    tmp.unlink(missing_ok=True)

    # -- writing --------------------------------------------------------------------------------

    def append(self, record: dict) -> None:
        """Append one record to ``metrics.jsonl``."""
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(_io.jsonl_line(record))

    def rewrite_metrics(self, records: list[dict]) -> None:
        """Replace ``metrics.jsonl`` by ``records`` (atomically)."""
        _io.write_text(self.metrics_path, "".join(_io.jsonl_line(r) for r in records))

    def save_checkpoint(self, state: dict, best: bool = False) -> None:
        """Write ``last.pt`` and, if ``best``, then ``best.pt`` (each atomically). A kill
        between the two is repaired by :meth:`load_last`, so best and last never disagree."""
        _io.save(self.checkpoint_path("last"), state)
        if best:
            _io.save(self.checkpoint_path("best"), state)

    def save_snapshot(self, index: int, state: dict) -> None:
        """``checkpoints/snapshot-INDEX.pt`` (atomically): member ``INDEX`` (from 1) of a
        snapshot ensemble, ``{"model", "snapshot", "step", "epoch"}``."""
        _io.save(self.checkpoint_path(f"snapshot-{index}"), state)

    def write_summary(self, summary: dict) -> None:
        _io.write_json(self.summary_path, summary)

    # -- reading --------------------------------------------------------------------------------

    def load_last(self, map_location: Any = None) -> dict:
        """``last.pt``; where its epoch was the best and ``best.pt`` is missing or older (a
        kill between the two writes), ``best.pt`` is rewritten from it first."""
        state = self.load_checkpoint("last", map_location)
        best = state.get("best") if isinstance(state, dict) else None
        if isinstance(best, dict) and best.get("epoch") == state.get("epoch"):
            path = self.checkpoint_path("best")
            try:
                held = _io.load(path).get("epoch") if path.is_file() else None
            except UserError:
                held = None
            if held != state.get("epoch"):
                _io.save(path, state)
        return state

    def load_checkpoint(self, name: str, map_location: Any = None) -> dict:
        """``checkpoints/NAME.pt`` (``weights_only=True``); a missing or corrupt one is a
        UserError."""
        state = _io.load(self.checkpoint_path(name), map_location=map_location)
        if not isinstance(state, dict):
            raise UserError(f"checkpoint {str(self.checkpoint_path(name))!r} holds a "
                            f"{type(state).__name__}; expected a gradwise checkpoint")
        return state

    def checkpoints(self) -> list[str]:
        """The names of the checkpoints saved (``["best", "last"]``)."""
        folder = self.path / self.CHECKPOINTS
        return sorted(p.stem for p in folder.glob("*.pt")) if folder.is_dir() else []

    def read_config(self) -> tuple[str | None, dict]:
        """``(text, mapping)`` of ``config.yaml`` (``(None, {})`` where it is missing)."""
        path = self.config_path
        if not path.exists():
            return None, {}
        try:
            text = path.read_text(encoding="utf-8")
            config = yaml.safe_load(text)
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read {str(path)!r}: {_io.reason(exc)}") from None
        except yaml.YAMLError as exc:
            raise UserError(f"{str(path)!r} is not valid YAML ({_io.reason(exc)}); expected "
                            "the config gradwise train writes") from None
        if config is None:
            config = {}
        if not isinstance(config, dict):
            raise UserError(f"{str(path)!r} holds a {type(config).__name__}; expected a "
                            "mapping of config keys")
        return text, config

    def read_metrics(self) -> list[dict]:
        """The records of ``metrics.jsonl`` (a torn last line dropped); a corrupt file is a
        UserError."""
        path = self.metrics_path
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read {str(path)!r}: {_io.reason(exc)}") from None
        records = _io.read_jsonl(path)
        if len(records) < len(lines) - 1:  # only the last line may be torn (a killed writer)
            raise UserError(f"{str(path)!r} is corrupt at line {len(records) + 1}: expected one "
                            "JSON object per line")
        return records

    def read_summary(self) -> dict | None:
        """``summary.json`` (None where the run has not finished)."""
        path = self.summary_path
        if not path.exists():
            return None
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"cannot read {str(path)!r}: {_io.reason(exc)}") from None
        except json.JSONDecodeError as exc:
            raise UserError(f"{str(path)!r} is corrupt ({exc}); expected the JSON summary "
                            "gradwise train writes at the end of a run") from None
        if not isinstance(summary, dict):
            raise UserError(f"{str(path)!r} holds a JSON {type(summary).__name__}; expected an "
                            "object of final metrics")
        return summary

    def load(self) -> RunData:
        """Everything the run holds, read once (for reports and comparisons)."""
        path = self.path
        if not path.exists():
            raise UserError(f"run directory {str(path)!r} not found")
        if not path.is_dir():
            raise UserError(f"{str(path)!r} is not a directory; expected a run directory "
                            "written by gradwise train (config.yaml, metrics.jsonl, "
                            "summary.json)")
        if not self.metrics_path.is_file():
            raise UserError(f"no run in {str(path)!r}: metrics.jsonl is missing; expected a "
                            "run directory written by gradwise train")
        records = self.read_metrics()
        config_text, config = self.read_config()
        summary = self.read_summary()
        steps: dict[float, dict] = {}
        epochs: dict[float, dict] = {}
        monitors: dict[float, dict] = {}
        for record in records:
            if not isinstance(record, dict):
                continue
            step, epoch = record_number(record.get("step")), record_number(record.get("epoch"))
            if isinstance(record.get("monitor"), dict) and math.isfinite(step):
                monitors[step] = record
            if "loss" in record and math.isfinite(step):
                steps[step] = record  # a repeated step (a resumed run): the last one counts
            elif ("train_loss" in record or "val_accuracy" in record) and math.isfinite(epoch):
                epochs[epoch] = record
        name = config.get("name") or path.resolve().name
        return RunData(path, str(name), config_text, config, summary,
                       [steps[k] for k in sorted(steps)], [epochs[k] for k in sorted(epochs)],
                       [monitors[k] for k in sorted(monitors)])


def record_number(value: Any) -> float:
    """A record's value as a float; NaN when missing or not a number (first of a list)."""
    if isinstance(value, list | tuple) and value:
        value = value[0]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return math.nan
