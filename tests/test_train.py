"""The Trainer on real data: run directory, resume, early stop, full batch, schedules."""

from __future__ import annotations

import json
import math

import pytest
import torch

from gradwise.train import Trainer, fit
from gradwise.train import trainer as trainer_module

EPOCH_KEYS = {"epoch", "step", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr",
              "elapsed_seconds"}
SUMMARY_KEYS = {"train_accuracy", "val_accuracy", "test_accuracy", "best_epoch", "epochs",
                "wall_seconds", "stopped_early", "stop_reason"}


def digits_config(**train):
    return {"seed": 1, "data": "digits",
            "model": {"name": "mlp", "hidden": [64], "dropout": 0.2},
            "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4},
            "schedule": {"name": "cosine"},
            "train": {"epochs": 6, "batch_size": 32, **train}}


def augmented_config(**train):
    """digits_config with every kind of training-time randomness: augmentation, mixup, penalties."""
    config = digits_config(**train)
    config["model"] = {"name": "convnet", "channels": [8, 16], "dropout": 0.2}
    config["augment"] = {"crop": {"padding": 1}, "cutout": {"size": 3}, "mixup": {"alpha": 0.4}}
    config["regularization"] = {"l2": 1e-4, "l1": 1e-6, "label_smoothing": 0.1}
    return config


def records(run):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_run_directory_and_accuracy(tmp_path):
    run = tmp_path / "run"
    summary = fit(digits_config(), run, quiet=True)
    assert {p.name for p in run.iterdir()} == {".gradwise.json", "config.yaml", "metrics.jsonl",
                                              "checkpoints", "summary.json", "report.html"}
    assert {p.name for p in (run / "checkpoints").iterdir()} == {"last.pt", "best.pt"}
    assert set(json.loads((run / "summary.json").read_text())) >= SUMMARY_KEYS
    epochs = [r for r in records(run) if "train_loss" in r]
    assert [r["epoch"] for r in epochs] == list(range(1, 7))
    assert all(set(r) >= EPOCH_KEYS for r in epochs)
    steps = [r for r in records(run) if "loss" in r]
    assert steps[0]["step"] == 1 and all(math.isfinite(r["loss"]) for r in steps)
    assert summary["test_accuracy"] > 0.93 and not summary["stopped_early"]
    assert summary["best_epoch"] == max(epochs, key=lambda r: r["val_accuracy"])["epoch"]
    # the cosine schedule ends near zero, and the logged lr follows it
    assert epochs[-1]["lr"] < 1e-3 < epochs[0]["lr"] < 0.05
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 6 and ckpt["step"] == summary["steps"]


def test_seeded_runs_are_reproducible(tmp_path):
    a = fit(digits_config(epochs=2), tmp_path / "a", quiet=True)
    b = fit(digits_config(epochs=2), tmp_path / "b", quiet=True)
    drop = ("wall_seconds", "samples_per_second")
    assert {k: v for k, v in a.items() if k not in drop} == \
        {k: v for k, v in b.items() if k not in drop}


