"""Weight averaging in the Trainer (``average:``): EMA and SWA on digits, checked against an
independent recomputation with gradwise.ensemble, resume, and bad input from the CLI."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gradwise.ensemble import EMA, update_bn
from gradwise.train import Trainer

ROOT = Path(__file__).resolve().parents[1]


def config(average, epochs=4, batch_norm=False, **extra):
    return {"seed": 2, "data": "digits",
            "model": {"name": "mlp", "hidden": [32], "batch_norm": batch_norm},
            "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
            "schedule": "cosine", "train": {"epochs": epochs, "batch_size": 64},
            "average": average, **extra}


def epochs_of(run):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "train_loss" in r]


def last_checkpoint(run):
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)


def test_ema_equals_a_recomputation_from_the_same_weight_sequence(tmp_path):
    """Every step's live weights fed to a separate gradwise.ensemble.EMA give, bit for bit,
    the average the Trainer keeps in its checkpoint; the epoch records hold its metrics."""
    run = tmp_path / "run"
    trainer = Trainer(config({"ema": {"decay": 0.9, "warmup": True}}, batch_norm=True), run,
                      quiet=True)
    twin = copy.deepcopy(trainer.model)
    shadow = EMA(twin, 0.9, warmup=True)

    def follow(optimizer, args, kwargs):
        with torch.no_grad():
            for mine, live in zip(twin.state_dict().values(),
                                  trainer.model.state_dict().values(), strict=True):
                mine.copy_(live)
        shadow.update()

    trainer.optimizer.register_step_post_hook(follow)
    summary = trainer.fit()

    saved = last_checkpoint(run)["average"]
    assert saved["kind"] == "EMA" and saved["n_updates"] == summary["steps"] == shadow.n_updates
    for name, tensor in shadow.state_dict()["tensors"].items():
        assert torch.equal(saved["tensors"][name], tensor), name
    records = epochs_of(run)
    assert all({"val_loss_ema", "val_accuracy_ema"} <= set(r) for r in records)
    with shadow.swapped(twin):
        twin.eval()
        x, y = trainer.data.x_val, trainer.data.y_val
        accuracy = float((twin(x).argmax(1) == y).float().mean())
    assert records[-1]["val_accuracy_ema"] == pytest.approx(accuracy)
    assert summary["val_accuracy_ema"] == pytest.approx(accuracy)
    assert summary["test_accuracy_from"] in ("live", "ema")
    assert summary["test_accuracy"] == summary[f"test_accuracy_{summary['test_accuracy_from']}"]
    assert "Test accuracy from" in (run / "report.html").read_text()


def test_ema_decay_0_is_the_live_model_and_leaves_the_live_run_alone(tmp_path):
    plain = Trainer(config(None, epochs=2), tmp_path / "plain", quiet=True)
    plain_summary = plain.fit()
    ema = Trainer(config({"ema": {"decay": 0.0}}, epochs=2), tmp_path / "ema", quiet=True)
    summary = ema.fit()
    for a, b in zip(plain.model.parameters(), ema.model.parameters(), strict=True):
        assert torch.equal(a, b)  # averaging does not change the live training
    live = ema.model.state_dict()
    for name, tensor in last_checkpoint(tmp_path / "ema")["average"]["tensors"].items():
        assert torch.equal(tensor, live[name]), name
    for r in epochs_of(tmp_path / "ema"):
        assert r["val_accuracy_ema"] == r["val_accuracy"]
        assert r["val_loss_ema"] == r["val_loss"]
    assert summary["test_accuracy_from"] == "live"  # a tie goes to the live model
    assert summary["test_accuracy"] == summary["test_accuracy_ema"] \
        == plain_summary["test_accuracy"]


def test_swa_averages_the_epoch_ends_from_its_start_with_its_lr_and_recomputed_bn(tmp_path):
    run = tmp_path / "run"
    ends: list[dict] = []

    def keep(trainer, record):
        ends.append({k: v.clone() for k, v in trainer.model.state_dict().items()})

    trainer = Trainer(config({"swa": {"start_epoch": 3, "lr": 0.01}}, epochs=5, batch_norm=True),
                      run, quiet=True, callbacks=[keep])
    summary = trainer.fit()
    records = epochs_of(run)
    assert [("val_accuracy_swa" in r) for r in records] == [False, False, True, True, True]
    steps = {r["step"]: r["lr"] for r in map(json.loads, (run / "metrics.jsonl").read_text()
                                             .splitlines()) if "loss" in r}
    per_epoch = trainer.steps_per_epoch
    assert all(lr == pytest.approx(0.01) for s, lr in steps.items() if s > 2 * per_epoch)
    assert all(lr > 0.01 for s, lr in steps.items() if s <= 2 * per_epoch - 1)

    saved = last_checkpoint(run)["average"]
    assert saved["kind"] == "SWA" and saved["n_updates"] == 3 and saved["calls"] == 5
    twin = copy.deepcopy(trainer.model)
    with torch.no_grad():
        for name, p in twin.named_parameters():
            mean = torch.stack([e[name] for e in ends[2:]]).mean(0)
            torch.testing.assert_close(saved["tensors"][name], mean, rtol=1e-6, atol=1e-7)
            p.copy_(saved["tensors"][name])
    x = trainer.data.x_train
    update_bn(twin, [x[i:i + 64] for i in range(0, len(x), 64)])
    for name, buffer in twin.named_buffers():
        if buffer.is_floating_point():
            torch.testing.assert_close(saved["tensors"][name], buffer)
            assert not torch.equal(buffer, dict(trainer.model.named_buffers())[name])
    assert {"val_accuracy_swa", "test_accuracy_swa", "test_accuracy_live"} <= set(summary)
    assert summary["test_accuracy_from"] == ("swa" if summary["val_accuracy_swa"]
                                             > summary["val_accuracy"] else "live")


def test_resume_with_ema_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    from gradwise.train import trainer as trainer_module

    make = lambda: config({"ema": {"decay": 0.95, "warmup": True}, "buffers": "recompute"},  # noqa: E731
                          epochs=5, batch_norm=True,
                          augment={"crop": {"padding": 1}, "mixup": {"alpha": 0.4}})
    make_dropout = make()
    make_dropout["model"]["dropout"] = 0.2
    full = Trainer(make_dropout, tmp_path / "full", quiet=True)
    full_summary = full.fit()

    original = trainer_module.Trainer._log

    def crash_in_epoch_4(self, record):
        original(self, record)
        if record.get("epoch") == 4 and "loss" in record:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module.Trainer, "_log", crash_in_epoch_4)
    with pytest.raises(KeyboardInterrupt):
        Trainer(make_dropout, tmp_path / "cut", quiet=True).fit()
    monkeypatch.setattr(trainer_module.Trainer, "_log", original)
    resumed = Trainer(make_dropout, tmp_path / "cut", quiet=True)
    summary = resumed.fit(resume=True)

    drop = ("wall_seconds", "samples_per_second")
    assert {k: v for k, v in summary.items() if k not in drop} == \
        {k: v for k, v in full_summary.items() if k not in drop}
    a, b = last_checkpoint(tmp_path / "full"), last_checkpoint(tmp_path / "cut")
    for key in ("model", "optimizer"):
        assert str(a[key].keys()) == str(b[key].keys())
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    assert a["average"]["n_updates"] == b["average"]["n_updates"] == summary["steps"]
    for name, tensor in a["average"]["tensors"].items():
        assert torch.equal(tensor, b["average"]["tensors"][name]), name

    def timeless(run):
        return [{k: v for k, v in r.items() if k != "elapsed_seconds"}
                for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]

    assert timeless(tmp_path / "cut") == timeless(tmp_path / "full")


@pytest.mark.parametrize(("sets", "message"), [
    (["average.ema.decay=1"], "average.ema.decay: Input should be less than 1"),
    (["average.ema.decay=-0.1"], "average.ema.decay: Input should be greater than or equal to 0"),
    (["average.swa.start_epoch=4"], "average.swa.start_epoch=4 is after the last epoch "
                                    "(train.epochs=3)"),
    (["average.swa.start_epoch=2", "average.ema.decay=0.9"], "either ema or swa, not both"),
    (["average.ema.decay=0.9", "average.buffers=mean"], "average.buffers"),
    (["average.swa.start_epoch=2", "average.swa.lr=0"], "average.swa.lr"),
    (["average.ema.decy=0.9"], "unknown key 'average.ema.decy'; accepted: decay, warmup"),
])
def test_bad_average_config_exits_2_with_nothing_written(tmp_path, sets, message):
    out = tmp_path / "run"
    args = [a for s in ["train.epochs=3", *sets] for a in ("--set", s)]
    result = subprocess.run([sys.executable, "-m", "gradwise.cli", "train",
                             str(ROOT / "examples" / "digits.yaml"), "--out", str(out), *args],
                            capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists() and not (tmp_path / "runs").exists()
