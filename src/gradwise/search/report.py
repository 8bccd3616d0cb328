"""What a search leaves in its folder, rebuilt from the storage at any time::

    OUT/results.csv    one row per trial: stage, trial, state, params, val/test accuracy, ...
    OUT/stages.json    per stage: epochs, planned trials, ranges, finished trials, best trial
    OUT/best.yaml      the best trial's config (last stage), ready for ``gradwise train``
    OUT/summary.json   the best trial and the counts
    OUT/report.html    the plots: learning rate vs regularization coloured by the metric per
                       stage, the optimization history, the ranges from stage to stage

The ranges are the config's own plans (:meth:`gradwise.search.Search.stages`); a trial counts
as a stage's best, and reaches ``best.yaml`` and the plots, only if its stored params are the
config's own values. Every value on the page is escaped.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import yaml
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .. import _io
from ..config import dump
from ..report import page, plots
from ..report.page import e
from .space import Dimension, Space
from .spec import SearchSpec, trial_config
from .stages import ranked

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

_ATTRS = ("val_accuracy", "val_loss", "test_accuracy", "test_loss", "epochs", "seconds",
          "stop_reason", "retry_of", "worker")
_REGULARIZERS = ("weight_decay", "l2", "l1", "dropout", "label_smoothing", "drop")


class Source(Protocol):
    """What the outputs are written from (a :class:`gradwise.search.Search`)."""

    spec: SearchSpec
    out: Path

    def stages(self) -> list[dict]: ...


def write_outputs(search: Source) -> dict:
    """Write every file above from ``search.stages()``; returns the summary."""
    stages = search.stages()
    out = search.out
    spec = search.spec
    metric = spec.settings.metric
    keys = spec.space.keys()
    rows = []
    for stage in stages:
        space = _space(stage)
        for t in stage["trials"]:
            row = {"stage": stage["plan"]["name"], "trial": t.number, "state": t.state.name}
            row.update({k: _decoded(space, k, t.params.get(k)) for k in keys})
            row.update({a: attr(t, a) for a in _ATTRS})
            rows.append(row)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["stage", "trial", "state", *keys, *_ATTRS],
                            lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    _io.write_text(out / "results.csv", buffer.getvalue())

    best = None
    for stage in reversed(stages):
        top = ranked(stage["study"], _space(stage))
        if top:
            best = (stage, top[0])
            break
    stage_info = []
    for stage in stages:
        top = ranked(stage["study"], _space(stage))
        counts: dict[str, int] = {}
        for t in stage["trials"]:
            counts[t.state.name] = counts.get(t.state.name, 0) + 1
        stage_info.append({**{k: v for k, v in stage["plan"].items() if k != "fingerprint"},
                           "counts": counts,
                           "best": _trial_json(stage, top[0]) if top else None})
    _io.write_json(out / "stages.json", stage_info)

    summary = {"name": spec.name, "metric": metric, "stages": len(stages),
               "planned_stages": len(spec.settings.stages), "best": None}
    if best is not None:
        stage, trial = best
        params = _space(stage).decode(trial.params)
        last_epochs = spec.settings.stages[-1].epochs
        config = trial_config(spec, params, last_epochs)
        header = (f"# The best trial of search {spec.name!r}: stage {stage['plan']['name']}, "
                  f"trial {trial.number}, {metric} {trial.value:.4f}.\n"
                  f"# Train it with: gradwise train {out / 'best.yaml'}\n")
        _io.write_text(out / "best.yaml", header + dump(config))
        summary["best"] = _trial_json(stage, trial)
    _io.write_json(out / "summary.json", summary)
    _io.write_text(out / "report.html", render(spec, stages, summary))
    return summary


def _space(stage: dict) -> Space:
    return Space.from_json(stage["plan"]["space"])


def _trial_json(stage: dict, trial) -> dict:
    return {"stage": stage["plan"]["name"], "trial": trial.number, "value": trial.value,
            "params": _space(stage).decode(trial.params),
            **{a: attr(trial, a) for a in ("val_accuracy", "test_accuracy", "epochs",
                                           "seconds")}}


def attr(trial: FrozenTrial, key: str) -> object:
    """A trial's result (``val_accuracy``, ``seconds`` ...) or user attribute (``retry_of``)."""
    result = trial.user_attrs.get("result")
    result = result if isinstance(result, dict) else {}
    return result[key] if key in result else trial.user_attrs.get(key)


def _decoded(space: Space, key: str, value):
    """The config value of a stored param; a value outside the space is shown as stored."""
    if value is None:
        return None
    try:
        return space[key].decode(value)
    except (KeyError, ValueError):
        return value


