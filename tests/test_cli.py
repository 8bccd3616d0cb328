"""`gradwise train` end to end: examples, --set, --resume after kill -9, and bad input (exit 2)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def gradwise(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "gradwise.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=600)


def test_example_config_trains_and_reports_where_results_are(tmp_path):
    out = tmp_path / "run"
    result = gradwise("train", EXAMPLES / "digits.yaml", "--out", out, "--set", "train.epochs=2")
    assert result.returncode == 0, result.stderr
    assert f"results in {out}" in result.stdout
    assert "epoch 2/2" in result.stderr  # plain progress lines when not on a terminal
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 2


def test_default_run_directory_is_never_reused(tmp_path):
    for expected in ("digits", "digits-2"):
        result = gradwise("train", EXAMPLES / "digits.yaml", "--quiet", "--set", "train.epochs=1",
                          cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert (tmp_path / "runs" / expected / "summary.json").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "train.epoch=3"], "unknown key 'train.epoch'; accepted: epochs"),
    (["--set", "train.epochs=0"], "train.epochs: Input should be greater than or equal to 1"),
    (["--set", "optimizer.name=adamax"], "unknown optimizer 'adamax'; accepted: sgd"),
    (["--set", "optimizer.nesterov=maybe"], "nesterov"),
    (["--set", "optimizer.lr=-1"], "optimizer.lr"),
    (["--set", "model.name=transformer"], "transformer"),
    (["--set", "data=npz:missing.npz"], "missing.npz"),
    (["--set", "schedule.name=triangle"], "triangle"),
    (["--set", "trainepochs"], "expected KEY=VALUE"),
])
def test_bad_config_exits_2_with_one_clear_message(tmp_path, args, message):
    out = tmp_path / "run"
    result = gradwise("train", EXAMPLES / "digits.yaml", "--out", out, *args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (out / "summary.json").exists()


def test_bad_files_exit_2(tmp_path):
    assert gradwise("train", tmp_path / "nope.yaml").returncode == 2
    (tmp_path / "bad.yaml").write_text("train: [1, 2\n")
    result = gradwise("train", tmp_path / "bad.yaml")
    assert result.returncode == 2 and "not valid YAML" in result.stderr
    result = gradwise("train", "--resume", tmp_path / "norun")
    assert result.returncode == 2 and "not found" in result.stderr


def test_nan_in_data_exits_2(tmp_path):
    x = np.random.default_rng(0).normal(size=(100, 5)).astype(np.float32)
    x[3, 2] = np.nan
    y = np.arange(100) % 2
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y, x_test=x[:10] * 0, y_test=y[:10])
    result = gradwise("train", EXAMPLES / "digits.yaml", "--set", f"data=npz:{tmp_path / 'd.npz'}",
                      "--set", "model=mlp", "--out", tmp_path / "run")
    assert result.returncode == 2 and "NaN" in result.stderr


def test_corrupt_checkpoint_exits_2_and_is_left_alone(tmp_path):
    out = tmp_path / "run"
    assert gradwise("train", EXAMPLES / "digits.yaml", "--out", out, "--quiet",
                    "--set", "train.epochs=1").returncode == 0
    last = out / "checkpoints" / "last.pt"
    last.write_bytes(b"not a checkpoint")
    result = gradwise("train", "--resume", out)
    assert result.returncode == 2 and "corrupt" in result.stderr
    assert last.read_bytes() == b"not a checkpoint"


def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(
        "seed: 3\ndata: mnist1d\n"
        "model: {name: cnn1d, channels: [16, 32], dropout: 0.1}\n"
        "optimizer: {name: adamw, lr: 3.0e-3}\nschedule: onecycle\n"
        "train: {epochs: 12, batch_size: 64}\n")
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert gradwise("train", config, "--out", full, "--quiet").returncode == 0

    proc = subprocess.Popen([sys.executable, "-m", "gradwise.cli", "train", str(config),
                             "--out", str(cut), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = cut / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if last.exists() and torch.load(last, weights_only=True)["epoch"] >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (cut / "summary.json").exists()

    result = gradwise("train", "--resume", cut, "--quiet")
    assert result.returncode == 0, result.stderr
    a = json.loads((full / "summary.json").read_text())
    b = json.loads((cut / "summary.json").read_text())
    for key in ("train_accuracy", "val_accuracy", "test_accuracy", "test_loss", "best_epoch",
                "epochs", "steps"):
        assert a[key] == b[key], key
    wa = torch.load(full / "checkpoints" / "last.pt", weights_only=True)["model"]
    wb = torch.load(cut / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
