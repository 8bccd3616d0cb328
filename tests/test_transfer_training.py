"""Transfer learning through the config and the Trainer: model.init, transfer: (freeze, head,
bn, lr_mult, discriminative, lp_ft, strategy: auto), data classes/per_class, torchvision
names, and bad input through the CLI (exit 2, nothing written)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from gradwise import _io
from gradwise.cli import main
from gradwise.data import load_data
from gradwise.errors import UserError
from gradwise.nn import build_model
from gradwise.train import Trainer, fit
from gradwise.transfer import measure, strategy

MODEL = {"name": "convnet", "channels": [8, 16]}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A run folder: the convnet trained on digits 0-4 for a few epochs."""
    out = tmp_path_factory.mktemp("pretrained") / "run"
    fit({"seed": 0, "data": {"source": "digits", "classes": [0, 1, 2, 3, 4]}, "model": MODEL,
         "optimizer": {"name": "adamw", "lr": 3e-3},
         "train": {"epochs": 4, "batch_size": 32, "monitor_every": 0}}, out, quiet=True)
    return out


def target(init, transfer=None, *, epochs=2, per_class=20, **extra):
    """Digits 5-9 relabelled 0-4, ``per_class`` training examples each, from ``init``."""
    config = {"seed": 1, "data": {"source": "digits", "classes": [5, 6, 7, 8, 9],
                                  "per_class": per_class},
              "model": {**MODEL, "init": str(init)},
              "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-3},
              "train": {"epochs": epochs, "batch_size": 16, "monitor_every": 0}}
    if transfer is not None:
        config["transfer"] = transfer
    config.update(extra)
    return config


def source_state(run):
    return _io.load(run / "checkpoints" / "best.pt")["model"]


def optimizer_params(trainer):
    return {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}


# -- freezing in training --------------------------------------------------------------------

def test_frozen_backbone_and_bn_statistics_are_bit_identical_after_training(pretrained):
    trainer = Trainer(target(pretrained, {"freeze": "backbone", "bn": "frozen"}, epochs=3),
                      quiet=True)
    frozen = [n for n, p in trainer.model.named_parameters() if not n.startswith("head.")]
    held = optimizer_params(trainer)
    named = dict(trainer.model.named_parameters())
    assert held == {id(named["head.weight"]), id(named["head.bias"])}  # no frozen parameter
    summary = trainer.fit()
    source = source_state(pretrained)
    after = trainer.model.state_dict()
    for name in after:
        if name.startswith("head."):
            continue  # the new head trained
        assert torch.equal(after[name], source[name]), name  # weights and running statistics
    assert not torch.equal(after["head.weight"], trainer.model.head.weight.new_zeros(1))
    assert set(summary["transfer"]["frozen"]) == set(frozen)
    assert summary["transfer"]["reinitialised"] == ["head.weight", "head.bias"]
    assert summary["transfer"]["fraction_loaded"] > 0.9


def test_bn_train_updates_the_statistics_of_the_frozen_part(pretrained):
    trainer = Trainer(target(pretrained, {"freeze": "backbone", "bn": "train"}), quiet=True)
    trainer.fit()
    source, after = source_state(pretrained), trainer.model.state_dict()
    assert torch.equal(after["features.0.weight"], source["features.0.weight"])  # conv frozen
    assert not torch.equal(after["features.1.running_mean"], source["features.1.running_mean"])
    assert not torch.equal(after["features.1.weight"], source["features.1.weight"])  # BN affine


def test_the_reinitialised_head_has_the_zoos_initialisation(pretrained):
    config = target(pretrained, {"freeze": "backbone", "head": "reinit"})
    trainer = Trainer(config, quiet=True)
    torch.manual_seed(config["seed"])  # the Trainer's seed, then the same build
    zoo = build_model("convnet", (1, 8, 8), 5, channels=[8, 16])
    assert torch.equal(trainer.model.head.weight, zoo.head.weight)
    assert torch.equal(trainer.model.head.bias, torch.zeros(5))
    assert float(zoo.head.weight.detach().std()) == pytest.approx(0.01, rel=0.3)  # N(0, 0.01^2)
    # head: keep takes the pretrained head: same class count (5)
    kept = Trainer(target(pretrained, {"freeze": "backbone", "head": "keep"}), quiet=True)
    assert torch.equal(kept.model.head.weight, source_state(pretrained)["head.weight"])


