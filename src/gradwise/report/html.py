"""HTML pages: the report of one run (:func:`build_report`) and the comparison of several
(:func:`compare_runs`).

A page is one self-contained file: plots inlined as base64 PNG, the style sheet inline, no
scripts, no fonts or anything else fetched from elsewhere.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

from .. import _io
from ..config import flatten, section
from ..errors import UserError
from ..rundir import RunData, RunDir
from . import page, plots

# -- formatting -------------------------------------------------------------------------------


def _fmt_option(value) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)  # true, false, null: as in config.yaml
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):
        return "(" + ", ".join(_fmt_option(v) for v in value) + ")"
    return str(value)


def describe_optimizer(config: dict) -> str:
    """``sgd, lr 0.1, momentum 0.9, nesterov``: the name, the lr and the options that are set."""
    opt = section(config, "optimizer")
    if not opt:
        return "—"
    parts = [str(opt.get("name", "?"))]
    if "lr" in opt:
        parts.append(f"lr {_fmt_option(opt['lr'])}")
    for key, value in opt.items():
        if key in ("name", "lr") or value is None or value is False or value == 0:
            continue
        label = key.replace("_", " ")
        parts.append(label if value is True else f"{label} {_fmt_option(value)}")
    return ", ".join(parts)


def describe_schedule(config: dict) -> str:
    schedule = section(config, "schedule")
    name = str(schedule.get("name", "constant"))
    options = [f"{k.replace('_', ' ')} {_fmt_option(v)}" for k, v in schedule.items()
               if k != "name" and v not in (None, 0, 0.0, False)]
    return ", ".join([name] + options)


def describe_model(config: dict) -> str:
    model = section(config, "model")
    if not model:
        return "—"
    options = [f"{k.replace('_', ' ')} {_fmt_option(v)}" for k, v in model.items()
               if k != "name" and v is not None]  # (init: null, weights: null: none given)
    return str(model.get("name", "?")) + (f" ({', '.join(options)})" if options else "")


def status(run: RunData) -> tuple[str, str]:
    """``(css class, text)``: finished, stopped early (with the reason), or in progress."""
    summary = run.summary
    if summary is None:
        last = run.last_epoch()
        where = ""
        if last or run.steps:
            step = run.steps[-1]["step"] if run.steps else last.get("step")
            where = f" (last logged: epoch {last.get('epoch', 0)} done, step {step})"
        return "incomplete", f"in progress or interrupted: no summary.json yet{where}"
    if summary.get("stopped_early"):
        return "stopped", f"stopped early: {summary.get('stop_reason') or 'no reason given'}"
    return "finished", "finished"


def diagnosis_of(run: RunData) -> dict | None:
    diagnosis = (run.summary or {}).get("diagnosis")
    return diagnosis if isinstance(diagnosis, dict) and diagnosis.get("label") else None


def _omitted(notes: list[tuple[str, str]]) -> str:
    if not notes:
        return ""
    items = "".join(f"<li><strong>{page.e(title)}</strong>: {page.e(why)}</li>"
                    for title, why in notes)
    return page.section("not-shown", "Not shown",
                    "Sections left out because the run has no data for them.",
                    f'<ul class="notes">{items}</ul>')


# -- the report of one run --------------------------------------------------------------------

def build_report(run_dir: str | Path) -> Path:
    """Write ``RUN/report.html``, one self-contained page about the run; returns its path."""
    run = RunDir(run_dir).load()
    out = run.path / "report.html"
    _io.write_file(out, render_report(run))
    return out


def render_report(run: RunData) -> str:
    """The report page of a run, as HTML text."""
    sections: list[tuple[str, str, str]] = []  # (id, title, html)
    notes: list[tuple[str, str]] = []

    def add(section_id, title, caption, body):
        sections.append((section_id, title, page.section(section_id, title, caption, body)))

    diagnosis = diagnosis_of(run)
    if diagnosis is not None:
        add("diagnosis", "Diagnosis", "gradwise's reading of the curves: what is going on and "
            "what to try next, with the numbers it looked at.", _diagnosis_html(diagnosis))
    elif run.summary is not None:
        notes.append(("Diagnosis", "summary.json has no diagnosis"))
    warnings = (run.summary or {}).get("warnings") or []
    warnings = [warnings] if isinstance(warnings, str) else [w for w in warnings if w]
    if warnings:
        items = "".join(f"<li>{page.e(w)}</li>" for w in warnings)
        add("warnings", "Warnings", "Things noticed during the run that deserve a look, even "
            "if the run finished.", f'<ul class="warnings">{items}</ul>')
    add("summary", "Summary", *_summary_html(run))
    final = run.summary or {}
    if isinstance(final.get("snapshots"), list) and final["snapshots"]:
        add("snapshots", "Snapshot ensemble", "The weights at the end of each cosine cycle (the "
            "learning rate's minimum), and the mean of the softmax outputs of the last ones "
            "(Huang et al. 2017).",
            _snapshots_html(final["snapshots"], final.get("snapshot_ensemble")))
    transfer = (run.summary or {}).get("transfer")
    if isinstance(transfer, dict):
        add("transfer", "Transfer", "Where the starting weights came from, what was loaded, "
            "re-initialised and frozen, and the strategy table where strategy: auto chose.",
            _transfer_html(transfer))
    _run_plots(run, add, notes)
    if run.config_text is not None:
        add("config", "Config", "The resolved config the run was trained with (config.yaml): "
            "every default filled in, so it reproduces the run.",
            f"<pre>{page.e(run.config_text)}</pre>")
    else:
        notes.append(("Config", "config.yaml is missing"))

    css_class, status_text = status(run)
    facts = [f"run directory <code>{page.e(run.path.resolve().name)}</code>"]
    if run.config:
        facts += [f"data {page.e(section(run.config, 'data').get('source', '?'))}",
                  f"model {page.e(describe_model(run.config))}",
                  f"optimizer {page.e(describe_optimizer(run.config))}",
                  f"schedule {page.e(describe_schedule(run.config))}"]
    header = (f'<header id="overview">\n<p class="kicker">gradwise run report</p>\n'
              f"<h1>{page.e(run.name)}</h1>\n"
              f'<p class="status status-{css_class}">{page.e(status_text)}</p>\n'
              + (f"<p>{page.badge(diagnosis['label'])}</p>\n" if diagnosis else "")
              + f'<p class="facts">{" · ".join(facts)}</p>\n</header>')
    body = [header, page.nav([(sid, title) for sid, title, _ in sections])]
    body += [text for _, _, text in sections]
    body.append(_omitted(notes))
    return page.page(f"{run.name} · gradwise report", "\n".join(b for b in body if b))


def _transfer_html(transfer: dict) -> str:
    """summary.json's ``transfer`` entry: the load report, the frozen part, the strategy."""
    def names(key: str) -> str:
        value = transfer.get(key) or []
        return page.e(", ".join(map(str, value)) or "none")

    fraction = transfer.get("fraction_loaded")
    rows = [("weights from", f"<code>{page.e(transfer.get('source', '?'))}</code>"),
            ("loaded", f"{len(transfer.get('loaded') or [])} tensors"
                       + (f" ({page.fmt_percent(fraction)} of the parameters)"
                          if isinstance(fraction, (int, float)) else "")),
            ("re-initialised", names("reinitialised")), ("adapted", names("adapted")),
            ("skipped", page.e(len(transfer.get("skipped") or {}))),
            ("frozen at the end", f"{len(transfer.get('frozen') or [])} parameter tensors")]
    settings = transfer.get("settings")
    if isinstance(settings, dict):
        rows.append(("settings", page.e(", ".join(f"{k}: {v}" for k, v in settings.items()
                                                  if v is not None))))
    html = page.table(rows)
    strategy = transfer.get("strategy")
    if isinstance(strategy, dict) and strategy.get("table"):
        html += f"<pre>{page.e(strategy['table'])}</pre>"
    return html


