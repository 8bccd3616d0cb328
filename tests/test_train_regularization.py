"""Regularization and augmentation as Trainer options, checked against their definitions."""

from __future__ import annotations

import pytest
import torch

from gradwise.errors import UserError
from gradwise.train import Trainer

BASE = {"seed": 3, "data": "digits", "model": {"name": "mlp", "hidden": [32]},
        "optimizer": {"name": "sgd", "lr": 0.05}, "train": {"epochs": 2, "batch_size": 64,
                                                            "checkpoint": False}}


def _trained(**sections) -> Trainer:
    trainer = Trainer({**BASE, **sections}, out=None, quiet=True)
    trainer.fit()
    return trainer


def _summary(**sections) -> dict:
    return Trainer({**BASE, **sections}, out=None, quiet=True).fit()


def _weights(trainer) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in trainer.model.parameters()])


def test_l2_penalty_equals_weight_decay_under_plain_sgd():
    """d/dw (l2/2 ||w||^2) = l2 w: what SGD's weight_decay adds, on the same (weight) tensors."""
    penalty = _trained(regularization={"l2": 0.01})
    decay = _trained(optimizer={"name": "sgd", "lr": 0.05, "weight_decay": 0.01})
    plain = _trained()
    assert torch.allclose(_weights(penalty), _weights(decay), rtol=0, atol=1e-5)
    assert (_weights(penalty) - _weights(plain)).abs().max() > 1e-3


def test_l2_penalty_differs_from_decoupled_decay_under_adam():
    adam = {"name": "adam", "lr": 1e-3}
    penalty = _trained(optimizer=adam, regularization={"l2": 0.1})
    decoupled = _trained(optimizer={**adam, "name": "adamw", "weight_decay": 0.1})
    assert (_weights(penalty) - _weights(decoupled)).abs().max() > 1e-3


def test_l1_penalty_drives_weights_to_zero():
    sparse = _trained(regularization={"l1": 3e-3}, train={"epochs": 6, "checkpoint": False})
    dense = _trained(train={"epochs": 6, "checkpoint": False})
    small = lambda t: float((t.model.features[1].weight.abs() < 1e-3).float().mean())  # noqa: E731
    assert small(sparse) > 3 * small(dense)


def test_augmented_training_keeps_labels_and_learns():
    trainer = _trained(model={"name": "convnet", "channels": [16, 32]},
                       optimizer={"name": "sgd", "lr": 0.05, "momentum": 0.9},
                       augment={"crop": {"padding": 1}, "cutout": {"size": 2},
                                "mixup": {"alpha": 0.2}},
                       regularization={"label_smoothing": 0.1},
                       train={"epochs": 4, "batch_size": 64, "checkpoint": False})
    epochs = [r for r in trainer.records if "train_loss" in r]
    assert epochs[-1]["val_accuracy"] > 0.85
    assert 0 < epochs[-1]["train_accuracy"] <= 1


def test_test_time_averaging_is_reported_beside_the_plain_numbers():
    summary = _summary(model={"name": "mlp", "hidden": [64], "dropout": 0.3},
                       evaluate={"samples": 8})
    assert 0.5 < summary["test_accuracy_averaged"] <= 1
    assert 0.5 < summary["val_accuracy_averaged"] <= 1
    flips = _summary(model={"name": "convnet", "channels": [8]},
                     evaluate={"tta_flip": True, "tta_shift": 1})
    assert "test_accuracy_averaged" in flips


def test_augmentation_with_full_batch_training_is_refused():
    with pytest.raises(UserError, match="augment needs minibatch training"):
        Trainer({**BASE, "optimizer": "lbfgs", "augment": {"crop": {"padding": 1}}},
                out=None, quiet=True)


def test_unknown_augmentation_is_refused_before_training():
    with pytest.raises(UserError, match="spin"):
        Trainer({**BASE, "augment": {"spin": {}}}, out=None, quiet=True)
