"""What a search leaves in its folder, rebuilt from the storage at any time::

    OUT/results.csv    one row per trial: stage, trial, state, params, val/test accuracy, ...
    OUT/stages.json    per stage: epochs, planned trials, ranges, finished trials, best trial
    OUT/best.yaml      the best trial's config (last stage), ready for ``gradwise train``
    OUT/summary.json   the best trial and the counts
    OUT/report.html    the plots: learning rate vs regularization coloured by the metric per
                       stage, the optimization history, the ranges from stage to stage
"""

from __future__ import annotations

import csv
import io
from html import escape

import yaml
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.patches import Rectangle

from .. import _io
from ..config import dump
from ..report import plots
from .space import Space

_ATTRS = ("val_accuracy", "val_loss", "test_accuracy", "test_loss", "epochs", "seconds",
          "stop_reason", "retry_of", "worker")
_REGULARIZERS = ("weight_decay", "l2", "l1", "dropout", "label_smoothing", "drop")


def collect(search) -> list[dict]:
    """Per stage that exists: its plan (``stage_study(i).user_attrs``) and its trials."""
    import optuna

    from .study import existing_studies, study_name

    search.open()
    names = existing_studies(search.storage)
    stages = []
    for stage in search.spec.settings.stages:
        name = study_name(search.spec, stage)
        if name not in names:
            break
        study = optuna.load_study(study_name=name, storage=search.storage)
        if "gradwise" not in study.user_attrs:
            break
        trials = [t for t in study.get_trials(deepcopy=False)
                  if not t.user_attrs.get("surplus")]
        stages.append({"plan": study.user_attrs["gradwise"], "study": study, "trials": trials})
    return stages


def write_outputs(search) -> dict:
    """Write every file above from the storage; returns the summary."""
    from .study import ranked, trial_config

    stages = collect(search)
    out = search.out
    spec = search.spec
    metric = spec.settings.metric
    keys = spec.space.keys()
    rows = []
    for stage in stages:
        space = Space.from_json(stage["plan"]["space"])
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
        top = ranked(stage["study"])
        if top:
            best = (stage, top[0])
            break
    stage_info = []
    for stage in stages:
        top = ranked(stage["study"])
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
        space = Space.from_json(stage["plan"]["space"])
        params = {k: _decoded(space, k, v) for k, v in trial.params.items()}
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


def _trial_json(stage: dict, trial) -> dict:
    space = Space.from_json(stage["plan"]["space"])
    return {"stage": stage["plan"]["name"], "trial": trial.number, "value": trial.value,
            "params": {k: _decoded(space, k, v) for k, v in trial.params.items()},
            **{a: attr(trial, a) for a in ("val_accuracy", "test_accuracy", "epochs",
                                           "seconds")}}


def attr(trial, key: str):
    """A trial's result (``val_accuracy``, ``seconds`` ...) or user attribute (``retry_of``)."""
    result = trial.user_attrs.get("result") or {}
    return result[key] if key in result else trial.user_attrs.get(key)


def _decoded(space: Space, key: str, value):
    from .study import decode_param

    return None if value is None else decode_param(space, key, value)


def _cell(value):
    if isinstance(value, list | dict):
        return yaml.safe_dump(value, default_flow_style=True).strip()
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else value


# -- the page ---------------------------------------------------------------------------------

def scatter_keys(spec) -> tuple[str, str | None] | None:
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


