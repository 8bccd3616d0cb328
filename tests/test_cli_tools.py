"""`gradwise sanity`, `lr-find`, `report`, `compare` and `train --tensorboard` end to end."""

from __future__ import annotations

import json

import pytest
from test_cli import EXAMPLES, gradwise

QUICK = ["--set", "train.epochs=2", "--set", "model.channels=[8, 16]"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    runs = []
    for name, optimizer in (("sgd", "optimizer.name=sgd"), ("adam", "optimizer.name=adam")):
        out = root / name
        result = gradwise("train", EXAMPLES / "digits.yaml", "--out", out, "--quiet", *QUICK,
                          "--set", optimizer, "--set", "optimizer.lr=0.01")
        assert result.returncode == 0, result.stderr
        runs.append(out)
    return runs


def test_train_prints_the_diagnosis_and_writes_the_report(two_runs):
    summary = json.loads((two_runs[0] / "summary.json").read_text())
    assert summary["diagnosis"]["label"] in ("healthy", "underfitting", "plateau",
                                             "overfitting", "not-learning", "diverging")
    html = (two_runs[0] / "report.html").read_text()
    assert summary["diagnosis"]["label"] in html


def test_report_rebuilds_and_compare_overlays(two_runs, tmp_path):
    (two_runs[0] / "report.html").unlink()
    result = gradwise("report", two_runs[0])
    assert result.returncode == 0, result.stderr
    assert (two_runs[0] / "report.html").is_file()
    out = tmp_path / "cmp" / "compare.html"
    result = gradwise("compare", *two_runs, "--out", out)
    assert result.returncode == 0, result.stderr
    html = out.read_text()
    assert "sgd" in html and "adam" in html


def test_report_and_compare_refuse_a_folder_without_a_run(tmp_path, two_runs):
    result = gradwise("report", tmp_path)
    assert result.returncode == 2 and str(tmp_path) in result.stderr
    assert "Traceback" not in result.stderr
    result = gradwise("compare", two_runs[0], tmp_path, "--out", tmp_path / "c.html")
    assert result.returncode == 2 and not (tmp_path / "c.html").exists()


def test_sanity_passes_on_the_digits_example_and_fails_with_a_tiny_lr():
    result = gradwise("sanity", EXAMPLES / "digits.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("PASS")
    result = gradwise("sanity", EXAMPLES / "digits.yaml", "--set", "optimizer.lr=1e-7",
                      "--steps", "30")
    assert result.returncode == 1
    assert result.stdout.startswith("FAIL") and "hardly fell" in result.stdout


def test_lr_find_writes_the_plot_and_suggestion(tmp_path):
    out = tmp_path / "lr"
    result = gradwise("lr-find", EXAMPLES / "digits.yaml", "--out", out, "--seeds", "2",
                      "--steps", "60", "--start", "1e-4", *QUICK[2:])
    assert result.returncode == 0, result.stderr
    found = json.loads((out / "lr_find.json").read_text())
    assert f"suggested lr {found['suggested_lr']:.3g}" in result.stdout
    assert (out / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("args", "message"), [
    (["--start", "0"], "start=0.0 is invalid"),
    (["--start", "1", "--end", "0.1"], "end=0.1 is invalid"),
    (["--seeds", "0"], "--seeds=0 is invalid"),
    (["--set", "optimizer.name=lbfgs"], "lbfgs"),
])
def test_lr_find_bad_input_exits_2_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "lr"
    result = gradwise("lr-find", EXAMPLES / "digits.yaml", "--out", out, *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def test_bad_augmentation_is_refused_before_training(tmp_path):
    out = tmp_path / "run"
    result = gradwise("train", EXAMPLES / "mnist1d.yaml", "--out", out,
                      "--set", "augment.crop.padding=2")
    assert result.returncode == 2
    assert "crop" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def test_tensorboard_logs_every_kind_of_record(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    result = gradwise("train", EXAMPLES / "digits.yaml", "--out", out, "--quiet", "--tensorboard",
                      *QUICK)
    assert result.returncode == 0, result.stderr
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"step/loss", "step/lr", "epoch/val_accuracy", "update_ratio/head.weight"} <= tags
    assert len(events.Scalars("epoch/val_accuracy")) == 2