def _diagnosis_html(diagnosis: dict) -> str:
    parts = [f'<p class="verdict">{page.badge(diagnosis["label"])} '
             f"{page.e(diagnosis.get('message') or '')}</p>"]
    advice = [a for a in diagnosis.get("advice") or [] if a]
    if advice:
        parts.append('<h3>What to try</h3><ul class="advice">'
                     + "".join(f"<li>{page.e(a)}</li>" for a in advice) + "</ul>")
    evidence = diagnosis.get("evidence")
    if isinstance(evidence, dict) and evidence:
        rows = [(k, page.e(_evidence_value(v))) for k, v in evidence.items()]
        parts.append("<h3>Evidence</h3>" + page.table(rows, "kv evidence"))
    return "\n".join(parts)


def _evidence_value(value) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return page.fmt_number(value) if isinstance(value, (int, float)) else str(value)


def _summary_html(run: RunData) -> tuple[str, str]:
    """(caption, table) from summary.json, or from the last epoch logged."""
    s = run.summary
    if s is None:
        last = run.last_epoch()
        if not last:
            return ("No epoch has finished yet; the table fills in as the run goes.",
                    '<p class="note">No metrics yet.</p>')
        rows = [("Epochs done", page.fmt_number(last.get("epoch"))),
                ("Steps", page.fmt_number(last.get("step"))),
                ("Validation accuracy", page.fmt_percent(last.get("val_accuracy"))),
                ("Validation loss", page.fmt_number(last.get("val_loss"))),
                ("Train accuracy", page.fmt_percent(last.get("train_accuracy"))),
                ("Train loss", page.fmt_number(last.get("train_loss"))),
                ("Elapsed", page.fmt_seconds(last.get("elapsed_seconds")))]
        return ("The last epoch logged (summary.json, with the test metrics, is written when "
                "the run ends).", page.table((k, page.e(v)) for k, v in rows))
    fields: list[tuple[str, str, Callable[[object], str]]] = [
        ("Test accuracy", "test_accuracy", page.fmt_percent),
        ("Test loss", "test_loss", page.fmt_number),
        ("Validation accuracy", "val_accuracy", page.fmt_percent),
        ("Validation loss", "val_loss", page.fmt_number),
        ("Train accuracy", "train_accuracy", page.fmt_percent),
        ("Train loss", "train_loss", page.fmt_number),
        ("Epochs", "epochs", page.fmt_number), ("Steps", "steps", page.fmt_number),
        ("Wall time", "wall_seconds", page.fmt_seconds),
        ("Throughput (samples/s)", "samples_per_second", page.fmt_number),
        ("Device", "device", str), ("Parameters", "parameters", page.fmt_number)]
    kind = next((k for k in ("ema", "swa") if f"val_accuracy_{k}" in s), None)
    if kind is not None or "test_accuracy_from" in s:
        name = (kind or "average").upper()
        fields[1:1] = [
            ("Test accuracy from", "test_accuracy_from", str),
            ("Test accuracy, live weights", "test_accuracy_live", page.fmt_percent),
            (f"Test accuracy, {name} weights", f"test_accuracy_{kind}", page.fmt_percent),
            (f"Validation accuracy, {name} weights", f"val_accuracy_{kind}",
             page.fmt_percent)]
    table = [(label, fmt(s[key])) for label, key, fmt in fields if key in s]
    if "best_epoch" in s:
        accuracy = page.fmt_percent(s.get("best_val_accuracy"))
        best = f"{page.fmt_number(s['best_epoch'])} ({accuracy})"
        # the trainer's sentinel: epoch 0, accuracy -1
        if not page.number_of(s["best_epoch"]) >= 1:
            best = "none (no epoch finished)"
        at = next(i for i, (label, _) in enumerate(table) if label == "Train accuracy") \
            if any(label == "Train accuracy" for label, _ in table) else len(table)
        table.insert(at + 2, ("Best epoch (validation accuracy)", best))
    return ("Final metrics of the run: report the test accuracy, tune on the validation "
            "accuracy; a train accuracy far above it means overfitting.",
            page.table((k, page.e(v)) for k, v in table))


