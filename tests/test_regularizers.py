"""Regularizers: weight penalties against torch's weight decay, dropout's defining properties,
DropConnect, stochastic depth, fractional max-pooling, Monte-Carlo prediction and test-time
augmentation, model options."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import digits_mlp, flat, rel_diff
from torch import nn
from torch.nn import functional as F

from gradwise.errors import UserError
from gradwise.nn import (
    BasicBlock,
    DropConnectConv2d,
    DropConnectLinear,
    FractionalMaxPool2d,
    build_model,
    mc_predict,
    tta_predict,
    weight_penalty,
)

#: |z| bound of the Monte-Carlo checks: a few hundred standard normal z-scores stay well below.
Z_MAX = 5.0


def count(model: nn.Module, kind) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


# -- weight_penalty --------------------------------------------------------------------------

def test_weight_penalty_value_over_weights_or_all_params():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    weights = [model[0].weight, model[2].weight]
    every = list(model.parameters())
    l1_of = lambda ps: sum(p.abs().sum() for p in ps)  # noqa: E731
    l2_of = lambda ps: sum(p.square().sum() for p in ps)  # noqa: E731
    got = weight_penalty(model, l1=0.3, l2=0.2)
    assert torch.allclose(got, 0.3 * l1_of(weights) + 0.1 * l2_of(weights))
    got = weight_penalty(model.parameters(), l2=0.2, include_all=True)
    assert torch.allclose(got, 0.1 * l2_of(every))
    assert torch.allclose(weight_penalty(weights, l1=0.5), 0.5 * l1_of(weights))
    assert weight_penalty(model).item() == 0.0
    assert weight_penalty([]).item() == 0.0


def test_weight_penalty_gradients_are_l1_sign_plus_l2_w():
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    weight_penalty(model, l1=0.3, l2=0.2).backward()
    w = model.weight.detach()
    assert torch.allclose(model.weight.grad, 0.3 * torch.sign(w) + 0.2 * w)
    assert model.bias.grad is None  # biases are not penalised by default
    model.zero_grad()
    weight_penalty(model, l1=0.3, include_all=True).backward()
    assert torch.equal(model.bias.grad, 0.3 * torch.sign(model.bias.detach()))


def _train(model, opt, data, steps, *, l2=0.0, batch=128):
    x, y = data
    for i in range(steps):
        lo = (i * batch) % (len(x) - batch)
        opt.zero_grad()
        loss = F.cross_entropy(model(x[lo:lo + batch]), y[lo:lo + batch])
        (loss + weight_penalty(model, l2=l2)).backward()
        opt.step()
    return flat(model)


def _groups(model, weight_decay):
    """Weight decay on the weight matrices only, as weight_penalty does."""
    weights = [p for p in model.parameters() if p.dim() >= 2]
    biases = [p for p in model.parameters() if p.dim() < 2]
    return [{"params": weights, "weight_decay": weight_decay},
            {"params": biases, "weight_decay": 0.0}]


LAMBDA = 0.05
OPTIMIZERS = {
    "sgd": lambda groups: torch.optim.SGD(groups, lr=0.1),
    "sgd_momentum": lambda groups: torch.optim.SGD(groups, lr=0.05, momentum=0.9),
    "sgd_nesterov": lambda groups: torch.optim.SGD(groups, lr=0.05, momentum=0.9,
                                                   nesterov=True),
    "adam": lambda groups: torch.optim.Adam(groups, lr=1e-2),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_l2_penalty_equals_torch_weight_decay(digits, name):
    """loss + weight_penalty(l2) with no decay == torch's weight_decay=l2 on the weights."""
    make = OPTIMIZERS[name]
    penalised = digits_mlp(torch.float64)
    decayed = digits_mlp(torch.float64)
    got = _train(penalised, make(_groups(penalised, 0.0)), digits, 40, l2=LAMBDA)
    want = _train(decayed, make(_groups(decayed, LAMBDA)), digits, 40)
    assert (got - want).abs().max().item() < 1e-10
    plain = digits_mlp(torch.float64)
    assert rel_diff(_train(plain, make(_groups(plain, 0.0)), digits, 40), want) > 1e-4


