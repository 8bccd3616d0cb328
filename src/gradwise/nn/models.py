"""The model zoo: small, fast classifiers for images, sequences and tabular data, built by name.

Every built-in model is a :class:`Classifier`: a ``features`` stack that ends in one flat vector
per sample, then a linear ``head`` that gives the logits ``(N, num_classes)``. Param groups can
address the two by name, e.g. ``lr_multipliers={"features": 0.1}``.

Initialisation (He et al., 2015): every conv and linear layer of ``features`` feeds a ReLU
(directly or through batch norm) and gets Kaiming normal weights in ``fan_in`` mode, std
``sqrt(2 / fan_in)``, which keeps the scale of the activations constant through the forward
pass; biases are 0, batch-norm scales 1 and shifts 0. The head feeds no ReLU and gets
``N(0, 0.01^2)`` weights: the first logits are close to 0, so training starts from near-uniform
predictions and a loss close to ``log(num_classes)``.
"""

from __future__ import annotations

import importlib
import inspect
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import choice, number
from ..errors import UserError
from .hub import build_hub_model, is_hub_model
from .regularizers import (
    FRACTIONAL_POOL_MODES,
    DropConnectLinear,
    FractionalMaxPool2d,
)

#: Standard deviation of the head's initial weights.
HEAD_INIT_STD = 0.01


