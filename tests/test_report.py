"""gradwise.report: the HTML report of a run, the comparison of runs, the LR range-test plot.

Runs are real (short Trainer runs on digits). Where a test needs the monitor records and the
diagnosis in a known shape, it writes them itself into a copy of a run (see `legacy_run` and
`with_monitor`): that exercises the file format, whatever the producer currently writes.
"""

from __future__ import annotations

import base64
import json
import math
import re
import shutil
from html import escape
from pathlib import Path

import pytest

from gradwise import _io
from gradwise.errors import UserError
from gradwise.report import (
    build_report,
    compare_runs,
    figure_data_uri,
    lr_find_figure,
    plots,
    save_png,
)
from gradwise.report.html import unique_labels
from gradwise.train import Trainer

PLOT_SECTIONS = ["loss", "accuracy", "learning-rate", "update-ratio", "grad-norm", "dead-relu"]
BASE = {"data": "digits", "model": {"name": "mlp", "hidden": [32]},
        "train": {"epochs": 3, "checkpoint": False}}


def _train(root: Path, folder: str, name: str, optimizer: dict, **train) -> Path:
    config = {**BASE, "name": name, "optimizer": optimizer,
              "train": {**BASE["train"], **train}}
    Trainer(config, out=root / folder, quiet=True).fit()
    return root / folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {
        "momentum": _train(root, "momentum", "momentum",
                           {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True}),
        "adam": _train(root, "adam", "adam", {"name": "adam", "lr": 3e-3}),
        # one step, one epoch, and a name that is HTML
        "tiny": _train(root, "tiny", "<b>tiny</b>", {"name": "sgd", "lr": 0.1},
                       epochs=1, max_steps=1),
        # stops itself after 10 steps: loss above 3x the initial loss
        "diverge": _train(root, "diverge", "diverge", {"name": "sgd", "lr": 80.0}),
    }


