"""Regularizers: weight penalties, DropConnect, fractional max-pooling, and the layers that
Monte-Carlo prediction (:func:`gradwise.nn.mc_predict`) keeps sampling.

Dropout itself is torch's: ``nn.Dropout`` is inverted dropout (survivors scaled by
``1 / (1 - p)`` in training, the identity in eval) and ``nn.Dropout1d``/``nn.Dropout2d`` drop
whole channels. Stochastic depth lives in :class:`~gradwise.nn.models.BasicBlock`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.modules.dropout import _DropoutNd

from .._checks import choice, number
from ..errors import UserError

#: How :class:`FractionalMaxPool2d` draws its pooling regions in training.
FRACTIONAL_POOL_MODES: tuple[str, ...] = ("pseudo_random", "random")

# u ~ U(0, 1) of the pseudo-random sequence is drawn as k / _U_DENOMINATOR, k in 1..D-1, so
# that the boundaries are computed in exact integer arithmetic.
_U_DENOMINATOR = 2**24


def _flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"{name}={value!r} is invalid; {name} must be true or false")
    return value


# -- weight penalties ------------------------------------------------------------------------

def weight_penalty(model_or_params: nn.Module | Iterable[Tensor], l1: float = 0.0,
                   l2: float = 0.0, include_all: bool = False) -> Tensor:
    """``l1 * sum|w| + (l2 / 2) * sum w^2`` over the weight matrices and kernels (parameters
    with ``ndim >= 2``), or over every parameter (biases, norm scales) with ``include_all``.
    Both coefficients nonzero give the elastic net. Add it to the loss.

    Its gradient is ``l1 * sign(w) + l2 * w``. The L2 part, ``l2 * w``, is exactly what
    ``weight_decay=l2`` adds to the gradient in torch's SGD (with or without momentum: torch
    folds the decay into the gradient before the momentum buffer), so there the two are the
    same update. They coincide for ``torch.optim.Adam(weight_decay=l2)`` too, which is this
    coupled L2 penalty: its gradient is divided by ``sqrt(v)`` like the rest. AdamW
    (Loshchilov & Hutter) decays the weights directly, ``w -= lr * weight_decay * w``, outside
    the adaptive scaling: a different update, not an L2 penalty.

    >>> layer = nn.Linear(2, 1)
    >>> with torch.no_grad():
    ...     _ = layer.weight.copy_(torch.tensor([[3.0, -4.0]]))
    >>> weight_penalty(layer, l1=0.1, l2=0.2)  # 0.1 * 7 + 0.1 * 25, the bias left out
    tensor(3.2000, grad_fn=<AddBackward0>)
    """
    l1 = number("l1", l1, 0)
    l2 = number("l2", l2, 0)
    include_all = _flag("include_all", include_all)
    params: list[Tensor]
    if isinstance(model_or_params, nn.Module):
        params = list(model_or_params.parameters())
    elif isinstance(model_or_params, Tensor):
        params = [model_or_params]
    else:
        params = list(model_or_params)
    chosen = [p for p in params if include_all or p.dim() >= 2]
    terms: list[Tensor] = []
    if l1:
        terms += [l1 * p.abs().sum() for p in chosen]
    if l2:
        terms += [(l2 / 2) * p.square().sum() for p in chosen]
    if not terms:
        like = params[0] if params else torch.zeros(())
        return torch.zeros((), dtype=like.dtype, device=like.device)
    return sum(terms[1:], terms[0])


# -- DropConnect -----------------------------------------------------------------------------

class _DropConnect(nn.Module):
    """Mixin of the DropConnect layers (before ``nn.Linear`` or ``nn.Conv2d`` in the bases):
    the weight to use in this forward pass."""

    p: float
    weight: Tensor

    def sampled_weight(self) -> Tensor:
        """``weight * mask / (1 - p)``, ``mask ~ Bernoulli(1 - p)``, in training; ``weight``
        in eval."""
        if not self.training or self.p == 0:
            return self.weight
        keep = 1 - self.p
        mask = torch.empty_like(self.weight).bernoulli_(keep)
        return self.weight * mask / keep

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p:g}"


class DropConnectLinear(_DropConnect, nn.Linear):
    """``nn.Linear`` with DropConnect (Wan et al., 2013): in training each weight is dropped
    with probability ``p`` and the survivors are scaled by ``1 / (1 - p)``,
    ``y = x (W * M / (1 - p))^T + b`` with ``M ~ Bernoulli(1 - p)``, so ``E[y] = x W^T + b``;
    in eval the full weights. The bias is never dropped.

    One fresh mask per forward pass, shared by the whole batch: Wan et al. draw one per
    example, which costs a copy of the weights per example; one per batch is the common
    practical form. Takes ``nn.Linear``'s arguments plus ``p`` in ``[0, 1)``; the state dict
    is ``nn.Linear``'s, so checkpoints load either way.

    >>> layer = DropConnectLinear(4, 3, p=0.5).eval()
    >>> torch.equal(layer(torch.ones(2, 4)), nn.functional.linear(torch.ones(2, 4),
    ...             layer.weight, layer.bias))
    True
    """

    def __init__(self, *args, p: float = 0.5, **kwargs):
        super().__init__(*args, **kwargs)
        self.p = number("p", p, 0, 1, open_high=True)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.sampled_weight(), self.bias)


class DropConnectConv2d(_DropConnect, nn.Conv2d):
    """``nn.Conv2d`` with DropConnect: in training each kernel weight is dropped with
    probability ``p`` and the survivors are scaled by ``1 / (1 - p)`` (one fresh mask per
    forward pass, shared by the batch and every position); in eval the full kernel. The bias
    is never dropped. Takes ``nn.Conv2d``'s arguments plus ``p`` in ``[0, 1)``; the state dict
    is ``nn.Conv2d``'s.
    """

    def __init__(self, *args, p: float = 0.5, **kwargs):
        super().__init__(*args, **kwargs)
        self.p = number("p", p, 0, 1, open_high=True)

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.sampled_weight(), self.bias)


# -- fractional max-pooling ------------------------------------------------------------------

class FractionalMaxPool2d(nn.Module):
    """Fractional max-pooling (Graham, 2014): shrinks each spatial axis by ``ratio`` in
    ``(1, 2]`` instead of 2, to ``out = max(1, floor(size / ratio))``.

    Along each axis the pooling regions come from boundaries ``0 = a_0 < a_1 < ... < a_out =
    size`` with increments 1 or 2: region ``i`` is rows ``[a_{i-1}, a_i)`` (disjoint, they tile
    the axis), or ``[a_{i-1}, a_i]`` clipped to the input with ``overlap=True``.

    - ``mode="random"``: the increments are a random permutation of ``size - out`` twos and
      ``2 out - size`` ones.
    - ``mode="pseudo_random"``: ``a_i = ceil(alpha (i + u)) - ceil(alpha u)`` with
      ``u ~ U(0, 1)`` and ``alpha = size / out`` (the paper's ``ceil(alpha (i + u))``, shifted
      to start at 0; with this ``alpha`` it ends at ``a_out = size``, and since
      ``1 <= alpha <= 2`` every increment is 1 or 2).

    Where ``size / ratio`` rounds down below ``size / 2`` (a ratio close to 2 and an odd size),
    increments of at most 2 cannot reach ``size``: the boundaries end at ``2 out`` and the last
    rows are left out, as ``nn.MaxPool2d(2)`` leaves out the last row of an odd input.

    One draw per forward pass and axis, shared by the whole batch and every channel (torch's
    ``nn.FractionalMaxPool2d`` draws per sample and channel). In training every forward pass
    draws afresh; in eval the regions are fixed (the pseudo-random sequence with
    ``u = 1/2``, evenly spread increments) so evaluation is repeatable. Sampling follows the
    layer's own ``training`` flag: :func:`mc_predict` sets it on this layer alone to average
    predictions over draws while the rest of the model is in eval.

    The regions of the last forward pass are in ``last_regions``: ``(rows, cols)``, each an
    ``(out, 2)`` tensor of ``[start, end)`` pairs, on the input's device. Inputs are
    ``(N, C, H, W)`` or ``(C, H, W)``, in any memory format (a channels_last input gives a
    channels_last output).

    >>> pool = FractionalMaxPool2d(math.sqrt(2))
    >>> pool(torch.randn(2, 3, 28, 28)).shape
    torch.Size([2, 3, 19, 19])
    """

    def __init__(self, ratio: float = math.sqrt(2), mode: str = "pseudo_random",
                 overlap: bool = False):
        super().__init__()
        self.ratio = number("ratio", ratio, 1, 2, open_low=True)
        self.mode = choice("mode", mode, FRACTIONAL_POOL_MODES)
        self.overlap = _flag("overlap", overlap)
        self.last_regions: tuple[Tensor, Tensor] | None = None

    def output_size(self, size: int) -> int:
        """``max(1, floor(size / ratio))``, the pooled length of an axis of ``size``."""
        return max(1, math.floor(size / self.ratio))

    def boundaries(self, size: int, sample: bool,
                   device: torch.device | str | None = None) -> Tensor:
        """``a_0, ..., a_out`` for an axis of ``size``: a fresh draw where ``sample``, else
        the fixed evaluation sequence. Built on ``device`` (no host-device copy)."""
        out = self.output_size(size)
        covered = min(size, 2 * out)
        if sample and self.mode == "random":
            steps = torch.ones(out, dtype=torch.long, device=device)
            steps[torch.randperm(out, device=device)[:covered - out]] = 2
            return torch.cat([steps.new_zeros(1), steps.cumsum(0)])
        if sample:
            u_numerator, u_denominator = int(torch.randint(1, _U_DENOMINATOR, ())), _U_DENOMINATOR
        else:
            u_numerator, u_denominator = 1, 2
        # ceil(alpha (i + u)) - ceil(alpha u) with alpha = covered / out, u = k / D, in integers
        i = torch.arange(out + 1, dtype=torch.long, device=device)
        scale = out * u_denominator
        first = -(-covered * u_numerator // scale)
        return (covered * (i * u_denominator + u_numerator) + scale - 1) // scale - first

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() not in (3, 4):
            raise UserError(f"FractionalMaxPool2d takes (N, C, H, W) or (C, H, W) inputs; "
                            f"got shape {tuple(x.shape)}")
        rows, row_width = self._regions(x.shape[-2], x.device)
        cols, col_width = self._regions(x.shape[-1], x.device)
        self.last_regions = (rows, cols)
        out = _max_over_regions(_max_over_regions(x, -2, rows, row_width), -1, cols, col_width)
        if (x.dim() == 4 and not x.is_contiguous()
                and x.is_contiguous(memory_format=torch.channels_last)):
            out = out.contiguous(memory_format=torch.channels_last)
        return out

    def _regions(self, size: int, device) -> tuple[Tensor, int]:
        """The ``(out, 2)`` ``[start, end)`` pairs of an axis, and the widest region's size."""
        bounds = self.boundaries(size, self.training, device)
        ends = (bounds[1:] + 1).clamp(max=size) if self.overlap else bounds[1:]
        widest = (2 if min(size, 2 * len(ends)) > len(ends) else 1) + self.overlap
        return torch.stack([bounds[:-1], ends], dim=1), widest

    def extra_repr(self) -> str:
        return f"ratio={self.ratio:.4g}, mode={self.mode!r}, overlap={self.overlap}"


def _max_over_regions(x: Tensor, dim: int, regions: Tensor, widest: int) -> Tensor:
    """Along ``dim``, the max over each ``[start, end)`` of ``regions``: the elementwise max of
    ``widest`` gathered slices (offset 0, 1, ... in each region, clamped to its last row)."""
    starts, ends = regions[:, 0], regions[:, 1]
    result = x.index_select(dim, starts)
    for offset in range(1, widest):
        index = torch.minimum(starts + offset, ends - 1)
        result = torch.maximum(result, x.index_select(dim, index))
    return result


# -- what Monte-Carlo prediction samples -----------------------------------------------------

#: The layers that :func:`~gradwise.nn.mc_predict` keeps sampling.
STOCHASTIC_LAYERS: tuple[type, ...] = (_DropoutNd, _DropConnect, FractionalMaxPool2d)
