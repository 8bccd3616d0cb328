"""gradwise.augment: behaviour of each op against an oracle where one exists, the pipeline's
guarantees (labels, shapes, ranges, seeds, order) and every validation error."""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits

import gradwise.augment as ga
from gradwise.augment import Augment
from gradwise.errors import UserError

CIFAR = (Path(__file__).resolve().parents[2]
         / "shared/data/cifar10-jpeg-subset/cifar10_jpeg_subset.npz")
ALL_IMAGE_OPS = {"flip": {}, "crop": {"padding": 2}, "resized_crop": {}, "color_jitter": {},
                 "cutout": {"size": 4}}


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def normalised(raw: torch.Tensor):
    """Per-channel normalisation of raw (N, C, ...) data: x, mean, std as in gradwise.data."""
    dims = [0] + list(range(2, raw.ndim))
    std, mean = torch.std_mean(raw, dim=dims, correction=0, keepdim=True)
    return (raw - mean) / std, mean[0], std[0]


@pytest.fixture(scope="module")
def digits():
    """Real 8x8 digits, raw in [0, 1], normalised: x (1797, 1, 8, 8), y, mean, std."""
    pixels, y = load_digits(return_X_y=True)
    raw = torch.tensor(pixels, dtype=torch.float32).view(-1, 1, 8, 8) / 16
    x, mean, std = normalised(raw)
    return x, torch.tensor(y), mean, std


@pytest.fixture(scope="module")
def cifar():
    """512 real CIFAR-10 images, raw in [0, 1], normalised; skips where the file is absent."""
    if not CIFAR.exists():
        pytest.skip(f"no CIFAR-10 subset at {CIFAR.name}")
    with np.load(CIFAR) as d:
        raw = torch.tensor(d["x_train"][:512]).permute(0, 3, 1, 2).float() / 255
        y = torch.tensor(d["y_train"][:512]).long()
    x, mean, std = normalised(raw)
    return x, y, mean, std


def raw_of(x, mean, std):
    return x * std + mean


# -- the pipeline's guarantees ----------------------------------------------------------------

@pytest.mark.parametrize("spec", [{"flip": {}}, {"crop": {"padding": 3}},
                                  {"crop": {"padding": 3, "fill": "reflect"}},
                                  {"resized_crop": {}}, {"color_jitter": {}}, {"cutout": {}},
                                  ALL_IMAGE_OPS])
def test_image_ops_keep_labels_shapes_dtypes_and_value_range(digits, spec):
    x, y, mean, std = digits
    x, y = x[:256], y[:256]
    before = x.clone()
    aug = Augment(spec, input_shape=(1, 8, 8), num_classes=10, mean=mean, std=std,
                  value_range=(0.0, 1.0))
    out, target = aug(x, y, gen())
    assert target is y
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(x, before)  # the input is never modified
    raw = raw_of(out, mean, std)
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5
    out64, _ = aug(x.double(), y, gen())
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), out, atol=1e-4, rtol=0)


def test_zero_fill_is_the_channel_mean(digits):
    x, _y, mean, std = digits
    out = ga.cutout(x[:64], gen(), size=8, p=1.0)  # 8 >= the image: a big block is zeroed
    filled = raw_of(out, mean, std)[out == 0]
    assert filled.numel() > 0
    torch.testing.assert_close(filled, mean.flatten().expand_as(filled))
    assert 0 <= float(mean) <= 1


def test_cifar_pipeline_keeps_the_value_range(cifar):
    x, y, mean, std = cifar
    spec = {**ALL_IMAGE_OPS, "crop": {"padding": 4}, "cutout": {"size": 8}, "mixup": {}}
    aug = Augment(spec, input_shape=(3, 32, 32), num_classes=10, mean=mean, std=std,
                  value_range=(0.0, 1.0))
    out, target = aug(x, y, gen(1))
    raw = raw_of(out, mean, std)
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5
    assert target.shape == (len(y), 10) and target.dtype == torch.float32
    torch.testing.assert_close(target.sum(1), torch.ones(len(y)))


