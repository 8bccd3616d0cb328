"""Adam (momentum + RMSProp + bias correction) and AdamW (decoupled weight decay)."""

from __future__ import annotations

import torch

from .._checks import number
from ._backends import T
from ._base import Optimizer, step_counter


def adam(p: T, g: T, m: T, v: T, *vmax: T, step_size: float, beta1: float, beta2: float,
         eps: float, bias_correction2_sqrt: float, weight_decay: float, decay_factor: float,
         maximize: bool, decay: bool, decoupled: bool, amsgrad: bool,
         eps_inside: bool) -> tuple[T, ...]:
    """One Adam update. The slide, at update ``t`` (the counter is incremented before the
    update, so the first update uses ``t = 1``)::

        first_moment = beta1 * first_moment + (1 - beta1) * dx
        second_moment = beta2 * second_moment + (1 - beta2) * dx * dx
        first_unbias = first_moment / (1 - beta1 ** t)
        second_unbias = second_moment / (1 - beta2 ** t)
        x -= lr * first_unbias / (sqrt(second_unbias) + eps)

    computed as torch does: ``step_size = lr / (1 - beta1**t)``,
    ``x -= step_size * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)``. Without bias correction
    (``bias_correction=False``) both corrections are 1, and the first steps are huge: with
    ``m = 0.1 g`` and ``v = 0.001 g**2`` the first step is ``lr * 0.1 / sqrt(0.001) ~ 3.2 lr``
    per coordinate.

    eps sits outside the square root and after bias correction (torch, optax, the slide);
    ``eps_inside=True`` uses ``sqrt(second_unbias + eps)`` (optax's ``eps_root``). TensorFlow
    (Keras) adds its eps to ``sqrt(v)`` before bias-correcting ``v``, an eps larger by
    ``1 / sqrt(1 - beta2**t)``.

    Weight decay: coupled (Adam, an L2 penalty: ``dx += weight_decay * x``) or decoupled
    (AdamW: ``x *= 1 - lr * weight_decay`` before the update, passed as ``decay_factor``).
    ``amsgrad`` divides by the running maximum of ``v`` (state ``max_exp_avg_sq``).
    """
    if maximize:
        g = -g
    if decoupled:
        p = p * decay_factor
    elif decay:
        g = g + weight_decay * p
    m = m.lerp(g, 1 - beta1)
    v = beta2 * v + (1 - beta2) * g * g
    second = v
    if amsgrad:
        second = vmax[0].maximum(v)
    if eps_inside:
        denom = (second / (bias_correction2_sqrt * bias_correction2_sqrt) + eps).sqrt()
    else:
        denom = second.sqrt() / bias_correction2_sqrt + eps
    p = p - step_size * (m / denom)
    return (p, m, v, second) if amsgrad else (p, m, v)


class Adam(Optimizer):
    """Adam, a drop-in for ``torch.optim.Adam`` (state ``step``, ``exp_avg``, ``exp_avg_sq``,
    ``max_exp_avg_sq``).

    Beyond torch: ``bias_correction`` (turn it off to see the huge first steps the lecture warns
    about), ``eps_inside`` and ``backend``. The update rule is :func:`adam`; the defaults are the
    lecture's (beta1 0.9, beta2 0.999, lr 1e-3).
    """

    rule = staticmethod(adam)

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, *, foreach=None, maximize=False, capturable=False,
                 differentiable=False, fused=None, decoupled_weight_decay=False,
                 bias_correction=True, eps_inside=False, backend="auto", flat=False):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize, foreach=foreach, capturable=capturable,
                        differentiable=differentiable, fused=fused,
                        decoupled_weight_decay=decoupled_weight_decay,
                        bias_correction=bias_correction, eps_inside=eps_inside, backend=backend)
        super().__init__(params, defaults, flat=flat)

    def _validate(self, group):
        for key in ("lr", "eps", "weight_decay"):
            number(key, group[key], 0)
        betas = group["betas"]
        if not (isinstance(betas, tuple | list) and len(betas) == 2):
            raise ValueError(f"betas={betas!r} is invalid; betas must be a pair (beta1, beta2)")
        number("betas[0]", betas[0], 0, 1, open_high=True)
        number("betas[1]", betas[1], 0, 1, open_high=True)

    def _init_state(self, group, p):
        state = {"step": step_counter(),
                 "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                 "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format)}
        if group["amsgrad"]:
            state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def _state_keys(self, group):
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if group["amsgrad"] else ())

    def _scalars(self, group, t):
        lr = float(group["lr"])
        beta1, beta2 = (float(b) for b in group["betas"])
        wd = float(group["weight_decay"])
        if group["bias_correction"]:
            step_size, bc2_sqrt = lr / (1 - beta1**t), (1 - beta2**t) ** 0.5
        else:
            step_size, bc2_sqrt = lr, 1.0
        return dict(step_size=step_size, beta1=beta1, beta2=beta2, eps=float(group["eps"]),
                    bias_correction2_sqrt=bc2_sqrt, weight_decay=wd, decay_factor=1 - lr * wd)

    def _options(self, group):
        return dict(maximize=group["maximize"], decay=group["weight_decay"] != 0,
                    decoupled=group["decoupled_weight_decay"], amsgrad=group["amsgrad"],
                    eps_inside=group["eps_inside"])

    def _native(self, group, device):
        if not group["bias_correction"] or group["eps_inside"]:
            return None
        fused = torch._fused_adamw_ if group["decoupled_weight_decay"] else torch._fused_adam_
        beta1, beta2 = group["betas"]

        def kernel(params, grads, states):
            vmax = [s["max_exp_avg_sq"] for s in states] if group["amsgrad"] else []
            fused(params, grads, [s["exp_avg"] for s in states],
                  [s["exp_avg_sq"] for s in states], vmax, [s["step"] for s in states],
                  lr=group["lr"], beta1=beta1, beta2=beta2,
                  weight_decay=group["weight_decay"], eps=group["eps"],
                  amsgrad=group["amsgrad"], maximize=group["maximize"])

        return kernel


class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay (``x *= 1 - lr * weight_decay``), a drop-in for
    ``torch.optim.AdamW`` (default ``weight_decay=1e-2``). See :func:`adam`.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, foreach=None, capturable=False,
                 differentiable=False, fused=None, bias_correction=True, eps_inside=False,
                 backend="auto", flat=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, foreach=foreach, maximize=maximize,
                         capturable=capturable, differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True, bias_correction=bias_correction,
                         eps_inside=eps_inside, backend=backend, flat=flat)
