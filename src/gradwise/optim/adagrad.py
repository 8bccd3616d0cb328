"""AdaGrad: per-coordinate step sizes from the running sum of squared gradients."""

from __future__ import annotations

import torch

from .._checks import number
from ._backends import T
from ._base import Optimizer, step_counter


def adagrad(p: T, g: T, grad_squared: T, *, lr: float, eps: float, weight_decay: float,
            maximize: bool, decay: bool, eps_inside: bool) -> tuple[T, T]:
    """One AdaGrad update. The slide::

        grad_squared += dx * dx
        x -= lr * dx / (sqrt(grad_squared) + eps)

    ``lr`` here is torch's decayed rate ``lr / (1 + (t - 1) * lr_decay)`` at update ``t``; the
    step counter is incremented before the update, so the first update uses ``t = 1``.

    eps sits outside the square root (torch, the slide); ``eps_inside=True`` puts it inside,
    ``sqrt(grad_squared + eps)``. torch's default eps is 1e-10; optax's ``adagrad`` adds eps
    inside (eps=1e-7) and starts the sum at 0.1, TensorFlow starts it at 0.1 and puts eps outside.
    """
    if maximize:
        g = -g
    if decay:
        g = g + weight_decay * p
    grad_squared = grad_squared + g * g
    denom = (grad_squared + eps).sqrt() if eps_inside else grad_squared.sqrt() + eps
    return p - lr * (g / denom), grad_squared


class Adagrad(Optimizer):
    """AdaGrad, a drop-in for ``torch.optim.Adagrad`` (state ``step``, ``sum``).

    Beyond torch: ``eps_inside`` and ``backend``. The update rule is :func:`adagrad`. Like torch,
    the state is created when the optimizer is built, with the sum at
    ``initial_accumulator_value``.
    """

    rule = staticmethod(adagrad)
    eager_state = True

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0,
                 eps=1e-10, foreach=None, *, maximize=False, differentiable=False, fused=None,
                 eps_inside=False, backend="auto", flat=False):
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, foreach=foreach,
                        maximize=maximize, differentiable=differentiable, fused=fused,
                        eps_inside=eps_inside, backend=backend)
        super().__init__(params, defaults, flat=flat)

    def _validate(self, group):
        for key in ("lr", "lr_decay", "eps", "weight_decay", "initial_accumulator_value"):
            number(key, group[key], 0)

    def _init_state(self, group, p):
        init = group["initial_accumulator_value"]
        if p.is_complex():
            init = complex(init, init)
        return {"step": step_counter(),
                "sum": torch.full_like(p, init, memory_format=torch.preserve_format)}

    def _state_keys(self, group):
        return ("sum",)

    def _scalars(self, group, t):
        lr = float(group["lr"]) / (1 + (t - 1) * group["lr_decay"])
        return dict(lr=lr, eps=float(group["eps"]), weight_decay=float(group["weight_decay"]))

    def _options(self, group):
        return dict(maximize=group["maximize"], decay=group["weight_decay"] != 0,
                    eps_inside=group["eps_inside"])

    def _native(self, group, device):
        if group["eps_inside"] or device.type != "cpu":  # torch's fused AdaGrad is CPU-only
            return None

        def kernel(params, grads, states):
            torch._fused_adagrad_(params, grads, [s["sum"] for s in states],
                                  [s["step"] for s in states], lr=float(group["lr"]),
                                  lr_decay=group["lr_decay"], weight_decay=group["weight_decay"],
                                  eps=group["eps"], maximize=group["maximize"])

        return kernel