def test_each_param_group_gets_its_configured_multiplier(pretrained):
    trainer = Trainer(target(pretrained, {"freeze": {"all-but-last": 2}, "lr_mult": 0.1,
                                          "discriminative": 10}), quiet=True)
    # blocks: features.0, features.3, features.7, features.10, head; the last two + head train
    # (BN features.8 and features.11 belong to the conv block before them)
    expected = {"features.7.": 0.01, "features.8.": 0.01, "features.10.": 0.1,
                "features.11.": 0.1, "head.": 1.0}
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    seen = set()
    for group in trainer.optimizer.param_groups:
        for p in group["params"]:
            name = names[id(p)]
            multiplier = next(m for prefix, m in expected.items() if name.startswith(prefix))
            assert group["lr"] == pytest.approx(0.05 * multiplier), name
            assert group["initial_lr"] == pytest.approx(0.05 * multiplier), name
            seen.add(name)
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert seen == trainable
    assert not any(n.startswith(("features.0", "features.1.", "features.3", "features.4."))
                   for n in trainable)


def test_freeze_by_layer_names(pretrained):
    trainer = Trainer(target(pretrained, {"freeze": ["features.0", "features.1"],
                                          "lr_mult": 0.5}), quiet=True)
    frozen = {n for n, p in trainer.model.named_parameters() if not p.requires_grad}
    assert frozen == {"features.0.weight", "features.1.weight", "features.1.bias"}
    assert not frozen & {n for g in trainer.optimizer.param_groups for n in
                         [k for k, p in trainer.model.named_parameters()
                          if any(p is q for q in g["params"])]}


# -- LP-FT and resuming ----------------------------------------------------------------------

def test_lp_ft_trains_the_head_then_unfreezes_at_the_lower_rate(pretrained):
    snapshots = []

    def snapshot(trainer, record):
        snapshots.append((trainer.model.features[0].weight.detach().clone(),
                          len(optimizer_params(trainer)),
                          sorted(g["initial_lr"] for g in trainer.optimizer.param_groups)))

    config = target(pretrained, {"freeze": "none", "lr_mult": 0.1, "lp_ft": {"epochs": 2}},
                    epochs=3)
    trainer = Trainer(config, quiet=True, callbacks=[snapshot])
    assert len(optimizer_params(trainer)) == 2  # the head only
    trainer.fit()
    source = source_state(pretrained)["features.0.weight"]
    # epoch 1 trained the head alone; the switch at the end of epoch 2 unfroze everything
    assert torch.equal(snapshots[0][0], source)
    assert torch.equal(snapshots[1][0], source)
    assert not torch.equal(snapshots[2][0], source)
    assert snapshots[0][1] == 2
    assert snapshots[1][1] == len(list(trainer.model.parameters()))
    assert sorted(set(snapshots[2][2])) == pytest.approx([0.005, 0.05])