def render(spec, stages: list[dict], summary: dict) -> str:
    from ..report import page

    metric = spec.settings.metric
    parts = [f"<h1>{escape(spec.name)} · search</h1>"]
    best = summary.get("best")
    if best:
        rows = [("best", f"stage {escape(best['stage'])}, trial {best['trial']}"),
                (metric, f"{best['value']:.4f}"),
                ("test accuracy", page.fmt_percent(best.get("test_accuracy"))),
                *[(k, escape(_fmt(v))) for k, v in best["params"].items()]]
        parts.append(page.section("best", "Best trial", "Its config is best.yaml "
                                   "(with the last stage's epochs).", page.table(rows)))
    table = "".join(
        f"<tr><td>{escape(s['plan']['name'])}</td><td>{s['plan']['epochs']}</td>"
        f"<td>{sum(t.state.name in ('COMPLETE', 'PRUNED') for t in s['trials'])}"
        f" / {s['plan']['trials']}</td><td>"
        + "<br>".join(escape(f"{k}: {_range_text(v)}") for k, v in s["plan"]["space"].items())
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


def _range_text(dim: dict) -> str:
    if dim["kind"] == "choice":
        return f"choice {dim['choices']}"
    return f"{dim['kind']}({dim['low']:.4g}, {dim['high']:.4g})"


def _points(stage: dict, key: str) -> list:
    return [t.params.get(key) for t in stage["trials"]]


def _finished(stage: dict) -> list:
    return [t for t in stage["trials"] if t.state.name == "COMPLETE" and t.value is not None]


def scatter_figure(spec, stages: list[dict]):
    """One panel per stage: x against y (log axes for loguniform), colour = the metric."""
    axes_keys = scatter_keys(spec)
    if axes_keys is None or not stages:
        return None
    x_key, y_key = axes_keys
    metric = spec.settings.metric
    values = [t.value for s in stages for t in _finished(s)]
    if not values:
        return None
    fig = plots.new_figure(3.4 * len(stages) + 1.0, 3.2)
    axes = fig.subplots(1, len(stages), squeeze=False)[0]
    norm = Normalize(min(values), max(values) if max(values) > min(values)
                           else min(values) + 1e-9)
    cmap = colormaps["viridis" if spec.settings.direction == "maximize" else "viridis_r"]
    for ax, stage in zip(axes, stages, strict=True):
        done = _finished(stage)
        xs = [t.params[x_key] for t in done]
        ys = [t.params[y_key] if y_key else t.value for t in done]
        ax.scatter(xs, ys, c=[t.value for t in done], cmap=cmap, norm=norm, s=28,
                   edgecolors="black", linewidths=0.4)
        ranges = stage["plan"]["space"]
        x_range = (ranges[x_key]["low"], ranges[x_key]["high"])
        y_range = (ranges[y_key]["low"], ranges[y_key]["high"]) if y_key else None
        if y_range:  # the stage's box, inside the first stage's axes
            ax.add_patch(Rectangle((x_range[0], y_range[0]), x_range[1] - x_range[0],
                                   y_range[1] - y_range[0], fill=False, linestyle="--",
                                   edgecolor="grey", linewidth=0.8))
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


def _padded(dim) -> tuple[float, float]:
    """The dimension's range with a 4% margin (of the log range for loguniform)."""
    if dim.log:
        factor = (dim.high / dim.low) ** 0.04
        return dim.low / factor, dim.high * factor
    pad = 0.04 * (dim.high - dim.low)
    return dim.low - pad, dim.high + pad


def history_figure(spec, stages: list[dict]):
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
        done = sorted(_finished(stage), key=lambda t: t.number)
        xs = list(range(offset, offset + len(done)))
        ys = [t.value for t in done]
        ax.scatter(xs, ys, color=color, s=18, label=stage["plan"]["name"])
        best, bests = None, []
        for y in ys:
            best = y if best is None else (max(best, y) if maximize else min(best, y))
            bests.append(best)
        ax.step(xs, bests, where="post", color=color, alpha=0.8)
        offset += len(done)
    ax.set_xlabel("finished trial")
    ax.set_ylabel(spec.settings.metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def narrowing_figure(spec, stages: list[dict]):
    """One row per numeric key: a bar per stage from its low to its high."""
    numeric = [d for d in spec.space if d.kind != "choice"]
    if not numeric or not stages:
        return None
    fig = plots.new_figure(7.5, 1.0 + 1.1 * len(numeric))
    axes = fig.subplots(len(numeric), 1, squeeze=False)[:, 0]
    colors = plots.categorical_colors(len(stages))
    for ax, dim in zip(axes, numeric, strict=True):
        for i, (stage, color) in enumerate(zip(stages, colors, strict=True)):
            r = stage["plan"]["space"][dim.key]
            ax.plot([r["low"], r["high"]], [i, i], color=color, linewidth=6,
                    solid_capstyle="butt")
            pts = [p for p in _points(stage, dim.key) if p is not None]
            ax.scatter(pts, [i] * len(pts), color="black", s=6, zorder=3)
        ax.set_yticks(range(len(stages)), [s["plan"]["name"] for s in stages], fontsize=8)
        ax.set_ylim(-0.6, len(stages) - 0.4)
        ax.invert_yaxis()
        ax.set_title(dim.key, fontsize=9, loc="left")
        if dim.log:
            ax.set_xscale("log")
        ax.grid(alpha=0.3, axis="x")
    return fig