def test_l2_penalty_with_adam_is_not_adamw(digits):
    """Coupled L2 (the penalty, Adam's weight_decay) and decoupled decay (AdamW) differ."""
    penalised = digits_mlp(torch.float64)
    got = _train(penalised, torch.optim.Adam(_groups(penalised, 0.0), lr=1e-2), digits, 40,
                 l2=LAMBDA)
    adamw = digits_mlp(torch.float64)
    want = _train(adamw, torch.optim.AdamW(_groups(adamw, LAMBDA), lr=1e-2), digits, 40)
    assert rel_diff(got, want) > 1e-3


@pytest.mark.parametrize(("options", "match"), [
    ({"l1": -0.1}, r"l1=-0.1 is invalid; l1 must be a finite number >= 0"),
    ({"l2": float("nan")}, r"l2=nan is invalid"),
    ({"l2": "0.1"}, r"l2='0.1' is invalid"),
    ({"include_all": 1}, r"include_all=1 is invalid; include_all must be true or false"),
])
def test_weight_penalty_bad_values(options, match):
    with pytest.raises(UserError, match=match):
        weight_penalty(nn.Linear(2, 2), **options)


# -- dropout (torch's own): the defining properties -------------------------------------------

@pytest.mark.parametrize("p", [0.2, 0.5])
def test_inverted_dropout_is_unbiased(p):
    """E[dropout(x)] = x: each Monte-Carlo mean is within Z_MAX standard errors of x."""
    torch.manual_seed(0)
    samples = 4000
    x = torch.randn(300, dtype=torch.float64)
    dropout = nn.Dropout(p).train()
    mean = dropout(x.expand(samples, -1)).mean(0)
    standard_error = x.abs() * math.sqrt(p / (1 - p) / samples)
    z = (mean - x) / standard_error
    assert z.abs().max().item() < Z_MAX
    assert 0.75 < z.square().mean().item() < 1.25  # the z-scores have variance ~1


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_dropout_scales_survivors_and_is_the_identity_in_eval(p):
    torch.manual_seed(0)
    x = torch.rand(100_000) + 0.5
    y = nn.Dropout(p).train()(x)
    kept = y != 0
    assert torch.allclose(y[kept], x[kept] / (1 - p))
    dropped = 1 - kept.double().mean().item()
    assert abs(dropped - p) < Z_MAX * math.sqrt(p * (1 - p) / x.numel())
    images = x.reshape(10, 10, 10, 100)
    for layer in (nn.Dropout(p), nn.Dropout1d(p), nn.Dropout2d(p)):
        inputs = images[0] if isinstance(layer, nn.Dropout1d) else images
        assert torch.equal(layer.eval()(inputs), inputs)


@pytest.mark.parametrize(("layer", "shape"), [(nn.Dropout2d, (40, 50, 4, 5)),
                                              (nn.Dropout1d, (40, 50, 7))])
def test_channel_dropout_zeroes_whole_feature_maps(layer, shape):
    torch.manual_seed(0)
    p = 0.3
    y = layer(p).train()(torch.ones(shape))
    maps = y.flatten(2)  # (N, C, positions)
    assert torch.equal(maps.amin(2), maps.amax(2))  # each map all 0 or all 1 / (1 - p)
    assert maps[..., 0].unique().tolist() == [0.0, pytest.approx(1 / (1 - p))]
    dropped = (maps[..., 0] == 0).double().mean().item()
    channels = shape[0] * shape[1]
    assert abs(dropped - p) < Z_MAX * math.sqrt(p * (1 - p) / channels)


# -- DropConnect -----------------------------------------------------------------------------

def _drop_connect_cases():
    torch.manual_seed(0)
    linear = DropConnectLinear(20, 5, p=0.4)
    conv = DropConnectConv2d(2, 3, 3, padding=1, p=0.3)
    return [(linear, torch.randn(4, 20, dtype=torch.float64), nn.Linear(20, 5)),
            (conv, torch.randn(2, 2, 5, 5, dtype=torch.float64), nn.Conv2d(2, 3, 3, padding=1))]


