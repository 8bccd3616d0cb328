"""gradwise.transfer: loading weights (head re-initialised, input channels adapted, too little
refused), freezing with both batch-norm modes, discriminative learning rates, the 2x2 table."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from gradwise import _io
from gradwise.errors import UserError
from gradwise.nn import build_model
from gradwise.optim import param_groups
from gradwise.train import fit
from gradwise.transfer import (
    blocks,
    discriminative_groups,
    freeze,
    load_weights,
    lr_multipliers,
    measure,
    probe_accuracy,
    strategy,
    unfreeze,
)

CONVNET = {"channels": (8, 16), "batch_norm": True}


def _digits(n: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits
    x, y = load_digits(return_X_y=True)
    return (torch.tensor(x[:n], dtype=torch.float32).reshape(-1, 1, 8, 8) / 16,
            torch.tensor(y[:n]))


def _trained(name: str = "convnet", classes: int = 10, **options) -> nn.Module:
    """A model trained for a few steps on digits, so its weights are not the initial ones."""
    torch.manual_seed(0)
    model = build_model(name, (1, 8, 8), classes, **(options or CONVNET))
    x, y = _digits()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y % classes).backward()
        opt.step()
    return model


def _fresh(classes: int = 10, channels: int = 1, seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("convnet", (channels, 8, 8), classes, **CONVNET)


# -- load_weights --------------------------------------------------------------------------------

def test_a_state_dict_file_loads_into_a_model_with_another_class_count(tmp_path):
    source = _trained()
    _io.save(tmp_path / "weights.pt", source.state_dict())
    model = _fresh(classes=5)
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}
    report = load_weights(model, tmp_path / "weights.pt")
    assert report["reinitialised"] == ["head.weight", "head.bias"]
    assert report["adapted"] == [] and report["skipped"] == {}
    mine, theirs = model.state_dict(), source.state_dict()
    for name in report["loaded"]:
        assert torch.equal(mine[name], theirs[name]), name  # bit for bit
    assert set(report["loaded"]) == {k for k in mine if not k.startswith("head.")}
    for name, value in model.head.state_dict().items():
        assert torch.equal(value, head_before[name])  # the model's own initialisation
    head = sum(p.numel() for p in model.head.parameters())
    total = sum(p.numel() for p in model.parameters())
    assert report["fraction"] == pytest.approx((total - head) / total)


def test_a_gradwise_run_directory_and_checkpoint_load(tmp_path):
    config = {"seed": 0, "data": "digits", "model": {"name": "mlp", "hidden": [32]},
              "optimizer": {"name": "sgd", "lr": 0.1},
              "train": {"epochs": 1, "batch_size": 256, "monitor_every": 0}}
    fit(config, tmp_path / "run", quiet=True)
    best = _io.load(tmp_path / "run" / "checkpoints" / "best.pt")["model"]
    model = build_model("mlp", (1, 8, 8), 3, hidden=[32])
    report = load_weights(model, tmp_path / "run")
    assert report["reinitialised"] == ["head.weight", "head.bias"]
    assert torch.equal(model.state_dict()["features.1.weight"], best["features.1.weight"])
    again = build_model("mlp", (1, 8, 8), 10, hidden=[32])
    report = load_weights(again, tmp_path / "run" / "checkpoints" / "last.pt")
    assert report["fraction"] == 1.0 and report["reinitialised"] == []


def test_an_in_memory_state_dict_with_extra_and_missing_keys():
    source = _trained().state_dict()
    source["extra.weight"] = torch.zeros(3)
    del source["features.3.weight"]  # the second conv
    model = _fresh()
    own = model.state_dict()["features.3.weight"].clone()
    report = load_weights(model, source, min_fraction=0.0)
    assert report["skipped"]["extra.weight"] == "not in the model"
    assert report["skipped"]["features.3.weight"] == "not in the source"
    assert torch.equal(model.state_dict()["features.3.weight"], own)  # kept the model's own
    assert torch.equal(model.state_dict()["features.7.weight"], source["features.7.weight"])


@pytest.mark.parametrize("theirs, mine", [(3, 1), (1, 3)])
def test_the_first_conv_is_adapted_so_a_grey_image_gives_the_same_activations(theirs, mine):
    source = _fresh(channels=theirs, seed=2).eval()
    model = _fresh(channels=mine, seed=3).eval()
    report = load_weights(model, source.state_dict())
    assert report["adapted"] == ["features.0.weight"]
    grey = torch.rand(4, 1, 8, 8)
    out_source = source(grey.expand(-1, theirs, -1, -1))
    out_model = model(grey.expand(-1, mine, -1, -1))
    torch.testing.assert_close(out_model, out_source, rtol=1e-5, atol=1e-6)
    first_source = source.features[0](grey.expand(-1, theirs, -1, -1))
    first_model = model.features[0](grey.expand(-1, mine, -1, -1))
    torch.testing.assert_close(first_model, first_source, rtol=1e-5, atol=1e-6)


def test_loading_too_little_is_refused_with_the_numbers_and_changes_nothing():
    source = _trained().state_dict()
    partial = {k: v for k, v in source.items() if k.startswith("features.0.")}
    model = _fresh()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UserError, match=r"only 72 of the model's .* parameters .*min_fraction=0.5"):
        load_weights(model, partial)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert load_weights(model, partial, min_fraction=0.0)["loaded"] == ["features.0.weight"]


def test_bad_sources_get_one_clear_message(tmp_path):
    model = _fresh()
    with pytest.raises(UserError, match="not found"):
        load_weights(model, tmp_path / "missing.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="corrupt.pt.*corrupt"):
        load_weights(model, tmp_path / "corrupt.pt")
    _io.save(tmp_path / "list.pt", [1, 2])
    with pytest.raises(UserError, match="holds no state dict"):
        load_weights(model, tmp_path / "list.pt")
    mlp = build_model("mlp", (4,), 3, hidden=(8,)).state_dict()
    with pytest.raises(UserError, match="nothing in the state dict given matches"):
        load_weights(model, {"other." + k: v for k, v in mlp.items()})
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="config.yaml is missing"):
        load_weights(model, tmp_path / "empty")
    with pytest.raises(UserError, match="min_fraction"):
        load_weights(model, mlp, min_fraction=2)
    with pytest.raises(UserError, match="weights source"):
        load_weights(model, 42)  # type: ignore[arg-type]


# -- freeze ---------------------------------------------------------------------------------------

def _step(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int = 3) -> None:
    x, y = _digits(64)
    for _ in range(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def test_frozen_parameters_get_no_gradient_and_do_not_change():
    model = _trained()
    result = freeze(model)
    assert all(n.startswith("head.") for n in result["trainable"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    # an optimizer given every parameter, with weight decay: frozen ones have no gradient
    _step(model, torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.1))
    for name, p in model.named_parameters():
        if name in result["frozen"]:
            assert p.grad is None
            assert torch.equal(p, before[name]), name
        else:
            assert not torch.equal(p, before[name]), name
    # running statistics of the frozen BN layers held (bn="eval")
    for name, value in model.state_dict().items():
        if not name.startswith("head."):
            assert torch.equal(value, before[name]), name
    # param_groups leaves the frozen parameters out of the optimizer
    held = {id(p) for g in param_groups(model, weight_decay=0.1) for p in g["params"]}
    assert held == {id(p) for p in model.head.parameters()}


def test_bn_eval_holds_under_train_and_unfreeze_lets_it_go():
    model = _trained()
    freeze(model, bn="eval")
    model.train()
    bn = model.features[1]
    assert isinstance(bn, nn.BatchNorm2d)
    x, _ = _digits(64)
    model(x)
    assert not bn.training
    model.eval()
    reference = model(x)
    model.train()
    torch.testing.assert_close(model.features(x), model.eval().features(x))
    model.train()
    torch.testing.assert_close(model(x), reference)  # frozen part computes what eval does
    unfreeze(model)
    model.train()
    stats = bn.running_mean.clone()
    model(x)
    assert bn.training and not torch.equal(bn.running_mean, stats)
    assert all(p.requires_grad for p in model.parameters())


def test_bn_train_keeps_updating_statistics_and_affine():
    model = _trained()
    result = freeze(model, bn="train")
    bn = model.features[1]
    assert "features.1.weight" in result["trainable"]
    assert "features.0.weight" in result["frozen"]
    stats = bn.running_mean.clone()
    before = model.features[0].weight.clone()
    model.train()
    _step(model, torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1))
    assert bn.training and not torch.equal(bn.running_mean, stats)
    assert torch.equal(model.features[0].weight, before)


def test_trainable_as_blocks_names_and_predicate():
    model = _fresh()
    assert blocks(model) == ["features.0", "features.3", "features.7", "features.10", "head"]
    result = freeze(model, trainable=1)
    assert result["trainable"] == ["features.10.weight", "features.11.weight",
                                   "features.11.bias", "head.weight", "head.bias"]
    assert result["frozen_bn"] == ["features.1", "features.4", "features.8"]
    result = freeze(model, trainable="features.7")
    assert result["trainable"] == ["features.7.weight"]
    result = freeze(model, trainable=lambda name: name.endswith("bias"))
    assert all(n.endswith("bias") for n in result["trainable"])
    assert freeze(model, trainable=0)["trainable"] == ["head.weight", "head.bias"]


@pytest.mark.parametrize("kwargs, message", [
    ({"trainable": 9}, r"trainable=9 is invalid; this model has 4 blocks"),
    ({"trainable": -1}, r"trainable=-1 is invalid"),
    ({"trainable": ("classifier",)}, r"'classifier' match no parameter"),
    ({"trainable": 1.5}, r"trainable=1.5 is invalid"),
    ({"bn": "frozen"}, r"bn='frozen' is invalid; accepted: 'eval'"),
])
def test_bad_freeze_arguments(kwargs, message):
    model = _fresh()
    with pytest.raises(UserError, match=message):
        freeze(model, **kwargs)
    assert all(p.requires_grad for p in model.parameters())  # nothing changed


# -- discriminative learning rates ---------------------------------------------------------------

def test_discriminative_learning_rates_are_geometric_from_input_to_head():
    model = _fresh()
    groups = discriminative_groups(model, 1e-2, factor=100.0, weight_decay=5e-4)
    k = len(blocks(model))
    expected = [1e-2 / 100 ** ((k - 1 - i) / (k - 1)) for i in range(k)]
    lrs = sorted({g["lr"] for g in groups})
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert lrs[0] == pytest.approx(1e-4) and lrs[-1] == 1e-2
    assert all(b / a == pytest.approx(100 ** (1 / (k - 1))) for a, b in itertools.pairwise(lrs))
    by_name = {id(p): n for n, p in model.named_parameters()}
    for group in groups:  # weight decay rules of param_groups: none on BN and biases
        for p in group["params"]:
            name = by_name[id(p)]
            decays = name.endswith("weight") and not name.startswith(("features.1.",
                                                                      "features.4.",
                                                                      "features.8.",
                                                                      "features.11."))
            assert group["weight_decay"] == (5e-4 if decays else 0.0), name
        if by_name[id(group["params"][0])].startswith("head."):
            assert group["lr"] == 1e-2
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    torch.optim.SGD(groups, lr=1.0)  # a valid argument for any optimizer


def test_discriminative_groups_by_count_and_names_and_skip_frozen():
    model = _fresh()
    two = discriminative_groups(model, 0.1, factor=10.0, groups=2)
    assert sorted({g["lr"] for g in two}) == pytest.approx([0.01, 0.1])
    named = discriminative_groups(model, 0.1, factor=10.0,
                                  groups=[["features"], "head"])
    head = {id(p) for p in model.head.parameters()}
    for group in named:
        assert group["lr"] == (0.1 if id(group["params"][0]) in head else pytest.approx(0.01))
    freeze(model, trainable=1)
    held = {id(p) for g in discriminative_groups(model, 0.1) for p in g["params"]}
    assert held == {id(p) for p in model.parameters() if p.requires_grad}
    assert math.isclose(discriminative_groups(model, 0.1, factor=1.0)[0]["lr"], 0.1)


@pytest.mark.parametrize("kwargs, message", [
    ({"factor": 0.5}, r"factor=0.5 is invalid; it must be >= 1"),
    ({"factor": -1.0}, r"factor=-1.0 is invalid"),
    ({"base_lr": float("nan")}, r"base_lr=nan is invalid"),
    ({"groups": 0}, r"groups=0 is invalid; this model has 5 blocks"),
    ({"groups": ["features.0"]}, r"no learning-rate group holds features.1.weight"),
    ({"groups": ["nope"]}, r"'nope' matches no parameter"),
    ({"weight_decay": -1.0}, r"weight_decay=-1.0 is invalid"),
])
def test_bad_discriminative_arguments(kwargs, message):
    kwargs = {"base_lr": 0.1, **kwargs}
    with pytest.raises(UserError, match=message):
        discriminative_groups(_fresh(), **kwargs)


# -- the 2x2 table --------------------------------------------------------------------------------

@pytest.mark.parametrize("n, similar, action, trainable", [
    (20, True, "linear_probe", ("head",)),
    (20, False, "earlier_stage", 1),
    (5000, True, "fine_tune_few", 2),
    (5000, False, "fine_tune_many", None),
])
def test_the_four_cells(n, similar, action, trainable):
    choice = strategy(n, similar)
    assert choice["action"] == action and choice["trainable"] == trainable
    assert choice["data"] == ("little" if n < 1000 else "a lot")
    assert choice["reason"] and choice["what"]
    assert (choice["lp_ft"] is None) == (action == "linear_probe")


def test_the_threshold_and_bad_strategy_input():
    assert strategy(999, True)["data"] == "little"
    assert strategy(1000, True)["data"] == "a lot"
    assert strategy(50, True, little=40)["data"] == "a lot"
    with pytest.raises(UserError, match="n_examples_per_class=0 is invalid"):
        strategy(0, True)
    with pytest.raises(UserError, match="similar='yes' is invalid"):
        strategy(10, "yes")  # type: ignore[arg-type]


# -- head="reinit", lr_multipliers, probes -------------------------------------------------------

def test_head_reinit_keeps_the_models_own_head_even_where_the_shape_matches():
    source = _trained().state_dict()
    model = _fresh(classes=10)
    own = model.head.weight.detach().clone()
    report = load_weights(model, source, head="reinit")
    assert report["reinitialised"] == ["head.weight", "head.bias"]
    assert torch.equal(model.head.weight, own)
    assert torch.equal(model.features[0].weight, source["features.0.weight"])
    with pytest.raises(UserError, match="head='new' is invalid"):
        load_weights(model, source, head="new")


def test_lr_multipliers_decay_geometrically_over_the_trainable_blocks():
    model = _fresh()
    freeze(model, trainable=3)  # features.3, features.7, features.10 and the head
    f = lr_multipliers(model, 0.2, factor=4)
    assert f("head.weight") == 1.0
    assert f("features.10.weight") == pytest.approx(0.2)
    assert f("features.11.bias") == pytest.approx(0.2)  # its BN
    assert f("features.7.weight") == pytest.approx(0.2 / 2)  # 0.2 / 4 ** (1/2)
    assert f("features.3.weight") == pytest.approx(0.2 / 4)
    assert lr_multipliers(model, 0.1)("features.3.weight") == pytest.approx(0.1)
    with pytest.raises(UserError, match="lr_mult"):
        lr_multipliers(model, 0)


def test_the_probe_matches_a_logistic_regression_of_scikit_learn():
    from sklearn.linear_model import LogisticRegression
    x, y = _digits(600)
    flat = x.flatten(1)
    mine = probe_accuracy(flat[:400], y[:400], flat[400:], y[400:], l2=1e-2, steps=500)
    mean, std = flat[:400].mean(0), flat[:400].std(0, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    scaled = ((flat - mean) / std).numpy()
    # sklearn minimises C * sum(CE) + |W|^2 / 2, ours mean(CE) + l2 / 2 |W|^2: C = 1 / (l2 n)
    theirs = LogisticRegression(C=1 / (1e-2 * 400), max_iter=5000).fit(
        scaled[:400], y[:400].numpy()).score(scaled[400:], y[400:].numpy())
    assert mine == pytest.approx(theirs, abs=0.02)
    assert mine > 0.8


def test_measure_compares_pretrained_and_random_features_and_leaves_the_rng_alone():
    x, y = _digits(300)
    trained, random_init = _trained(), _fresh(seed=7)
    state = torch.get_rng_state()
    result = measure(trained, random_init, x, y, seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    assert result == measure(trained, random_init, x, y, seed=0)  # deterministic
    err_p = 1 - result["probe_accuracy_pretrained"]
    err_r = 1 - result["probe_accuracy_random"]
    assert result["error_removed"] == pytest.approx((err_r - err_p) / err_r)
    assert result["similar"] == (result["error_removed"] >= 0.25)
    assert result["examples_per_class"] == int(y.bincount().min())
    same = measure(random_init, random_init, x, y)
    assert same["error_removed"] == 0 and not same["similar"]
