"""The diagnosis labels, each provoked by a real run, and the rules on hand-made curves."""

from __future__ import annotations

from gradwise.train import Trainer, diagnose
from gradwise.train import diagnosis as dx

DIGITS_MLP = {"data": "digits", "model": {"name": "mlp", "hidden": [64]},
              "train": {"checkpoint": False}}


def _run(**sections) -> dict:
    config = {**DIGITS_MLP, **sections}
    return Trainer(config, out=None, quiet=True).fit()


# -- each label fires on the run that provokes it --------------------------------------------

def test_far_too_small_lr_is_not_learning():
    summary = _run(optimizer={"name": "sgd", "lr": 1e-5}, train={"epochs": 3})
    d = summary["diagnosis"]
    assert d["label"] == "not-learning", d
    assert d["evidence"]["loss_ratio"] > dx.STALL
    assert any("raise the learning rate" in a for a in d["advice"])


def test_far_too_large_lr_is_diverging():
    summary = _run(optimizer={"name": "sgd", "lr": 30.0, "momentum": 0.9},
                   train={"epochs": 3})
    assert summary["stopped_early"]
    assert summary["diagnosis"]["label"] == "diverging"
    assert "lower the learning rate" in summary["diagnosis"]["advice"][0]


def test_large_model_on_small_subset_is_overfitting():
    summary = _run(data={"source": "digits", "train_size": 60},
                   model={"name": "mlp", "hidden": [512, 512]},
                   optimizer={"name": "adam", "lr": 1e-3},
                   train={"epochs": 40, "batch_size": 20, "checkpoint": False})
    d = summary["diagnosis"]
    assert d["label"] == "overfitting", d
    assert summary["train_accuracy"] - summary["val_accuracy"] > dx.GAP
    assert 1 <= d["evidence"]["gap_opened_epoch"] <= summary["epochs"]
    assert any("regularize" in a for a in d["advice"])


def test_constant_lr_linear_model_plateaus_and_decay_is_suggested():
    summary = _run(data="mnist1d", model={"name": "mlp", "hidden": []},
                   optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9},
                   train={"epochs": 16, "checkpoint": False})
    d = summary["diagnosis"]
    assert d["label"] == "plateau", d
    assert f"epoch {d['evidence']['flat_since_epoch']}" in d["advice"][0]


def test_linear_model_with_decayed_lr_is_underfitting():
    summary = _run(data="mnist1d", model={"name": "mlp", "hidden": []},
                   optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9},
                   schedule="cosine", train={"epochs": 8, "checkpoint": False})
    d = summary["diagnosis"]
    assert d["label"] == "underfitting", d
    assert summary["train_accuracy"] < dx.FIT
    assert any("bigger model" in a for a in d["advice"])


def test_good_run_is_healthy():
    summary = _run(model={"name": "mlp", "hidden": [128]},
                   optimizer={"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True},
                   schedule="cosine", train={"epochs": 8, "checkpoint": False})
    assert summary["diagnosis"]["label"] == "healthy", summary["diagnosis"]
    assert summary["test_accuracy"] > 0.95


# -- the rules on hand-made curves: each threshold on both sides -----------------------------

def _epochs(losses, train_acc, val_acc, lrs=None):
    lrs = lrs or [0.1] * len(losses)
    steps = [{"step": 1, "epoch": 1, "loss": 2.3, "lr": lrs[0]}]
    return steps + [{"epoch": i + 1, "step": 10 * (i + 1), "train_loss": loss,
                     "train_accuracy": ta, "val_loss": loss, "val_accuracy": va, "lr": lr,
                     "elapsed_seconds": i}
                    for i, (loss, ta, va, lr)
                    in enumerate(zip(losses, train_acc, val_acc, lrs, strict=True))]


def test_rules_on_synthetic_curves():
    n = 8
    falling = [2.0 / (i + 1) for i in range(n)]
    label = lambda records, **kw: diagnose(records, **kw)["label"]  # noqa: E731
    assert label(_epochs(falling, [0.99] * n, [0.98] * n)) == "healthy"
    # gap just above / below the threshold
    assert label(_epochs(falling, [0.99] * n, [0.99 - dx.GAP - 0.01] * n)) == "overfitting"
    assert label(_epochs(falling, [0.99] * n, [0.99 - dx.GAP + 0.01] * n)) == "healthy"
    # the same 7-point gap at 40% train accuracy: a weak model first
    assert label(_epochs(falling, [0.40] * n, [0.33] * n)) == "underfitting"
    # loss hardly below the first step's 2.3
    assert label(_epochs([2.2] * n, [0.1] * n, [0.1] * n)) == "not-learning"
    # down, then up past RISE x the minimum
    assert label(_epochs([1.0, 0.5, 0.4, 0.7], [0.9] * 4, [0.9] * 4)) == "diverging"
    # flat at a constant LR, not converged -> plateau; the same with a decaying LR -> underfit
    flat = [1.5, 1.2, 1.0] + [0.99] * (n - 3)
    assert label(_epochs(flat, [0.6] * n, [0.6] * n)) == "plateau"
    decaying = [0.1 * 0.5 ** i for i in range(n)]
    assert label(_epochs(flat, [0.6] * n, [0.6] * n, decaying)) == "underfitting"
    assert label([], stop_reason="loss became nan at step 3") == "diverging"
    # near zero, a 1.7x rise gives back nothing of the fall from 2.3: noise, not divergence
    assert label(_epochs([0.5, 0.01, 0.0008, 0.0013], [1.0] * 4, [0.985] * 4)) == "healthy"


def test_plateau_names_the_epoch_where_the_curve_flattened():
    losses = [2.0, 1.5, 1.2, 1.0, 1.0, 0.995, 0.99, 0.99, 0.99, 0.99]
    d = diagnose(_epochs(losses, [0.6] * 10, [0.6] * 10))
    assert d["label"] == "plateau"
    assert d["evidence"]["flat_since_epoch"] == 4


def test_the_run_says_when_it_starts_to_overfit():
    import io

    from gradwise.train import Progress

    stream = io.StringIO()
    config = {**DIGITS_MLP, "data": {"source": "digits", "train_size": 60},
              "model": {"name": "mlp", "hidden": [512, 512]},
              "optimizer": {"name": "adam", "lr": 1e-3},
              "train": {"epochs": 40, "batch_size": 20, "checkpoint": False}}
    Trainer(config, out=None, progress=Progress(40, 3, stream=stream, interactive=False)).fit()
    notices = [line for line in stream.getvalue().splitlines() if "looks like" in line]
    assert notices and "looks like overfitting" in notices[-1]
    assert not any("underfitting" in line for line in notices)