def _snapshots_html(snapshots: list, ensemble: object) -> str:
    """The snapshot table of summary.json's ``snapshots`` and ``snapshot_ensemble``."""
    members = ensemble.get("members", []) if isinstance(ensemble, dict) else []
    rows = []
    for snap in snapshots:
        if not isinstance(snap, dict):
            continue
        mark = " (in the ensemble)" if snap.get("snapshot") in members else ""
        rows.append(f"<tr><td>{page.e(snap.get('snapshot'))}{page.e(mark)}</td>"
                    + "".join(f'<td class="num">{page.fmt_number(snap.get(k))}</td>'
                              for k in ("epoch", "step"))
                    + "".join(f'<td class="num">{page.fmt_percent(snap.get(k))}</td>'
                              for k in ("val_accuracy", "test_accuracy")) + "</tr>")
    if isinstance(ensemble, dict):
        rows.append('<tr><th>ensemble</th><td></td><td></td>'
                    + "".join(f'<td class="num">{page.fmt_percent(ensemble.get(k))}</td>'
                              for k in ("val_accuracy", "test_accuracy")) + "</tr>")
    head = ('<thead><tr><th>snapshot</th><th class="num">epoch</th><th class="num">step</th>'
            '<th class="num">validation accuracy</th><th class="num">test accuracy</th>'
            "</tr></thead>")
    note = ""
    if isinstance(ensemble, dict) and "test_disagreement" in ensemble:
        note = (f'<p class="muted">The ensemble\'s members disagree on '
                f"{page.fmt_percent(ensemble['test_disagreement'])} of the test examples per "
                "pair.</p>")
    return f'<div class="wide"><table class="runs">{head}{"".join(rows)}</table></div>{note}'