@pytest.mark.parametrize("case", range(2), ids=["linear", "conv2d"])
def test_drop_connect_is_unbiased_over_masks(case):
    """E_M[layer(x)] = the full-weight output; Var = (x^2 * W^2 summed) * p / (1 - p)."""
    layer, x, _ = _drop_connect_cases()[case]
    layer = layer.double()
    samples = 3000
    torch.manual_seed(1)
    with torch.no_grad():
        layer.train()
        mean = sum(layer(x) for _ in range(samples)) / samples
        layer.eval()
        want = layer(x)
        weight_sq = layer.weight.square()
        if isinstance(layer, nn.Conv2d):
            variance = layer._conv_forward(x.square(), weight_sq, None)
        else:
            variance = F.linear(x.square(), weight_sq)
    standard_error = (variance * layer.p / (1 - layer.p) / samples).sqrt()
    z = (mean - want) / standard_error
    assert z.abs().max().item() < Z_MAX


@pytest.mark.parametrize("case", range(2), ids=["linear", "conv2d"])
def test_drop_connect_in_eval_is_the_plain_layer_with_the_same_state_dict(case):
    layer, x, plain = _drop_connect_cases()[case]
    layer, plain = layer.double(), plain.double()
    assert list(layer.state_dict()) == list(plain.state_dict())
    plain.load_state_dict(layer.state_dict())
    assert torch.equal(layer.eval()(x), plain(x))
    layer.load_state_dict(nn.Linear(20, 5).double().state_dict() if case == 0
                          else nn.Conv2d(2, 3, 3).double().state_dict())  # strict, both ways
    layer.p = 0.0
    assert torch.equal(layer.train()(x), layer.eval()(x))  # p = 0: nothing dropped


@pytest.mark.parametrize("case", range(2), ids=["linear", "conv2d"])
def test_drop_connect_gradient_flows_only_through_kept_weights(case):
    """With a positive input every full-weight gradient is > 0, so a zero gradient marks a
    dropped weight; the kept ones get the full gradient scaled by 1 / (1 - p)."""
    layer, x, _ = _drop_connect_cases()[case]
    layer = layer.double()
    x = x.abs() + 0.1
    layer.eval()
    layer(x).sum().backward()
    full = layer.weight.grad.clone()
    assert (full > 0).all()
    layer.zero_grad()
    layer.train()
    torch.manual_seed(2)
    out = layer(x)
    out.sum().backward()
    kept = layer.weight.grad != 0
    scale = 1 / (1 - layer.p)
    assert torch.allclose(layer.weight.grad, kept * full * scale)
    assert torch.allclose(layer.bias.grad, torch.full_like(layer.bias, out[:, 0].numel()))
    masked = layer.weight.detach() * kept * scale
    want = (layer._conv_forward(x, masked, layer.bias) if case == 1
            else F.linear(x, masked, layer.bias))
    assert torch.allclose(out, want)
    dropped = 1 - kept.double().mean().item()
    assert abs(dropped - layer.p) < Z_MAX * math.sqrt(layer.p * (1 - layer.p) / kept.numel())
    torch.manual_seed(3)
    assert not torch.equal(layer(x), out)  # a fresh mask each forward pass


@pytest.mark.parametrize("p", [1.0, -0.1, "0.5"])
def test_drop_connect_bad_p(p):
    with pytest.raises(UserError, match=r"p=.* is invalid; p must be a number in \[0, 1\)"):
        DropConnectLinear(3, 2, p=p)
    with pytest.raises(UserError, match=r"p=.* is invalid"):
        DropConnectConv2d(3, 2, 3, p=p)


# -- stochastic depth ------------------------------------------------------------------------

