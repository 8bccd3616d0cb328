"""Tables, output files and the default gallery of the lecture's pictures."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import _io
from .._checks import integer, number
from ..config import parse_assignment
from ..errors import UserError
from ..rundir import claim
from . import plots
from .runner import OPTIMIZERS, Run, compare, get_optimizer, settings_text
from .surfaces import Surface, get_surface

#: The optimizers ``gradwise lab`` runs when none are named.
DEFAULT_OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam")
#: The files of one lab run, in its output folder.
OUTPUT_FILES = ("contour.png", "loss.png", "steps.png", "paths.gif", "table.csv", "runs.json")
#: The files of each gallery scene (no runs.json: the docs keep pictures and tables).
GALLERY_FILES = tuple(name for name in OUTPUT_FILES if name != "runs.json")
CSV_COLUMNS = ("optimizer", "settings", "steps", "evals", "first_step", "final_loss",
               "final_distance", "tail_distance", "steps_to_tol", "evals_to_tol", "escape_step",
               "rate", "status")


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, (bool, int)):
        return str(value)
    if isinstance(value, float):
        return f"{value:.3g}" if math.isfinite(value) else str(value)
    return str(value)


def short_settings(run: Run) -> str:
    """The learning rate and every hyperparameter that differs from the optimizer's default."""
    spec = get_optimizer(run.optimizer)
    shown = {}
    for h in spec.hypers:
        value = run.hypers[h.name]
        if h.name == "lr" or value != h.default:
            shown[h.name] = value
    return settings_text(shown)


def _columns(runs: list[Run]) -> list[tuple[str, str]]:
    has_min = any(r.minimum is not None for r in runs)
    has_saddle = any(r.saddle is not None for r in runs)
    noisy = any(r.noise for r in runs)
    cols = [("optimizer", "optimizer"), ("settings", "settings"), ("first_step", "first step"),
            ("final_loss", "final loss")]
    if has_min:
        cols.append(("final_distance", "final dist"))
        if noisy:
            cols.append(("tail_distance", "tail dist"))
        cols.append(("steps_to_tol", "steps to tol"))
        cols.append(("evals_to_tol", "evals to tol"))
    if has_saddle:
        cols.append(("escape_step", "escape step"))
    if has_min:
        cols.append(("rate", "rate"))
    cols += [("evals", "evals"), ("status", "status")]
    return cols


def _rows(runs: list[Run]) -> list[dict]:
    rows = []
    for r in runs:
        row = r.summary()
        row["settings"] = short_settings(r)
        rows.append(row)
    return rows


