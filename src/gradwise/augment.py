"""Batched, seeded data augmentation on the training device.

:class:`Augment` turns the ``augment`` section of a config into one callable,
``x_aug, target = augment(x, y, generator)``, that transforms a whole minibatch with tensor ops
(no Python loop over samples) on the device where ``x`` lives. Every random number comes from the
given ``torch.Generator``, which must live on that device: the same seed gives the same batch.
Each op is also a public function taking ``(x, generator, ...)``.

Data conventions. ``x`` is normalised per channel, ``x = (x_raw - mean) / std``. Samples of
shape ``(C, H, W)`` are images, ``(C, L)`` and ``(L,)`` sequences (a 1-D sample is taken as a
one-channel sequence: tabular features look the same, so do not give them sequence ops).
Zero fill (``crop``, ``translate``, ``cutout``) writes 0 in normalised space, which is the mean
value of the channel in raw space: a neutral grey, inside the data's range.

Ops and their defaults, run in this canonical order whatever the order of the mapping
(geometric, then colour, then cutout, then mixing):

- ``flip`` (images): ``p=0.5``
- ``crop`` (images): ``padding=4, fill="zero"`` (or ``"reflect"``)
- ``resized_crop`` (images): ``scale=(0.08, 1.0), ratio=(0.75, 4/3)``
- ``translate`` (sequences): ``max_shift=4``
- ``color_jitter`` (images): ``brightness=0.4, contrast=0.4, saturation=0.4``; saturation
  needs RGB, so it is off by default for other images and an explicit non-zero one is refused
- ``cutout`` (images, sequences): ``size=8, p=1.0``
- ``mixup`` (any samples): ``alpha=0.2``
- ``cutmix`` (images, sequences): ``alpha=1.0``

The target is ``y`` itself unless a mixing op ran; then it is a float ``(N, num_classes)``
matrix of class probabilities (x's dtype). ``F.cross_entropy(logits, target)`` takes both (with
``label_smoothing`` too). With both ``mixup`` and ``cutmix``, each batch uses one of the two,
chosen with probability 1/2 by a coin drawn from the generator.

Each op is one :class:`_Op` record in ``_REGISTRY`` (its kernel, its options with their
defaults and checks, the samples it takes); the registry's order is the canonical order, and
:data:`OPS`, the checks and :class:`Augment` all read it. Adding an op is writing its kernel
``_name(x, generator, **options)``, one record, and a one-line public function.

Example (flip and crop 8x8 digits; labels pass through)::

    >>> import torch
    >>> aug = Augment({"flip": {}, "crop": {"padding": 2}}, input_shape=(1, 8, 8),
    ...               num_classes=10)
    >>> aug
    Augment(flip(p=0.5) -> crop(padding=2, fill='zero'); input_shape=(1, 8, 8))
    >>> x, y = torch.randn(4, 1, 8, 8), torch.arange(4)
    >>> x_aug, target = aug(x, y, torch.Generator().manual_seed(0))
    >>> x_aug.shape, target is y
    (torch.Size([4, 1, 8, 8]), True)
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ._checks import choice, integer, number
from .errors import UserError

__all__ = ["OPS", "Augment", "Mixed", "color_jitter", "crop", "cutmix", "cutout", "flip",
           "mixup", "resized_crop", "translate"]

_SAMPLE_FORMS = {"images": "(C, H, W)", "sequences": "(C, L) or (L,)"}
#: ITU-R BT.601 luma weights of (R, G, B): the grey level of a colour image.
_LUMA = (0.299, 0.587, 0.114)
#: Candidate boxes per sample in resized_crop, and candidate draws per Gamma sample.
_CROP_TRIES = 10
_GAMMA_TRIES = 16


# -- checks of samples and data ---------------------------------------------------------------

def _kind(sample_shape: tuple[int, ...]) -> str:
    return {3: "images", 2: "sequences", 1: "sequences"}.get(len(sample_shape), "other")


def _int_in(name: str, value, low: int, high: int, why: str) -> int:
    """``value`` unless it is not an integer in ``[low, high]`` (``why`` says where ``high``
    comes from)."""
    v = integer(name, value, low)
    if v > high:
        raise UserError(f"{name}={value!r} is invalid; {name} must be an integer in "
                        f"[{low}, {high}] {why}")
    return v


def _interval(name: str, value, low: float, high: float, *, open_low: bool) -> tuple[float, float]:
    """``value`` as ``(lo, hi)`` unless it is not a pair with ``low (<)<= lo <= hi <= high``."""
    if isinstance(value, str | bytes) or not hasattr(value, "__len__") or len(value) != 2:
        raise UserError(f"{name}={value!r} is invalid; {name} must be a pair [low, high]")
    lo = number(f"{name}[0]", value[0], low, high, open_low=open_low)
    hi = number(f"{name}[1]", value[1], low, high, open_low=open_low)
    if lo > hi:
        raise UserError(f"{name}={list(value)!r} is invalid; {name} must be [low, high] with "
                        "low <= high")
    return lo, hi


def _sample_shape(input_shape) -> tuple[int, ...]:
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = None
    if (not shape or any(isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1
                         for d in shape)):
        raise UserError(f"input_shape={input_shape!r} is invalid; input_shape must be the shape "
                        "of one sample, a non-empty tuple of positive integers such as (3, 32, 32)")
    return tuple(int(d) for d in shape)


def _spatial(sample_shape: tuple[int, ...]) -> tuple[int, str]:
    """The smallest spatial size of a sample and its description, for range messages."""
    if _kind(sample_shape) == "images":
        h, w = sample_shape[-2:]
        return min(h, w), f"for {h}x{w} images"
    return sample_shape[-1], f"for sequences of length {sample_shape[-1]}"


def _check_x(who: str, x) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < 2:
        raise UserError(f"{who}: x must be a floating-point tensor (N, ...) of samples; got "
                        f"{type(x).__name__} {getattr(x, 'dtype', '')} "
                        f"{tuple(getattr(x, 'shape', ()))}".rstrip())


def _check_generator(who: str, x: Tensor, generator) -> None:
    if not isinstance(generator, torch.Generator):
        raise UserError(f"{who}: generator must be a torch.Generator, got "
                        f"{type(generator).__name__}")
    if generator.device.type != x.device.type:
        raise UserError(f"{who}: the generator is on {generator.device} but x on {x.device}; "
                        "use torch.Generator(device=x.device)")


def _check_labels(y, n: int) -> None:
    if (not isinstance(y, Tensor) or y.shape != (n,) or y.is_floating_point()
            or y.is_complex() or y.dtype == torch.bool):
        raise UserError(f"y must be an integer tensor of shape ({n},), one class index per "
                        f"sample; got {getattr(y, 'dtype', type(y).__name__)} "
                        f"{tuple(getattr(y, 'shape', ()))}")


def _stat(name: str, value, sample_shape: tuple[int, ...]) -> Tensor | None:
    """``mean`` or ``std`` as a float64 tensor broadcasting against one sample, or None."""
    if value is None:
        return None
    hint = {"images": "(C, 1, 1)", "sequences": "(C, 1)"}.get(_kind(sample_shape), "(F,)")
    try:
        t = torch.as_tensor(value, dtype=torch.float64, device="cpu")
    except (TypeError, ValueError, RuntimeError):
        raise UserError(f"{name}={value!r} is invalid; {name} must be a tensor of numbers, "
                        f"e.g. of shape {hint}") from None
    try:
        ok = torch.broadcast_shapes(t.shape, sample_shape) == sample_shape
    except RuntimeError:
        ok = False
    if not ok:
        raise UserError(f"{name} of shape {tuple(t.shape)} is invalid; {name} must broadcast "
                        f"against one sample of shape {sample_shape}, e.g. {hint}")
    if not bool(torch.isfinite(t).all()) or (name == "std" and not bool((t > 0).all())):
        raise UserError(f"{name} is invalid; {name} must be finite"
                        + (" and > 0" if name == "std" else ""))
    return t


def _value_range(value) -> tuple[float, float] | None:
    if value is None:
        return None
    lo, hi = _interval("value_range", value, -math.inf, math.inf, open_low=False)
    if lo == hi:
        raise UserError(f"value_range={list(value)!r} is invalid; value_range must be "
                        "[min, max] of the raw data with min < max")
    return lo, hi


def _needs(op: str, sample_shape: tuple[int, ...], what: str = "these samples have") -> None:
    """Raise unless ``op`` takes samples of ``sample_shape``."""
    _REGISTRY[op].needs(sample_shape, what)


def _check_batch(op: str, x, generator) -> None:
    """Raise unless ``x`` is a floating batch ``op`` takes and ``generator`` shares its device."""
    _check_x(op, x)
    _needs(op, tuple(x.shape[1:]), what=f"x has shape {tuple(x.shape)}, samples of")
    _check_generator(op, x, generator)


def _call(op: str, x: Tensor, generator: torch.Generator, **given) -> Tensor:
    """The public function of ``op``: check ``x``, ``generator`` and the options, then run the
    kernel."""
    _check_batch(op, x, generator)
    record = _REGISTRY[op]
    return record.apply(x, generator, **record.check(given, tuple(x.shape[1:])))


# -- one record per op ------------------------------------------------------------------------

#: An option's check: ``check(f"{op}.{option}", value, sample_shape)`` returns the value to use
#: or raises :class:`UserError` naming the option and what it accepts.
_Check = Callable[[str, Any, tuple[int, ...]], Any]


def _unit(name: str, value, sample: tuple[int, ...]) -> float:
    """A number in ``[0, 1]`` (a probability or a jitter strength)."""
    return number(name, value, 0, 1)


def _positive(name: str, value, sample: tuple[int, ...]) -> float:
    """A finite number ``> 0``."""
    return number(name, value, 0, open_low=True)


def _sized(low: int, margin: int) -> _Check:
    """An integer in ``[low, size - margin]``, ``size`` the smallest spatial side of a sample."""
    def check(name: str, value, sample: tuple[int, ...]) -> int:
        size, where = _spatial(sample)
        return _int_in(name, value, low, size - margin, where)
    return check


def _one_of(*choices: str) -> _Check:
    """One of ``choices``."""
    return lambda name, value, sample: choice(name, value, choices)


def _range_in(high: float) -> _Check:
    """A pair ``(lo, hi)`` with ``0 < lo <= hi <= high``."""
    return lambda name, value, sample: _interval(name, value, 0, high, open_low=True)


def _saturation(name: str, value, sample: tuple[int, ...]) -> float:
    """color_jitter's saturation: 0.4 by default (None) on RGB images and off on others, where
    an explicit non-zero one is refused."""
    channels = sample[0] if _kind(sample) == "images" else None
    if value is None:
        return 0.4 if channels == 3 else 0.0
    v = number(name, value, 0, 1)
    if channels != 3:
        if value != 0:
            raise UserError(f"{name}={value!r} is invalid: saturation needs 3-channel (RGB) "
                            f"images and these have {channels}; leave it out (only brightness "
                            "and contrast apply)")
        return 0.0
    return v


@dataclass(frozen=True)
class _Op:
    """One augmentation: everything the pipeline knows about it.

    ``apply(x, generator, **options, **context)`` is the kernel (checked options in, no checks
    of its own). ``options`` maps each option to ``(default, check)``, in the order they are
    checked and shown. ``takes`` lists the sample kinds it accepts (``"images"``,
    ``"sequences"``, ``"other"``) and ``hint`` what to use for the others. ``context`` names
    the facts about the data its kernel takes from :class:`Augment` (``"mean"``, ``"std"``,
    ``"value_range"``). A ``mixes`` op runs after all the others and its kernel draws, for the
    whole batch, ``(keep, lam, cut)``: ``x = keep x + (1 - keep) x[perm]`` with ``lam`` the
    weight of ``y`` in the target (see :func:`_mix`).
    """

    name: str
    apply: Callable[..., Any]
    options: Mapping[str, tuple[Any, _Check]]
    takes: tuple[str, ...]
    hint: str = ""
    context: tuple[str, ...] = ()
    mixes: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    @property
    def defaults(self) -> dict[str, Any]:
        """Option -> default, as written in the record."""
        return {key: default for key, (default, _) in self.options.items()}

    def check(self, given: Mapping, sample_shape: tuple[int, ...]) -> dict[str, Any]:
        """The options with defaults filled in, each checked against ``sample_shape``."""
        unknown = [key for key in given if key not in self.options]
        if unknown:
            raise UserError(f"{self.name}: unknown option {unknown[0]!r}; accepted: "
                            f"{', '.join(self.options)}")
        return {key: check(f"{self.name}.{key}", given.get(key, default), sample_shape)
                for key, (default, check) in self.options.items()}

    def needs(self, sample_shape: tuple[int, ...], what: str = "these samples have") -> None:
        """Raise unless this op takes samples of ``sample_shape``."""
        if _kind(sample_shape) in self.takes:
            return
        forms = " or ".join(f"{k} {_SAMPLE_FORMS[k]}" for k in self.takes if k in _SAMPLE_FORMS)
        raise UserError(f"{self.name} needs {forms}; {what} shape {tuple(sample_shape)}"
                        + (f"; {self.hint}" if self.hint else ""))


# -- randomness -------------------------------------------------------------------------------

def _rand(shape, generator: torch.Generator, device) -> Tensor:
    return torch.rand(shape, generator=generator, device=device)


def _log_gamma_sample(a: float, shape, generator: torch.Generator, device) -> Tensor:
    """log of Gamma(a, 1) samples (float32), Marsaglia & Tsang's (2000) rejection method.

    For ``a' = max(a, a + 1 if a < 1)``, ``d = a' - 1/3``, ``c = 1/sqrt(9d)``, ``z ~ N(0, 1)``,
    ``v = (1 + cz)^3``: accept ``d*v`` when ``log u < z^2/2 + d - dv + d log v``. Each sample
    takes the first of ``_GAMMA_TRIES`` vectorised candidates that is accepted (each one is, with
    probability > 0.95); ``a < 1`` multiplies by ``u^(1/a)`` (added in log space).
    """
    boosted = a < 1
    d = (a + 1 if boosted else a) - 1 / 3
    c = 1 / math.sqrt(9 * d)
    shape = tuple(shape)
    z = torch.randn(shape + (_GAMMA_TRIES,), generator=generator, device=device)
    u = _rand(shape + (_GAMMA_TRIES,), generator, device)
    v = (1 + c * z) ** 3
    v_pos = torch.where(v > 0, v, torch.ones_like(v))
    accept = (v > 0) & (torch.log(u) < 0.5 * z * z + d - d * v_pos + d * torch.log(v_pos))
    first = accept.int().argmax(-1, keepdim=True)
    v_sel = torch.where(accept.any(-1), v_pos.gather(-1, first).squeeze(-1), 1.0)
    log_g = math.log(d) + torch.log(v_sel)
    if boosted:
        log_g = log_g + torch.log1p(-_rand(shape, generator, device)) / a
    return log_g


def _beta_sample(alpha: float, generator: torch.Generator, device, shape=()) -> Tensor:
    """Beta(alpha, alpha) samples (float32): ``G1 / (G1 + G2) = sigmoid(log G1 - log G2)`` for
    ``G1, G2 ~ Gamma(alpha)``, stable even where both underflow (alpha << 1)."""
    log_g = _log_gamma_sample(alpha, (2,) + tuple(shape), generator, device)
    return torch.sigmoid(log_g[0] - log_g[1])


# -- the ops ------------------------------------------------------------------------------------

def _per_sample(values: Tensor, ndim: int) -> Tensor:
    """``values`` of shape ``(N,)`` viewed to broadcast against an ``ndim``-D batch."""
    return values.view(-1, *([1] * (ndim - 1)))


def _flip(x: Tensor, g: torch.Generator, p: float) -> Tensor:
    hit = _rand(x.shape[0], g, x.device) < p
    return torch.where(_per_sample(hit, x.ndim), x.flip(-1), x)


def flip(x: Tensor, generator: torch.Generator, *, p: float = 0.5) -> Tensor:
    """Horizontal flip (last axis) of each image of ``x`` ``(N, C, H, W)`` with probability
    ``p``: ``out[n, :, :, j] = x[n, :, :, W-1-j]`` for the flipped ``n``."""
    return _call("flip", x, generator, p=p)


def _crop(x: Tensor, g: torch.Generator, padding: int, fill: str) -> Tensor:
    if padding == 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4, mode="constant" if fill == "zero" else "reflect")
    top, left = torch.randint(0, 2 * padding + 1, (2, n, 1, 1), generator=g, device=x.device)
    rows = top + torch.arange(h, device=x.device)[:, None]  # (N, H, 1): rows of padded
    cols = left + torch.arange(w, device=x.device)  # (N, 1, W)
    index = (rows * (w + 2 * padding) + cols).view(n, 1, h * w)  # into each flat padded image
    return padded.flatten(2).gather(2, index.expand(n, c, h * w)).view(n, c, h, w)


def crop(x: Tensor, generator: torch.Generator, *, padding: int = 4,
         fill: str = "zero") -> Tensor:
    """Random crop of the original size from each image of ``x`` ``(N, C, H, W)`` padded by
    ``padding`` on every side: ``out[n] = pad(x)[n, :, i:i+H, j:j+W]`` with ``i, j`` uniform in
    ``[0, 2*padding]`` per sample. ``fill="zero"`` pads with 0, the channel mean of normalised
    data; ``"reflect"`` mirrors the border (``padding < min(H, W)``)."""
    return _call("crop", x, generator, padding=padding, fill=fill)


def _resized_crop(x: Tensor, g: torch.Generator, scale: tuple[float, float],
                  ratio: tuple[float, float]) -> Tensor:
    n, c, h, w = x.shape
    u = _rand((2, n, _CROP_TRIES), g, x.device)
    area = (scale[0] + (scale[1] - scale[0]) * u[0]) * (h * w)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[1])  # width / height
    box_w, box_h = torch.sqrt(area * aspect), torch.sqrt(area / aspect)
    fits = (box_w <= w) & (box_h <= h)
    first = fits.int().argmax(1, keepdim=True)
    any_fits = fits.any(1)
    box_w = torch.where(any_fits, box_w.gather(1, first).squeeze(1), float(w))
    box_h = torch.where(any_fits, box_h.gather(1, first).squeeze(1), float(h))
    pos = _rand((2, n), g, x.device)
    left, top = pos[0] * (w - box_w), pos[1] * (h - box_h)
    # affine_grid maps output coordinates in [-1, 1] (align_corners=False: pixel edges) to
    # input ones: x_in = (box_w / W) x_out + centre of the box.
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0] = box_w / w
    theta[:, 0, 2] = (2 * left + box_w) / w - 1
    theta[:, 1, 1] = box_h / h
    theta[:, 1, 2] = (2 * top + box_h) / h - 1
    grid = F.affine_grid(theta.to(x.dtype), [n, c, h, w], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def resized_crop(x: Tensor, generator: torch.Generator, *,
                 scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> Tensor:
    """Random-resized crop of each image of ``x`` ``(N, C, H, W)``, resampled bilinearly to
    ``(H, W)``: a box of area ``s * H * W`` and aspect ratio ``r = width / height``, ``s``
    uniform in ``scale`` and ``log r`` uniform in ``log ratio``, placed uniformly in the image.

    Box sizes and positions are continuous (no rounding). Each sample tries 10 boxes and keeps
    the first that fits in the image; where none does, it keeps the whole image."""
    return _call("resized_crop", x, generator, scale=scale, ratio=ratio)


def _translate(x: Tensor, g: torch.Generator, max_shift: int) -> Tensor:
    if max_shift == 0:
        return x
    n, length = x.shape[0], x.shape[-1]
    shift = torch.randint(-max_shift, max_shift + 1, (n, 1), generator=g, device=x.device)
    source = torch.arange(length, device=x.device) - shift  # (N, L)
    outside = (source < 0) | (source >= length)
    view = (n,) + (1,) * (x.ndim - 2) + (length,)
    out = x.gather(-1, source.clamp(0, length - 1).view(view).expand_as(x))
    return out * (~outside).view(view).to(x.dtype)


def translate(x: Tensor, generator: torch.Generator, *, max_shift: int = 4) -> Tensor:
    """Shift each sequence of ``x`` ``(N, C, L)`` or ``(N, L)`` by ``s`` uniform in
    ``[-max_shift, max_shift]`` per sample, with zero fill: ``out[..., t] = x[..., t - s]``
    where ``0 <= t - s < L``, else 0 (the channel mean of normalised data)."""
    return _call("translate", x, generator, max_shift=max_shift)


def _grey(raw: Tensor) -> Tensor:
    """Grey level ``(N, 1, H, W)``: BT.601 luma for 3 channels, else the channel mean."""
    if raw.shape[1] == 3:
        zero = torch.zeros((), dtype=raw.dtype, device=raw.device)  # sum()'s start, as a tensor
        return sum((weight * raw[:, i:i + 1] for i, weight in enumerate(_LUMA)), zero)
    return raw.mean(1, keepdim=True)


def _color_jitter(x: Tensor, g: torch.Generator, brightness: float, contrast: float,
                  saturation: float, mean: Tensor | None, std: Tensor | None,
                  value_range: tuple[float, float] | None) -> Tensor:
    # The three steps are linear in the raw image r, so they are applied as one affine map:
    # with g the grey level of r and m its mean, brightness gives b r (grey b g, mean b m),
    # contrast c b (r - m) + b m, saturation, on top, the sum
    # r' = b c (s r + (1 - s) g) + b (1 - c) m.
    u = (2 * _rand((3, x.shape[0]), g, x.device) - 1).to(x.dtype).view(3, -1, 1, 1, 1)
    b, c = 1 + brightness * u[0], 1 + contrast * u[1]
    s = 1 + saturation * u[2] if x.shape[1] == 3 else torch.ones_like(b)
    raw = x if std is None else x * std
    raw = raw if mean is None else raw + mean
    out = raw * (b * c * s)
    if contrast or (saturation and x.shape[1] == 3):
        grey = _grey(raw)
        out += (b * c * (1 - s)) * grey + (b * (1 - c)) * grey.mean((2, 3), keepdim=True)
    if value_range is not None:
        out.clamp_(*value_range)
    if mean is not None:
        out -= mean
    return out if std is None else out.div_(std)


def color_jitter(x: Tensor, generator: torch.Generator, *, brightness: float = 0.4,
                 contrast: float = 0.4, saturation: float | None = None,
                 mean: Tensor | None = None,
                 std: Tensor | None = None,
                 value_range: tuple[float, float] | None = None) -> Tensor:
    """Random brightness, contrast and saturation of each image of ``x`` ``(N, C, H, W)``, in
    raw pixel space ``r = x * std + mean``, in this order, with per-sample factors ``b, c, s``
    uniform in ``[1 - brightness, 1 + brightness]`` and so on:

    ``r <- b r``; ``r <- c (r - m) + m`` with ``m`` the mean grey level of the image;
    ``r <- g + s (r - g)`` with ``g`` the grey level of each pixel (BT.601 luma; 3-channel
    images only). Then ``r`` is clamped to ``value_range`` (raw min and max of the data; no
    clamp where None) and normalised back. ``mean``/``std`` None: ``x`` is raw.
    ``saturation`` None is 0.4 for RGB images and off for others.
    """
    _check_batch("color_jitter", x, generator)
    sample = tuple(x.shape[1:])
    o = _REGISTRY["color_jitter"].check(
        {"brightness": brightness, "contrast": contrast, "saturation": saturation}, sample)
    mean, std = _stat("mean", mean, sample), _stat("std", std, sample)
    mean = None if mean is None else mean.to(x.device, x.dtype)
    std = None if std is None else std.to(x.device, x.dtype)
    return _color_jitter(x, generator, **o, mean=mean, std=std,
                         value_range=_value_range(value_range))


def _cutout(x: Tensor, g: torch.Generator, size: int, p: float) -> Tensor:
    n = x.shape[0]
    hit = _rand(n, g, x.device) < p
    if _kind(tuple(x.shape[1:])) == "images":
        h, w = x.shape[-2:]
        rows = _window(h, torch.randint(0, h, (n, 1), generator=g, device=x.device), size)
        cols = _window(w, torch.randint(0, w, (n, 1), generator=g, device=x.device), size)
        mask = rows[:, None, :, None] & cols[:, None, None, :] & hit.view(n, 1, 1, 1)
    else:
        length = x.shape[-1]
        span = _window(length, torch.randint(0, length, (n, 1), generator=g, device=x.device),
                       size)
        mask = (span & hit[:, None]).view((n,) + (1,) * (x.ndim - 2) + (length,))
    return x * (~mask).to(x.dtype)  # much faster than masked_fill on CPU


def _window(length: int, centre: Tensor, size) -> Tensor:
    """Boolean mask over ``[0, length)`` of ``[centre - size // 2, centre - size // 2 + size)``,
    clipped at the ends; ``centre`` (and ``size``, if a tensor) broadcast against positions."""
    start = centre - size // 2
    positions = torch.arange(length, device=centre.device)
    return (positions >= start) & (positions < start + size)


def cutout(x: Tensor, generator: torch.Generator, *, size: int = 8, p: float = 1.0) -> Tensor:
    """Cutout (DeVries & Taylor, 2017): with probability ``p`` per sample, zero a ``size x size``
    square of each image of ``x`` ``(N, C, H, W)`` (all channels), or a window of ``size``
    positions of each sequence ``(N, C, L)``/``(N, L)``. The centre is uniform over the pixels;
    the square covers rows ``[cy - size//2, cy - size//2 + size)`` clipped at the borders."""
    return _call("cutout", x, generator, size=size, p=p)


class Mixed(NamedTuple):
    """The result of :func:`mixup` or :func:`cutmix`.

    ``x = keep * x_in + (1 - keep) * x_in[perm]`` and
    ``target = lam * onehot(y) + (1 - lam) * onehot(y[perm])``, where ``keep`` is ``lam``
    (mixup) or the 0/1 mask of the pixels kept outside the pasted box (cutmix).
    """

    x: Tensor
    target: Tensor
    #: weight of the original samples, a 0-d tensor of x's dtype
    lam: Tensor
    #: partner of each sample, ``(N,)``
    perm: Tensor
    #: 0-d bool, True where cutmix made the batch
    cut: Tensor


def _keep_mask(sample_shape: tuple[int, ...], cut_fraction: Tensor, g: torch.Generator,
               device) -> Tensor:
    """0/1 mask (bool, ``(H, W)`` or ``(L,)``), False inside one random box of about
    ``cut_fraction`` of the area: sides ``round(H sqrt(f))`` by ``round(W sqrt(f))`` (a window
    of ``round(L f)`` for sequences), centred uniformly, clipped at the borders."""
    if _kind(sample_shape) == "images":
        h, w = sample_shape[-2:]
        side = torch.sqrt(cut_fraction)
        box_h, box_w = torch.round(h * side).long(), torch.round(w * side).long()
        centre = torch.randint(0, h * w, (), generator=g, device=device)
        rows = _window(h, centre // w, box_h)
        cols = _window(w, centre % w, box_w)
        return ~(rows[:, None] & cols[None, :])
    length = sample_shape[-1]
    centre = torch.randint(0, length, (), generator=g, device=device)
    return ~_window(length, centre, torch.round(length * cut_fraction).long())


def _mixup_draw(x: Tensor, g: torch.Generator, alpha: float) -> tuple[Tensor, Tensor, Tensor]:
    """Mixup's ``(keep, lam, cut)``: ``keep = lam ~ Beta(alpha, alpha)``, one for the batch."""
    lam = _beta_sample(alpha, g, x.device).to(x.dtype)
    return lam, lam, torch.zeros((), dtype=torch.bool, device=x.device)


def _cutmix_draw(x: Tensor, g: torch.Generator, alpha: float) -> tuple[Tensor, Tensor, Tensor]:
    """CutMix's ``(keep, lam, cut)``: ``keep`` the 0/1 mask outside one box of about ``1 - l``
    of the area, ``l ~ Beta(alpha, alpha)``; ``lam`` the exact fraction kept."""
    mask = _keep_mask(tuple(x.shape[1:]), 1 - _beta_sample(alpha, g, x.device), g, x.device)
    lam = mask.sum().to(x.dtype) / mask.numel()
    return mask.to(x.dtype), lam, torch.ones((), dtype=torch.bool, device=x.device)


def _mix(x: Tensor, y: Tensor, g: torch.Generator, num_classes: int,
         mixers: Sequence[tuple[_Op, Mapping]]) -> Mixed:
    """Mix the batch with one of ``mixers`` (mixing ops' records and checked options, in the
    canonical order), with no host-device synchronisation: every choice stays a tensor.

    Draws ``perm``, then each op's ``(keep, lam, cut)`` in order, then, for ``k > 1`` ops, one
    ``u ~ U[0, 1)`` that picks op ``k - 1 - floor(k u)`` (mixup + cutmix: cutmix if u < 1/2).
    """
    n, device = x.shape[0], x.device
    perm = torch.randperm(n, generator=g, device=device)
    draws = [op.apply(x, g, **options) for op, options in mixers]
    keep, lam, cut = draws[0]
    if len(draws) > 1:
        k = len(draws)
        pick = k - 1 - (k * _rand((), g, device)).long().clamp_max(k - 1)
        for i, (keep_i, lam_i, cut_i) in enumerate(draws[1:], 1):
            chosen = pick == i
            keep, lam = torch.where(chosen, keep_i, keep), torch.where(chosen, lam_i, lam)
            cut = torch.where(chosen, cut_i, cut)
    mixed = keep * x + (1 - keep) * x[perm]
    y = y.long()
    target = torch.zeros(n, num_classes, dtype=x.dtype, device=device)
    target.scatter_add_(1, y[:, None], lam.expand(n, 1))
    target.scatter_add_(1, y[perm][:, None], (1 - lam).expand(n, 1))
    return Mixed(mixed, target, lam, perm, cut)


def _call_mixing(op: str, x: Tensor, y: Tensor, generator: torch.Generator, num_classes: int,
                 **given) -> Mixed:
    """The public function of a mixing ``op``: check everything, then mix with ``op`` alone."""
    _check_batch(op, x, generator)
    _check_labels(y, x.shape[0])
    record = _REGISTRY[op]
    options = record.check(given, tuple(x.shape[1:]))
    return _mix(x, y, generator, integer("num_classes", num_classes, 1), [(record, options)])


def mixup(x: Tensor, y: Tensor, generator: torch.Generator, *, num_classes: int,
          alpha: float = 0.2) -> Mixed:
    """Mixup (Zhang et al., 2018): ``lam ~ Beta(alpha, alpha)`` once per batch, ``perm`` a
    random permutation, ``x = lam x + (1 - lam) x[perm]``,
    ``target = lam onehot(y) + (1 - lam) onehot(y[perm])``. Any sample shape."""
    return _call_mixing("mixup", x, y, generator, num_classes, alpha=alpha)


def cutmix(x: Tensor, y: Tensor, generator: torch.Generator, *, num_classes: int,
           alpha: float = 1.0) -> Mixed:
    """CutMix (Yun et al., 2019): with ``l ~ Beta(alpha, alpha)`` once per batch, paste into
    every image the same box of about ``(1 - l)`` of the area from its partner ``x[perm]``;
    ``lam`` is then the exact fraction of pixels kept, and
    ``target = lam onehot(y) + (1 - lam) onehot(y[perm])``. Sequences get a window of about
    ``(1 - l) L`` positions instead of a box."""
    return _call_mixing("cutmix", x, y, generator, num_classes, alpha=alpha)


# -- the registry -----------------------------------------------------------------------------

#: Every op, in the canonical order they run in.
_REGISTRY: dict[str, _Op] = {op.name: op for op in (
    _Op("flip", _flip, {"p": (0.5, _unit)}, ("images",)),
    _Op("crop", _crop, {"padding": (4, _sized(0, 1)), "fill": ("zero", _one_of("zero", "reflect"))},
        ("images",), "for sequences use translate"),
    _Op("resized_crop", _resized_crop,
        {"scale": ((0.08, 1.0), _range_in(1)), "ratio": ((3 / 4, 4 / 3), _range_in(math.inf))},
        ("images",), "for sequences use translate"),
    _Op("translate", _translate, {"max_shift": (4, _sized(0, 1))}, ("sequences",),
        "for images use crop"),
    _Op("color_jitter", _color_jitter,
        {"brightness": (0.4, _unit), "contrast": (0.4, _unit), "saturation": (None, _saturation)},
        ("images",), context=("mean", "std", "value_range")),
    _Op("cutout", _cutout, {"size": (8, _sized(1, 0)), "p": (1.0, _unit)},
        ("images", "sequences")),
    _Op("mixup", _mixup_draw, {"alpha": (0.2, _positive)}, ("images", "sequences", "other"),
        mixes=True),
    _Op("cutmix", _cutmix_draw, {"alpha": (1.0, _positive)}, ("images", "sequences"),
        "for other samples use mixup", mixes=True),
)}
#: The ops :class:`Augment` accepts, in the order they run.
OPS: tuple[str, ...] = tuple(_REGISTRY)


# -- the pipeline -----------------------------------------------------------------------------

class Augment:
    """The ops of a config's ``augment`` section (op name -> options or None for defaults),
    checked at construction and run in the canonical order of :data:`OPS`.

    ``input_shape`` is the shape of one sample, ``mean``/``std`` the normalisation
    (``x = (x_raw - mean) / std``, broadcasting against one sample) and ``value_range`` the raw
    ``(min, max)`` of the training data: ``color_jitter`` works in raw space and clamps there.
    Without ``mean``/``std`` the data is taken as raw; without ``value_range`` nothing is
    clamped. Raises :class:`~gradwise.errors.UserError` for an unknown op or option, a bad value
    or an op that does not take these samples.
    """

    def __init__(self, spec: Mapping[str, Mapping | None] | None, *, input_shape: tuple[int, ...],
                 num_classes: int, mean: Tensor | None = None, std: Tensor | None = None,
                 value_range: tuple[float, float] | None = None):
        self.input_shape = _sample_shape(input_shape)
        self.num_classes = integer("num_classes", num_classes, 1)
        self._mean = _stat("mean", mean, self.input_shape)
        self._std = _stat("std", std, self.input_shape)
        self.value_range = _value_range(value_range)
        spec = {} if spec is None else spec
        if not isinstance(spec, Mapping):
            raise UserError(f"augment={spec!r} is invalid; augment must map op names to their "
                            f"options, e.g. {{'flip': {{}}, 'crop': {{'padding': 4}}}}")
        for name, given in spec.items():
            if name not in _REGISTRY:
                close = difflib.get_close_matches(str(name), OPS, n=1)
                raise UserError(f"unknown augmentation {name!r}"
                                + (f" (did you mean {close[0]!r}?)" if close else "")
                                + f"; accepted: {', '.join(OPS)}")
            if given is not None and not isinstance(given, Mapping):
                raise UserError(f"augment.{name}={given!r} is invalid; the options of {name} "
                                "must be a mapping ({} or null for the defaults)")
            _REGISTRY[name].needs(self.input_shape)
        #: (record, checked options) of each op asked for, in the canonical order
        self._ops = [(op, op.check(spec[op.name] or {}, self.input_shape))
                     for op in _REGISTRY.values() if op.name in spec]
        self._context_on: dict = {}  # (device, dtype) -> mean, std there and value_range

    @property
    def active(self) -> bool:
        """Whether any op runs (else the call returns ``(x, y)`` untouched)."""
        return bool(self._ops)

    @property
    def ops(self) -> dict[str, dict]:
        """Op name -> its options with defaults filled in, in the order the ops run."""
        return {op.name: dict(o) for op, o in self._ops}

    def __repr__(self) -> str:
        def show(op, o):
            return f"{op.name}({', '.join(f'{k}={v!r}' for k, v in o.items())})"
        steps = [show(op, o) for op, o in self._ops if not op.mixes]
        mixing = [show(op, o) for op, o in self._ops if op.mixes]
        if mixing:
            steps.append(" | ".join(mixing))
        return f"Augment({' -> '.join(steps) or 'no ops'}; input_shape={self.input_shape})"

    def _context(self, x: Tensor, names: tuple[str, ...]) -> dict[str, Any]:
        """The data facts ``names`` for a batch like ``x``: ``mean``/``std`` on its device and
        dtype (converted once), ``value_range``."""
        if not names:
            return {}
        key = (x.device, x.dtype)
        if key not in self._context_on:
            mean, std = (None if t is None else t.to(x.device, x.dtype)
                         for t in (self._mean, self._std))
            self._context_on[key] = {"mean": mean, "std": std, "value_range": self.value_range}
        facts = self._context_on[key]
        return {name: facts[name] for name in names}

    def __call__(self, x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """``(x_aug, target)``: ``target`` is ``y`` itself unless a mixing op ran, then float
        ``(N, num_classes)`` probabilities. ``x`` is not modified."""
        _check_x("augment", x)
        if tuple(x.shape[1:]) != self.input_shape:
            raise UserError(f"augment: x has shape {tuple(x.shape)} but this Augment was built "
                            f"for samples of shape {self.input_shape}")
        _check_labels(y, x.shape[0])
        if not self._ops:
            return x, y
        _check_generator("augment", x, generator)
        mixers = []
        for op, o in self._ops:
            if op.mixes:
                mixers.append((op, o))
            else:
                x = op.apply(x, generator, **o, **self._context(x, op.context))
        if mixers:
            mixed = _mix(x, y, generator, self.num_classes, mixers)
            return mixed.x, mixed.target
        return x, y
