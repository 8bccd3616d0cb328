"""A run directory written before output folders were marked (gradwise 0.1.0 as first
released: no ``.gradwise.json``, checkpoints without the config) still reads, resumes and
reports. ``tests/data/legacy-run`` was written by that version: digits, an MLP, 3 epochs,
stopped after epoch 2."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import yaml

from gradwise.cli import main
from gradwise.rundir import RunDir, kind_of
from gradwise.train import fit

LEGACY = Path(__file__).parent / "data" / "legacy-run"


def test_a_legacy_run_is_recognised_and_reported(tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(LEGACY, run)
    assert kind_of(run) == "run"
    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text()
    assert "in progress" in html.lower() or "incomplete" in html.lower()
    assert [r["epoch"] for r in RunDir(run).load().epochs] == [1, 2]


def test_a_legacy_run_resumes_to_the_uninterrupted_result(tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(LEGACY, run)
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
    resumed = RunDir(run)
    config = yaml.safe_load(resumed.config_path.read_text())
    fresh = fit(config, tmp_path / "fresh", quiet=True)
    summary = resumed.read_summary()
    assert summary["epochs"] == 3
    for key in ("train_loss", "val_accuracy", "test_accuracy", "best_epoch"):
        assert summary[key] == fresh[key], key
    a = resumed.load_checkpoint("last")["model"]
    b = RunDir(tmp_path / "fresh").load_checkpoint("last")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (run / "report.html").is_file()