def _cell(value):
    if isinstance(value, list | dict):
        return yaml.safe_dump(value, default_flow_style=True).strip()
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


# -- the page ---------------------------------------------------------------------------------

def scatter_keys(spec: SearchSpec) -> tuple[str, str | None] | None:
    """The scatter's axes: ``search.plot``, else the learning rate (or the first numeric key)
    against the first regularization key (weight decay, l2, l1, dropout ...)."""
    if spec.settings.plot:
        return spec.settings.plot
    numeric = [d.key for d in spec.space if d.kind != "choice"]
    if not numeric:
        return None
    x = next((k for k in numeric if k.split(".")[-1] in ("lr", "learning_rate")), numeric[0])
    rest = [k for k in numeric if k != x]
    y = next((k for k in rest if any(r in k.split(".")[-1] for r in _REGULARIZERS)),
             rest[0] if rest else None)
    return x, y


def render(spec: SearchSpec, stages: list[dict], summary: dict) -> str:
    """The report page: the best trial, the stages and their ranges, and the figures."""
    metric = spec.settings.metric
    parts = [f"<h1>{e(spec.name)} · search</h1>"]
    best = summary.get("best")
    if best:
        rows = [("best", f"stage {e(best['stage'])}, trial {e(best['trial'])}"),
                (metric, e(_fmt(best["value"]))),
                ("test accuracy", e(page.fmt_percent(best.get("test_accuracy")))),
                *[(k, e(_fmt(v))) for k, v in best["params"].items()]]
        parts.append(page.section("best", "Best trial", "Its config is best.yaml "
                                  "(with the last stage's epochs).", page.table(rows)))
    table = "".join(
        f"<tr><td>{e(s['plan']['name'])}</td><td>{e(s['plan']['epochs'])}</td>"
        f"<td>{e(sum(t.state.name in ('COMPLETE', 'PRUNED') for t in s['trials']))}"
        f" / {e(s['plan']['trials'])}</td><td>"
        + "<br>".join(e(f"{dim.key}: {dim.text()}") for dim in _space(s))
        + "</td></tr>" for s in stages)
    parts.append(page.section(
        "stages", "Stages", "Each stage's epochs, finished / planned trials and ranges.",
        f'<table class="grid"><tr><th>stage</th><th>epochs</th><th>trials</th>'
        f"<th>ranges</th></tr>{table}</table>"))
    figures = [("scatter", "Hyperparameters by stage",
                f"Each trial at its values, coloured by {metric}.", scatter_figure(spec, stages)),
               ("history", "Optimization history",
                f"{metric} of every finished trial in order, and the best so far.",
                history_figure(spec, stages)),
               ("narrowing", "Ranges from stage to stage",
                "Each stage's range per key (log scale for loguniform).",
                narrowing_figure(spec, stages))]
    for sid, title, caption, fig in figures:
        if fig is not None:
            parts.append(page.section(sid, title, caption, page.img(fig, title)))
    return page.page(f"{spec.name} · gradwise search", "\n".join(parts))


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _finished(stage: dict) -> list[tuple[float, dict]]:
    """(value, params) of the stage's COMPLETE trials with a finite value and the config's own
    params, in trial order."""
    space = _space(stage)
    done = []
    for t in sorted(stage["trials"], key=lambda t: t.number):
        if t.state.name != "COMPLETE" or t.value is None or not math.isfinite(t.value):
            continue
        try:
            done.append((t.value, space.decode(t.params)))
        except ValueError:
            continue
    return done


