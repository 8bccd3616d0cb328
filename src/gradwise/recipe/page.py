"""The recipe's page, ``report.html``: the data, the sanity check, the LR range test with the
searched range, the search's stages (scatter per stage, the narrowing), the final run's curves
and diagnosis, the test accuracy with its confidence interval, the time of every phase and the
final configuration. Built from the recipe folder's files with the run and search reports'
own pieces (:mod:`gradwise.report.page`, :mod:`gradwise.report.plots`,
:mod:`gradwise.search.report`)."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..report import page, plots
from ..report.html import _diagnosis_html
from ..rundir import RunDir
from ..search import Search
from ..search.report import narrowing_figure, scatter_figure
from . import budget as B
from .plan import spec_of


def render(out: Path, summary: dict, times: Callable[[dict], None] | None = None) -> str:
    """The page of the recipe in ``out`` with ``summary``; ``times(summary)`` is called after
    every figure is drawn, to fill in the phases' times (the report's own included)."""
    sections: list[tuple[str, str, str]] = []

    def add(sid: str, title: str, caption: str, body: str) -> None:
        sections.append((sid, title, page.section(sid, title, caption, body)))

    facts = _json(out / "data.json")
    if facts:
        add("data", "The data", "What the recipe looked at before choosing the model family "
            "and the augmentation candidates.", _data_html(facts))
    sanity = _json(out / "sanity.json")
    if sanity:
        add("sanity", "Sanity check", "Overfit about 20 training examples with every "
            "regularizer off: a setup that cannot reach 100% there has a bug.",
            f"<pre>{page.e(sanity.get('message', ''))}</pre>")
    lr = _json(out / "lr_find.json")
    if lr:
        add("lr-find", "LR range test", "The learning rate swept exponentially from fresh "
            "models; the suggestion is the centre of the search's learning-rate range "
            "(shaded blue).", _lr_html(out, lr))
    search = _search_html(out)
    if search:
        add("search", "Search", "Coarse: many short trials over the whole space; fine: fewer, "
            "longer trials in ranges narrowed around the coarse stage's best. Trials whose loss "
            "passed 3x the initial loss stopped early; trials behind the median were pruned.",
            search)
    final = _final_html(out, summary)
    if final:
        add("final", "Final training", "The chosen configuration trained for the rest of the "
            "budget with an exponential moving average of the weights; the test set is read "
            "once, at the very end.", final)
    ensemble = _ensemble_html(summary)
    if ensemble:
        add("ensemble", "Ensemble", "Where the final phase's time held several runs of the "
            "chosen configuration, they differ in their seed only (one validation split); the "
            "ensemble averages their softmax outputs. Validation chooses the headline; the test "
            "set is read once, after that choice.", ensemble)
    if (out / "best.yaml").is_file():
        add("config", "Final configuration", "best.yaml: the final run's config; "
            "gradwise train best.yaml trains it again.",
            f"<pre>{page.e((out / 'best.yaml').read_text(encoding='utf-8'))}</pre>")
    if times is not None:
        times(summary)
    add("time", "Time per phase", "The budget's split (share and allotted seconds: the "
        "seconds left when the phase started, shared out in proportion to the shares of the "
        "phases still to come) against the time each phase took.", _time_html(summary))
    order = ["time", "data", "sanity", "lr-find", "search", "final", "ensemble", "config"]
    sections.sort(key=lambda s: order.index(s[0]))
    body = [_header(summary), page.nav([(sid, title) for sid, title, _ in sections])]
    body += [html for _, _, html in sections]
    return page.page(f"recipe on {summary.get('data', '?')} · gradwise", "\n".join(body),
                     kind="recipe")


def _header(summary: dict) -> str:
    status = summary.get("status", "?")
    if status == "finished":
        low, high = summary.get("test_accuracy_ci95") or (math.nan, math.nan)
        source = (f"the {len((summary.get('ensemble') or {}).get('members') or [])}-run "
                  "ensemble's " if summary.get("headline") == "ensemble" else "")
        headline = (f"{source}test accuracy {page.fmt_percent(summary.get('test_accuracy'))} "
                    f"(95% Wilson interval {page.fmt_percent(low)} to "
                    f"{page.fmt_percent(high)}, {page.fmt_number(summary.get('test_size'))} "
                    "test examples)")
        css = "finished"
    elif status == "sanity-failed":
        headline, css = f"stopped: the sanity check failed: {summary.get('stop_reason')}", \
            "stopped"
    else:
        headline, css = f"in progress or interrupted ({status})", "incomplete"
    facts = [f"data {page.e(summary.get('data'))}",
             f"budget {page.e(page.fmt_seconds(summary.get('budget_seconds')))}",
             f"wall time {page.e(page.fmt_seconds(summary.get('wall_seconds')))}",
             f"model family {page.e(summary.get('family'))}"]
    return (f'<header id="overview">\n<p class="kicker">gradwise recipe</p>\n'
            f"<h1>recipe on {page.e(summary.get('data'))}</h1>\n"
            f'<p class="status status-{css}">{page.e(headline)}</p>\n'
            f'<p class="facts">{" · ".join(facts)}</p>\n</header>')


def _data_html(facts: dict) -> str:
    sizes = facts.get("sizes", {})
    low, high = facts.get("value_range", [math.nan, math.nan])
    counts = facts.get("class_counts", [])
    rows = [("Source", page.e(facts.get("source"))),
            ("Shape of one sample", page.e(tuple(facts.get("input_shape", ())))),
            ("Modality", page.e(facts.get("modality"))),
            ("Model family", page.e(facts.get("family"))),
            ("Classes", page.e(facts.get("num_classes"))),
            ("Train / val / test", page.e(" / ".join(page.fmt_number(sizes.get(k))
                                                     for k in ("train", "val", "test")))),
            ("Examples per class (train)", page.e(f"{min(counts, default=0)} to "
                                                   f"{max(counts, default=0)}")),
            ("Balance (smallest / largest class)", page.e(page.fmt_number(
                facts.get("balance")))),
            ("Value range (raw)", page.e(f"{low:.4g} to {high:.4g}"))]
    html = page.table(rows)
    if counts:
        fig = plots.new_figure(7.5, 2.4)
        ax = fig.add_subplot()
        ax.bar(range(len(counts)), counts, color="#0969da")
        ax.set_xlabel("class")
        ax.set_ylabel("train examples")
        ax.grid(alpha=0.3, axis="y")
        html += page.img(fig, "training examples per class")
    return html


def _lr_html(out: Path, lr: dict) -> str:
    rows = [("Suggested learning rate", page.e(page.fmt_number(lr.get("suggested_lr")))),
            ("Seeds", page.e(len(lr.get("curves") or []))),
            ("Sweep", page.e(f"{page.fmt_number(lr.get('start'))} to "
                             f"{page.fmt_number(lr.get('end'))} in {lr.get('steps')} steps"))]
    if lr.get("range"):
        low, high = lr["range"]
        rows.append(("Searched range", page.e(f"{low:.3g} to {high:.3g} (log-uniform)")))
    else:
        rows.append(("Searched range", "none: BASE fixes optimizer.lr"))
    if lr.get("warning"):
        rows.append(("Warning", page.e(lr["warning"])))
    html = page.table(rows)
    png = out / "lr_find.png"
    if png.is_file():
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        html += (f'<figure><img src="data:image/png;base64,{data}" alt="LR range test with '
                 f'the searched range"></figure>')
    return html


def _search_html(out: Path) -> str:
    plan = _json(out / "plan.json")
    if not plan or not plan.get("stages") or not (out / "search" / "stages.json").is_file():
        if plan and not plan.get("stages"):
            return "<p>Nothing searched: BASE fixes every key the recipe searches.</p>"
        return ""
    stages_info = _any_json(out / "search" / "stages.json")
    stages_info = [s for s in stages_info if isinstance(s, dict)] \
        if isinstance(stages_info, list) else []
    rows = []
    for info in stages_info:
        best = info.get("best") or {}
        counts = ", ".join(f"{k.lower()} {v}" for k, v in (info.get("counts") or {}).items())
        ranges = "<br>".join(page.e(f"{key}: {_range_text(dim)}")
                             for key, dim in (info.get("space") or {}).items())
        rows.append(f"<tr><td>{page.e(info.get('name'))}</td>"
                    f"<td class=\"num\">{page.e(info.get('trials'))}</td>"
                    f"<td class=\"num\">{page.e(info.get('epochs'))}</td>"
                    f"<td>{page.e(counts)}</td>"
                    f"<td class=\"num\">{page.e(page.fmt_percent(best.get('value')))}</td>"
                    f"<td>{ranges}</td></tr>")
    html = ('<div class="wide"><table class="grid"><thead><tr><th>stage</th>'
            '<th class="num">trials</th><th class="num">epochs</th><th>finished</th>'
            '<th class="num">best val</th><th>ranges</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")
    spec = spec_of(plan)
    if spec is None:
        return html
    try:
        stages = Search(spec, out / "search", _storage(out), resume=True, quiet=True).stages()
    except Exception as exc:  # the page is derived: a storage that cannot be read loses nothing
        return html + f"<p>The trials could not be read ({page.e(exc)}).</p>"
    for fig, alt in ((scatter_figure(spec, stages), "trials per stage"),
                     (narrowing_figure(spec, stages), "ranges per stage")):
        if fig is not None:
            html += page.img(fig, alt)
    html += ('<p class="muted">Every trial: <a href="search/results.csv">search/results.csv'
             '</a>; the search\'s own page: <a href="search/report.html">'
             "search/report.html</a>.</p>")
    return html


def _final_html(out: Path, summary: dict) -> str:
    folder = out / "final"
    if not (folder / RunDir.METRICS).is_file():
        return ""
    run = RunDir(folder).load()
    parts = []
    s = run.summary or {}
    if s:
        single = summary.get("single") or {}
        n = summary.get("test_size") or 0
        low, high = B.wilson_interval(round(single["test_accuracy"] * n), n) \
            if n and "test_accuracy" in single else (math.nan, math.nan)
        rows = [("Test accuracy", page.e(page.fmt_percent(single.get("test_accuracy")))),
                ("95% interval (Wilson score)", page.e(f"{page.fmt_percent(low)} to "
                                                        f"{page.fmt_percent(high)}")),
                ("Weights (chosen on validation)", page.e(single.get("weights", "live"))),
                ("Validation accuracy", page.e(page.fmt_percent(single.get("val_accuracy")))),
                ("Train accuracy", page.e(page.fmt_percent(s.get("train_accuracy")))),
                ("Epochs", page.e(page.fmt_number(s.get("epochs")))),
                ("Wall time", page.e(page.fmt_seconds(s.get("wall_seconds"))))]
        if s.get("stop_reason"):
            rows.append(("Stopped early", page.e(s["stop_reason"])))
        parts.append(page.table(rows))
        if s.get("diagnosis"):
            parts.append("<h3>Diagnosis</h3>" + _diagnosis_html(s["diagnosis"]))
    epochs = [page.number_of(r.get("epoch")) for r in run.epochs]
    if epochs:
        kind = next((k for k in ("ema", "swa")
                     if any(f"val_accuracy_{k}" in r for r in run.epochs)), None)
        averaged = None if kind is None else (
            kind.upper(), [page.number_of(r.get(f"val_accuracy_{kind}")) for r in run.epochs],
            [page.number_of(r.get(f"val_loss_{kind}")) for r in run.epochs])
        fig = plots.accuracy_figure(
            epochs, [page.number_of(r.get("train_accuracy")) for r in run.epochs],
            [page.number_of(r.get("val_accuracy")) for r in run.epochs],
            [page.number_of(r.get("train_loss")) for r in run.epochs],
            [page.number_of(r.get("val_loss")) for r in run.epochs], averaged=averaged)
        parts.append(page.img(fig, "final run: accuracy and loss per epoch"))
    parts.append('<p class="muted">Every curve of the final run: '
                 '<a href="final/report.html">final/report.html</a>.</p>')
    return "\n".join(parts)


def _ensemble_html(summary: dict) -> str:
    """The decision, each run's and the ensemble's validation and test numbers, and the
    headline's choice."""
    ensemble = summary.get("ensemble")
    if not isinstance(ensemble, dict):
        return ""
    if not ensemble.get("built"):
        return (f"<p>No ensemble: {page.e(ensemble.get('reason'))}. The headline is the "
                "single run's.</p>")
    pct, num = page.fmt_percent, page.fmt_number

    def cells(r: dict) -> str:
        return "".join(f'<td class="num">{page.e(f(r.get(k)))}</td>' for k, f in (
            ("val_accuracy", pct), ("val_loss", num), ("test_accuracy", pct),
            ("test_loss", num)))

    rows = [f"<tr><td>{page.e(r.get('run'))}</td><td class=\"num\">{page.e(r.get('seed'))}"
            f"</td><td class=\"num\">{page.e(r.get('epochs'))}</td>"
            f"<td>{page.e(r.get('weights'))}</td>{cells(r)}</tr>"
            for r in ensemble.get("members") or []]
    rows.append(f"<tr><th>ensemble (mean of the softmax)</th><td></td><td></td><td></td>"
                f"{cells(ensemble)}</tr>")
    head = ('<div class="wide"><table class="grid"><thead><tr><th>run</th>'
            '<th class="num">seed</th><th class="num">epochs</th><th>weights</th>'
            '<th class="num">val accuracy</th><th class="num">val NLL</th>'
            '<th class="num">test accuracy</th><th class="num">test NLL</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")
    facts = page.table([
        ("Why an ensemble", page.e(ensemble.get("reason"))),
        ("Headline", page.e(f"the {summary.get('headline')}: {summary.get('headline_why')}")),
        ("Disagreement (test)", page.e(f"{pct(ensemble.get('test_disagreement'))} of the "
                                       "examples, per pair of runs"))])
    return head + facts


def _time_html(summary: dict) -> str:
    spent = summary.get("phase_seconds") or {}
    allotted = summary.get("phase_allotted_seconds") or {}
    budget = summary.get("budget_seconds")
    rows = []
    for phase in B.PHASES:
        rows.append(f"<tr><td>{page.e(B.TITLES[phase])}</td>"
                    f"<td class=\"num\">{B.SHARES[phase]:.0%}</td>"
                    f"<td class=\"num\">{page.e(page.fmt_seconds(allotted.get(phase)))}</td>"
                    f"<td class=\"num\">{page.e(page.fmt_seconds(spent.get(phase)))}</td></tr>")
    total = summary.get("wall_seconds")
    rows.append(f"<tr><th>total</th><td class=\"num\">100%</td>"
                f"<td class=\"num\">{page.e(page.fmt_seconds(budget))}</td>"
                f"<td class=\"num\">{page.e(page.fmt_seconds(total))}</td></tr>")
    return ('<table class="grid"><thead><tr><th>phase</th><th class="num">share</th>'
            '<th class="num">allotted</th><th class="num">spent</th></tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _range_text(dim: dict) -> str:
    if dim.get("kind") == "choice":
        return "one of " + ", ".join(json.dumps(c) for c in dim.get("choices", []))
    return f"{dim.get('kind')}({dim.get('low'):.3g}, {dim.get('high'):.3g})"


def _storage(out: Path) -> str | None:
    request = _json(out / "recipe.json") or {}
    storage = request.get("storage")
    return storage if isinstance(storage, str) else None


def _json(path: Path) -> dict | None:
    """The mapping a recipe file holds (None: missing, unreadable or not a mapping)."""
    value = _any_json(path)
    return value if isinstance(value, dict) else None


def _any_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None