def test_seeds_reproduce_and_differ(digits):
    x, y, mean, std = digits
    spec = {**ALL_IMAGE_OPS, "mixup": {}, "cutmix": {}}
    aug = Augment(spec, input_shape=(1, 8, 8), num_classes=10, mean=mean, std=std,
                  value_range=(0, 1))
    a, ta = aug(x[:128], y[:128], gen(5))
    b, tb = aug(x[:128], y[:128], gen(5))
    c, _tc = aug(x[:128], y[:128], gen(6))
    assert torch.equal(a, b) and torch.equal(ta, tb)
    assert not torch.equal(a, c)


def test_ops_run_in_canonical_order_whatever_the_mapping_order(digits):
    x, y, mean, std = digits
    forward = {"flip": {}, "crop": {}, "color_jitter": {}, "cutout": {"size": 3}, "mixup": {}}
    backward = dict(reversed(list(forward.items())))
    kw = dict(input_shape=(1, 8, 8), num_classes=10, mean=mean, std=std, value_range=(0, 1))
    a, b = Augment(forward, **kw), Augment(backward, **kw)
    assert list(b.ops) == list(forward)
    assert repr(a) == repr(b)
    out_a, t_a = a(x[:64], y[:64], gen(3))
    out_b, t_b = b(x[:64], y[:64], gen(3))
    assert torch.equal(out_a, out_b) and torch.equal(t_a, t_b)
    # the same ops, called by hand in the canonical order, draw the same numbers
    g = gen(3)
    by_hand = ga.flip(x[:64], g)
    by_hand = ga.crop(by_hand, g)
    by_hand = ga.color_jitter(by_hand, g, mean=mean, std=std, value_range=(0, 1))
    by_hand = ga.cutout(by_hand, g, size=3)
    mixed = ga.mixup(by_hand, y[:64], g, num_classes=10)
    assert torch.equal(mixed.x, out_a) and torch.equal(mixed.target, t_a)


def test_no_ops_is_inactive_and_returns_the_batch():
    aug = Augment({}, input_shape=(5,), num_classes=3)
    x, y = torch.randn(4, 5), torch.tensor([0, 1, 2, 0])
    out, target = aug(x, y, gen())
    assert not aug.active and out is x and target is y
    assert Augment(None, input_shape=(5,), num_classes=3).ops == {}
    assert repr(aug) == "Augment(no ops; input_shape=(5,))"


def test_options_listing_fills_defaults():
    aug = Augment({"crop": None, "cutmix": {"alpha": 0.5}, "mixup": {}},
                  input_shape=(3, 32, 32), num_classes=10)
    assert aug.active
    assert aug.ops == {"crop": {"padding": 4, "fill": "zero"}, "mixup": {"alpha": 0.2},
                       "cutmix": {"alpha": 0.5}}
    assert repr(aug) == ("Augment(crop(padding=4, fill='zero') -> mixup(alpha=0.2) | "
                         "cutmix(alpha=0.5); input_shape=(3, 32, 32))")


def test_mixed_targets_train_with_cross_entropy_and_label_smoothing(digits):
    x, y, _, _ = digits
    aug = Augment({"mixup": {"alpha": 1.0}}, input_shape=(1, 8, 8), num_classes=10)
    _out, target = aug(x[:32], y[:32], gen())
    logits = torch.randn(32, 10, requires_grad=True)
    loss = F.cross_entropy(logits, target, label_smoothing=0.1)
    loss.backward()
    assert torch.isfinite(loss) and logits.grad is not None


# -- the registry -----------------------------------------------------------------------------

def test_ops_follow_the_registry_and_public_functions_share_its_defaults():
    assert ga.OPS == tuple(ga._REGISTRY) == ("flip", "crop", "resized_crop", "translate",
                                             "color_jitter", "cutout", "mixup", "cutmix")
    for name, op in ga._REGISTRY.items():
        assert op.name == name
        params = inspect.signature(getattr(ga, name)).parameters
        options = {key: p.default for key, p in params.items()
                   if p.kind is p.KEYWORD_ONLY and key not in ("mean", "std", "value_range",
                                                               "num_classes")}
        assert options == op.defaults, name