class Classifier(nn.Module):
    """``head(features(x))``: a feature extractor ending in ``(N, F)``, then a linear head."""

    def __init__(self, features: nn.Sequential, head: nn.Linear):
        super().__init__()
        self.features = features
        self.head = head
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class BasicBlock(nn.Module):
    """ResNet basic block: ``relu(residual(x) + shortcut(x))``.

    ``residual`` is conv3x3 (strided) - BN - ReLU - conv3x3 - BN. ``shortcut`` is the identity,
    or a strided 1x1 conv + BN (a projection) where the block changes the shape. Without
    ``batch_norm`` the BN layers go and the convs get a bias.

    Stochastic depth (Huang et al., 2016): in training, each sample's residual branch is
    dropped with probability ``drop_prob``, and kept ones are scaled by ``1 / (1 - drop_prob)``,
    ``relu(residual(x) * b / (1 - drop_prob) + shortcut(x))`` with ``b ~ Bernoulli(1 -
    drop_prob)`` per sample; in eval ``relu(residual(x) + shortcut(x))``, no rescaling needed.
    The paper drops the branch for the whole mini-batch (skipping its compute) and scales it by
    the survival probability at test time; the per-sample, inverted form regularizes the same
    way in expectation but computes the branch for every sample.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 drop_prob: float = 0.0, batch_norm: bool = True):
        super().__init__()
        self.drop_prob = _probability("drop_prob", drop_prob)
        batch_norm = _flag("batch_norm", batch_norm)

        def norm() -> list[nn.Module]:
            return [nn.BatchNorm2d(out_channels)] if batch_norm else []

        self.residual = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1,
                      bias=not batch_norm),
            *norm(),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=not batch_norm),
            *norm(),
        )
        self.shortcut: nn.Module
        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=not batch_norm),
                *norm(),
            )
        self.relu = nn.ReLU()

    def preactivation(self, x: Tensor) -> Tensor:
        """``residual(x) * b / (1 - drop_prob) + shortcut(x)`` in training (``b`` one
        Bernoulli(1 - drop_prob) draw per sample), ``residual(x) + shortcut(x)`` in eval."""
        residual = self.residual(x)
        if self.training and self.drop_prob > 0:
            keep = 1 - self.drop_prob
            survived = torch.empty((residual.shape[0],) + (1,) * (residual.dim() - 1),
                                   dtype=residual.dtype, device=residual.device)
            residual = residual * survived.bernoulli_(keep) / keep
        return residual + self.shortcut(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.preactivation(x))

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:g}" if self.drop_prob else ""


def build_model(name: str, input_shape: Sequence[int], num_classes: int,
                **options: Any) -> nn.Module:
    """Build model ``name`` for samples of shape ``input_shape``, giving ``num_classes`` logits.

    ``input_shape`` is the shape of one sample: ``(C, H, W)`` for images, ``(C, L)`` or ``(L,)``
    for sequences, ``(F,)`` for tabular data. The models and their options (defaults):

    - ``mlp`` (any shape, flattened): ``hidden=(256, 256)`` (``()`` gives a linear model),
      ``batch_norm=False``, ``dropout=0.0`` (after each hidden ReLU), ``drop_connect=0.0``
      (the hidden Linear layers become :class:`~gradwise.nn.DropConnectLinear` with this
      ``p``).
    - ``convnet`` (images): VGG-style stages of ``convs_per_stage=2`` 3x3 convs
      (+ BN if ``batch_norm=True``) + ReLU, then a 2x2 max-pool while the image is at least
      2x2; ``channels=(32, 64, 128)``, one per stage; global average pool, ``dropout=0.0``.
      ``channel_dropout=0.0``: ``nn.Dropout2d`` at the end of each stage (after its pool);
      ``drop_connect=0.0``: the head becomes a :class:`~gradwise.nn.DropConnectLinear`
      (as in Wan et al.; masked convs followed by batch norm train badly: the running
      statistics see the masked weights' extra variance, the eval pass does not);
      ``fractional_pool=None``: a ratio ``r`` in ``(1, 2]`` replaces each 2x2 max-pool by
      ``round(log 2 / log r)`` :class:`~gradwise.nn.FractionalMaxPool2d` layers (two at
      ``sqrt(2)``), so the image shrinks about as much as with max-pooling
      (``fractional_pool_mode="pseudo_random"`` or ``"random"``), while it is at least 2x2.
    - ``resnet`` (images): 3x3 stem, stages of ``blocks_per_stage=2`` :class:`BasicBlock`
      with ``widths=(32, 64, 128)``, stride 2 between stages; global average pool,
      ``dropout=0.0``. ``stochastic_depth=0.0``: the drop probability of the last block, block
      ``l`` of ``L`` gets ``l / L * stochastic_depth`` (linear decay); ``batch_norm=True``
      (``False``: no BN anywhere, the convs get biases); ``fractional_pool=None``: a ratio in
      ``(1, 2]`` puts fractional max-pools between stages instead of the stride 2, as many as
      for ``convnet`` (``fractional_pool_mode`` as for ``convnet``).
    - ``cnn1d`` (sequences): one Conv1d (odd ``kernel_size=5``, same padding) + BN
      (``batch_norm=True``) + ReLU per entry of ``channels=(32, 64, 128)``, a max-pool by 2
      between stages while the length is at least 4 (``pool=True``); global average pool,
      ``dropout=0.0``; ``channel_dropout=0.0``: ``nn.Dropout1d`` after each ReLU. For ~99% on
      MNIST-1D, widen it and keep the full length: ``channels=(64, 64, 128, 128, 256),
      pool=False``.
    - ``python:module:function``: ``function(input_shape=..., num_classes=..., **options)``
      from the importable ``module``; it must return an ``nn.Module`` (built as is).
    - ``torchvision:NAME``, ``timm:NAME``: that library's model with random weights, its
      options passed through (see :mod:`gradwise.nn.hub`; pretrained weights come from the
      config's ``model.weights``).

    Raises :class:`~gradwise.errors.UserError` for an unknown name or option, a bad value or
    an input shape the model cannot take.

    >>> import torch
    >>> build_model("convnet", (1, 8, 8), 10)(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
    """
    input_shape = _shape(input_shape)
    num_classes = _positive_int("num_classes", num_classes)
    if isinstance(name, str) and name.startswith("python:"):
        return _from_python(name, input_shape, num_classes, options)
    if is_hub_model(name):
        return build_hub_model(name, input_shape, num_classes, **options)
    builder = MODELS.get(name) if isinstance(name, str) else None
    if builder is None:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}, "
                        "or 'python:module:function' for your own, or torchvision:NAME, "
                        "timm:NAME")
    accepted = [p.name for p in inspect.signature(builder).parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = [key for key in options if key not in accepted]
    if unknown:
        raise UserError(f"unknown option{'s' if len(unknown) > 1 else ''} "
                        f"{', '.join(map(repr, unknown))} for model {name!r}; "
                        f"its options are {', '.join(accepted)}")
    return builder(input_shape, num_classes, **options)


# -- the models ------------------------------------------------------------------------------

def _mlp(input_shape: tuple[int, ...], num_classes: int, *, hidden=(256, 256),
         batch_norm=False, dropout=0.0, drop_connect=0.0) -> Classifier:
    """Flatten, then Linear (+ BN) + ReLU (+ Dropout) per hidden width, then the head."""
    hidden = _int_tuple("hidden", hidden, allow_empty=True)
    batch_norm = _flag("batch_norm", batch_norm)
    dropout = _probability("dropout", dropout)
    drop_connect = _probability("drop_connect", drop_connect)
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for out in hidden:
        linear = (DropConnectLinear(width, out, bias=not batch_norm, p=drop_connect)
                  if drop_connect else nn.Linear(width, out, bias=not batch_norm))
        layers += _unit(linear, nn.BatchNorm1d(out) if batch_norm else None)
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = out
    return Classifier(nn.Sequential(*layers), nn.Linear(width, num_classes))


def _convnet(input_shape: tuple[int, ...], num_classes: int, *, channels=(32, 64, 128),
             convs_per_stage=2, batch_norm=True, dropout=0.0, channel_dropout=0.0,
             drop_connect=0.0, fractional_pool=None,
             fractional_pool_mode="pseudo_random") -> Classifier:
    """VGG-style stages of 3x3 convs and a 2x2 max-pool, global average pool, head."""
    in_channels, height, width = _image_shape("convnet", input_shape)
    channels = _int_tuple("channels", channels)
    convs_per_stage = _positive_int("convs_per_stage", convs_per_stage)
    batch_norm = _flag("batch_norm", batch_norm)
    dropout = _probability("dropout", dropout)
    channel_dropout = _probability("channel_dropout", channel_dropout)
    drop_connect = _probability("drop_connect", drop_connect)
    fractional_pool = _pool_ratio("fractional_pool", fractional_pool)
    fractional_pool_mode = choice("fractional_pool_mode", fractional_pool_mode,
                                  FRACTIONAL_POOL_MODES)
    layers: list[nn.Module] = []
    for out in channels:
        for _ in range(convs_per_stage):
            conv = nn.Conv2d(in_channels, out, 3, padding=1, bias=not batch_norm)
            layers += _unit(conv, nn.BatchNorm2d(out) if batch_norm else None)
            in_channels = out
        if min(height, width) >= 2:
            if fractional_pool is None:
                layers.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            else:
                pools, height, width = _fractional_pools(fractional_pool, fractional_pool_mode,
                                                         height, width)
                layers += pools
        if channel_dropout:
            layers.append(nn.Dropout2d(channel_dropout))
    layers += _pool_and_dropout(nn.AdaptiveAvgPool2d(1), dropout)
    return Classifier(nn.Sequential(*layers), _head(in_channels, num_classes, drop_connect))


def _resnet(input_shape: tuple[int, ...], num_classes: int, *, widths=(32, 64, 128),
            blocks_per_stage=2, dropout=0.0, stochastic_depth=0.0, batch_norm=True,
            fractional_pool=None, fractional_pool_mode="pseudo_random") -> Classifier:
    """3x3 stem, stages of basic blocks (stride 2 or a fractional max-pool between stages),
    global average pool, head. Block ``l`` of ``L`` drops its residual branch with probability
    ``l / L * stochastic_depth``."""
    in_channels = _image_shape("resnet", input_shape)[0]
    widths = _int_tuple("widths", widths)
    blocks_per_stage = _positive_int("blocks_per_stage", blocks_per_stage)
    dropout = _probability("dropout", dropout)
    stochastic_depth = _probability("stochastic_depth", stochastic_depth)
    batch_norm = _flag("batch_norm", batch_norm)
    fractional_pool = _pool_ratio("fractional_pool", fractional_pool)
    fractional_pool_mode = choice("fractional_pool_mode", fractional_pool_mode,
                                  FRACTIONAL_POOL_MODES)
    layers = _unit(nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=not batch_norm),
                   nn.BatchNorm2d(widths[0]) if batch_norm else None)
    in_channels = widths[0]
    height, width = input_shape[1:]
    total_blocks = len(widths) * blocks_per_stage
    for stage, out in enumerate(widths):
        if stage > 0 and fractional_pool is not None:
            pools, height, width = _fractional_pools(fractional_pool, fractional_pool_mode,
                                                     height, width)
            layers += pools
        for block in range(blocks_per_stage):
            first_downsampling = stage > 0 and block == 0 and fractional_pool is None
            depth = stage * blocks_per_stage + block + 1  # 1-based
            layers.append(BasicBlock(in_channels, out, 2 if first_downsampling else 1,
                                     drop_prob=depth / total_blocks * stochastic_depth,
                                     batch_norm=batch_norm))
            in_channels = out
    layers += _pool_and_dropout(nn.AdaptiveAvgPool2d(1), dropout)
    return Classifier(nn.Sequential(*layers), nn.Linear(in_channels, num_classes))


def _cnn1d(input_shape: tuple[int, ...], num_classes: int, *, channels=(32, 64, 128),
           kernel_size=5, batch_norm=True, pool=True, dropout=0.0,
           channel_dropout=0.0) -> Classifier:
    """Conv1d (+ BN) + ReLU stages with max-pools between them, global average pool, head."""
    if len(input_shape) not in (1, 2):
        raise UserError(f"model 'cnn1d' needs a sequence shape (C, L) or (L,); "
                        f"got input_shape={input_shape}")
    channels = _int_tuple("channels", channels)
    kernel_size = _positive_int("kernel_size", kernel_size)
    if kernel_size % 2 == 0:
        raise UserError(f"kernel_size={kernel_size} is invalid; it must be odd, so that the "
                        "padding keeps the length")
    batch_norm = _flag("batch_norm", batch_norm)
    pool = _flag("pool", pool)
    dropout = _probability("dropout", dropout)
    channel_dropout = _probability("channel_dropout", channel_dropout)
    layers: list[nn.Module] = []
    if len(input_shape) == 1:  # (N, L) -> (N, 1, L)
        layers.append(nn.Unflatten(1, (1, input_shape[0])))
        input_shape = (1, *input_shape)
    in_channels, length = input_shape
    for stage, out in enumerate(channels):
        if stage > 0 and pool and length >= 4:
            layers.append(nn.MaxPool1d(2))
            length //= 2
        layers += _unit(nn.Conv1d(in_channels, out, kernel_size, padding=kernel_size // 2,
                                  bias=not batch_norm),
                        nn.BatchNorm1d(out) if batch_norm else None)
        if channel_dropout:
            layers.append(nn.Dropout1d(channel_dropout))
        in_channels = out
    layers += _pool_and_dropout(nn.AdaptiveAvgPool1d(1), dropout)
    return Classifier(nn.Sequential(*layers), nn.Linear(in_channels, num_classes))


#: The model zoo: name -> builder ``(input_shape, num_classes, *, options...) -> nn.Module``
#: (its keyword-only arguments are the model's config options). A new model is its builder
#: plus one entry here.
MODELS: dict[str, Callable[..., nn.Module]] = {"mlp": _mlp, "convnet": _convnet,
                                               "resnet": _resnet, "cnn1d": _cnn1d}


def _head(width: int, num_classes: int, drop_connect: float) -> nn.Linear:
    """The linear head, a DropConnectLinear where ``drop_connect > 0``."""
    if drop_connect:
        return DropConnectLinear(width, num_classes, p=drop_connect)
    return nn.Linear(width, num_classes)


def _fractional_pools(ratio: float, mode: str, height: int,
                      width: int) -> tuple[list[nn.Module], int, int]:
    """The fractional max-pools that stand in for one 2x2 max-pool: ``round(log 2 / log r)``
    of them (each only while the image is at least 2x2), and the image size after them."""
    pools: list[nn.Module] = []
    for _ in range(max(1, round(math.log(2) / math.log(ratio)))):
        if min(height, width) < 2:
            break
        pool = FractionalMaxPool2d(ratio, mode)
        pools.append(pool)
        height, width = pool.output_size(height), pool.output_size(width)
    return pools, height, width


def _from_python(spec: str, input_shape: tuple[int, ...], num_classes: int,
                 options: dict) -> nn.Module:
    parts = spec.removeprefix("python:").split(":")
    if len(parts) != 2 or not all(parts):
        raise UserError(f"model {spec!r} is invalid; write your own as 'python:module:function'")
    module_name, function_name = parts
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UserError(f"model {spec!r}: cannot import module {module_name!r} ({err})") from err
    factory = getattr(module, function_name, None)
    if not callable(factory):
        raise UserError(f"model {spec!r}: module {module_name!r} has no function "
                        f"{function_name!r}")
    try:
        inspect.signature(factory).bind(input_shape=input_shape, num_classes=num_classes,
                                        **options)
    except TypeError as err:
        raise UserError(f"model {spec!r}: {function_name}() does not take input_shape, "
                        f"num_classes and the options given ({err})") from err
    model = factory(input_shape=input_shape, num_classes=num_classes, **options)
    if not isinstance(model, nn.Module):
        raise UserError(f"model {spec!r}: {function_name}() returned a "
                        f"{type(model).__name__}, not a torch.nn.Module")
    return model


# -- building blocks and initialisation ------------------------------------------------------

def _unit(layer: nn.Module, norm: nn.Module | None) -> list[nn.Module]:
    """``layer`` (+ ``norm``) + ReLU."""
    return [layer, norm, nn.ReLU()] if norm is not None else [layer, nn.ReLU()]


def _pool_and_dropout(pool: nn.Module, dropout: float) -> list[nn.Module]:
    """Global pooling to ``(N, C)``, then dropout where ``dropout > 0``."""
    return [pool, nn.Flatten()] + ([nn.Dropout(dropout)] if dropout else [])


def _init_weights(model: Classifier) -> None:
    for module in model.features.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    nn.init.normal_(model.head.weight, std=HEAD_INIT_STD)
    nn.init.zeros_(model.head.bias)


# -- validation ------------------------------------------------------------------------------

def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _positive_int(option: str, value) -> int:
    if not _is_int(value) or value < 1:
        raise UserError(f"{option}={value!r} is invalid; it must be a positive integer")
    return int(value)


def _int_tuple(option: str, value, *, allow_empty: bool = False) -> tuple[int, ...]:
    """A tuple of positive integers from a sequence (or one integer)."""
    values = (value,) if _is_int(value) else value
    if (not isinstance(values, Sequence) or isinstance(values, str)
            or not all(_is_int(v) and v > 0 for v in values)
            or not (values or allow_empty)):
        need = "" if allow_empty else "non-empty "
        raise UserError(f"{option}={value!r} is invalid; it must be a {need}sequence of "
                        "positive integers")
    return tuple(int(v) for v in values)


def _flag(option: str, value) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"{option}={value!r} is invalid; it must be true or false")
    return value


def _probability(option: str, value) -> float:
    if (not isinstance(value, numbers.Real) or isinstance(value, bool)
            or value < 0 or not value < 1):  # (NaN fails the second)
        raise UserError(f"{option}={value!r} is invalid; it must be a number in [0, 1)")
    return float(value)


def _pool_ratio(option: str, value) -> float | None:
    """``None`` (no fractional pooling) or a shrink ratio in ``(1, 2]``."""
    if value is None:
        return None
    try:
        return number(option, value, 1, 2, open_low=True)
    except UserError as err:
        raise UserError(f"{err}, or None (no fractional pooling)") from None


def _shape(input_shape) -> tuple[int, ...]:
    if (not isinstance(input_shape, Sequence) or not input_shape
            or not all(_is_int(d) and d > 0 for d in input_shape)):
        raise UserError(f"input_shape={input_shape!r} is invalid; it must be the shape of one "
                        "sample, a non-empty sequence of positive integers such as (1, 28, 28)")
    return tuple(int(d) for d in input_shape)


def _image_shape(model: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise UserError(f"model {model!r} needs an image shape (C, H, W); "
                        f"got input_shape={input_shape}")
    return input_shape