def _run_plots(run: RunData, add, notes: list[tuple[str, str]]) -> None:
    steps = [page.number_of(r.get("step")) for r in run.steps]
    losses = [page.number_of(r.get("loss")) for r in run.steps]
    if any(math.isfinite(v) for v in losses):
        add("loss", "Loss per step", "Faint: the loss at each logged step; solid: its moving "
            "average. Flattens early and stays high: learning rate too low; drops fast then "
            "stalls high: too high; shoots up: far too high.",
            page.img(plots.loss_figure(steps, losses), "training loss per step"))
    else:
        notes.append(("Loss per step", "no finite loss in the step records yet"))

    epochs = [page.number_of(r.get("epoch")) for r in run.epochs]
    train_acc = [page.number_of(r.get("train_accuracy")) for r in run.epochs]
    val_acc = [page.number_of(r.get("val_accuracy")) for r in run.epochs]
    kind = next((k for k in ("ema", "swa")
                 if any(f"val_accuracy_{k}" in r for r in run.epochs)), None)
    averaged = None if kind is None else (
        kind.upper(), [page.number_of(r.get(f"val_accuracy_{kind}")) for r in run.epochs],
        [page.number_of(r.get(f"val_loss_{kind}")) for r in run.epochs])
    if any(math.isfinite(v) for v in train_acc + val_acc):
        fig = plots.accuracy_figure(epochs, train_acc, val_acc,
                                    [page.number_of(r.get("train_loss")) for r in run.epochs],
                                    [page.number_of(r.get("val_loss")) for r in run.epochs],
                                    averaged=averaged)
        add("accuracy", "Accuracy per epoch", "Train (solid) against validation (dashed), the "
            "averaged weights' validation (dotted) when the run averages them, the "
            "gap shaded: a wide, growing gap is overfitting (regularise, more data); no gap at "
            "a low accuracy is underfitting (a bigger model, train longer).",
            page.img(fig, "train and validation accuracy and loss per epoch"))
    else:
        notes.append(("Accuracy per epoch", "no epoch has finished yet"))

    lrs = [page.number_of(r.get("lr")) for r in run.steps]
    if any(math.isfinite(v) for v in lrs):
        add("learning-rate", "Learning rate", "The learning rate at each logged step: flat for a "
            "constant schedule, a ramp for warmup, then the decay or cycle of the schedule.",
            page.img(plots.lr_figure(steps, lrs), "learning rate per step"))
    else:
        notes.append(("Learning rate", "no learning rate in the step records yet"))

    monitor_steps = [page.number_of(r.get("step")) for r in run.monitors]
    known = [s for s in steps + monitor_steps if math.isfinite(s)]
    span = (min(known), max(known)) if known else None  # monitor plots share the step axis
    ratios = _monitor_series(run.monitors, "update_ratio")
    if ratios:
        add("update-ratio", "Update / weight ratio", "||lr·update|| / ||weight|| per parameter "
            "tensor: about 1e-3 (dotted) is healthy, the shaded band is 1e-4 to 1e-2; far below "
            "the layer barely learns (raise the learning rate), far above it thrashes (lower it).",
            page.img(plots.update_ratio_figure(ratios, span), "update to weight ratio per tensor"))
    else:
        notes.append(("Update / weight ratio", _no_monitor(run, "update ratios")))

    total = [page.number_of(r.get("grad_norm")) for r in run.steps]
    per_tensor = _monitor_series(run.monitors, "grad_norm")
    if per_tensor or any(math.isfinite(v) for v in total):
        has_total = any(math.isfinite(v) for v in total)
        fig = plots.grad_norm_figure((steps, total) if has_total else None, per_tensor,
                                     span)
        add("grad-norm", "Gradient norm", "The gradient's L2 norm per step (total in black, per "
            "tensor in colour): spikes warn of instability (lower the learning rate or clip), a "
            "norm sinking towards zero of vanishing gradients.",
            page.img(fig, "gradient norm per step"))
    else:
        notes.append(("Gradient norm", "not logged (no grad_norm in the step records or "
                      "monitor records)"))

    dead = _monitor_series(run.monitors, "dead_relu")
    if dead:
        add("dead-relu", "Dead ReLU units", "Share of each module's ReLU units that output zero "
            "for every monitored example: a few percent is normal; a large or growing share "
            "means dead units (lower the learning rate, He initialisation, leaky ReLU).",
            page.img(plots.dead_relu_figure(dead, span), "dead ReLU fraction per module"))
    else:
        notes.append(("Dead ReLU units", _no_monitor(run, "dead-ReLU fractions")))