def test_a_new_op_is_one_record(monkeypatch, digits):
    """A kernel and one record: Augment checks, orders, shows and runs it, with its context."""
    def negate(x, g, scale, value_range):
        return (-scale * x).clamp(*value_range)

    record = ga._Op("negate", negate, {"scale": (1.0, ga._unit)}, ("images",),
                    context=("value_range",))
    monkeypatch.setitem(ga._REGISTRY, "negate", record)
    x, y = digits[0][:16], digits[1][:16]
    aug = Augment({"negate": {"scale": 0.5}, "flip": {"p": 1}}, input_shape=(1, 8, 8),
                  num_classes=10, value_range=(-1, 1))
    assert aug.ops == {"flip": {"p": 1.0}, "negate": {"scale": 0.5}}
    assert repr(aug) == "Augment(flip(p=1.0) -> negate(scale=0.5); input_shape=(1, 8, 8))"
    out, target = aug(x, y, gen())
    assert torch.equal(out, (-0.5 * x.flip(-1)).clamp(-1, 1)) and target is y
    with pytest.raises(UserError, match=r"negate.scale=2 is invalid; negate.scale must be a "
                                        r"number in \[0, 1\]"):
        Augment({"negate": {"scale": 2}}, input_shape=(1, 8, 8), num_classes=10)
    with pytest.raises(UserError, match=r"negate needs images \(C, H, W\); these samples have "
                                        r"shape \(40,\)"):
        Augment({"negate": {}}, input_shape=(40,), num_classes=10)


def test_three_mixing_ops_each_make_a_third_of_the_batches(monkeypatch):
    def half(x, g, alpha):
        lam = torch.tensor(0.25, dtype=x.dtype)
        return lam, lam, torch.zeros((), dtype=torch.bool)

    monkeypatch.setitem(ga._REGISTRY, "half", ga._Op("half", half, {"alpha": (1.0, ga._unit)},
                                                     ("images",), mixes=True))
    aug = Augment({"half": {}, "cutmix": {}, "mixup": {}, "flip": {}}, input_shape=(1, 6, 6),
                  num_classes=3)
    assert repr(aug).endswith("mixup(alpha=0.2) | cutmix(alpha=1.0) | half(alpha=1.0); "
                              "input_shape=(1, 6, 6))")
    x, y = torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,))
    g, n = gen(18), 600
    mixed = [ga._mix(x, y, g, 3, [(op, aug.ops[op.name]) for op, _ in aug._ops if op.mixes])
             for _ in range(n)]
    by_half = sum(float(m.lam) == 0.25 and not bool(m.cut) for m in mixed)
    by_cutmix = sum(bool(m.cut) for m in mixed)
    sigma = math.sqrt(n * (1 / 3) * (2 / 3))
    for count in (by_half, by_cutmix, n - by_half - by_cutmix):
        assert abs(count - n / 3) < 5 * sigma


def test_null_saturation_is_the_default():
    kw = dict(input_shape=(3, 8, 8), num_classes=10)
    assert Augment({"color_jitter": {"saturation": None}}, **kw).ops["color_jitter"] == {
        "brightness": 0.4, "contrast": 0.4, "saturation": 0.4}
    grey = dict(input_shape=(1, 8, 8), num_classes=10)
    assert Augment({"color_jitter": {}}, **grey).ops["color_jitter"]["saturation"] == 0.0


# -- flip -----------------------------------------------------------------------------------------

def test_flip_p1_equals_torch_flip_and_twice_is_identity(digits):
    x = digits[0][:100]
    once = ga.flip(x, gen(0), p=1.0)
    assert torch.equal(once, torch.flip(x, dims=[-1]))
    assert torch.equal(ga.flip(once, gen(1), p=1.0), x)
    assert torch.equal(ga.flip(x, gen(0), p=0.0), x)


def test_flip_half_the_samples():
    n = 4000
    x = torch.randn(n, 2, 3, 5)
    out = ga.flip(x, gen(11), p=0.5)
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert bool((flipped ^ kept).all())  # every sample is one or the other
    assert abs(int(flipped.sum()) - n / 2) < 5 * math.sqrt(n / 4)  # binomial, 5 sigma


# -- crop -----------------------------------------------------------------------------------------

def test_crop_padding_0_is_identity(digits):
    x = digits[0][:10]
    assert torch.equal(ga.crop(x, gen(), padding=0), x)