@pytest.mark.parametrize("crash_epoch", [2, 3])
def test_resume_with_lp_ft_equals_an_uninterrupted_run(pretrained, tmp_path, monkeypatch,
                                                       crash_epoch):
    from gradwise.train import trainer as trainer_module

    config = target(pretrained, {"freeze": {"all-but-last": 1}, "lr_mult": 0.1,
                                 "discriminative": 3, "lp_ft": {"epochs": 2}}, epochs=4)
    config["model"]["dropout"] = 0.2
    full = Trainer(config, tmp_path / "full", quiet=True).fit()

    original = trainer_module.Trainer._log

    def crash(self, record):
        original(self, record)
        if record.get("epoch") == crash_epoch and "loss" in record:
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module.Trainer, "_log", crash)
    with pytest.raises(KeyboardInterrupt):
        Trainer(config, tmp_path / "cut", quiet=True).fit()
    monkeypatch.setattr(trainer_module.Trainer, "_log", original)
    resumed = Trainer(config, tmp_path / "cut", quiet=True).fit(resume=True)
    drop = ("wall_seconds", "samples_per_second")
    assert {k: v for k, v in resumed.items() if k not in drop} == \
        {k: v for k, v in full.items() if k not in drop}
    a = _io.load(tmp_path / "full" / "checkpoints" / "last.pt")
    b = _io.load(tmp_path / "cut" / "checkpoints" / "last.pt")
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    assert str(a["optimizer"]) == str(b["optimizer"])


def test_a_grey_three_channel_target_gets_the_adapted_first_conv(pretrained, tmp_path):
    from sklearn.datasets import load_digits
    x, y = load_digits(return_X_y=True)
    grey = np.repeat((x / 16).reshape(-1, 1, 8, 8), 3, axis=1).astype(np.float32)
    np.savez(tmp_path / "rgb.npz", x_train=grey[:1400], y_train=y[:1400], x_test=grey[1400:],
             y_test=y[1400:])
    config = {"seed": 0, "data": {"source": f"npz:{tmp_path / 'rgb.npz'}", "normalize": False},
              "model": {**MODEL, "init": str(pretrained)}, "transfer": {"freeze": "backbone"},
              "train": {"epochs": 1}}
    trainer = Trainer(config, quiet=True)
    assert trainer.finetune.report["adapted"] == ["features.0.weight"]
    source = build_model("convnet", (1, 8, 8), 5, channels=[8, 16])
    source.load_state_dict(source_state(pretrained))
    model = trainer.model.eval()
    batch = trainer.data.x_test[:16]  # three equal channels
    # the features (the head has 10 classes here, 5 there) equal those of the grey image
    torch.testing.assert_close(model.features(batch), source.eval().features(batch[:, :1]),
                               rtol=1e-4, atol=1e-5)


# -- strategy: auto --------------------------------------------------------------------------

def test_auto_on_tiny_similar_data_chooses_the_linear_probe(pretrained, capsys):
    # 8 examples of each of the digits the model was pretrained on, under a new head
    config = target(pretrained, {"strategy": "auto"}, per_class=8)
    config["data"]["classes"] = [0, 1, 2, 3, 4]
    trainer = Trainer(config, quiet=False)
    choice = trainer.finetune.choice
    assert choice["examples_per_class"] == 8
    assert choice["probe_accuracy_pretrained"] > choice["probe_accuracy_random"]
    assert choice["similar"] and choice["action"] == "linear_probe"
    assert strategy(8, True)["action"] == choice["action"]  # the table's own cell
    assert trainer.finetune.settings.freeze == "backbone"
    summary = trainer.fit()
    printed = capsys.readouterr().err
    assert "[linear_probe]" in printed and "linear probe" in printed and "reason:" in printed
    assert f"weights from {pretrained}: loaded 24 tensors" in printed
    assert "reinitialised: head.weight, head.bias" in printed
    assert summary["transfer"]["strategy"]["action"] == "linear_probe"


