"""The model zoo: :func:`build_model` builds one of :data:`MODELS` (``mlp``, ``convnet``,
``resnet``, ``cnn1d``) or your own ``python:module:function`` for a given input shape and number
of classes. :class:`BasicBlock` is the ResNet's residual block.
"""

from .models import MODELS, BasicBlock, build_model

__all__ = ["MODELS", "BasicBlock", "build_model"]