def test_stochastic_depth_is_unbiased_per_sample():
    """The train-mode pre-activation averages to the eval one (BN in eval, so that only the
    drop is random); each sample keeps or drops its whole residual branch."""
    torch.manual_seed(0)
    p, samples = 0.3, 4000
    block = BasicBlock(4, 4, drop_prob=p).double()
    for module in block.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        block.eval()
        want = block.preactivation(x)
        residual, shortcut = block.residual(x), block.shortcut(x)
        assert torch.equal(block(x), torch.relu(want))
        block.train()
        for module in block.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.eval()
        draws = block.preactivation(x.repeat(samples, 1, 1, 1)).reshape(samples, *x.shape)
    kept = torch.isclose(draws, residual / (1 - p) + shortcut).flatten(2).all(2)
    dropped = torch.isclose(draws, shortcut).flatten(2).all(2)
    assert (kept ^ dropped).all()  # whole residual branch kept or dropped, per sample
    assert abs(dropped.double().mean().item() - p) < Z_MAX * math.sqrt(p * (1 - p)
                                                                       / dropped.numel())
    standard_error = residual.abs() * math.sqrt(p / (1 - p) / samples)
    assert ((draws.mean(0) - want).abs() <= Z_MAX * standard_error + 1e-12).all()


def test_basic_block_without_drop_or_batch_norm():
    torch.manual_seed(0)
    block = BasicBlock(4, 8, stride=2, batch_norm=False)
    assert count(block, nn.BatchNorm2d) == 0
    assert all(m.bias is not None for m in block.modules() if isinstance(m, nn.Conv2d))
    x = torch.randn(2, 4, 6, 6)
    assert torch.equal(block(x), torch.relu(block.residual(x) + block.shortcut(x)))
    with pytest.raises(UserError, match=r"drop_prob=1 is invalid"):
        BasicBlock(4, 4, drop_prob=1)


def test_resnet_stochastic_depth_decays_linearly_with_depth():
    model = build_model("resnet", (3, 16, 16), 10, widths=(8, 8, 16), blocks_per_stage=2,
                        stochastic_depth=0.5)
    probs = [b.drop_prob for b in model.modules() if isinstance(b, BasicBlock)]
    assert probs == pytest.approx([0.5 * l / 6 for l in range(1, 7)])
    plain = build_model("resnet", (3, 16, 16), 10)
    assert all(b.drop_prob == 0 for b in plain.modules() if isinstance(b, BasicBlock))


# -- fractional max-pooling ------------------------------------------------------------------

def _oracle(x: torch.Tensor, regions) -> torch.Tensor:
    rows, cols = regions
    out = torch.empty(*x.shape[:-2], len(rows), len(cols), dtype=x.dtype)
    for i, (r0, r1) in enumerate(rows.tolist()):
        for j, (c0, c1) in enumerate(cols.tolist()):
            out[..., i, j] = x[..., r0:r1, c0:c1].amax((-2, -1))
    return out


MODES = ["pseudo_random", "random"]


@pytest.mark.parametrize("mode", MODES)
def test_fractional_pool_28_to_19(mode):
    torch.manual_seed(0)
    pool = FractionalMaxPool2d(math.sqrt(2), mode)
    x = torch.randn(2, 3, 28, 28)
    assert pool(x).shape == (2, 3, 19, 19)
    assert pool.eval()(x).shape == (2, 3, 19, 19)
    assert FractionalMaxPool2d(1.5, mode)(x[0]).shape == (3, 18, 18)  # (C, H, W) too


@pytest.mark.parametrize("overlap", [False, True])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("ratio", "shape"), [(math.sqrt(2), (2, 3, 28, 17)), (1.9, (1, 2, 9, 7)),
                                              (2.0, (1, 2, 7, 6)), (1.1, (1, 1, 12, 1))])
def test_fractional_pool_is_the_max_over_its_regions(ratio, shape, mode, overlap):
    torch.manual_seed(0)
    pool = FractionalMaxPool2d(ratio, mode, overlap)
    x = torch.randn(shape)
    for training in (True, False):
        out = pool.train(training)(x)
        assert torch.equal(out, _oracle(x, pool.last_regions))
        for size, regions in zip(shape[-2:], pool.last_regions, strict=True):
            assert len(regions) == max(1, math.floor(size / ratio))