def test_auto_on_large_different_data_fine_tunes_many_layers(pretrained, tmp_path):
    # 1,000 per class of a task unlike digits: which half of a random 8x8 image is brighter
    rng = np.random.default_rng(0)

    def make(n):
        x = rng.normal(size=(n, 8, 8)).astype(np.float32)
        y = (x[:, :, :4].mean((1, 2)) > x[:, :, 4:].mean((1, 2))).astype(np.int64)
        return x, y

    (x, y), (xt, yt) = make(2400), make(200)
    np.savez(tmp_path / "halves.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    config = target(pretrained, {"strategy": "auto"}, per_class=1000, epochs=2)
    config["data"] = {"source": f"npz:{tmp_path / 'halves.npz'}", "per_class": 1000}
    trainer = Trainer(config, quiet=True)
    choice = trainer.finetune.choice
    assert choice["examples_per_class"] == 1000 and not choice["similar"]
    assert choice["action"] == "fine_tune_many"
    settings = trainer.finetune.settings
    assert settings.freeze == "none" and settings.lp_ft.epochs == 1
    # the measurement itself, recomputed: the same numbers
    data = load_data(config["data"]["source"], seed=1).per_class_subset(1000, 1)
    torch.manual_seed(1)
    random_init = build_model("convnet", data.input_shape, 2, channels=[8, 16])
    pre = Trainer(copy.deepcopy(config) | {"transfer": None}, quiet=True).model
    again = measure(pre, random_init, data.x_train, data.y_train, seed=1)
    assert again["probe_accuracy_pretrained"] == choice["probe_accuracy_pretrained"]
    assert again["probe_accuracy_random"] == choice["probe_accuracy_random"]


# -- data: classes and per_class -------------------------------------------------------------

def test_classes_are_relabelled_in_the_order_given_and_per_class_is_seeded():
    full = load_data("digits")
    assert full.class_ids is None
    some = load_data("digits", classes=[7, 2])
    assert some.num_classes == 2 and some.class_ids == (7, 2)
    # every test image of class 7 (and only those) is labelled 0
    from sklearn.datasets import load_digits
    y = load_digits().target
    for label, digit in ((0, 7), (1, 2)):
        count = sum(int((getattr(some, f"y_{split}") == label).sum())
                    for split in ("train", "val", "test"))
        assert count == int((y == digit).sum())
    # the same images: a class-7 test image of the filtered set is among the full set's 7s
    first = some.x_test[some.y_test == 0][0] * some.std + some.mean
    raw = full.x_test * full.std + full.mean
    raw = torch.cat([raw, full.x_train * full.std + full.mean, full.x_val * full.std + full.mean])
    labels = torch.cat([full.y_test, full.y_train, full.y_val])
    match = (raw - first).flatten(1).abs().amax(1) < 1e-5
    assert match.any() and set(labels[match].tolist()) == {7}
    a = some.per_class_subset(10, seed=3)
    b = some.per_class_subset(10, seed=3)
    c = some.per_class_subset(10, seed=4)
    assert a.y_train.bincount().tolist() == [10, 10]
    assert torch.equal(a.x_train, b.x_train) and not torch.equal(a.x_train, c.x_train)
    with pytest.raises(UserError, match=r"per_class=500 is more than class 7 .* has: \d+ "):
        some.per_class_subset(500)
    with pytest.raises(UserError, match=r"classes \[12\] are not among the labels"):
        load_data("digits", classes=[1, 12])


# -- torchvision -----------------------------------------------------------------------------

def test_a_torchvision_resnet18_state_dict_loads_into_7_classes_and_trains(tmp_path,
                                                                          monkeypatch):
    torchvision = pytest.importorskip("torchvision")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights = torchvision.models.ResNet18_Weights.DEFAULT
    cache = tmp_path / "torch" / "hub" / "checkpoints" / weights.url.rsplit("/", 1)[-1]
    config = {"seed": 0, "data": {"source": "digits", "classes": [0, 1, 2, 3, 4, 5, 6],
                                  "per_class": 4},
              "model": {"name": "torchvision:resnet18", "weights": "DEFAULT"},
              "transfer": {"freeze": "backbone"},
              "optimizer": {"name": "sgd", "lr": 0.01},
              "train": {"epochs": 1, "batch_size": 28, "max_steps": 1, "monitor_every": 0}}
    with pytest.raises(UserError, match=r"not in the local cache: .*resnet18.*get_model"):
        Trainer(config, quiet=True)
    cache.parent.mkdir(parents=True)
    torch.manual_seed(5)
    saved = torchvision.models.resnet18().state_dict()  # random weights, 1000 classes, 3 ch
    _io.save(cache, saved)
    trainer = Trainer(config, quiet=True)
    report = trainer.finetune.report
    assert report["adapted"] == ["conv1.weight"]  # 3 -> 1 channel (digits are grey)
    assert report["reinitialised"] == ["fc.weight", "fc.bias"]
    assert trainer.model.fc.out_features == 7
    torch.testing.assert_close(trainer.model.conv1.weight, saved["conv1.weight"].sum(1, True))
    before = trainer.model.fc.weight.detach().clone()
    summary = trainer.fit()
    assert summary["steps"] == 1 and not torch.equal(trainer.model.fc.weight, before)
    assert torch.equal(trainer.model.layer1[0].conv1.weight, saved["layer1.0.conv1.weight"])


def test_hub_names_without_the_package_are_one_clear_error():
    pytest.importorskip("torch")
    try:
        import timm  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match="needs the timm package"):
            build_model("timm:resnet18", (3, 8, 8), 2)
    else:
        assert build_model("timm:resnet18", (1, 8, 8), 2)(torch.zeros(1, 1, 8, 8)).shape == (1, 2)