def format_table(runs: list[Run]) -> str:
    """The runs' metrics as an aligned text table (columns that apply to the surface only)."""
    cols = _columns(runs)
    cells = [[title for _, title in cols]]
    cells += [[_fmt(row[key]) for key, _ in cols] for row in _rows(runs)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(cols))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
             for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(runs: list[Run]) -> str:
    cols = _columns(runs)
    lines = ["| " + " | ".join(title for _, title in cols) + " |",
             "|" + "---|" * len(cols)]
    for row in _rows(runs):
        cells = [_fmt(row[key]) for key, _ in cols]
        cells[1] = f"`{cells[1]}`"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def csv_text(runs: list[Run]) -> str:
    """One row per run: every metric, all hyperparameters in ``settings`` (empty: n/a)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in runs:
        row = r.summary()
        writer.writerow(["" if row[k] is None else (repr(row[k]) if isinstance(row[k], float)
                                                    else row[k]) for k in CSV_COLUMNS])
    return buf.getvalue()


def header(surface: Surface, runs: list[Run]) -> str:
    steps = max((r.steps for r in runs), default=0)
    start = runs[0].path[0] if runs else surface.start
    text = (f"surface {surface.name}: f = {surface.formula}; start ({start[0]:g}, "
            f"{start[1]:g}); {steps} steps")
    if runs and runs[0].minimum is not None:
        text += f"; tol {runs[0].tol:g} on |x - x*|"
    if runs and runs[0].noise:
        text += f"; gradient noise {runs[0].noise:g}"
    return text


def runs_json(surface: Surface, runs: list[Run]) -> dict:
    """Everything about the runs, paths included, as plain JSON values."""
    return dict(
        surface=dict(name=surface.name, formula=surface.formula, params=surface.params,
                     start=list(surface.start), minimum=surface.minimum,
                     saddle=surface.saddle),
        runs=[dict({k: plots.finite_or_none(v) if isinstance(v, float) else v
                    for k, v in r.summary().items()},
                   hypers=r.hypers, path=r.path.tolist(),
                   loss=[plots.finite_or_none(v) for v in r.loss]) for r in runs])


def render(surface: Surface, runs: list[Run], frames: int = 40, title: str | None = None
           ) -> dict[str, bytes]:
    """The output files of one lab run, in memory (nothing is written)."""
    return {
        "contour.png": plots.contour_png(surface, runs, title),
        "loss.png": plots.loss_png(surface, runs, title and f"loss per step: {title}"),
        "steps.png": plots.steps_png(surface, runs, title and f"step sizes: {title}"),
        "paths.gif": plots.paths_gif(surface, runs, frames, title),
        "table.csv": csv_text(runs).encode(),
        "runs.json": (json.dumps(runs_json(surface, runs), indent=1) + "\n").encode(),
    }


def write_files(out: Path, files: dict[str, bytes]) -> None:
    """Write each file atomically (a temporary file, then a rename); a path in the way is a
    UserError naming it."""
    out = Path(out)
    for name, data in files.items():
        _io.write_file(out / name, data)


# -- parsing what the command line gives ------------------------------------------------------


def parse_settings(items: Iterable[str] | None,
                   optimizers: Collection[str]) -> tuple[dict, dict]:
    """``["surface.cond=100", "adam.lr=0.1", ...]`` as ``(surface_params, hypers)`` (split and
    read by :func:`gradwise.config.parse_assignment`); names are checked here, values by the
    surface and the optimizers."""
    surface_params: dict[str, object] = {}
    hypers: dict[str, dict[str, object]] = {}
    for item in items or ():
        key, value = parse_assignment(item, example="adam.lr=0.1 or surface.cond=100")
        owner, _, name = key.partition(".")
        if "." in name or not name or value is None:
            raise UserError(f"--set {item!r}: expected OPTIMIZER.NAME=VALUE or "
                            "surface.NAME=VALUE, e.g. adam.lr=0.1 or surface.cond=100")
        if owner == "surface":
            surface_params[name] = value
            continue
        if owner not in OPTIMIZERS:
            raise UserError(f"--set {item!r}: unknown optimizer {owner!r}; accepted: surface, "
                            f"{', '.join(OPTIMIZERS)}")
        if owner not in optimizers:
            raise UserError(f"--set {item!r}: {owner!r} is not among the optimizers run "
                            f"({', '.join(optimizers)}); add it to --optimizers")
        get_optimizer(owner).hyper(name)
        hypers.setdefault(owner, {})[name] = value
    return surface_params, hypers


def parse_point(name: str, text: object) -> tuple[float, float]:
    parts = str(text).split(",")
    if len(parts) != 2:
        raise UserError(f"{name}={text!r} is invalid; {name} must be X,Y, e.g. -4,1.5")
    x, y = (number(name, _float(p)) for p in parts)
    return x, y


def _float(text):
    try:
        return float(text)
    except ValueError:
        return text


def _int(name: str, text, minimum: int) -> int:
    try:
        value = int(str(text))
    except ValueError:
        value = text
    return integer(name, value, minimum)


# -- the gallery ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scene:
    """One picture of the lecture: a surface, optimizers and their settings."""

    name: str
    title: str
    surface: str
    optimizers: tuple[str, ...]
    params: dict = field(default_factory=dict)
    hypers: dict = field(default_factory=dict)
    steps: int | None = None
    noise: float = 0.0


#: The default gallery (``gradwise lab --gallery``): the lecture's pictures, in its order.
GALLERY = (
    Scene("taco", "taco valley: SGD zig-zags, momentum overshoots, Nesterov damps",
          "taco", ("sgd", "momentum", "nesterov")),
    Scene("saddle", "saddle x^2 - y^2: SGD crawls, momentum escapes, Newton is attracted",
          "saddle", ("sgd", "momentum", "nesterov", "adam", "newton")),
    Scene("noisy", "taco valley with gradient noise 3 (the minibatch picture)",
          "taco", ("sgd", "momentum", "nesterov", "adam"), steps=300, noise=3.0),
    Scene("wells", "local minimum: SGD settles in it, momentum rolls through",
          "wells", ("sgd", "momentum", "nesterov", "adam")),
    Scene("adagrad", "AdaGrad's steps vanish; RMSProp's leaky average lets them grow back",
          "rosenbrock", ("adagrad", "rmsprop")),
    Scene("adam-bias", "Adam's first step with and without bias correction",
          "taco", ("adam", "adam-nobc"), hypers={"adam": {"lr": 0.1}, "adam-nobc": {"lr": 0.1}}),
    Scene("valley", "axis-aligned valley, condition number 200",
          "taco", ("momentum", "rmsprop", "adam"), params={"cond": 200.0},
          hypers={"momentum": {"lr": 0.01}, "rmsprop": {"lr": 0.1}, "adam": {"lr": 1.0}},
          steps=400),
    Scene("rotated", "the same valley rotated by 45 degrees: the per-coordinate methods lose",
          "rotated", ("momentum", "rmsprop", "adam"), params={"cond": 200.0, "angle": 45.0},
          hypers={"momentum": {"lr": 0.01}, "rmsprop": {"lr": 0.1}, "adam": {"lr": 1.0}},
          steps=400),
    Scene("rosenbrock", "Rosenbrock's banana: first-order methods creep along the floor, "
          "Newton and L-BFGS cut through", "rosenbrock",
          ("sgd", "momentum", "adam", "newton", "lbfgs")),
)


def scene_names() -> tuple[str, ...]:
    return tuple(s.name for s in GALLERY)


def run_scene(scene: Scene) -> tuple[Surface, list[Run]]:
    surface = get_surface(scene.surface, scene.params)
    runs = compare(surface, scene.optimizers, scene.steps, hypers=scene.hypers,
                   noise=scene.noise)
    return surface, runs


def gallery(out: str | Path, scenes: Iterable[str] | None = None, frames: int = 40,
            echo: Callable[[str], object] = print) -> list[tuple[Scene, Surface, list[Run]]]:
    """Render the gallery into ``out``: ``<scene>/`` with :data:`GALLERY_FILES` per scene and
    ``tables.md`` with every scene's table. Everything is computed before the first file is
    written."""
    chosen = list(GALLERY) if scenes is None else [_scene(name) for name in scenes]
    claim(out, "lab-gallery", create=False)
    results, files = [], {}
    for scene in chosen:
        surface, runs = run_scene(scene)
        results.append((scene, surface, runs))
        for name, data in render(surface, runs, frames, scene.title).items():
            if name in GALLERY_FILES:
                files[f"{scene.name}/{name}"] = data
        echo(f"== {scene.name}: {scene.title}\n{header(surface, runs)}\n{format_table(runs)}\n")
    md = ["# Optimizer lab gallery tables", "",
          "Generated by `gradwise lab --gallery`; one table per scene.", ""]
    for scene, surface, runs in results:
        md += [f"## {scene.name}: {scene.title}", "", header(surface, runs), "",
               markdown_table(runs), ""]
    files["tables.md"] = "\n".join(md).encode()
    write_files(claim(out, "lab-gallery"), files)
    return results


def _scene(name: str) -> Scene:
    for scene in GALLERY:
        if scene.name == name:
            return scene
    raise UserError(f"unknown gallery scene {name!r}; accepted: {', '.join(scene_names())}")


# -- the command ------------------------------------------------------------------------------


_RUN_OPTIONS = ("surface", "optimizers", "settings", "steps", "start", "noise", "seed", "tol")


def command(args: argparse.Namespace) -> int:
    """``gradwise lab``: one comparison, ``--gallery`` or ``--serve`` (see the CLI's help)."""
    given = [f"--{name}" if name != "settings" else "--set" for name in _RUN_OPTIONS
             if getattr(args, name) not in (None, [])]
    if args.gallery and args.serve:
        raise UserError("--gallery and --serve exclude each other; give one")
    if args.port is not None and not args.serve:
        raise UserError("--port goes with --serve")
    if (args.gallery or args.serve) and given:
        raise UserError(f"{'--gallery' if args.gallery else '--serve'} takes no "
                        f"{', '.join(given)}; "
                        + ("the scenes are fixed" if args.gallery
                           else "pick them on the page"))
    frames = _int("--frames", args.frames, 2) if args.frames is not None else 40
    if args.serve:
        from .server import serve

        port = 8765 if args.port is None else _int("--port", args.port, 0)
        if port > 65535:
            raise UserError(f"--port={port} is invalid; --port must be in 0..65535")
        serve(port=port)
        return 0
    if args.gallery:
        out = Path(args.out or "runs/lab-gallery")
        gallery(out, frames=frames)
        print(f"gallery in {out}/  ({', '.join(scene_names())}; tables.md)")
        return 0

    optimizers = args.optimizers or ",".join(DEFAULT_OPTIMIZERS)
    from .runner import parse_optimizers

    optimizers = parse_optimizers(optimizers)
    surface_params, hypers = parse_settings(args.settings, optimizers)
    surface = get_surface(args.surface or "taco", surface_params)
    kwargs: dict[str, Any] = {}
    if args.steps is not None:
        kwargs["steps"] = _int("--steps", args.steps, 1)
    if args.start is not None:
        kwargs["start"] = parse_point("--start", args.start)
    if args.noise is not None:
        kwargs["noise"] = number("--noise", _float(args.noise), 0)
    if args.seed is not None:
        kwargs["seed"] = _int("--seed", args.seed, 0)
    if args.tol is not None:
        kwargs["tol"] = number("--tol", _float(args.tol), 0, open_low=True)
    steps = kwargs.pop("steps", None)
    out = claim(args.out or f"runs/lab-{_slug(surface.name)}", "lab", create=False)
    runs = compare(surface, optimizers, steps, hypers=hypers, **kwargs)
    files = render(surface, runs, frames)
    write_files(claim(out, "lab"), files)
    print(header(surface, runs))
    print(format_table(runs))
    print(f"results in {out}/  ({', '.join(OUTPUT_FILES)})")
    return 0


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in name).strip("-") or "lab"
