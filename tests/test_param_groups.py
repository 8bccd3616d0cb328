"""param_groups: no decay on biases and norm layers, per-layer learning-rate multipliers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import gradwise.optim as go
from gradwise.optim import param_groups


def convnet():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
        nn.Linear(4 * 6 * 6, 16), nn.LayerNorm(16), nn.Linear(16, 10),
    )


def names(model, group):
    lookup = {id(p): n for n, p in model.named_parameters()}
    return sorted(lookup[id(p)] for p in group["params"])


def test_no_decay_on_biases_and_norm_layers():
    model = convnet()
    decay, no_decay = param_groups(model, weight_decay=5e-4)
    assert names(model, decay) == ["0.weight", "4.weight", "6.weight"]
    assert names(model, no_decay) == ["0.bias", "1.bias", "1.weight", "4.bias", "5.bias",
                                      "5.weight", "6.bias"]
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (5e-4, 0.0)
    assert "lr" not in decay  # the optimizer's lr applies


def test_every_trainable_parameter_exactly_once_and_frozen_ones_left_out():
    model = convnet()
    model[0].weight.requires_grad_(False)
    groups = param_groups(model, weight_decay=1e-4, lr=0.1, lr_multipliers={"6": 10.0})
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(ids) == sorted(trainable)


def test_lr_multipliers_longest_prefix_wins():
    model = nn.Sequential()
    model.add_module("features", nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3)))
    model.add_module("head", nn.Linear(3, 2))
    groups = param_groups(model, lr=0.1, lr_multipliers={"features": 0.1, "features.1": 0.5})
    by_lr = {round(g["lr"], 12): names(model, g) for g in groups if g["weight_decay"] == 0}
    assert by_lr[0.01] == ["features.0.bias"]
    assert by_lr[0.05] == ["features.1.bias"]
    assert by_lr[0.1] == ["head.bias"]
    calls = param_groups(model, lr=1.0, lr_multipliers=lambda n: 0.0 if n.startswith("f") else 1)
    assert {g["lr"] for g in calls} == {0.0, 1.0}


def test_groups_drive_torch_and_gradwise_optimizers_alike():
    model = convnet()
    for cls in (go.AdamW, torch.optim.AdamW):
        opt = cls(param_groups(model, weight_decay=0.05, lr=1e-3, lr_multipliers={"6": 2.0}))
        assert sorted(g["lr"] for g in opt.param_groups) == [1e-3, 1e-3, 2e-3, 2e-3]


def test_bad_arguments():
    with pytest.raises(ValueError, match="lr_multipliers needs lr"):
        param_groups(convnet(), lr_multipliers={"0": 2})
    with pytest.raises(ValueError, match="weight_decay"):
        param_groups(convnet(), weight_decay=-1)
