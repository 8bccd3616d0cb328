"""Predictions averaged over many forward passes: :func:`mc_predict` over the draws of the
stochastic layers (Monte-Carlo dropout), :func:`tta_predict` over augmented views of the input
(test-time augmentation). Both return mean softmax probabilities ``(N, num_classes)``, run
without gradients on ``batch_size`` samples at a time and restore every module's train/eval
mode afterwards, also on error.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .._checks import integer
from ..augment import _int_in, _kind, _needs, _spatial
from ..errors import UserError
from .regularizers import STOCHASTIC_LAYERS

__all__ = ["mc_predict", "tta_predict"]


def mc_predict(model: nn.Module, x: Tensor, samples: int = 20,
               batch_size: int = 1024) -> Tensor:
    """Mean softmax probabilities ``(N, C)`` over ``samples`` stochastic forward passes.

    The model runs in eval mode (batch norm uses its running statistics) except the dropout
    layers, DropConnect layers and :class:`~gradwise.nn.FractionalMaxPool2d`, which sample as
    in training: Monte-Carlo dropout, or test-time averaging over fractional-pooling draws.
    ``x`` goes through in batches of ``batch_size``, without gradients; every module's mode is
    restored afterwards, also on error.

    >>> model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3))
    >>> probs = mc_predict(model, torch.randn(5, 4), samples=10)
    >>> probs.shape, bool(torch.allclose(probs.sum(1), torch.ones(5)))
    (torch.Size([5, 3]), True)
    """
    samples = integer("samples", samples, 1)
    batch_size = integer("batch_size", batch_size, 1)
    modes = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        for module in model.modules():
            if isinstance(module, STOCHASTIC_LAYERS):
                module.training = True
        with torch.no_grad():
            means = []
            for start in range(0, max(len(x), 1), batch_size):  # one pass for an empty x
                batch = x[start:start + batch_size]
                total = F.softmax(model(batch), dim=1)
                for _ in range(samples - 1):
                    total += F.softmax(model(batch), dim=1)
                means.append(total / samples)
        return torch.cat(means)
    finally:
        for module, mode in modes:
            module.training = mode


def _probabilities(model: nn.Module, x: Tensor) -> Tensor:
    """The model's class probabilities for ``x``, in float32 or wider."""
    logits = model(x)
    return torch.softmax(logits, 1, dtype=torch.promote_types(logits.dtype, torch.float32))


def _shift(x: Tensor, dim: int, s: int) -> Tensor:
    """``x`` moved by ``s`` positions along ``dim`` (towards higher indices for ``s > 0``),
    zero fill."""
    out = torch.zeros_like(x)
    length = x.shape[dim]
    if s >= 0:
        out.narrow(dim, s, length - s).copy_(x.narrow(dim, 0, length - s))
    else:
        out.narrow(dim, 0, length + s).copy_(x.narrow(dim, -s, length + s))
    return out


def tta_predict(model: nn.Module, x: Tensor, *, flip: bool = False, shift: int = 0,
                batch_size: int = 1024) -> Tensor:
    """Test-time augmentation: the mean of ``softmax(model(view))`` over the views of ``x``,
    ``(N, num_classes)`` probabilities.

    Views: ``x`` itself; its horizontal flip if ``flip`` (images ``(N, C, H, W)`` only); if
    ``shift > 0``, ``x`` shifted by ``+-shift`` along each spatial axis with zero fill (4 views
    for images, 2 for sequences ``(N, C, L)``/``(N, L)``). That is ``1 + flip + 4`` views for
    images, not their product. The model runs in eval mode under ``no_grad`` on ``batch_size``
    samples at a time; each module's train/eval mode is restored afterwards.

    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    >>> probs = tta_predict(model, torch.randn(5, 1, 4, 4), flip=True, shift=1)
    >>> probs.shape, bool(torch.allclose(probs.sum(1), torch.ones(5)))
    (torch.Size([5, 3]), True)
    """
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim < 2:
        raise UserError("tta_predict: x must be a floating-point batch (N, ...)")
    sample = tuple(x.shape[1:])
    if not isinstance(flip, bool):
        raise UserError(f"flip={flip!r} is invalid; flip must be True or False")
    if flip:
        _needs("flip", sample, what=f"x has shape {tuple(x.shape)}, samples of")
    batch_size = integer("batch_size", batch_size, 1)
    axes: tuple[int, ...] = ()
    if shift != 0:
        if _kind(sample) not in ("images", "sequences"):
            raise UserError(f"shift needs images (C, H, W) or sequences (C, L) or (L,); "
                            f"x has samples of shape {sample}")
        size, where = _spatial(sample)
        shift = _int_in("shift", shift, 0, size - 1, where)
        axes = (-2, -1) if _kind(sample) == "images" else (-1,)
    views: list[Callable[[Tensor], Tensor]] = [lambda b: b]
    if flip:
        views.append(lambda b: b.flip(-1))
    for axis in axes:
        for s in (shift, -shift):
            views.append(functools.partial(_shift, dim=axis, s=s))
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            chunks = []
            for batch in x.split(batch_size):
                total = _probabilities(model, views[0](batch))
                for view in views[1:]:
                    total = total + _probabilities(model, view(batch))
                chunks.append(total / len(views))
    finally:
        for module, training in modes:
            module.training = training
    return torch.cat(chunks)