@pytest.mark.parametrize("mode", MODES)
def test_fractional_pool_regions_tile_the_input(mode):
    """Disjoint regions of 1 or 2 rows tile 0..size (random mode: size - out of them have 2);
    with overlap each region takes one more row, except the last, clipped to the input."""
    disjoint = FractionalMaxPool2d(1.3, mode)
    overlapping = FractionalMaxPool2d(1.3, mode, overlap=True)
    for size in [2, 3, 5, 9, 28, 31, 64]:
        for seed in range(5):
            x = torch.randn(1, 1, size, 3)
            torch.manual_seed(seed)
            disjoint(x)
            torch.manual_seed(seed)
            overlapping(x)
            rows, wide = disjoint.last_regions[0], overlapping.last_regions[0]
            starts, ends = rows[:, 0], rows[:, 1]
            out = len(rows)
            assert starts[0] == 0 and ends[-1] == size
            assert torch.equal(starts[1:], ends[:-1])
            assert set((ends - starts).tolist()) <= {1, 2}
            assert int((ends - starts == 2).sum()) == size - out
            assert torch.equal(wide[:, 0], starts)
            assert torch.equal(wide[:, 1], (ends + 1).clamp(max=size))


@pytest.mark.parametrize("ratio", [1.01, 1.25, math.sqrt(2), 1.7, 1.99, 2.0])
def test_pseudo_random_boundaries_take_steps_of_one_or_two(ratio):
    pool = FractionalMaxPool2d(ratio, "pseudo_random")
    torch.manual_seed(0)
    for size in range(1, 80):
        out = pool.output_size(size)
        for sample in (True, True, False):
            bounds = pool.boundaries(size, sample)
            steps = bounds.diff()
            assert len(steps) == out and bounds[0] == 0
            assert bounds[-1] == min(size, 2 * out)  # the whole axis, unless it cannot be
            assert ((steps == 1) | (steps == 2)).all()


@pytest.mark.parametrize("mode", MODES)
def test_fractional_pool_seeded_in_training_fixed_in_eval(mode):
    pool = FractionalMaxPool2d(math.sqrt(2), mode)
    x = torch.randn(2, 3, 28, 28)
    torch.manual_seed(5)
    first, first_regions = pool(x), pool.last_regions
    torch.manual_seed(5)
    assert torch.equal(pool(x), first)
    assert all(torch.equal(a, b) for a, b in zip(pool.last_regions, first_regions, strict=True))
    draws = set()
    for _ in range(10):
        pool(x)
        draws.add(tuple(pool.last_regions[0][:, 1].tolist()))
    assert len(draws) > 1  # a fresh draw each forward pass
    pool.eval()
    fixed = pool(x)
    assert torch.equal(pool(x), fixed)
    other = FractionalMaxPool2d(math.sqrt(2), MODES[1 - MODES.index(mode)]).eval()
    assert torch.equal(other(x), fixed)  # eval: the same evenly spread regions in both modes
    ends = pool.last_regions[0][:, 1]
    assert ends[-1] == 28
    assert ((ends - 28 / 19 * torch.arange(1, 20)).abs() < 1).all()  # evenly spread


@pytest.mark.parametrize("overlap", [False, True])
def test_fractional_pool_gradients(overlap):
    torch.manual_seed(0)
    pool = FractionalMaxPool2d(1.5, "random", overlap)
    x = torch.randn(2, 3, 10, 9, dtype=torch.float64, requires_grad=True)
    out = pool(x)
    out.sum().backward()
    assert x.grad.sum().item() == out.numel()  # each output passes its gradient to its max
    if not overlap:  # disjoint regions: a 1 at each region's argmax, 0 elsewhere
        assert ((x.grad == 0) | (x.grad == 1)).all()
        assert torch.equal(x.detach() * x.grad, torch.zeros_like(x).where(x.grad == 0, x))
    small = torch.randn(1, 2, 6, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(pool.eval(), (small,))


def test_fractional_pool_channels_last():
    torch.manual_seed(0)
    pool = FractionalMaxPool2d(math.sqrt(2))
    x = torch.randn(2, 3, 28, 28)
    torch.manual_seed(1)
    want = pool(x)
    torch.manual_seed(1)
    got = pool(x.to(memory_format=torch.channels_last))
    assert torch.equal(got, want)
    assert got.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(("options", "match"), [
    ({"ratio": 1.0}, r"ratio=1.0 is invalid; ratio must be a number in \(1, 2\]"),
    ({"ratio": 2.5}, r"ratio=2.5 is invalid"),
    ({"ratio": "2"}, r"ratio='2' is invalid"),
    ({"mode": "stochastic"}, r"mode='stochastic' is invalid; accepted: 'pseudo_random', "
                             r"'random'"),
    ({"overlap": "yes"}, r"overlap='yes' is invalid; overlap must be true or false"),
])
def test_fractional_pool_bad_values(options, match):
    with pytest.raises(UserError, match=match):
        FractionalMaxPool2d(**options)


# -- mc_predict ------------------------------------------------------------------------------

def test_mc_predict_samples_dropout_with_batch_norm_in_eval():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.5),
                          DropConnectLinear(16, 4, p=0.3))
    model.train()
    model[1].eval()  # a mixed state, to be restored
    model[1].running_mean.uniform_(-1, 1)
    stats = model[1].running_mean.clone()
    modes = [m.training for m in model.modules()]
    x = torch.randn(10, 6)
    with torch.no_grad():
        deterministic = F.softmax(model.eval()(x), dim=1)
    model.train()
    model[1].eval()
    probs = mc_predict(model, x, samples=50, batch_size=3)
    assert probs.shape == (10, 4) and not probs.requires_grad
    assert torch.allclose(probs.sum(1), torch.ones(10))
    assert not torch.allclose(probs, deterministic, atol=1e-3)  # dropout sampled
    assert torch.equal(model[1].running_mean, stats)  # batch norm ran on its running stats
    assert [m.training for m in model.modules()] == modes