def _no_monitor(run: RunData, what: str) -> str:
    if not run.monitors:
        return "no monitor records in metrics.jsonl (the run was trained without the monitor)"
    return f"the monitor records hold no {what}"


def _monitor_series(monitors: list[dict], key: str) -> dict[str, tuple[list, list]]:
    """``{name: (steps, values)}`` of one kind of monitor value, in first-seen order."""
    series: dict[str, tuple[list, list]] = {}
    for record in monitors:
        values = record["monitor"].get(key)
        if not isinstance(values, dict):
            continue
        for name, value in values.items():
            xs, ys = series.setdefault(str(name), ([], []))
            xs.append(page.number_of(record.get("step")))
            ys.append(page.number_of(value))
    return {name: s for name, s in series.items() if any(math.isfinite(v) for v in s[1])}


# -- the comparison of several runs -----------------------------------------------------------

def compare_runs(run_dirs: Sequence[str | Path], out: str | Path) -> Path:
    """Write one self-contained page overlaying several runs to ``out``; returns its path.

    Each run keeps one colour in every plot; legend labels are the run directories' names.
    """
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise UserError("compare needs at least one run directory")
    out = Path(out)
    if out.is_dir():
        raise UserError(f"cannot write the comparison to {str(out)!r}: it is a directory; "
                        "expected a file path such as compare.html")
    runs = [RunDir(d).load() for d in dirs]
    labels = unique_labels(dirs)
    colors = plots.categorical_colors(len(runs))
    _io.write_output(out, render_comparison(runs, labels, colors), kind="comparison",
                     example="compare.html")
    return out