# -- bad input: exit 2, nothing written ------------------------------------------------------

def _cli(tmp_path, config, capsys):
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config))
    out = tmp_path / "out"
    code = main(["train", str(path), "--out", str(out), "--quiet"])
    assert not out.exists()  # nothing written
    return code, capsys.readouterr().err


def test_bad_transfer_input_exits_2_and_writes_nothing(pretrained, tmp_path, capsys):
    mlp, cnn1d = tmp_path / "mlp.pt", tmp_path / "cnn1d.pt"
    _io.save(mlp, build_model("mlp", (1, 8, 8), 5, hidden=[16]).state_dict())
    _io.save(cnn1d, build_model("cnn1d", (1, 64), 5, channels=[4]).state_dict())
    cases = [
        (target(cnn1d, {"freeze": "none"}),
         r"model.init: nothing in .*cnn1d.pt.* matches the model.*another architecture"),
        (target(mlp), r"model.init: only 85 of the model's 4,285 parameters \(2.0%\) match "
                      r".*mlp.pt.*transfer.min_fraction"),
        (target(pretrained, {"freeze": ["features.99"]}),
         r"transfer.freeze: 'features.99' names no layer of the model; its blocks are "
         r"features.0, features.3"),
        (target(pretrained, {"freeze": "none", "lr_mult": 0}),
         r"transfer.lr_mult: Input should be greater than 0"),
        (target(pretrained, {"freeze": "none", "lr_mult": -0.1}), r"transfer.lr_mult"),
        (target(pretrained, per_class=1000),
         r"per_class=1000 is more than class 5 of digits has: \d+ training samples"),
        (target(pretrained, {"freeze": {"all-but-last": 9}}),
         r"all-but-last: 9 is more than the model's 4 blocks"),
        (target(pretrained, {"freeze": "backbone", "lp_ft": {"epochs": 1}}),
         r"lp_ft .* with freeze: backbone nothing would be unfrozen"),
        (target(pretrained, {"freeze": "none", "lp_ft": {"epochs": 2}}, epochs=2),
         r"lp_ft.epochs=2 leaves no epoch"),
        (target(pretrained, {"strategy": "auto", "freeze": "none"}),
         r"strategy: auto chooses freeze"),
        ({"model": MODEL, "transfer": {"freeze": "backbone"}}, r"transfer: needs pretrained"),
        (target(tmp_path / "missing"), r"model.init: weights .*missing.* not found"),
    ]
    for config, message in cases:
        code, err = _cli(tmp_path, config, capsys)
        assert code == 2, (config, err)
        assert len(err.strip().splitlines()) <= 3, err
        assert re.search(message, err), (message, err)
        assert "Traceback" not in err