@pytest.mark.parametrize("fill", ["zero", "reflect"])
def test_crop_is_a_window_of_the_padded_image(fill):
    n, p = 600, 2
    x = torch.randn(n, 2, 6, 7)
    out = ga.crop(x, gen(4), padding=p, fill=fill)
    padded = F.pad(x, (p,) * 4, mode="constant" if fill == "zero" else "reflect")
    seen = set()
    for i in range(n):  # oracle: the one window of the padded image equal to the output
        hits = [(a, b) for a in range(2 * p + 1) for b in range(2 * p + 1)
                if torch.equal(padded[i, :, a:a + 6, b:b + 7], out[i])]
        assert len(hits) == 1, i
        seen.add(hits[0])
    assert len(seen) == (2 * p + 1) ** 2  # every offset occurs


# -- resized_crop -------------------------------------------------------------------------------

def test_resized_crop_of_the_whole_image_is_identity(digits):
    x = digits[0][:50]
    out = ga.resized_crop(x, gen(), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_resized_crop_maps_a_box_of_the_drawn_area_and_ratio_affinely():
    """Bilinear resampling of coordinate ramps is exact: channel 0 holds the column index and
    channel 1 the row index, so each output is affine, with slopes box_w / W and box_h / H.
    Every candidate box fits here, so area and log aspect ratio are uniform."""
    n, h, w = 400, 24, 24
    cols = torch.arange(w, dtype=torch.float64).expand(h, w)
    rows = torch.arange(h, dtype=torch.float64)[:, None].expand(h, w)
    x = torch.stack([cols, rows]).expand(n, 2, h, w).contiguous()
    out = ga.resized_crop(x, gen(2), scale=(0.25, 0.5), ratio=(0.75, 4 / 3))
    inner = out[:, :, 1:-1, 1:-1]  # border pixels may sample the clamped edge
    dx = inner[:, 0].diff(dim=2)
    dy = inner[:, 1].diff(dim=1)
    torch.testing.assert_close(dx, dx[:, :1, :1].expand_as(dx), atol=1e-9, rtol=0)
    torch.testing.assert_close(dy, dy[:, :1, :1].expand_as(dy), atol=1e-9, rtol=0)
    flat = torch.zeros(n, h - 3, w - 2, dtype=torch.float64)
    torch.testing.assert_close(inner[:, 0].diff(dim=1), flat)
    sx, sy = dx[:, 0, 0], dy[:, 0, 0]  # box_w / W and box_h / H
    area, log_aspect = sx * sy, torch.log(sx / sy)
    assert area.min() >= 0.25 - 1e-9 and area.max() <= 0.5 + 1e-9
    assert log_aspect.abs().max() <= math.log(4 / 3) + 1e-9
    sigma = 0.25 / math.sqrt(12 * n)  # of the mean of n uniforms on [0.25, 0.5]
    assert abs(float(area.mean()) - 0.375) < 5 * sigma
    assert abs(float(log_aspect.mean())) < 5 * (2 * math.log(4 / 3)) / math.sqrt(12 * n)
    assert out.min() >= 0 and out.max() <= w - 1


def test_resized_crop_keeps_the_whole_image_where_no_box_fits(digits):
    x = digits[0][:20]
    out = ga.resized_crop(x, gen(), scale=(1.0, 1.0), ratio=(2.0, 2.0))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


# -- translate ------------------------------------------------------------------------------------

def roll_with_zeros(seq: torch.Tensor, s: int) -> torch.Tensor:
    out = torch.roll(seq, s, dims=-1)
    if s > 0:
        out[..., :s] = 0
    elif s < 0:
        out[..., s:] = 0
    return out


@pytest.mark.parametrize("shape", [(500, 2, 40), (500, 40)])
def test_translate_is_a_roll_with_zero_fill(shape):
    x = torch.randn(shape)
    out = ga.translate(x, gen(8), max_shift=3)
    seen = set()
    for i in range(shape[0]):
        hits = [s for s in range(-3, 4) if torch.equal(roll_with_zeros(x[i], s), out[i])]
        assert len(hits) == 1, i
        seen.add(hits[0])
    assert seen == set(range(-3, 4))
    assert torch.equal(ga.translate(x, gen(), max_shift=0), x)


def test_sequence_pipeline_keeps_shapes():
    x, y = torch.randn(64, 1, 40), torch.randint(0, 10, (64,))
    spec = {"translate": {"max_shift": 3}, "cutout": {"size": 5}}
    out, target = Augment(spec, input_shape=(1, 40), num_classes=10)(x, y, gen())
    assert out.shape == x.shape and target is y
    spec = {**spec, "mixup": {}, "cutmix": {}}
    out, target = Augment(spec, input_shape=(40,), num_classes=10)(x[:, 0], y, gen())
    assert out.shape == (64, 40) and target.shape == (64, 10)


# -- cutout ---------------------------------------------------------------------------------------

def zero_box(mask: torch.Tensor):
    """(top, left, height, width) of the zeroed pixels, checking they form one full rectangle."""
    rows = mask.any(1).nonzero().flatten()
    cols = mask.any(0).nonzero().flatten()
    top, left = int(rows[0]), int(cols[0])
    height, width = int(rows[-1]) - top + 1, int(cols[-1]) - left + 1
    assert int(mask.sum()) == height * width  # the bounding box is fully zeroed
    return top, left, height, width


def test_cutout_zeroes_exactly_a_clipped_square():
    n, c, h, w, size = 2000, 3, 9, 11, 4
    x = torch.rand(n, c, h, w) + 1  # no zeros of its own
    out = ga.cutout(x, gen(9), size=size)
    zero = out == 0
    assert torch.equal(zero, zero[:, :1].expand_as(zero))  # all channels alike
    assert torch.equal(out[~zero], x[~zero])
    clipped = 0
    for i in range(n):
        top, left, height, width = zero_box(zero[i, 0])
        assert height == size or (height < size and (top == 0 or top + height == h))
        assert width == size or (width < size and (left == 0 or left + width == w))
        clipped += (height, width) != (size, size)
    # centre uniform: the square stays whole for centres in rows 2..7 and cols 2..9 (6 x 8)
    whole = n * (6 * 8) / (h * w)
    assert abs((n - clipped) - whole) < 5 * math.sqrt(whole)


def test_cutout_probability_and_sequence_windows():
    x = torch.rand(2000, 12) + 1
    hit = (ga.cutout(x, gen(10), size=5, p=0.3) == 0).any(1)
    assert abs(int(hit.sum()) - 600) < 5 * math.sqrt(2000 * 0.3 * 0.7)
    out = ga.cutout(x[:300, None], gen(12), size=5)
    for row in out[:, 0] == 0:
        idx = row.nonzero().flatten()
        assert len(idx) == int(idx[-1] - idx[0]) + 1 <= 5  # one contiguous window
        assert len(idx) == 5 or idx[0] == 0 or idx[-1] == 11


# -- mixup and cutmix -----------------------------------------------------------------------------

def test_mixup_is_the_reported_convex_combination(digits):
    x, y = digits[0][:200], digits[1][:200]
    m = ga.mixup(x, y, gen(13), num_classes=10, alpha=0.4)
    assert torch.equal(m.perm.sort().values, torch.arange(200))
    assert 0 <= float(m.lam) <= 1 and not bool(m.cut)
    torch.testing.assert_close(m.x, m.lam * x + (1 - m.lam) * x[m.perm], atol=0, rtol=0)
    onehot = F.one_hot(y, 10).float()
    torch.testing.assert_close(m.target, m.lam * onehot + (1 - m.lam) * onehot[m.perm])
    torch.testing.assert_close(m.target.sum(1), torch.ones(200))


@pytest.mark.parametrize("shape", [(300, 3, 10, 13), (300, 2, 30), (300, 30)])
def test_cutmix_lambda_is_the_unchanged_fraction(shape):
    x = torch.randn(shape)
    y = torch.randint(0, 7, (shape[0],))
    for seed in range(20):
        m = ga.cutmix(x, y, gen(seed), num_classes=7, alpha=1.0)
        assert bool(m.cut)
        kept = m.x == x
        pasted = m.x == x[m.perm]
        moved = m.perm != torch.arange(shape[0])
        assert bool((kept | pasted).all())
        kept = kept[moved]
        # one box for the whole batch, all channels alike
        assert torch.equal(kept, kept[:1].expand_as(kept))
        fraction = kept[0].double().mean()
        assert float(m.lam) == pytest.approx(float(fraction), abs=1e-7)
        onehot = F.one_hot(y, 7).float()
        torch.testing.assert_close(m.target, m.lam * onehot + (1 - m.lam) * onehot[m.perm])
        if len(shape) == 4 and fraction < 1:
            box = zero_box(~kept[0, 0])
            assert box[2] * box[3] == round((1 - float(fraction)) * 10 * 13)


def mixers(**alphas):
    """The (record, options) pairs ``_mix`` takes, e.g. ``mixers(mixup=0.2, cutmix=1.0)``."""
    return [(ga._REGISTRY[name], {"alpha": alpha}) for name, alpha in alphas.items()]


def test_mixup_or_cutmix_each_half_the_batches():
    x, y = torch.randn(16, 1, 6, 6), torch.randint(0, 3, (16,))
    g = gen(14)
    cuts = [bool(ga._mix(x, y, g, 3, mixers(mixup=0.2, cutmix=1.0)).cut) for _ in range(400)]
    assert abs(sum(cuts) - 200) < 5 * 10
    aug = Augment({"mixup": {}, "cutmix": {}}, input_shape=(1, 6, 6), num_classes=3)
    g1, g2 = gen(15), gen(15)
    for _ in range(10):
        out, target = aug(x, y, g1)
        ref = ga._mix(x, y, g2, 3, mixers(mixup=0.2, cutmix=1.0))
        assert torch.equal(out, ref.x) and torch.equal(target, ref.target)


@pytest.mark.parametrize("alpha", [0.2, 1.0, 4.0])
def test_beta_sampler_matches_the_beta_distribution(alpha):
    """The empirical CDF at fixed points, within 5 binomial sigmas of Beta(alpha, alpha)'s.

    (Not a KS test: in float32 a few percent of Beta(0.2, 0.2) draws round to exactly 1.0.)"""
    stats = pytest.importorskip("scipy.stats")
    n = 20000
    lam = ga._beta_sample(alpha, gen(16), "cpu", (n,)).double()
    assert lam.min() >= 0 and lam.max() <= 1
    for q in (1e-6, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99, 1 - 1e-6):
        p = stats.beta(alpha, alpha).cdf(q)
        assert abs(float((lam <= q).double().mean()) - p) < 5 * math.sqrt(p * (1 - p) / n) + 1e-4


# -- color_jitter ---------------------------------------------------------------------------------

@pytest.mark.parametrize("data", ["digits", "cifar"])
def test_color_jitter_with_zero_strengths_is_identity(request, data):
    x, _, mean, std = request.getfixturevalue(data)
    out = ga.color_jitter(x, gen(), brightness=0, contrast=0, saturation=0, mean=mean, std=std,
                          value_range=(0, 1))
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)
    out = ga.color_jitter(x, gen(), brightness=0, contrast=0, saturation=0)  # raw space = x
    torch.testing.assert_close(out, x, atol=1e-5, rtol=0)