def unique_labels(paths: Sequence[Path]) -> list[str]:
    """The directories' names; where two share one, ``parent/name``, then a ``(2)`` suffix."""
    full = [Path(p).resolve() for p in paths]
    labels = [p.name or str(p) for p in full]
    labels = [f"{p.parent.name}/{p.name}" if labels.count(label) > 1 else label
              for p, label in zip(full, labels, strict=True)]
    seen: dict[str, int] = {}
    unique = []
    for label in labels:
        if labels.count(label) > 1:
            seen[label] = seen.get(label, 0) + 1
            label = f"{label} ({seen[label]})"
        unique.append(label)
    return unique


def render_comparison(runs: list[RunData], labels: list[str], colors: list[str]) -> str:
    """The comparison page, as HTML text."""
    sections: list[tuple[str, str, str]] = []
    notes: list[tuple[str, str]] = []

    def add(section_id, title, caption, body):
        sections.append((section_id, title, page.section(section_id, title, caption, body)))

    add("runs", "Final metrics", "One row per run, the best of each column highlighted (highest "
        "accuracy, lowest loss, shortest time); * marks a run without summary.json, shown at its "
        "last logged epoch.", _comparisontable(runs, labels, colors))

    def curves(records_of, x_key, y_key, smooth=False):
        result = []
        for run, label, color in zip(runs, labels, colors, strict=True):
            records = records_of(run)
            xs = [page.number_of(r.get(x_key)) for r in records]
            ys = [page.number_of(r.get(y_key)) for r in records]
            if any(math.isfinite(v) for v in ys):
                result.append((label, color, (xs, plots.ema(ys) if smooth else ys)))
        return result

    panels = [
        ("loss", "Training loss", lambda r: r.steps, "step", "loss", True, "step",
         "training loss (moving average)", False,
         "Moving average of each run's training loss per step: lower and earlier is better "
         "(steps mean different amounts of data if the batch sizes differ)."),
        ("val-accuracy", "Validation accuracy", lambda r: r.epochs, "epoch", "val_accuracy",
         False, "epoch", "validation accuracy", True,
         "Validation accuracy per epoch, the curve to pick a setting by: highest at the end "
         "wins, a curve that falls after its peak is overfitting."),
        ("train-accuracy", "Train accuracy", lambda r: r.epochs, "epoch", "train_accuracy",
         False, "epoch", "train accuracy", True,
         "Train accuracy per epoch: how fast each optimizer fits the training set; far above "
         "its validation curve means that run overfits."),
        ("learning-rate", "Learning rate", lambda r: r.steps, "step", "lr", False, "step",
         "learning rate", False,
         "Each run's learning rate per step (log scale when the runs span more than a decade)."),
    ]
    for sid, title, records_of, x_key, y_key, smooth, xlabel, ylabel, percent, cap in panels:
        data = curves(records_of, x_key, y_key, smooth)
        if data:
            fig = plots.overlay_figure(data, xlabel, ylabel, percent=percent)
            add(sid, title, cap, page.img(fig, f"{ylabel} of each run"))
        else:
            notes.append((title, "no run has logged it yet"))

    diff = _config_differences(runs, labels, colors)
    if diff:
        add("config-differences", "Config differences", "Only the config keys whose values "
            "differ between the runs.", diff)
    elif len(runs) > 1:
        notes.append(("Config differences", "the runs' configs are the same apart from the name"))

    title = f"Comparison of {len(runs)} run{'s' if len(runs) != 1 else ''}"
    header = (f'<header id="overview">\n<p class="kicker">gradwise comparison</p>\n'
              f"<h1>{page.e(title)}</h1>\n<p class=\"facts\">"
              + " · ".join(f"{_swatch(c)}{page.e(label)}" for label, c in zip(labels, colors,
                                                                            strict=True))
              + "</p>\n</header>")
    body = [header, page.nav([(sid, t) for sid, t, _ in sections])]
    body += [text for _, _, text in sections]
    body.append(_omitted(notes))
    return page.page(f"{title} · gradwise", "\n".join(b for b in body if b), kind="comparison")


