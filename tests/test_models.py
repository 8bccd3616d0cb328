"""The model zoo: shapes, initialisation, options, user factories, bad input, real training."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gradwise.errors import UserError
from gradwise.nn import MODELS, BasicBlock, build_model

SHAPES = {
    "mlp": [(64,), (1, 8, 8), (1, 28, 28), (3, 32, 32), (1, 40)],
    "convnet": [(1, 8, 8), (1, 28, 28), (3, 32, 32)],
    "resnet": [(1, 8, 8), (1, 28, 28), (3, 32, 32)],
    "cnn1d": [(1, 40), (40,), (3, 100)],
}


def count(model: nn.Module, kind) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


def test_models_lists_the_built_in_models():
    assert tuple(MODELS) == ("mlp", "convnet", "resnet", "cnn1d")
    assert set(SHAPES) == set(MODELS)


@pytest.mark.parametrize(("name", "shape"),
                         [(name, shape) for name in SHAPES for shape in SHAPES[name]])
def test_logits_shape_on_realistic_inputs(name, shape):
    torch.manual_seed(0)
    model = build_model(name, shape, 10)
    out = model(torch.randn(3, *shape))
    assert out.shape == (3, 10)
    assert torch.isfinite(out).all()
    model.eval()
    assert model(torch.randn(1, *shape)).shape == (1, 10)


def test_shape_may_be_a_list_or_torch_size():
    assert build_model("convnet", [1, 8, 8], 3)(torch.zeros(2, 1, 8, 8)).shape == (2, 3)
    assert build_model("cnn1d", torch.Size([40]), 3)(torch.zeros(2, 40)).shape == (2, 3)


def test_kaiming_fan_in_init_zero_biases_and_unit_batch_norm():
    torch.manual_seed(0)
    mlp = build_model("mlp", (1, 28, 28), 10, hidden=(512, 256))
    first = mlp.features[1]
    assert first.weight.std().item() == pytest.approx(math.sqrt(2 / 784), rel=0.1)
    assert (first.bias == 0).all()
    convnet = build_model("convnet", (1, 28, 28), 10, batch_norm=False)
    conv = [m for m in convnet.modules() if isinstance(m, nn.Conv2d)][-1]  # 128 x 128 x 3 x 3
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (128 * 9)), rel=0.1)
    assert all((m.bias == 0).all() for m in convnet.modules() if isinstance(m, nn.Conv2d))
    resnet = build_model("resnet", (3, 32, 32), 10)
    norms = [m for m in resnet.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all((m.weight == 1).all() and (m.bias == 0).all() for m in norms)


def test_small_head_starts_near_uniform_predictions():
    torch.manual_seed(0)
    for name, shape in [("mlp", (64,)), ("convnet", (1, 8, 8)), ("cnn1d", (1, 40))]:
        model = build_model(name, shape, 10)
        assert model.head.weight.std().item() == pytest.approx(0.01, rel=0.2)
        assert (model.head.bias == 0).all()
        loss = nn.functional.cross_entropy(model(torch.randn(64, *shape)),
                                           torch.randint(10, (64,)))
        assert loss.item() == pytest.approx(math.log(10), abs=0.05)


def test_no_bias_before_batch_norm():
    model = build_model("convnet", (1, 8, 8), 10)
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))
    model = build_model("mlp", (64,), 10, batch_norm=True)
    assert all(m.bias is None for m in model.features if isinstance(m, nn.Linear))


def test_dropout_and_batch_norm_options_change_the_structure():
    bn_kinds = (nn.BatchNorm1d, nn.BatchNorm2d)
    assert count(build_model("mlp", (64,), 10), bn_kinds + (nn.Dropout,)) == 0
    mlp = build_model("mlp", (64,), 10, hidden=(32, 32, 32), batch_norm=True, dropout=0.5)
    assert count(mlp, nn.BatchNorm1d) == 3
    assert [m.p for m in mlp.modules() if isinstance(m, nn.Dropout)] == [0.5] * 3

    assert count(build_model("convnet", (1, 8, 8), 10), nn.BatchNorm2d) == 6
    plain = build_model("convnet", (1, 8, 8), 10, batch_norm=False, convs_per_stage=1)
    assert (count(plain, nn.BatchNorm2d), count(plain, nn.Conv2d)) == (0, 3)
    assert count(build_model("convnet", (1, 8, 8), 10, dropout=0.3), nn.Dropout) == 1

    assert count(build_model("cnn1d", (1, 40), 10), nn.BatchNorm1d) == 3
    assert count(build_model("cnn1d", (1, 40), 10, batch_norm=False), nn.BatchNorm1d) == 0
    assert count(build_model("cnn1d", (1, 40), 10, dropout=0.1), nn.Dropout) == 1
    assert count(build_model("resnet", (3, 32, 32), 10), nn.Dropout) == 0
    assert count(build_model("resnet", (3, 32, 32), 10, dropout=0.2), nn.Dropout) == 1


def test_convnet_skips_pooling_once_the_image_is_one_pixel():
    assert count(build_model("convnet", (1, 8, 8), 10, channels=(8,) * 5), nn.MaxPool2d) == 3
    assert count(build_model("convnet", (1, 28, 28), 10), nn.MaxPool2d) == 3


def test_cnn1d_pools_between_stages_while_length_at_least_4():
    wide = build_model("cnn1d", (1, 40), 10, channels=(64, 64, 128, 128, 256))
    assert count(wide, nn.MaxPool1d) == 4  # 40 -> 20 -> 10 -> 5 -> 2
    assert count(build_model("cnn1d", (1, 6), 10, channels=(8,) * 4), nn.MaxPool1d) == 1
    assert count(build_model("cnn1d", (1, 40), 10, pool=False), nn.MaxPool1d) == 0
    conv = [m for m in wide.modules() if isinstance(m, nn.Conv1d)]
    assert [m.kernel_size for m in conv] == [(5,)] * 5
    seven = build_model("cnn1d", (1, 40), 10, kernel_size=7, pool=False)
    assert seven.features[:-2](torch.randn(2, 1, 40)).shape == (2, 128, 40)


def test_resnet_blocks_with_projection_shortcuts_where_shapes_change():
    model = build_model("resnet", (3, 32, 32), 10, widths=(16, 32, 64), blocks_per_stage=3)
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 9
    projected = [i for i, b in enumerate(blocks) if not isinstance(b.shortcut, nn.Identity)]
    assert projected == [3, 6]
    assert [b.residual[0].stride for b in blocks] == [(1, 1)] * 3 + ([(2, 2)] + [(1, 1)] * 2) * 2
    features = model.features[:-2](torch.randn(2, 3, 32, 32))  # before global pooling
    assert features.shape == (2, 64, 8, 8)


def test_basic_block_adds_the_shortcut_to_the_residual():
    torch.manual_seed(0)
    block = BasicBlock(8, 16, stride=2)
    x = torch.randn(2, 8, 10, 10)
    assert torch.equal(block(x), torch.relu(block.residual(x) + block.shortcut(x)))
    assert block(x).shape == (2, 16, 5, 5)
    assert isinstance(BasicBlock(8, 8).shortcut, nn.Identity)


# -- python:module:function ------------------------------------------------------------------

FACTORY = '''
import torch


def tiny(input_shape, num_classes, width=4):
    return torch.nn.Sequential(torch.nn.Flatten(),
                               torch.nn.Linear(input_shape[-1], width),
                               torch.nn.Linear(width, num_classes))


def not_a_module(input_shape, num_classes):
    return "a string"
'''


@pytest.fixture
def factory_module(tmp_path, monkeypatch):
    (tmp_path / "zoo_factories.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "zoo_factories"


def test_python_factory_builds_the_model_with_options(factory_module):
    model = build_model(f"python:{factory_module}:tiny", (5,), 3, width=7)
    assert model[1].out_features == 7
    assert model(torch.randn(2, 5)).shape == (2, 3)


@pytest.mark.parametrize(("spec", "options", "match"), [
    ("python:{m}:not_a_module", {}, r"not_a_module\(\) returned a str, not a torch.nn.Module"),
    ("python:{m}:missing", {}, r"module 'zoo_factories' has no function 'missing'"),
    ("python:no_such_module_here:make", {}, r"cannot import module 'no_such_module_here'"),
    ("python:{m}", {}, r"write your own as 'python:module:function'"),
    ("python:{m}:tiny", {"depth": 3}, r"tiny\(\) does not take .*depth"),
])
def test_python_factory_errors(factory_module, spec, options, match):
    with pytest.raises(UserError, match=match):
        build_model(spec.format(m=factory_module), (5,), 3, **options)


# -- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "shape", "options", "match"), [
    ("transformer", (1, 8, 8), {}, r"unknown model 'transformer'; choose one of mlp, convnet, "
                                   r"resnet, cnn1d, or 'python:module:function'"),
    ("mlp", (64,), {"widths": (8,)},
     r"unknown option 'widths' for model 'mlp'; its options are hidden, batch_norm, dropout"),
    ("resnet", (3, 32, 32), {"channels": (8,)},
     r"unknown option 'channels' for model 'resnet'; its options are widths, "
     r"blocks_per_stage, dropout, stochastic_depth, batch_norm, fractional_pool, "
     r"fractional_pool_mode"),
    ("cnn1d", (1, 40), {"a": 1, "b": 2}, r"unknown options 'a', 'b' for model 'cnn1d'"),
    ("mlp", (64,), {"dropout": -0.1}, r"dropout=-0.1 is invalid; it must be a number in \[0, 1\)"),
    ("convnet", (1, 8, 8), {"dropout": 1.0}, r"dropout=1.0 is invalid"),
    ("convnet", (1, 8, 8), {"channels": ()}, r"channels=\(\) is invalid; it must be a non-empty"),
    ("cnn1d", (1, 40), {"channels": []}, r"channels=\[\] is invalid"),
    ("resnet", (3, 32, 32), {"widths": (32, 0)}, r"widths=\(32, 0\) is invalid"),
    ("mlp", (64,), {"hidden": (-4,)}, r"hidden=\(-4,\) is invalid"),
    ("convnet", (1, 8, 8), {"convs_per_stage": 0}, r"convs_per_stage=0 is invalid"),
    ("resnet", (3, 32, 32), {"blocks_per_stage": 1.5}, r"blocks_per_stage=1.5 is invalid"),
    ("cnn1d", (1, 40), {"kernel_size": 0}, r"kernel_size=0 is invalid"),
    ("cnn1d", (1, 40), {"kernel_size": 4}, r"kernel_size=4 is invalid; it must be odd"),
    ("cnn1d", (1, 40), {"pool": "yes"}, r"pool='yes' is invalid; it must be true or false"),
    ("mlp", (64,), {"batch_norm": 1}, r"batch_norm=1 is invalid"),
    ("convnet", (64,), {}, r"model 'convnet' needs an image shape \(C, H, W\); "
                           r"got input_shape=\(64,\)"),
    ("resnet", (1, 40), {}, r"model 'resnet' needs an image shape \(C, H, W\)"),
    ("cnn1d", (1, 28, 28), {}, r"model 'cnn1d' needs a sequence shape \(C, L\) or \(L,\)"),
    ("mlp", (), {}, r"input_shape=\(\) is invalid"),
    ("mlp", (0, 8), {}, r"input_shape=\(0, 8\) is invalid"),
])
def test_bad_input_raises_user_error_naming_the_culprit(name, shape, options, match):
    with pytest.raises(UserError, match=match):
        build_model(name, shape, 10, **options)


def test_bad_num_classes():
    with pytest.raises(UserError, match=r"num_classes=0 is invalid"):
        build_model("mlp", (64,), 0)


def test_mlp_without_hidden_layers_is_a_linear_model():
    model = build_model("mlp", (64,), 10, hidden=())
    assert [type(m) for m in model.modules()].count(nn.Linear) == 1


# -- real training ---------------------------------------------------------------------------

def train_accuracy(model, x, y, steps, *, lr=1e-3, batch=128):
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        idx = torch.randint(len(x), (batch,))
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize(("name", "shape"), [("mlp", (64,)), ("convnet", (1, 8, 8))])
def test_learns_digits(digits, name, shape):
    x, y = digits
    torch.manual_seed(0)
    model = build_model(name, shape, 10)
    assert train_accuracy(model, x.float().reshape(-1, *shape), y, steps=100) > 0.9


def test_cnn1d_learns_shifted_bumps():
    """Which of 4 pulse shapes sits somewhere in a noisy sequence of length 40."""
    torch.manual_seed(0)
    n, length = 1024, 40
    t = torch.arange(9, dtype=torch.float32) - 4
    shapes = torch.stack([torch.exp(-t**2 / 2), -torch.exp(-t**2 / 2),
                          torch.sign(t) * torch.exp(-t**2 / 8), (t.abs() <= 2).float()])
    y = torch.randint(4, (n,))
    x = 0.3 * torch.randn(n, length)
    for i, start in enumerate(torch.randint(length - 9, (n,)).tolist()):
        x[i, start:start + 9] += shapes[y[i]]
    model = build_model("cnn1d", (length,), 4, channels=(16, 32, 32))
    assert train_accuracy(model, x, y, steps=150, lr=3e-3) > 0.9