def test_mc_predict_is_the_eval_prediction_without_stochastic_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.randn(10, 6)
    want = F.softmax(model.eval()(x), dim=1)
    model.train()
    assert torch.allclose(mc_predict(model, x, samples=3, batch_size=4), want)
    assert model.training and model[1].training


def test_mc_predict_averages_over_fractional_pooling_draws():
    torch.manual_seed(0)
    model = build_model("convnet", (1, 12, 12), 3, channels=(4, 4), fractional_pool=1.5)
    x = torch.randn(5, 1, 12, 12)
    model.eval()
    with torch.no_grad():
        eval_probs = F.softmax(model(x), dim=1)
    probs = mc_predict(model, x, samples=8)
    assert not torch.allclose(probs, eval_probs)  # the pools drew their regions
    assert not any(m.training for m in model.modules())


class _Fails(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom")


def test_mc_predict_restores_modes_on_error_and_checks_its_arguments():
    model = nn.Sequential(nn.Dropout(0.5), nn.BatchNorm1d(3), _Fails()).train()
    model[1].eval()
    with pytest.raises(RuntimeError, match="boom"):
        mc_predict(model, torch.randn(4, 3))
    assert [m.training for m in model.modules()] == [True, True, False, True]
    with pytest.raises(UserError, match=r"samples=0 is invalid; samples must be an integer >= 1"):
        mc_predict(model, torch.randn(4, 3), samples=0)
    with pytest.raises(UserError, match=r"batch_size=2.5 is invalid"):
        mc_predict(model, torch.randn(4, 3), batch_size=2.5)


# -- tta_predict -----------------------------------------------------------------------------

def digit_images(digits, n):
    return digits[0][:n].float().view(n, 1, 8, 8)


class FlipInvariant(nn.Module):
    """logits(x) = f(x) + f(flip(x)), with a dropout that eval mode switches off."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.f = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.drop(self.f(x) + self.f(x.flip(-1)))


def test_tta_on_a_flip_invariant_model_equals_plain_prediction(digits):
    x = digit_images(digits, 300)
    model = FlipInvariant()
    model.drop.eval()  # a mixed-mode model: tta_predict must restore each module's own mode
    plain = torch.softmax(model.eval()(x), 1)
    model.train()
    model.drop.eval()
    probs = tta_predict(model, x, flip=True, batch_size=64)
    torch.testing.assert_close(probs, plain)
    assert model.training and model.f.training and not model.drop.training


def test_tta_shift_averages_the_shifted_views(digits):
    x = digit_images(digits, 50)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

    def shifted(dy, dx):
        return F.pad(x, (1, 1, 1, 1))[..., 1 - dy:9 - dy, 1 - dx:9 - dx]

    views = [x, x.flip(-1), shifted(1, 0), shifted(-1, 0), shifted(0, 1), shifted(0, -1)]
    expected = torch.stack([torch.softmax(model(v), 1) for v in views]).mean(0)
    torch.testing.assert_close(tta_predict(model, x, flip=True, shift=1, batch_size=7),
                               expected)
    seq = torch.randn(20, 1, 40)
    net = nn.Sequential(nn.Flatten(), nn.Linear(40, 4))
    seq_views = [seq, F.pad(seq, (2, 0))[..., :40], F.pad(seq, (0, 2))[..., 2:]]
    expected = torch.stack([torch.softmax(net(v), 1) for v in seq_views]).mean(0)
    torch.testing.assert_close(tta_predict(net, seq, shift=2), expected)


def test_tta_errors():
    model = nn.Flatten()
    with pytest.raises(UserError, match=r"flip needs images \(C, H, W\); x has shape "
                                        r"\(2, 1, 40\), samples of shape \(1, 40\)"):
        tta_predict(model, torch.zeros(2, 1, 40), flip=True)
    with pytest.raises(UserError, match=r"shift=40 is invalid; shift must be an integer in "
                                        r"\[0, 39\]"):
        tta_predict(model, torch.zeros(2, 1, 40), shift=40)
    with pytest.raises(UserError, match=r"shift needs images"):
        tta_predict(model, torch.zeros(2, 2, 3, 4, 5), shift=1)
    with pytest.raises(UserError, match="flip=1 is invalid"):
        tta_predict(model, torch.zeros(2, 3, 4, 4), flip=1)
    with pytest.raises(UserError, match="batch_size=0 is invalid"):
        tta_predict(model, torch.zeros(2, 3, 4, 4), batch_size=0)
    with pytest.raises(UserError, match="x must be a floating-point batch"):
        tta_predict(model, torch.zeros(2, 3, dtype=torch.long))


# -- model options ---------------------------------------------------------------------------

OPTION_CASES = [
    ("mlp", (64,), {"drop_connect": 0.3, "hidden": (16, 16)}),
    ("convnet", (1, 12, 12), {"channel_dropout": 0.2, "channels": (4, 8)}),
    ("convnet", (1, 12, 12), {"drop_connect": 0.2, "channels": (4, 8), "batch_norm": False}),
    ("convnet", (3, 12, 12), {"fractional_pool": 1.5, "fractional_pool_mode": "random",
                              "channels": (4, 8, 8)}),
    ("resnet", (3, 12, 12), {"stochastic_depth": 0.5, "widths": (4, 8)}),
    ("resnet", (3, 12, 12), {"batch_norm": False, "widths": (4, 8)}),
    ("resnet", (3, 12, 12), {"fractional_pool": math.sqrt(2), "widths": (4, 8, 8)}),
    ("cnn1d", (2, 40), {"channel_dropout": 0.2, "channels": (4, 8)}),
]


@pytest.mark.parametrize(("name", "shape", "options"), OPTION_CASES)
def test_regularizer_options_build_and_train(name, shape, options):
    torch.manual_seed(0)
    model = build_model(name, shape, 5, **options).train()
    out = model(torch.randn(4, *shape))
    assert out.shape == (4, 5)
    F.cross_entropy(out, torch.tensor([0, 1, 2, 3])).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.eval()(torch.randn(2, *shape)).shape == (2, 5)


def test_mlp_drop_connect_replaces_the_hidden_layers_only():
    torch.manual_seed(0)
    model = build_model("mlp", (1, 28, 28), 10, hidden=(512, 32), drop_connect=0.25)
    hidden = [m for m in model.features if isinstance(m, nn.Linear)]
    assert [type(m) for m in hidden] == [DropConnectLinear] * 2
    assert [m.p for m in hidden] == [0.25, 0.25]
    assert type(model.head) is nn.Linear
    assert hidden[0].weight.std().item() == pytest.approx(math.sqrt(2 / 784), rel=0.1)
    assert count(build_model("mlp", (64,), 10), DropConnectLinear) == 0


def test_convnet_channel_dropout_drop_connect_and_fractional_pool():
    model = build_model("convnet", (1, 28, 28), 10, channel_dropout=0.1)
    layers = list(model.features)
    after = [type(layers[i - 1]) for i, m in enumerate(layers) if isinstance(m, nn.Dropout2d)]
    assert after == [nn.MaxPool2d] * 3

    model = build_model("convnet", (1, 8, 8), 10, drop_connect=0.2, convs_per_stage=1)
    assert isinstance(model.head, DropConnectLinear) and model.head.p == 0.2
    assert count(model, DropConnectConv2d) == 0 and count(model, DropConnectLinear) == 1

    model = build_model("convnet", (1, 8, 8), 10, channels=(4,) * 5, fractional_pool=1.5)
    pools = [m for m in model.modules() if isinstance(m, FractionalMaxPool2d)]
    assert count(model, nn.MaxPool2d) == 0
    assert len(pools) == 4  # 8 -> 5 -> 3 -> 2 -> 1, then no more pooling
    assert all(m.ratio == 1.5 and m.mode == "pseudo_random" for m in pools)
    assert model.features[:-2](torch.randn(2, 1, 8, 8)).shape == (2, 4, 1, 1)


def test_resnet_fractional_pool_and_no_batch_norm():
    model = build_model("resnet", (3, 32, 32), 10, widths=(4, 8, 8), fractional_pool=1.5,
                        fractional_pool_mode="random")
    pools = [m for m in model.modules() if isinstance(m, FractionalMaxPool2d)]
    # round(log 2 / log 1.5) = 2 pools stand in for each stride 2: 32 -> 21 -> 14 -> 9 -> 6,
    # about the 32 -> 8 of the strided resnet
    assert len(pools) == 4 and all(m.mode == "random" for m in pools)
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert [b.residual[0].stride for b in blocks] == [(1, 1)] * 6
    assert model.eval().features[:-2](torch.randn(2, 3, 32, 32)).shape == (2, 8, 6, 6)
    sqrt2 = build_model("resnet", (3, 32, 32), 10, widths=(4, 8, 8), fractional_pool=2 ** 0.5)
    assert sqrt2.eval().features[:-2](torch.randn(2, 3, 32, 32)).shape == (2, 8, 7, 7)

    model = build_model("resnet", (3, 32, 32), 10, widths=(4, 8), batch_norm=False)
    assert count(model, nn.BatchNorm2d) == 0
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(m.bias is not None and (m.bias == 0).all() for m in convs)


def test_cnn1d_channel_dropout_after_each_relu():
    model = build_model("cnn1d", (1, 40), 10, channel_dropout=0.2)
    layers = list(model.features)
    after = [type(layers[i - 1]) for i, m in enumerate(layers) if isinstance(m, nn.Dropout1d)]
    assert after == [nn.ReLU] * 3


@pytest.mark.parametrize(("name", "options", "match"), [
    ("mlp", {"drop_connect": 1.0}, r"drop_connect=1.0 is invalid; it must be a number in"),
    ("convnet", {"channel_dropout": -0.1}, r"channel_dropout=-0.1 is invalid"),
    ("convnet", {"drop_connect": "0.1"}, r"drop_connect='0.1' is invalid"),
    ("convnet", {"fractional_pool": 1.0},
     r"fractional_pool=1.0 is invalid; fractional_pool must be a number in \(1, 2\], "
     r"or None"),
    ("resnet", {"fractional_pool": 3}, r"fractional_pool=3 is invalid"),
    ("resnet", {"fractional_pool": True}, r"fractional_pool=True is invalid"),
    ("convnet", {"fractional_pool_mode": "max"},
     r"fractional_pool_mode='max' is invalid; accepted: 'pseudo_random', 'random'"),
    ("resnet", {"stochastic_depth": 1.0}, r"stochastic_depth=1.0 is invalid"),
    ("resnet", {"batch_norm": "no"}, r"batch_norm='no' is invalid"),
    ("cnn1d", {"channel_dropout": 2}, r"channel_dropout=2 is invalid"),
])
def test_regularizer_options_bad_values(name, options, match):
    shape = (1, 40) if name == "cnn1d" else (1, 8, 8)
    with pytest.raises(UserError, match=match):
        build_model(name, shape, 10, **options)
