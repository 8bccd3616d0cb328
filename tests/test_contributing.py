"""docs/contributing.md, checked: each "how to add" recipe is followed here with a throwaway
piece (an optimizer, a schedule, an augmentation, a model, a data source, a diagnosis rule),
which must then work everywhere the docs promise, from the config to a trained run."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import gradwise.augment as ga
from gradwise.config import load_config
from gradwise.data import READERS, Source
from gradwise.lab import get_surface, run
from gradwise.nn import MODELS
from gradwise.optim import SGD, registry
from gradwise.schedules import SCHEDULES, Schedule
from gradwise.train import Trainer, diagnosis, fit

DOCS = Path(__file__).resolve().parents[1] / "docs"


def tiny(**changes) -> dict:
    """One short epoch on digits."""
    config = {"seed": 0, "data": "digits", "model": {"name": "mlp", "hidden": [16]},
              "optimizer": {"name": "sgd", "lr": 0.1}, "train": {"epochs": 1, "batch_size": 256,
                                                               "monitor_every": 0}}
    for key, value in changes.items():
        config[key] = value
    return config


# -- optimizers: every registered one, and a new one -----------------------------------------

class HalfSGD(SGD):
    """A throwaway optimizer: SGD at half the learning rate."""

    def __init__(self, params, lr: float = 0.1, weight_decay: float = 0.0):
        super().__init__(params, lr=lr / 2, weight_decay=weight_decay)


@pytest.fixture
def half_sgd():
    registry.register(registry.Entry(
        "half-sgd", HalfSGD, "SGD at half the learning rate (a test's throwaway)",
        (registry.Hyper("lr", 0.1, open_low=True), registry.Hyper("weight_decay", 0.0))))
    yield "half-sgd"
    registry.unregister("half-sgd")


def _walk(name: str) -> None:
    """The config accepts ``name``, the Trainer takes a step with it (where it trains
    networks), the lab runs it and both help texts list it."""
    entry = registry.get(name)
    if entry.trainable:
        config = load_config(tiny(optimizer={"name": name, "lr": entry.hyper("lr").default}),
                             ["train.max_steps=1"])
        trainer = Trainer(config, quiet=True)
        before = [p.detach().clone() for p in trainer.model.parameters()]
        summary = trainer.fit()
        assert summary["steps"] == 1
        assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(),
                                                         strict=True))
    else:
        with pytest.raises(Exception, match="unknown optimizer"):
            load_config(tiny(optimizer=name))
    lab_run = run(get_surface("taco"), name, 3)
    assert lab_run.steps >= 1 and lab_run.status in ("ok",) or lab_run.status.startswith(
        ("diverged", "singular"))
    if entry.trainable:
        assert f"{name}: {entry.description}" in _help("train")
    assert name in _help("lab")


def _help(command: str) -> str:
    """``gradwise COMMAND --help`` as printed (the parser is built anew, as each run does)."""
    from gradwise.cli import _parser

    subcommands = _parser()._subparsers._group_actions[0].choices
    return " ".join(subcommands[command].format_help().split())


@pytest.mark.parametrize("name", registry.names())
def test_every_registered_optimizer_works_everywhere(name):
    _walk(name)


def test_a_new_optimizer_is_its_file_plus_one_entry(half_sgd):
    config = load_config(tiny(optimizer={"name": half_sgd, "lr": 0.2}))
    trainer = Trainer(config, quiet=True)
    assert isinstance(trainer.optimizer, HalfSGD)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    assert run(get_surface("taco"), half_sgd, 3).steps == 3
    assert "half-sgd: SGD at half the learning rate" in _help("train")
    assert "half-sgd" in _help("lab")


def test_the_docs_list_every_registered_optimizer():
    text = (DOCS / "training.md").read_text()
    for name in registry.names(trainable=True):
        assert f"| `{name}` | {registry.get(name).description} |" in text, name


# -- a schedule ------------------------------------------------------------------------------

@dataclass
class Halving(Schedule):
    """``factor(t) = 0.5 ** (t // every)``: a throwaway schedule."""

    every: int = 2

    def __call__(self, step: int) -> float:
        return 0.5 ** (step // self.every)


def test_a_new_schedule_is_its_class_plus_one_entry(monkeypatch):
    monkeypatch.setitem(SCHEDULES, "halving", Halving)
    config = tiny(schedule={"name": "halving", "every": 1}, train={"epochs": 1, "batch_size": 256,
                                                                   "max_steps": 3})
    trainer = Trainer(config, quiet=True)
    trainer.fit()
    lrs = [r["lr"] for r in trainer.records if "loss" in r]
    assert lrs[0] == pytest.approx(0.1 * 0.5)  # logged after the first step


# -- an augmentation -----------------------------------------------------------------------

def test_a_new_augmentation_is_its_kernel_plus_one_record(monkeypatch):
    def invert(x, generator):
        return -x

    monkeypatch.setitem(ga._REGISTRY, "invert", ga._Op("invert", invert, {}, ("images",)))
    trainer = Trainer(tiny(augment={"invert": {}}), quiet=True)
    x, y, _ = next(trainer.epoch_batches(0))
    plain = Trainer(tiny(), quiet=True)
    x0, y0, _ = next(plain.epoch_batches(0))
    assert torch.equal(x, -x0) and torch.equal(y, y0)


# -- a model ---------------------------------------------------------------------------------

def _linear(input_shape, num_classes, *, bias: bool = True) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Flatten(),
                               torch.nn.Linear(math.prod(input_shape), num_classes, bias=bias))


def test_a_new_model_is_its_builder_plus_one_entry(monkeypatch):
    monkeypatch.setitem(MODELS, "linear", _linear)
    trainer = Trainer(tiny(model={"name": "linear", "bias": False}), quiet=True)
    assert [p.shape for p in trainer.model.parameters()] == [torch.Size([10, 64])]
    with pytest.raises(Exception, match="unknown option 'depth' for model 'linear'"):
        Trainer(tiny(model={"name": "linear", "depth": 3}), quiet=True)


# -- a data source -----------------------------------------------------------------------------

def _read_noise(source, path, label_column):
    """``noise:N``: N samples of 4 features, the label the sign of the first."""
    n = int(str(path))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    return {"data": (x, (x[:, 0] > 0).astype(np.int64))}


def test_a_new_data_source_is_its_reader_plus_one_entry(monkeypatch, tmp_path):
    monkeypatch.setitem(READERS, "noise", Source(_read_noise, takes_path=True))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "400").write_text("")  # the path must exist
    summary = fit(tiny(data="noise:400", train={"epochs": 5, "batch_size": 32}), quiet=True)
    assert summary["test_accuracy"] > 0.8


# -- a diagnosis rule ------------------------------------------------------------------------

def test_a_new_diagnosis_rule_is_its_function_plus_one_entry(monkeypatch):
    def too_short(facts):
        if len(facts.epochs) < 2:
            return {"label": "too-short", "message": "one epoch tells little",
                    "advice": ["train longer"], "evidence": facts.evidence}
        return None

    monkeypatch.setattr(diagnosis, "RULES", [("too-short", too_short), *diagnosis.RULES])
    assert diagnosis.labels()[0] == "too-short"
    summary = fit(tiny(), quiet=True)
    assert summary["diagnosis"]["label"] == "too-short"