@pytest.mark.parametrize("make_config", [digits_config, augmented_config])
def test_resume_after_interruption_equals_uninterrupted_run(tmp_path, monkeypatch, make_config):
    """Interrupt in the middle of epoch 4, resume from the epoch-3 checkpoint: same weights and
    the same metrics as a run that was never interrupted (dropout, momentum, augmentation and
    mixup included)."""
    full = Trainer(make_config(), tmp_path / "full", quiet=True)
    full_summary = full.fit()

    original = trainer_module.Trainer._log

    def crash_in_epoch_4(self, record):
        original(self, record)
        if record.get("epoch") == 4 and "loss" in record:  # a step record inside epoch 4
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module.Trainer, "_log", crash_in_epoch_4)
    with pytest.raises(KeyboardInterrupt):
        Trainer(make_config(), tmp_path / "cut", quiet=True).fit()
    monkeypatch.setattr(trainer_module.Trainer, "_log", original)
    resumed = Trainer(make_config(), tmp_path / "cut", quiet=True)
    summary = resumed.fit(resume=True)

    for a, b in zip(full.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
    for key in ("train_accuracy", "val_accuracy", "test_accuracy", "test_loss", "best_epoch",
                "diagnosis", "warnings"):
        assert summary[key] == full_summary[key], key

    def timeless(run):
        return [{k: v for k, v in r.items() if k != "elapsed_seconds"} for r in records(run)]

    assert timeless(tmp_path / "cut") == timeless(tmp_path / "full")


def test_divergence_stops_the_run_and_still_writes_results(tmp_path):
    config = digits_config()
    config["optimizer"] = {"name": "sgd", "lr": 50.0, "momentum": 0.9}
    config["schedule"] = "constant"
    summary = fit(config, tmp_path / "run", quiet=True)
    assert summary["stopped_early"]
    assert "initial loss" in summary["stop_reason"] or "nan" in summary["stop_reason"].lower()
    assert (tmp_path / "run" / "summary.json").exists()


def test_full_batch_lbfgs(tmp_path):
    config = {"data": "digits", "model": {"name": "mlp", "hidden": [32]},
              "optimizer": {"name": "lbfgs", "lr": 1.0, "max_iter": 20, "weight_decay": 1e-3},
              "train": {"epochs": 5}}
    trainer = Trainer(config, tmp_path / "run", quiet=True)
    assert trainer.full_batch and trainer.steps_per_epoch == 1
    summary = trainer.fit()
    assert summary["steps"] == 5
    assert summary["train_accuracy"] > 0.99 and summary["test_accuracy"] > 0.9


def test_bf16_autocast_and_grad_clipping_train(tmp_path):
    summary = fit(digits_config(epochs=3, precision="bf16", grad_clip=1.0), tmp_path / "run",
                  quiet=True)
    assert summary["test_accuracy"] > 0.85


def test_max_steps_and_warmup(tmp_path):
    config = digits_config(epochs=10, max_steps=50)
    config["schedule"] = {"name": "constant", "warmup_epochs": 1}
    summary = fit(config, tmp_path / "run", quiet=True)
    assert summary["steps"] == 50
    steps = {r["step"]: r["lr"] for r in records(tmp_path / "run") if "loss" in r}
    assert steps[1] < steps[20] < steps[50] == pytest.approx(0.05)


def test_existing_run_is_never_overwritten(tmp_path):
    from gradwise.errors import UserError

    fit(digits_config(epochs=1), tmp_path / "run", quiet=True)
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    with pytest.raises(UserError, match="already holds a run"):
        fit(digits_config(epochs=1), tmp_path / "run", quiet=True)
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before


def test_progress_bar_on_a_terminal_and_plain_lines_elsewhere():
    import io

    from gradwise.train import Progress

    record = {"epoch": 1, "train_loss": 0.5, "train_accuracy": 0.9, "val_loss": 0.6,
              "val_accuracy": 0.85, "lr": 0.1, "elapsed_seconds": 1.5}
    tty, log = io.StringIO(), io.StringIO()
    for stream, interactive in ((tty, True), (log, False)):
        progress = Progress(epochs=2, steps_per_epoch=10, stream=stream, interactive=interactive)
        progress.step(0, 4, 0.75)
        progress.epoch(record)
    assert tty.getvalue().startswith("\repoch 1/2 [") and "5/10 loss 0.7500" in tty.getvalue()
    assert log.getvalue() == ("epoch 1/2  train_loss 0.5000  train_acc 90.00%  val_loss 0.6000  "
                              "val_acc 85.00%  lr 0.1  1.5s\n")


def test_a_callback_can_stop_the_run_without_it_counting_as_divergence():
    def stop_after_two(trainer, record):
        if record["epoch"] == 2:
            trainer.stop("pruned: behind the median")

    summary = Trainer(digits_config(), None, quiet=True, callbacks=[stop_after_two]).fit()
    assert summary["epochs"] == 2 and summary["stopped_early"]
    assert summary["stop_reason"] == "pruned: behind the median"
    assert summary["diagnosis"]["label"] != "diverging"


def test_cpu_evaluation_runs_in_cache_sized_chunks_with_the_one_batch_results():
    """On CPU, evaluate() feeds the model at most 256 samples at a time whatever
    eval_batch_size says, and gives the numbers of one eval-mode pass over everything."""
    trainer = Trainer(digits_config(epochs=1, eval_batch_size=1024), out=None, quiet=True)
    x, y = trainer.data.x_train, trainer.data.y_train
    assert len(x) > 1024  # one configured batch would hold all of it
    sizes = []
    hook = trainer.model.register_forward_hook(lambda m, inputs, out: sizes.append(len(out)))
    loss, accuracy = trainer.evaluate(x, y)
    hook.remove()
    assert sizes == [256] * (len(x) // 256) + [len(x) % 256]
    trainer.model.eval()
    with torch.no_grad():
        logits = trainer.model(x)
    trainer.model.train()
    assert math.isclose(loss, float(torch.nn.functional.cross_entropy(logits, y)), rel_tol=1e-5)
    assert accuracy == int((logits.argmax(1) == y).sum()) / len(x)
