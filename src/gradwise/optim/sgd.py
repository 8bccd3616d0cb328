"""Stochastic gradient descent: plain, with momentum, and with Nesterov momentum."""

from __future__ import annotations

import torch

from .._checks import choice, number
from ._backends import T
from ._base import Optimizer

MOMENTUM_FORMS = ("torch", "velocity")


def sgd(p: T, g: T, *buffer: T, lr: float, momentum: float, dampening: float,
        weight_decay: float, maximize: bool, decay: bool, use_momentum: bool, nesterov: bool,
        velocity: bool) -> tuple[T, ...]:
    """One SGD update of parameter ``p`` with gradient ``g``.

    Plain SGD (the slide)::

        x -= lr * dx

    torch's momentum form (``momentum_form="torch"``; ``b`` starts at 0, and torch applies no
    dampening to the first update, so that ``b = g`` after it)::

        b = mu * b + (1 - dampening) * g
        x -= lr * b                        # Nesterov: x -= lr * (g + mu * b)

    The lecture's velocity form (``momentum_form="velocity"``; ``v`` starts at 0)::

        v = rho * v - lr * dx
        x += v                             # Nesterov: x += -rho * v_prev + (1 + rho) * v

    The two forms take identical steps while ``lr`` is constant. When ``lr`` changes, the
    velocity form keeps the momentum built at the old rate (``v`` carries ``lr``), torch's form
    rescales it at once. The Nesterov velocity form is the change of variables of the slide: the
    stored ``x`` is the look-ahead point. optax's ``sgd(momentum, nesterov)`` is torch's form;
    TensorFlow's ``SGD(momentum)`` is the velocity form.

    ``weight_decay`` adds ``weight_decay * x`` to ``dx`` (an L2 penalty); ``maximize`` uses ``-dx``.
    """
    if maximize:
        g = -g
    if decay:
        g = g + weight_decay * p
    if not use_momentum:
        return (p - lr * g,)
    (buf,) = buffer
    if velocity:
        new = momentum * buf - lr * ((1 - dampening) * g)
        step = (1 + momentum) * new - momentum * buf if nesterov else new
        return p + step, new
    buf = momentum * buf + (1 - dampening) * g
    step = g + momentum * buf if nesterov else buf
    return p - lr * step, buf


class SGD(Optimizer):
    """Stochastic gradient descent, a drop-in for ``torch.optim.SGD``.

    Same arguments, defaults, param groups and ``state_dict`` (``momentum_buffer``) as torch.
    Beyond torch: ``momentum_form="velocity"`` (the lecture's ``v = rho*v - lr*dx; x += v``, kept in
    state ``velocity``) and ``backend``. The update rule is :func:`sgd`.

    Example::

        opt = SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
        loss.backward(); opt.step(); opt.zero_grad()
    """

    rule = staticmethod(sgd)
    has_step = False

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False,
                 *, maximize=False, foreach=None, differentiable=False, fused=None,
                 momentum_form="torch", backend="auto", flat=False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize, foreach=foreach,
                        differentiable=differentiable, fused=fused,
                        momentum_form=momentum_form, backend=backend)
        super().__init__(params, defaults, flat=flat)

    def _validate(self, group):
        number("lr", group["lr"], 0)
        number("momentum", group["momentum"], 0)
        number("dampening", group["dampening"], 0, 1)
        number("weight_decay", group["weight_decay"], 0)
        choice("momentum_form", group["momentum_form"], MOMENTUM_FORMS)
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("nesterov=True requires momentum > 0 and dampening = 0")

    def _buffer_key(self, group):
        return "velocity" if group["momentum_form"] == "velocity" else "momentum_buffer"

    def _init_state(self, group, p):
        if group["momentum"] == 0:
            return {}
        return {self._buffer_key(group): torch.zeros_like(p, memory_format=torch.preserve_format)}

    def _state_keys(self, group):
        return () if group["momentum"] == 0 else (self._buffer_key(group),)

    def _scalars(self, group, t):
        first_torch_update = t == 1 and group["momentum_form"] == "torch"
        return dict(lr=float(group["lr"]), momentum=float(group["momentum"]),
                    dampening=0.0 if first_torch_update else float(group["dampening"]),
                    weight_decay=float(group["weight_decay"]))

    def _options(self, group):
        return dict(maximize=group["maximize"], decay=group["weight_decay"] != 0,
                    use_momentum=group["momentum"] != 0, nesterov=group["nesterov"],
                    velocity=group["momentum_form"] == "velocity")

    def _native(self, group, device):
        # torch's kernel starts a buffer at g; from a zero buffer that is the same update only
        # without dampening (mu * 0 + 1 * g == g exactly).
        if group["momentum_form"] != "torch" or group["dampening"] != 0:
            return None
        momentum = float(group["momentum"])

        def kernel(params, grads, states):
            bufs = [] if momentum == 0 else [s["momentum_buffer"] for s in states]
            torch._fused_sgd_(params, grads, bufs, weight_decay=float(group["weight_decay"]),
                              momentum=momentum, lr=float(group["lr"]), dampening=0.0,
                              nesterov=group["nesterov"], maximize=group["maximize"],
                              is_first_step=False)

        return kernel
