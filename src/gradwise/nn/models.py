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
from collections.abc import Sequence

from torch import Tensor, nn

from ..errors import UserError

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
    or a strided 1x1 conv + BN (a projection) where the block changes the shape.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.residual = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.residual(x) + self.shortcut(x))


def build_model(name: str, input_shape: Sequence[int], num_classes: int,
                **options) -> nn.Module:
    """Build model ``name`` for samples of shape ``input_shape``, giving ``num_classes`` logits.

    ``input_shape`` is the shape of one sample: ``(C, H, W)`` for images, ``(C, L)`` or ``(L,)``
    for sequences, ``(F,)`` for tabular data. The models and their options (defaults):

    - ``mlp`` (any shape, flattened): ``hidden=(256, 256)`` (``()`` gives a linear model),
      ``batch_norm=False``, ``dropout=0.0`` (after each hidden ReLU).
    - ``convnet`` (images): VGG-style stages of ``convs_per_stage=2`` 3x3 convs
      (+ BN if ``batch_norm=True``) + ReLU, then a 2x2 max-pool while the image is at least
      2x2; ``channels=(32, 64, 128)``, one per stage; global average pool, ``dropout=0.0``.
    - ``resnet`` (images): 3x3 stem, stages of ``blocks_per_stage=2`` :class:`BasicBlock`
      with ``widths=(32, 64, 128)``, stride 2 between stages; global average pool,
      ``dropout=0.0``.
    - ``cnn1d`` (sequences): one Conv1d (odd ``kernel_size=5``, same padding) + BN
      (``batch_norm=True``) + ReLU per entry of ``channels=(32, 64, 128)``, a max-pool by 2
      between stages while the length is at least 4 (``pool=True``); global average pool,
      ``dropout=0.0``. For ~99% on MNIST-1D, widen it and keep the full length:
      ``channels=(64, 64, 128, 128, 256), pool=False``.
    - ``python:module:function``: ``function(input_shape=..., num_classes=..., **options)``
      from the importable ``module``; it must return an ``nn.Module`` (built as is).

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
    builder = _BUILDERS.get(name) if isinstance(name, str) else None
    if builder is None:
        raise UserError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}, "
                        "or 'python:module:function' for your own")
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
         batch_norm=False, dropout=0.0) -> Classifier:
    """Flatten, then Linear (+ BN) + ReLU (+ Dropout) per hidden width, then the head."""
    hidden = _int_tuple("hidden", hidden, allow_empty=True)
    batch_norm = _flag("batch_norm", batch_norm)
    dropout = _probability("dropout", dropout)
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for out in hidden:
        layers += _unit(nn.Linear(width, out, bias=not batch_norm),
                        nn.BatchNorm1d(out) if batch_norm else None)
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = out
    return Classifier(nn.Sequential(*layers), nn.Linear(width, num_classes))


def _convnet(input_shape: tuple[int, ...], num_classes: int, *, channels=(32, 64, 128),
             convs_per_stage=2, batch_norm=True, dropout=0.0) -> Classifier:
    """VGG-style stages of 3x3 convs and a 2x2 max-pool, global average pool, head."""
    in_channels, height, width = _image_shape("convnet", input_shape)
    channels = _int_tuple("channels", channels)
    convs_per_stage = _positive_int("convs_per_stage", convs_per_stage)
    batch_norm = _flag("batch_norm", batch_norm)
    dropout = _probability("dropout", dropout)
    layers: list[nn.Module] = []
    for out in channels:
        for _ in range(convs_per_stage):
            layers += _unit(nn.Conv2d(in_channels, out, 3, padding=1, bias=not batch_norm),
                            nn.BatchNorm2d(out) if batch_norm else None)
            in_channels = out
        if min(height, width) >= 2:
            layers.append(nn.MaxPool2d(2))
            height, width = height // 2, width // 2
    layers += _pool_and_dropout(nn.AdaptiveAvgPool2d(1), dropout)
    return Classifier(nn.Sequential(*layers), nn.Linear(in_channels, num_classes))


def _resnet(input_shape: tuple[int, ...], num_classes: int, *, widths=(32, 64, 128),
            blocks_per_stage=2, dropout=0.0) -> Classifier:
    """3x3 stem, stages of basic blocks (stride 2 between stages), global average pool, head."""
    in_channels = _image_shape("resnet", input_shape)[0]
    widths = _int_tuple("widths", widths)
    blocks_per_stage = _positive_int("blocks_per_stage", blocks_per_stage)
    dropout = _probability("dropout", dropout)
    layers = _unit(nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
                   nn.BatchNorm2d(widths[0]))
    in_channels = widths[0]
    for stage, out in enumerate(widths):
        for block in range(blocks_per_stage):
            stride = 2 if stage > 0 and block == 0 else 1
            layers.append(BasicBlock(in_channels, out, stride))
            in_channels = out
    layers += _pool_and_dropout(nn.AdaptiveAvgPool2d(1), dropout)
    return Classifier(nn.Sequential(*layers), nn.Linear(in_channels, num_classes))


def _cnn1d(input_shape: tuple[int, ...], num_classes: int, *, channels=(32, 64, 128),
           kernel_size=5, batch_norm=True, pool=True, dropout=0.0) -> Classifier:
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
        in_channels = out
    layers += _pool_and_dropout(nn.AdaptiveAvgPool1d(1), dropout)
    return Classifier(nn.Sequential(*layers), nn.Linear(in_channels, num_classes))


_BUILDERS = {"mlp": _mlp, "convnet": _convnet, "resnet": _resnet, "cnn1d": _cnn1d}
MODELS: tuple[str, ...] = tuple(_BUILDERS)


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
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0 <= value < 1:
        raise UserError(f"{option}={value!r} is invalid; it must be a number in [0, 1)")
    return float(value)


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