def _copy(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    (dest / "report.html").unlink(missing_ok=True)
    return dest


def legacy_run(run: Path, dest: Path) -> Path:
    """A copy of ``run`` in the format before the monitor: no monitor records, no grad_norm,
    no diagnosis or warnings."""
    dest = _copy(run, dest)
    records = [r for r in _io.read_jsonl(dest / "metrics.jsonl") if "monitor" not in r]
    for record in records:
        record.pop("grad_norm", None)
    _io.write_text(dest / "metrics.jsonl", "".join(_io.jsonl_line(r) for r in records))
    summary = json.loads((dest / "summary.json").read_text())
    summary.pop("diagnosis", None)
    summary.pop("warnings", None)
    _io.write_json(dest / "summary.json", summary)
    return dest


DIAGNOSIS = {"label": "overfitting", "message": "validation loss rises while <i>train</i> falls",
             "advice": ["add dropout (model.dropout)", "raise weight decay"],
             "evidence": {"gap": 0.123456, "val_loss_rising_for": "2 epochs", "best_epoch": 2}}
WARNING = "update ratio of <script>head</script> above 1e-2"


def with_monitor(run: Path, dest: Path) -> Path:
    """A legacy copy of ``run`` given well-formed monitor records, grad norms, a diagnosis and
    a warning, as the monitor/diagnosis format describes them."""
    dest = legacy_run(run, dest)
    names = ["features.1.weight", "features.1.bias", "head.weight", "head.bias"]
    records = []
    for record in _io.read_jsonl(dest / "metrics.jsonl"):
        if "loss" in record:
            step = record["step"]
            record["grad_norm"] = 1.0 / step
            records.append(record)
            records.append({"step": step, "epoch": record["epoch"], "monitor": {
                "update_ratio": {n: 1e-3 * (i + 1) / step for i, n in enumerate(names)},
                "grad_norm": {n: 0.5 / step for n in names},
                "dead_relu": {"features.2": min(0.05 * step, 1.0)}}})
        else:
            records.append(record)
    _io.write_text(dest / "metrics.jsonl", "".join(_io.jsonl_line(r) for r in records))
    summary = json.loads((dest / "summary.json").read_text())
    summary.update(diagnosis=DIAGNOSIS, warnings=[WARNING])
    _io.write_json(dest / "summary.json", summary)
    return dest


@pytest.fixture(scope="module")
def monitored_report(runs, tmp_path_factory) -> Path:
    """The report of a run given monitor records and a diagnosis (see with_monitor)."""
    return build_report(with_monitor(runs["momentum"], tmp_path_factory.mktemp("m") / "run"))


def _sections(html: str) -> list[str]:
    return re.findall(r'<section id="([^"]+)"', html)


def _assert_self_contained(html: str) -> None:
    assert "http://" not in html and "https://" not in html
    for ref in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert ref.startswith(("data:", "#")), ref
    assert "<script" not in html.lower()


def _pre(html: str) -> str:
    return re.search(r"<pre>(.*?)</pre>", html, re.S).group(1)


# -- the report of one run ----------------------------------------------------------------------

def test_report_is_one_self_contained_file_with_a_plot_per_section_and_the_numbers(runs):
    run = runs["momentum"]
    (run / "report.html").unlink(missing_ok=True)  # the Trainer may have written one
    before = set(run.iterdir())
    out = build_report(run)
    assert out == run / "report.html" and out.is_file()
    assert set(run.iterdir()) - before == {out}  # nothing else written (no temporary files)
    html = out.read_text()
    _assert_self_contained(html)
    sections = _sections(html)
    plotted = [s for s in PLOT_SECTIONS if s in sections]
    assert {"loss", "accuracy", "learning-rate"} <= set(plotted)
    assert html.count("<img ") == len(plotted)
    assert html.count('src="data:image/png;base64,') == len(plotted)
    for section in ["summary", "config", *plotted]:  # each: an id, an h2 and a caption
        block = html.split(f'<section id="{section}">', 1)[1].split("</section>", 1)[0]
        assert "<h2>" in block and '<p class="caption">' in block
    # the summary numbers as the table formats them, and the config
    summary = json.loads((run / "summary.json").read_text())
    assert f"{100 * summary['test_accuracy']:.2f}%" in html
    assert f"{100 * summary['val_accuracy']:.2f}%" in html
    assert f"{summary['test_loss']:.4g}" in html
    assert '<p class="status status-finished">finished</p>' in html
    config = _pre(html)
    assert "momentum: 0.9" in config and "nesterov: true" in config and "source: digits" in config
    assert "sgd, lr 0.1, momentum 0.9, nesterov" in html


def test_report_escapes_html_and_renders_one_step(runs):
    html = build_report(runs["tiny"]).read_text()
    assert "<b>" not in html
    assert "<h1>&lt;b&gt;tiny&lt;/b&gt;</h1>" in html
    assert "name: &lt;b&gt;tiny&lt;/b&gt;" in _pre(html)
    assert {"loss", "accuracy", "learning-rate"} <= set(_sections(html))


def test_report_of_a_run_that_stopped_early(runs):
    run = runs["diverge"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stopped_early"]
    html = build_report(run).read_text()
    assert f"stopped early: {escape(summary['stop_reason'])}" in html
    assert "none (no epoch finished)" in html  # the trainer's best-epoch sentinel is not shown
    assert "loss" in _sections(html)


def test_report_without_summary_is_in_progress(runs, tmp_path):
    run = _copy(runs["momentum"], tmp_path / "running")
    (run / "summary.json").unlink()
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 99, "epoch": 4, "lo')  # a writer killed mid-line
    html = build_report(run).read_text()
    assert "in progress or interrupted" in html
    assert "Epochs done" in html  # the table comes from the last epoch logged
    assert "test_accuracy" not in html
    last = [r for r in _io.read_jsonl(run / "metrics.jsonl") if "val_accuracy" in r][-1]
    assert f"{100 * last['val_accuracy']:.2f}%" in html


def test_report_of_a_run_that_just_started(tmp_path, runs):
    run = tmp_path / "fresh"
    run.mkdir()
    shutil.copy(runs["adam"] / "config.yaml", run / "config.yaml")
    (run / "metrics.jsonl").write_text("")
    html = build_report(run).read_text()
    assert "in progress or interrupted" in html and "<img" not in html
    assert set(_sections(html)) == {"summary", "config", "not-shown"}


def test_sections_without_data_are_left_out_with_a_note(runs, tmp_path):
    html = build_report(legacy_run(runs["momentum"], tmp_path / "legacy")).read_text()
    sections = _sections(html)
    assert [s for s in PLOT_SECTIONS if s in sections] == ["loss", "accuracy", "learning-rate"]
    assert html.count("<img ") == 3
    notes = html.split('<section id="not-shown">', 1)[1]
    for title in ["Update / weight ratio", "Gradient norm", "Dead ReLU units", "Diagnosis"]:
        assert f"<strong>{escape(title)}</strong>" in notes
    assert 'id="diagnosis"' not in html and 'id="warnings"' not in html


def test_monitor_and_diagnosis_sections(monitored_report):
    """Exercises the monitor-record and diagnosis format (written here, see with_monitor)."""
    html = monitored_report.read_text()
    _assert_self_contained(html)
    sections = _sections(html)
    assert [s for s in PLOT_SECTIONS if s in sections] == PLOT_SECTIONS
    assert html.count("<img ") == len(PLOT_SECTIONS)
    assert {"diagnosis", "warnings"} <= set(sections)
    diagnosis = html.split('<section id="diagnosis">', 1)[1].split("</section>", 1)[0]
    assert '<span class="badge badge-bad">overfitting</span>' in diagnosis
    assert escape(DIAGNOSIS["message"]) in diagnosis
    for advice in DIAGNOSIS["advice"]:
        assert f"<li>{escape(advice)}</li>" in diagnosis
    assert "<th>val_loss_rising_for</th><td>2 epochs</td>" in diagnosis
    assert "<th>gap</th><td>0.1235</td>" in diagnosis
    assert escape(WARNING) in html and "<script" not in html


@pytest.mark.parametrize("setup, culprit", [
    (lambda d: None, "metrics.jsonl"),  # an empty directory: no run there
    (lambda d: (d / "metrics.jsonl").write_text('{"step": 1, "loss": 2.3}\nnot json\n'
                                                '{"step": 2, "loss": 2.2}\n'), "line 2"),
    (lambda d: (d / "metrics.jsonl").write_bytes(b"\xff\xfe\x00garbage"), "metrics.jsonl"),
    (lambda d: ((d / "metrics.jsonl").write_text(""),
                (d / "summary.json").write_text('{"test_accuracy": 0.9')), "summary.json"),
    (lambda d: ((d / "metrics.jsonl").write_text(""),
                (d / "config.yaml").write_text("name: [unclosed\n")), "config.yaml"),
    (lambda d: ((d / "metrics.jsonl").write_text(""), (d / "report.html").mkdir()),
     "report.html"),
])
def test_bad_run_directories_are_user_errors(tmp_path, setup, culprit):
    run = tmp_path / "run"
    run.mkdir()
    setup(run)
    with pytest.raises(UserError, match=re.escape(culprit)) as info:
        build_report(run)
    assert str(run) in str(info.value)


def test_missing_run_directory_is_a_user_error(tmp_path):
    for path in [tmp_path / "nowhere", tmp_path / "file.txt"]:
        if path.suffix:
            path.write_text("x")
        with pytest.raises(UserError, match=re.escape(str(path))):
            build_report(path)


# -- the comparison ---------------------------------------------------------------------------

def test_compare_runs(runs, tmp_path):
    dirs = [runs["momentum"], runs["adam"], runs["diverge"]]
    out = compare_runs(dirs, tmp_path / "new" / "folder" / "compare.html")
    assert out == tmp_path / "new" / "folder" / "compare.html" and out.is_file()
    assert list(out.parent.iterdir()) == [out]
    html = out.read_text()
    _assert_self_contained(html)
    for d in dirs:
        assert escape(d.name) in html
    assert {"runs", "loss", "val-accuracy", "train-accuracy", "learning-rate"} <= set(
        _sections(html))
    assert html.count("<img ") == 4
    table = html.split('<table class="runs">', 1)[1].split("</table>", 1)[0]
    assert table.count("<tr>") == 1 + len(dirs)
    assert "sgd, lr 0.1, momentum 0.9, nesterov" in table and "adam, lr 0.003" in table
    best = json.loads((runs["momentum"] / "summary.json").read_text())["test_accuracy"]
    assert f'<td class="num best">{100 * best:.2f}%</td>' in table  # momentum beats adam
    assert "stopped early" in table
    assert "config-differences" in _sections(html)  # optimizer.name, lr, momentum differ


def test_compare_labels_are_made_unique(runs, tmp_path):
    twin = _copy(runs["adam"], tmp_path / "elsewhere" / "adam")
    assert unique_labels([runs["adam"], twin]) == [f"{runs['adam'].parent.name}/adam",
                                                   "elsewhere/adam"]
    assert unique_labels([twin, twin]) == ["elsewhere/adam (1)", "elsewhere/adam (2)"]
    html = compare_runs([runs["adam"], twin], tmp_path / "c.html").read_text()
    assert "elsewhere/adam" in html


def test_compare_bad_inputs_are_user_errors(runs, tmp_path):
    out = tmp_path / "out" / "compare.html"
    with pytest.raises(UserError, match="at least one"):
        compare_runs([], out)
    not_a_run = tmp_path / "not-a-run"
    not_a_run.mkdir()
    with pytest.raises(UserError, match=re.escape(str(not_a_run))):
        compare_runs([runs["adam"], not_a_run], out)
    assert not out.parent.exists()  # nothing written, not even the folder
    (tmp_path / "a-dir.html").mkdir()
    with pytest.raises(UserError, match="a-dir.html"):
        compare_runs([runs["adam"]], tmp_path / "a-dir.html")
    (tmp_path / "a-file").write_text("")
    with pytest.raises(UserError, match="a-file"):
        compare_runs([runs["adam"]], tmp_path / "a-file" / "compare.html")


# -- in a browser -----------------------------------------------------------------------------

def _check_page(page, path: Path, images: int) -> None:
    page.goto(path.as_uri())
    loaded = page.evaluate(
        "Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)")
    assert loaded == [True] * images
    for i in range(images):
        assert page.locator("img").nth(i).is_visible()


def test_pages_load_in_a_browser(page, runs, monitored_report, tmp_path):
    _check_page(page, monitored_report, len(PLOT_SECTIONS))
    comparison = compare_runs([runs["momentum"], runs["adam"], runs["tiny"]],
                              tmp_path / "compare.html")
    _check_page(page, comparison, 4)
    assert page.errors == []


# -- figures ----------------------------------------------------------------------------------

def _lr_find_result():
    lrs = [1e-6 * 10 ** (i / 10) for i in range(61)]  # 1e-6 .. 1
    curves = []
    for seed, shift in [(0, 0.0), (1, 0.3)]:
        loss = [2.3 - 1.5 / (1 + math.exp(-(math.log10(lr) + 3 + shift) * 3))
                + (5.0 * (lr - 0.1) if lr > 0.1 else 0.0) for lr in lrs]
        loss[-1] = math.inf  # the sweep's last step diverged
        curves.append({"seed": seed, "loss": loss[: 58 + seed],  # sweeps stop on their own
                       "smoothed": plots.ema(loss[: 58 + seed], 0.5)})
    return {"lrs": lrs, "curves": curves,
            "suggestions": {"steepest": {"value": 1e-3, "per_seed": [1e-3, 5e-4]},
                            "min_over_10": {"value": 3e-3, "per_seed": [2e-3, 4e-3]}},
            "suggested_lr": 3e-3, "warning": "the seeds disagree 2x"}


def test_lr_find_figure(tmp_path):
    fig = lr_find_figure(_lr_find_result())
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    assert "0.003" in fig.get_suptitle() and "disagree" in ax.get_title(loc="left")
    labels = ax.get_legend_handles_labels()[1]
    assert {"seed 0", "seed 1", "steepest descent: 0.001", "minimum loss / 10: 0.003",
            "suggested: 0.003"} <= set(labels)
    assert len(ax.patches) == 2  # the per-seed spreads of both readings
    path = save_png(fig, tmp_path / "deep" / "lr_find.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    uri = figure_data_uri(fig)
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1])[:4] == b"\x89PNG"
    with pytest.raises(UserError, match="lrs"):
        lr_find_figure({"curves": []})
    with pytest.raises(UserError, match="directory"):
        save_png(fig, tmp_path)


def test_many_tensors_get_a_colour_bar_and_ema_skips_gaps():
    series = {f"layer{i}.weight": ([1, 2, 3], [1e-3, 2e-3, 1e-3 * i + 1e-4]) for i in range(12)}
    fig = plots.update_ratio_figure(series)
    assert len(fig.axes) == 2  # the plot and its colour bar instead of a 12-entry legend
    assert figure_data_uri(fig).startswith("data:image/png;base64,")
    assert plots.ema([1.0, 1.0, 1.0]) == [1.0, 1.0, 1.0]
    smoothed = plots.ema([2.0, math.nan, 4.0], 0.5)
    assert smoothed[0] == 2.0 and math.isnan(smoothed[1]) and smoothed[2] == pytest.approx(10 / 3)