def test_color_jitter_factors_in_raw_space():
    raw = torch.rand(500, 3, 5, 5, dtype=torch.float64) * 0.5 + 0.25
    mean = torch.tensor([0.4, 0.5, 0.6], dtype=torch.float64).view(3, 1, 1)
    std = torch.tensor([0.2, 0.3, 0.25], dtype=torch.float64).view(3, 1, 1)
    x = (raw - mean) / std

    def jitter(**kw):
        out = ga.color_jitter(x, gen(17), **{"brightness": 0, "contrast": 0, "saturation": 0,
                                             **kw}, mean=mean, std=std)
        return out * std + mean

    ratio = jitter(brightness=0.4) / raw  # one factor per image, in [0.6, 1.4]
    factor = ratio[:, :1, :1, :1]
    torch.testing.assert_close(ratio, factor.expand_as(ratio))
    assert factor.min() >= 0.6 and factor.max() <= 1.4 and factor.std() > 0.15

    def grey(r):
        return 0.299 * r[:, 0] + 0.587 * r[:, 1] + 0.114 * r[:, 2]

    contrast = jitter(contrast=0.4)
    torch.testing.assert_close(grey(contrast).mean((1, 2)), grey(raw).mean((1, 2)))
    saturated = jitter(saturation=0.4)
    torch.testing.assert_close(grey(saturated), grey(raw))  # per pixel
    # the same seed draws the same factors whatever the strengths: recover each, then check
    # all three together against the steps applied one after the other
    m = grey(raw).mean((1, 2)).view(-1, 1, 1, 1)
    c = ((contrast - m) / (raw - m))[:, :1, :1, :1]
    g = grey(raw)[:, None]
    s = ((saturated - g) / (raw - g))[:, :1, :1, :1]
    assert c.std() > 0.15 and s.std() > 0.15
    step = factor * raw
    mean_grey = grey(step).mean((1, 2)).view(-1, 1, 1, 1)
    step = (step - mean_grey) * c + mean_grey
    step = grey(step)[:, None] + (step - grey(step)[:, None]) * s
    torch.testing.assert_close(jitter(brightness=0.4, contrast=0.4, saturation=0.4), step)
    clamped = ga.color_jitter(x, gen(), brightness=1, contrast=1, saturation=1, mean=mean,
                              std=std, value_range=(0.3, 0.7)) * std + mean
    assert clamped.min() >= 0.3 - 1e-6 and clamped.max() <= 0.7 + 1e-6