def test_the_readme_transfer_examples_run_as_printed(tmp_path, monkeypatch, capsys):
    examples = Path(__file__).resolve().parents[1] / "examples"
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(examples / "transfer-pretrain-digits.yaml"), "--out",
                 "runs/digits-0-4", "--quiet"]) == 0
    assert main(["train", str(examples / "transfer-digits.yaml"), "--out", "runs/digits-5-9",
                 "--quiet"]) == 0
    summary = json.loads((tmp_path / "runs" / "digits-5-9" / "summary.json").read_text())
    assert summary["transfer"]["source"] == "runs/digits-0-4"
    assert summary["transfer"]["strategy"]["examples_per_class"] == 20
    page = (tmp_path / "runs" / "digits-5-9" / "report.html").read_text()
    section = page[page.index('<section id="transfer">'):]
    section = section[:section.index("</section>")]
    assert "runs/digits-0-4" in section and "head.weight, head.bias" in section
    assert f"[{summary['transfer']['strategy']['action']}]" in section  # the chosen cell


def test_the_torchvision_path_against_a_stand_in_package(tmp_path, monkeypatch):
    """Where torchvision is absent: the same code path (names, the cache file, the first conv
    rebuilt, weights adapted and the head re-initialised) on a stand-in with torchvision's
    calls (list_models, get_model, get_model_weights, a weights enum with a url)."""
    import enum
    import sys
    import types

    from torch import nn

    class Tiny(nn.Module):
        def __init__(self, num_classes=1000):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(4)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(4, num_classes)

        def forward(self, x):
            return self.fc(self.pool(torch.relu(self.bn1(self.conv1(x)))).flatten(1))

    class TinyWeights(enum.Enum):
        IMAGENET1K_V1 = "https://example.org/tiny-0123abcd.pth"
        DEFAULT = "https://example.org/tiny-0123abcd.pth"  # an alias, as in torchvision

        @property
        def url(self) -> str:
            return self.value

    models = types.ModuleType("torchvision.models")
    models.list_models = lambda: ["tiny"]
    models.get_model = lambda arch, weights=None, num_classes=1000: Tiny(num_classes)
    models.get_model_weights = lambda arch: TinyWeights
    package = types.ModuleType("torchvision")
    package.models = models
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.models", models)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    config = {"seed": 0, "data": {"source": "digits", "classes": [0, 1, 2, 3, 4, 5, 6],
                                  "per_class": 4},
              "model": {"name": "torchvision:tiny", "weights": "DEFAULT"},
              "transfer": {"freeze": "backbone"},
              "optimizer": {"name": "sgd", "lr": 0.1},
              "train": {"epochs": 1, "batch_size": 28, "max_steps": 1, "monitor_every": 0}}
    cache = tmp_path / "torch" / "hub" / "checkpoints" / "tiny-0123abcd.pth"
    with pytest.raises(UserError) as missing:
        Trainer(config, quiet=True)
    assert f"{cache} is missing" in str(missing.value)
    assert "get_model('tiny', weights='DEFAULT')" in str(missing.value)
    with pytest.raises(UserError, match="has no weights 'IMAGENET9K'; accepted: DEFAULT, "
                                        "IMAGENET1K_V1"):
        Trainer(config | {"model": {"name": "torchvision:tiny", "weights": "IMAGENET9K"}},
                quiet=True)
    with pytest.raises(UserError, match="torchvision has no model 'huge'"):
        build_model("torchvision:huge", (3, 8, 8), 7)
    cache.parent.mkdir(parents=True)
    saved = Tiny().state_dict()
    _io.save(cache, saved)
    trainer = Trainer(config, quiet=True)
    assert trainer.model.conv1.in_channels == 1  # rebuilt for grey digits
    report = trainer.finetune.report
    assert report["adapted"] == ["conv1.weight"]
    assert report["reinitialised"] == ["fc.weight", "fc.bias"]
    torch.testing.assert_close(trainer.model.conv1.weight, saved["conv1.weight"].sum(1, True))
    assert trainer.fit()["steps"] == 1
    assert torch.equal(trainer.model.conv1.weight.detach(),
                       saved["conv1.weight"].sum(1, True))  # frozen
