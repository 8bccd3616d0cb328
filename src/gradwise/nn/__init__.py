"""The model zoo: :func:`build_model` builds one of :data:`MODELS` (``mlp``, ``convnet``,
``resnet``, ``cnn1d``) or your own ``python:module:function`` for a given input shape and number
of classes. :class:`BasicBlock` is the ResNet's residual block (with stochastic depth).

Regularizers: :func:`weight_penalty` (L1, L2, elastic net), :class:`DropConnectLinear` and
:class:`DropConnectConv2d`, :class:`FractionalMaxPool2d`.

Averaged predictions: :func:`mc_predict` (Monte-Carlo dropout, test-time averaging over
fractional-pooling draws) and :func:`tta_predict` (test-time augmentation: flipped and shifted
views).
"""

from .models import MODELS, BasicBlock, build_model
from .predict import mc_predict, tta_predict
from .regularizers import (
    DropConnectConv2d,
    DropConnectLinear,
    FractionalMaxPool2d,
    weight_penalty,
)

__all__ = ["MODELS", "BasicBlock", "build_model", "DropConnectConv2d", "DropConnectLinear",
           "FractionalMaxPool2d", "mc_predict", "tta_predict", "weight_penalty"]