def test_color_jitter_on_grey_images_skips_saturation(digits):
    x, y, mean, std = digits
    aug = Augment({"color_jitter": {}}, input_shape=(1, 8, 8), num_classes=10, mean=mean,
                  std=std, value_range=(0, 1))
    assert aug.ops["color_jitter"]["saturation"] == 0
    out, _ = aug(x[:20], y[:20], gen())
    assert out.shape == (20, 1, 8, 8)
    with pytest.raises(UserError, match="saturation needs 3-channel"):
        ga.color_jitter(x[:4], gen(), saturation=0.3)


# -- validation -----------------------------------------------------------------------------------

IMG = dict(input_shape=(3, 32, 32), num_classes=10)
SEQ = dict(input_shape=(1, 40), num_classes=10)


@pytest.mark.parametrize("spec, kw, message", [
    ({"flipp": {}}, IMG, "unknown augmentation 'flipp' (did you mean 'flip'?); accepted: flip, "
                         "crop, resized_crop, translate, color_jitter, cutout, mixup, cutmix"),
    ({"crop": {"pad": 2}}, IMG, "crop: unknown option 'pad'; accepted: padding, fill"),
    ({"crop": {}}, SEQ, "crop needs images (C, H, W); these samples have shape (1, 40); "
                        "for sequences use translate"),
    ({"resized_crop": {}}, SEQ, "resized_crop needs images (C, H, W)"),
    ({"flip": {}}, SEQ, "flip needs images (C, H, W); these samples have shape (1, 40)"),
    ({"color_jitter": {}}, SEQ, "color_jitter needs images"),
    ({"translate": {}}, IMG, "translate needs sequences (C, L) or (L,); these samples have "
                             "shape (3, 32, 32); for images use crop"),
    ({"cutmix": {}}, dict(input_shape=(2, 3, 4, 5), num_classes=3), "cutmix needs images"),
    ({"flip": {"p": 1.5}}, IMG, "flip.p=1.5 is invalid; flip.p must be a number in [0, 1]"),
    ({"flip": {"p": "half"}}, IMG, "flip.p='half' is invalid"),
    ({"crop": {"padding": -1}}, IMG, "crop.padding=-1 is invalid; crop.padding must be an "
                                     "integer >= 0"),
    ({"crop": {"padding": 2.5}}, IMG, "crop.padding=2.5 is invalid"),
    ({"crop": {"padding": 32}}, IMG, "crop.padding must be an integer in [0, 31] for 32x32"),
    ({"crop": {"fill": "edge"}}, IMG, "crop.fill='edge' is invalid; accepted: 'zero', 'reflect'"),
    ({"resized_crop": {"scale": [0.5, 0.1]}}, IMG, "resized_crop.scale=[0.5, 0.1] is invalid; "
                                                   "resized_crop.scale must be [low, high] with "
                                                   "low <= high"),
    ({"resized_crop": {"scale": [0, 1]}}, IMG, "resized_crop.scale[0]=0 is invalid; "
                                               "resized_crop.scale[0] must be a number in (0, 1]"),
    ({"resized_crop": {"scale": 0.5}}, IMG, "resized_crop.scale=0.5 is invalid; "
                                            "resized_crop.scale must be a pair [low, high]"),
    ({"resized_crop": {"ratio": [-1, 2]}}, IMG, "resized_crop.ratio[0]=-1 is invalid"),
    ({"translate": {"max_shift": 40}}, SEQ, "translate.max_shift must be an integer in [0, 39] "
                                            "for sequences of length 40"),
    ({"color_jitter": {"brightness": 1.2}}, IMG, "color_jitter.brightness=1.2 is invalid; "
                                                 "color_jitter.brightness must be a number in "
                                                 "[0, 1]"),
    ({"color_jitter": {"saturation": 0.4}}, dict(input_shape=(1, 28, 28), num_classes=10),
     "color_jitter.saturation=0.4 is invalid: saturation needs 3-channel (RGB) images and "
     "these have 1"),
    ({"cutout": {"size": 0}}, IMG, "cutout.size=0 is invalid; cutout.size must be an integer >= 1"),
    ({"cutout": {"size": 33}}, IMG, "cutout.size must be an integer in [1, 32] for 32x32 images"),
    ({"cutout": {"p": -0.1}}, IMG, "cutout.p=-0.1 is invalid"),
    ({"mixup": {"alpha": 0}}, IMG, "mixup.alpha=0 is invalid; mixup.alpha must be a finite "
                                   "number > 0"),
    ({"cutmix": {"alpha": float("inf")}}, IMG, "cutmix.alpha=inf is invalid"),
    ({"flip": True}, IMG, "augment.flip=True is invalid; the options of flip must be a mapping"),
    (["flip"], IMG, "augment=['flip'] is invalid; augment must map op names to their options"),
    ({}, dict(input_shape=(3, 0, 4), num_classes=10), "input_shape=(3, 0, 4) is invalid"),
    ({}, dict(input_shape=(3, 8, 8), num_classes=0), "num_classes=0 is invalid"),
    ({}, dict(**IMG, mean=torch.zeros(3)), "mean of shape (3,) is invalid; mean must broadcast "
                                           "against one sample of shape (3, 32, 32), e.g. "
                                           "(C, 1, 1)"),
    ({}, dict(**IMG, std=torch.zeros(3, 1, 1)), "std is invalid; std must be finite and > 0"),
    ({}, dict(**IMG, value_range=(1, 0)), "value_range=[1, 0] is invalid"),
    ({}, dict(**IMG, value_range=(0, 0)), "value_range=[0, 0] is invalid; value_range must be "
                                          "[min, max] of the raw data with min < max"),
])
def test_construction_errors(spec, kw, message):
    with pytest.raises(UserError) as err:
        Augment(spec, **kw)
    assert message in str(err.value)
    assert isinstance(err.value, ValueError)