def _swatch(color: str) -> str:
    return f'<span class="swatch" style="background:{page.e(color)}"></span>'


def _comparisontable(runs: list[RunData], labels: list[str], colors: list[str]) -> str:
    # (header, value of a run, formatter, best: max / min / None)
    columns = [
        ("Test accuracy", lambda r, s, e: s.get("test_accuracy"), page.fmt_percent, max),
        ("Val accuracy", lambda r, s, e: s.get("val_accuracy", e.get("val_accuracy")),
         page.fmt_percent, max),
        ("Train accuracy", lambda r, s, e: s.get("train_accuracy", e.get("train_accuracy")),
         page.fmt_percent, max),
        ("Test loss", lambda r, s, e: s.get("test_loss"), page.fmt_number, min),
        ("Epochs", lambda r, s, e: s.get("epochs", e.get("epoch")), page.fmt_number, None),
        ("Wall time", lambda r, s, e: s.get("wall_seconds", e.get("elapsed_seconds")),
         page.fmt_seconds, min),
    ]
    values = [[page.number_of(get(r, r.summary or {}, r.last_epoch())) for r in runs]
              for _, get, _, _ in columns]
    best = []
    for (_, _, _, pick), column in zip(columns, values, strict=True):
        finite = [v for v in column if math.isfinite(v)]
        distinct = len(set(finite)) > 1  # all equal: nothing stands out
        best.append(pick(finite) if pick and distinct else None)
    head = ("<tr><th>RunData</th><th>Optimizer</th>"
            + "".join(f'<th class="num">{page.e(c[0])}</th>' for c in columns)
            + "<th>Status</th><th>Diagnosis</th></tr>")
    rows = []
    for i, (run, label, color) in enumerate(zip(runs, labels, colors, strict=True)):
        star = "" if run.summary is not None else "*"
        cells = [f"<td>{_swatch(color)}{page.e(label)}{star}</td>",
                 f"<td>{page.e(describe_optimizer(run.config))}"
                 + (f'<br><span class="muted">{page.e(describe_schedule(run.config))}</span>'
                    if run.config else "") + "</td>"]
        for j, (_, _, fmt, _) in enumerate(columns):
            v = values[j][i]
            cls = "num best" if best[j] is not None and v == best[j] else "num"
            cells.append(f'<td class="{cls}">{page.e(fmt(v) if math.isfinite(v) else "—")}</td>')
        css_class, status_text = status(run)
        cells.append(f'<td class="status-{css_class}" title="{page.e(status_text)}">'
                     f'{page.e(status_text.split(":")[0])}</td>')
        diagnosis = diagnosis_of(run)
        cells.append(f"<td>{page.badge(diagnosis['label']) if diagnosis else '—'}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="wide"><table class="runs"><thead>{head}</thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _config_differences(runs: list[RunData], labels: list[str], colors: list[str]) -> str:
    flats = [flatten(run.config) for run in runs]
    keys = []
    for flat in flats:
        keys += [k for k in flat if k not in keys and k != "name"]
    differing = [k for k in keys if len({json.dumps(f.get(k), default=str) for f in flats}) > 1]
    if len(runs) < 2 or not differing:
        return ""
    head = "<tr><th>key</th>" + "".join(f"<th>{_swatch(c)}{page.e(label)}</th>"
                                        for label, c in zip(labels, colors, strict=True))
    rows = "".join(f"<tr><th><code>{page.e(k)}</code></th>"
                   + "".join(f"<td>{page.e(_fmt_option(f[k]) if k in f else '—')}</td>"
                             for f in flats) + "</tr>" for k in differing)
    return f'<div class="wide"><table class="diff"><thead>{head}</thead>{rows}</table></div>'