def scatter_figure(spec: SearchSpec, stages: list[dict]) -> Figure | None:
    """One panel per stage: x against y (log axes for loguniform), colour = the metric."""
    axes_keys = scatter_keys(spec)
    if axes_keys is None or not stages:
        return None
    x_key, y_key = axes_keys
    metric = spec.settings.metric
    values = [v for s in stages for v, _ in _finished(s)]
    if not values:
        return None
    fig = plots.new_figure(3.4 * len(stages) + 1.0, 3.2)
    axes = fig.subplots(1, len(stages), squeeze=False)[0]
    norm = Normalize(min(values), max(values) if max(values) > min(values)
                     else min(values) + 1e-9)
    cmap = colormaps["viridis" if spec.settings.direction == "maximize" else "viridis_r"]
    for ax, stage in zip(axes, stages, strict=True):
        done = _finished(stage)
        xs = [p[x_key] for _, p in done]
        ys = [p[y_key] if y_key else v for v, p in done]
        ax.scatter(xs, ys, c=[v for v, _ in done], cmap=cmap, norm=norm, s=28,
                   edgecolors="black", linewidths=0.4)
        space = _space(stage)
        x_dim = space[x_key]
        if y_key:  # the stage's box, inside the first stage's axes
            y_dim = space[y_key]
            (x_low, x_high), (y_low, y_high) = x_dim.bounds, y_dim.bounds
            ax.add_patch(Rectangle((x_low, y_low), x_high - x_low, y_high - y_low, fill=False,
                                   linestyle="--", edgecolor="grey", linewidth=0.8))
            ax.set_ylim(*_padded(spec.space[y_key]))
        ax.set_xlim(*_padded(spec.space[x_key]))
        ax.set_title(f"{stage['plan']['name']} ({stage['plan']['epochs']} epochs)", fontsize=9)
        ax.set_xlabel(x_key)
        ax.set_ylabel(y_key or metric)
        if spec.space[x_key].log:
            ax.set_xscale("log")
        if y_key and spec.space[y_key].log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=list(axes), label=metric)
    return fig


def _padded(dim: Dimension) -> tuple[float, float]:
    """The dimension's range with a 4% margin (of the log range for loguniform); no margin on
    a side where it would leave the floats.

    >>> _padded(Dimension("lr", "loguniform", 1e-4, 1e300))
    (6.91830970918936e-17, 1e+300)
    """
    d_low, d_high = dim.bounds
    if dim.log:
        factor = (d_high / d_low) ** 0.04
        low, high = d_low / factor, d_high * factor
        return (low if low > 0 else d_low), (high if math.isfinite(high) else d_high)
    pad = 0.04 * (d_high - d_low)
    low, high = d_low - pad, d_high + pad
    return (low if math.isfinite(low) else d_low), (high if math.isfinite(high) else d_high)


def history_figure(spec: SearchSpec, stages: list[dict]) -> Figure | None:
    """The metric of every finished trial in storage order, coloured by stage, and the running
    best within each stage."""
    if not any(_finished(s) for s in stages):
        return None
    maximize = spec.settings.direction == "maximize"
    fig = plots.new_figure(7.5, 3.2)
    ax = fig.add_subplot()
    colors = plots.categorical_colors(len(stages))
    offset = 0
    for stage, color in zip(stages, colors, strict=True):
        ys = [v for v, _ in _finished(stage)]
        xs = list(range(offset, offset + len(ys)))
        ax.scatter(xs, ys, color=color, s=18, label=stage["plan"]["name"])
        best, bests = None, []
        for y in ys:
            best = y if best is None else (max(best, y) if maximize else min(best, y))
            bests.append(best)
        ax.step(xs, bests, where="post", color=color, alpha=0.8)
        offset += len(ys)
    ax.set_xlabel("finished trial")
    ax.set_ylabel(spec.settings.metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def narrowing_figure(spec: SearchSpec, stages: list[dict]) -> Figure | None:
    """One row per numeric key: a bar per stage from its low to its high, and the trials'
    values as dots."""
    numeric = [d for d in spec.space if d.kind != "choice"]
    if not numeric or not stages:
        return None
    fig = plots.new_figure(7.5, 1.0 + 1.1 * len(numeric))
    axes = fig.subplots(len(numeric), 1, squeeze=False)[:, 0]
    colors = plots.categorical_colors(len(stages))
    for ax, dim in zip(axes, numeric, strict=True):
        for i, (stage, color) in enumerate(zip(stages, colors, strict=True)):
            r = _space(stage)[dim.key]
            ax.plot([r.low, r.high], [i, i], color=color, linewidth=6, solid_capstyle="butt")
            pts = _points(stage, dim.key)
            ax.scatter(pts, [i] * len(pts), color="black", s=6, zorder=3)
        ax.set_yticks(range(len(stages)), [s["plan"]["name"] for s in stages], fontsize=8)
        ax.set_ylim(-0.6, len(stages) - 0.4)
        ax.invert_yaxis()
        ax.set_title(dim.key, fontsize=9, loc="left")
        if dim.log:
            ax.set_xscale("log")
        ax.grid(alpha=0.3, axis="x")
    return fig


def _points(stage: dict, key: str) -> list:
    """The stage's trials' values of ``key`` that are inside the stage's range."""
    dim = _space(stage)[key]
    values = []
    for t in stage["trials"]:
        try:
            values.append(dim.decode(t.params[key]))
        except (KeyError, ValueError):
            continue
    return values