def test_call_and_function_errors():
    aug = Augment({"flip": {}}, **IMG)
    y = torch.zeros(2, dtype=torch.long)
    with pytest.raises(UserError, match=r"x has shape \(2, 3, 8, 8\) but this Augment was built "
                                        r"for samples of shape \(3, 32, 32\)"):
        aug(torch.zeros(2, 3, 8, 8), y, gen())
    with pytest.raises(UserError, match=r"y must be an integer tensor of shape \(2,\)"):
        aug(torch.zeros(2, 3, 32, 32), torch.zeros(2), gen())
    with pytest.raises(UserError, match="x must be a floating-point tensor"):
        aug(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), y, gen())
    with pytest.raises(UserError, match="generator must be a torch.Generator"):
        aug(torch.zeros(2, 3, 32, 32), y, 0)
    with pytest.raises(UserError, match=r"flip needs images \(C, H, W\); x has shape \(2, 40\)"):
        ga.flip(torch.zeros(2, 40), gen())
    with pytest.raises(UserError, match=r"translate.max_shift=-1 is invalid"):
        ga.translate(torch.zeros(2, 40), gen(), max_shift=-1)
    with pytest.raises(UserError, match="num_classes=0 is invalid"):
        ga.mixup(torch.zeros(2, 5), y, gen(), num_classes=0)
