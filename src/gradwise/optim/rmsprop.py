"""RMSProp: AdaGrad with a leaky (exponentially decayed) sum of squared gradients."""

from __future__ import annotations

import torch

from .._checks import number
from ._backends import T
from ._base import Optimizer, step_counter


def rmsprop(p: T, g: T, square_avg: T, *extra: T, lr: float, alpha: float, eps: float,
            momentum: float, weight_decay: float, maximize: bool, decay: bool,
            use_momentum: bool, centered: bool, eps_inside: bool) -> tuple[T, ...]:
    """One RMSProp update. The slide (``decay_rate`` is torch's ``alpha``)::

        grad_squared = decay_rate * grad_squared + (1 - decay_rate) * dx * dx
        x -= lr * dx / (sqrt(grad_squared) + eps)

    ``centered=True`` divides by an estimate of the variance instead,
    ``sqrt(grad_squared - mean_grad**2) + eps``, with ``mean_grad`` decayed the same way.
    ``momentum > 0`` keeps a buffer ``b = momentum * b + dx / denom`` and steps ``x -= lr * b``.

    eps sits outside the square root (torch, the slide); ``eps_inside=True`` puts it inside,
    as TensorFlow's RMSprop does. optax's ``rmsprop`` adds eps inside too (eps=1e-8, decay 0.9).
    Extra state, in order: ``momentum_buffer`` if ``use_momentum``, ``grad_avg`` if ``centered``.
    """
    rest = list(extra)
    buf = rest.pop(0) if use_momentum else None
    grad_avg = rest.pop(0) if centered else None
    if maximize:
        g = -g
    if decay:
        g = g + weight_decay * p
    square_avg = alpha * square_avg + (1 - alpha) * g * g
    variance = square_avg
    if grad_avg is not None:  # centered
        grad_avg = grad_avg.lerp(g, 1 - alpha)
        variance = square_avg - grad_avg * grad_avg
    denom = (variance + eps).sqrt() if eps_inside else variance.sqrt() + eps
    if buf is not None:  # use_momentum
        buf = momentum * buf + g / denom
        p = p - lr * buf
    else:
        p = p - lr * (g / denom)
    new: list[T] = [p, square_avg]
    if buf is not None:
        new.append(buf)
    if grad_avg is not None:
        new.append(grad_avg)
    return tuple(new)


class RMSprop(Optimizer):
    """RMSProp, a drop-in for ``torch.optim.RMSprop`` (state ``step``, ``square_avg``,
    ``momentum_buffer``, ``grad_avg``).

    Beyond torch: ``eps_inside`` and ``backend``; torch has no fused RMSprop kernel, so the
    default backend compiles the rule :func:`rmsprop` into one pass over memory on large models.
    """

    rule = staticmethod(rmsprop)

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, capturable=False, foreach=None, maximize=False,
                 differentiable=False, *, eps_inside=False, backend="auto", flat=False):
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                        weight_decay=weight_decay, capturable=capturable, foreach=foreach,
                        maximize=maximize, differentiable=differentiable,
                        eps_inside=eps_inside, backend=backend)
        super().__init__(params, defaults, flat=flat)

    def _validate(self, group):
        for key in ("lr", "eps", "momentum", "weight_decay"):
            number(key, group[key], 0)
        number("alpha", group["alpha"], 0, 1)

    def _init_state(self, group, p):
        state = {"step": step_counter(),
                 "square_avg": torch.zeros_like(p, memory_format=torch.preserve_format)}
        if group["momentum"] > 0:
            state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if group["centered"]:
            state["grad_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def _state_keys(self, group):
        return (("square_avg",) + (("momentum_buffer",) if group["momentum"] > 0 else ())
                + (("grad_avg",) if group["centered"] else ()))

    def _scalars(self, group, t):
        return {k: float(group[k]) for k in ("lr", "alpha", "eps", "momentum", "weight_decay")}

    def _options(self, group):
        return dict(maximize=group["maximize"], decay=group["weight_decay"] != 0,
                    use_momentum=group["momentum"] > 0, centered=group["centered"],
                    eps_inside=group["eps_inside"])
