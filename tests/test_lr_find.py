"""The LR range test and the tiny-subset sanity check, on real data."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from gradwise.errors import UserError
from gradwise.train import Trainer, lr_find, lr_range_test, sanity_check
from gradwise.train.lr_find import _batches, suggestions

DIGITS = {"data": "digits", "model": {"name": "mlp", "hidden": [64]},
          "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
          "train": {"epochs": 3, "checkpoint": False}}


def test_range_test_leaves_weights_and_optimizer_state_untouched():
    trainer = Trainer(DIGITS, out=None, quiet=True)
    # one real step first, so the optimizer has momentum buffers to protect
    x, y = trainer.data.x_train[:64], trainer.data.y_train[:64]
    torch.nn.functional.cross_entropy(trainer.model(x), y).backward()
    trainer.optimizer.step()
    model_before = copy.deepcopy(trainer.model.state_dict())
    opt_before = copy.deepcopy(trainer.optimizer.state_dict())

    def batches():
        while True:
            yield x, y

    sweep = lr_range_test(trainer.model, trainer.optimizer, batches(),
                          lambda m, a, b: torch.nn.functional.cross_entropy(m(a), b),
                          start=1e-4, end=10, steps=50)
    assert 10 < len(sweep["lrs"]) <= 50
    ratios = [b / a for a, b in zip(sweep["lrs"], sweep["lrs"][1:], strict=False)]
    assert all(math.isclose(r, (10 / 1e-4) ** (1 / 49)) for r in ratios)
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, model_before[key]), key
    after = trainer.optimizer.state_dict()
    assert after["param_groups"] == opt_before["param_groups"]
    for key, state in after["state"].items():
        assert torch.equal(state["momentum_buffer"], opt_before["state"][key]["momentum_buffer"])


def test_the_sweep_draws_the_batches_training_draws():
    config = {**DIGITS, "augment": {"flip": {}}}
    trainer = Trainer(config, out=None, quiet=True)
    swept = _batches(trainer)
    for epoch in (0, 1):  # a new order (and augmentation) each epoch, as in training
        for x, _, target in trainer.epoch_batches(epoch):
            sx, st = next(swept)
            assert torch.equal(sx, x) and torch.equal(st, target)
    first = [y for _, y, _ in trainer.epoch_batches(0)]
    second = [y for _, y, _ in trainer.epoch_batches(1)]
    assert not torch.equal(torch.cat(first), torch.cat(second))


def test_lr_find_on_digits_suggests_an_lr_that_trains_as_well_as_a_grid():
    result = lr_find(DIGITS, seeds=(0, 1), start=1e-5, end=10, steps=120)
    assert len(result["curves"]) == 2
    for name in ("steepest", "min_over_10"):
        reading = result["suggestions"][name]
        assert len(reading["per_seed"]) == 2
        assert 1e-5 <= reading["value"] <= 10
    json.dumps(result)  # written as lr_find.json

    def val_accuracy(lr):
        config = {**DIGITS, "optimizer": {**DIGITS["optimizer"], "lr": lr}}
        return Trainer(config, out=None, quiet=True).fit()["val_accuracy"]

    suggested = val_accuracy(result["suggested_lr"])
    grid = {lr: val_accuracy(lr) for lr in (1e-3, 1e-2, 1.0)}
    assert suggested >= max(grid.values()) - 0.02, (result["suggested_lr"], suggested, grid)


def test_suggestions_on_a_curve_without_a_valley_still_answer():
    lrs = [10 ** (k / 10) for k in range(-30, 1)]
    rising = [1.0 + lr for lr in lrs]
    s = suggestions(lrs, rising)
    assert s["min_over_10"] == pytest.approx(lrs[0] / 10)
    assert s["steepest"] in lrs


def test_lr_find_refuses_lbfgs():
    with pytest.raises(UserError, match="lbfgs"):
        lr_find({**DIGITS, "optimizer": "lbfgs"}, seeds=(0,))


def test_sanity_passes_on_a_working_setup_and_ignores_regularization():
    config = {**DIGITS, "model": {"name": "mlp", "hidden": [64], "dropout": 0.5},
              "optimizer": {"name": "adam", "lr": 1e-3, "weight_decay": 1.0},
              "regularization": {"l2": 1.0, "label_smoothing": 0.2}}
    result = sanity_check(config)
    assert result["passed"], result["message"]
    assert result["size"] == 20 and result["train_accuracy"] == 1.0
    assert result["message"].startswith("PASS")
    assert math.isclose(result["initial_loss"], math.log(10), rel_tol=0.3)


def test_sanity_fails_with_a_far_too_small_lr_and_says_why():
    result = sanity_check({**DIGITS, "optimizer": {"name": "sgd", "lr": 1e-6}}, max_steps=50)
    assert not result["passed"]
    assert result["message"].startswith("FAIL")
    assert "hardly fell" in result["message"]


def test_sanity_fails_when_the_lr_blows_up():
    result = sanity_check({**DIGITS, "optimizer": {"name": "sgd", "lr": 1e4}}, max_steps=50)
    assert not result["passed"]
    assert "too high" in result["message"]
