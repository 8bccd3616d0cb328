"""Flat storage: a param group's parameters, gradients and optimizer state in one buffer each.

With ``flat=True`` a first-order optimizer moves the parameters of each param group (one
buffer per device and dtype) into one contiguous buffer, each ``nn.Parameter`` a view of it,
points each gradient at a view of a matching gradient buffer, and keeps every state tensor
(``exp_avg``, ``momentum_buffer``, ...) as a view of a flat buffer too. One update is then one
kernel over each buffer, however many tensors the model has::

    opt = gradwise.optim.Adam(model.parameters(), lr=1e-3, flat=True)

Everything the user sees keeps its per-tensor form: the model's ``state_dict`` and
``named_parameters``, the optimizer's ``state_dict`` (torch's keys and per-parameter layout, so a
checkpoint moves to and from ``torch.optim``), hooks and ``torch.compile`` of the model.

What changes: backward accumulates into the gradient views, so ``zero_grad()`` zeroes the gradient
buffer (one pass) and leaves the views in place, whatever ``set_to_none`` says. A parameter that
took no part in a forward therefore has a zero gradient and is updated as torch updates it after
``zero_grad(set_to_none=False)`` (its momentum and weight decay still act). Anything that breaks
the layout is noticed at the next step and repaired: a gradient set to ``None`` (that step skips
the parameter, exactly as torch does), a gradient replaced by another tensor (copied back), a
model moved with ``.to()`` (the buffers, state included, are rebuilt where the parameters now
live). Parameters with ``requires_grad=False`` when the group is built stay outside the buffer
and step as before. Each parameter starts on a 64-byte boundary of its buffer; the padding
between parameters is zero and stays zero under every rule.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import is_

import torch
from torch import Tensor

#: Each parameter's view starts at a multiple of this many elements (64 bytes of fp32).
ALIGN = 16


class Bucket:
    """The parameters of one param group that share a device and dtype, in one buffer.

    ``param`` and ``grad`` are the flat buffers; ``params[i]`` is a view of ``param`` at
    ``offsets[i]``, and so is its gradient ``grads[i]`` of ``grad``. ``state`` maps each state key
    to its flat buffer (None until the first step creates it); ``steps`` holds torch's
    per-parameter step counters (each parameter's ``state["step"]`` is a 0-d view of it) and
    ``t`` the update count they all share (None when they differ: then the bucket steps per
    tensor).
    """

    __slots__ = ("params", "offsets", "strides", "param", "grad", "grads", "ptrs", "state",
                 "steps", "t")

    def __init__(self, params: list[Tensor]):
        self.params = params
        self.strides = [_dense_stride(p) for p in params]
        self.offsets, total = [], 0
        for p in params:
            self.offsets.append(total)
            total += -(-p.numel() // ALIGN) * ALIGN
        first = params[0]
        self.param = torch.zeros(total, dtype=first.dtype, device=first.device)
        self.grad = torch.zeros_like(self.param)
        self.grads = [self.view(self.grad, i) for i in range(len(params))]
        for i, p in enumerate(params):
            view = self.view(self.param, i)
            view.copy_(p.detach())
            p.data = view
            if p.grad is not None:
                self.grads[i].copy_(p.grad)
            p.grad = self.grads[i]
        self.ptrs = [p.data_ptr() for p in params]
        self.state: dict[str, Tensor] | None = None
        self.steps: Tensor | None = None
        self.t: int | None = 0

    def view(self, flat: Tensor, i: int) -> Tensor:
        """Parameter ``i``'s region of the flat buffer ``flat``, in the parameter's shape."""
        p = self.params[i]
        return flat.as_strided(p.shape, self.strides[i], self.offsets[i])

    def intact(self) -> bool:
        """Whether every parameter and gradient is still its view (one identity and one pointer
        comparison per parameter)."""
        return (all(map(is_, (p.grad for p in self.params), self.grads))
                and list(map(Tensor.data_ptr, self.params)) == self.ptrs)

    def adopt_state(self, state: dict, make: Callable[[Tensor], dict]) -> None:
        """Make the optimizer state of the bucket's parameters views of flat buffers.

        ``state`` is the optimizer's per-parameter state (updated in place); ``make(flat)``
        builds the state of a fresh parameter, here of the whole flat parameter buffer. With no
        state yet, nothing happens (the first step creates it); with state of the same keys and
        step count for every parameter, it is copied into flat buffers; otherwise (state loaded
        for some parameters only, or at different counts) the bucket keeps per-tensor state and
        steps per tensor (``t = None``).
        """
        own = [state.get(p) for p in self.params]
        if not any(own):
            self.state, self.steps, self.t = None, None, 0
            return
        keys = set(own[0] or ())
        steps = [float(s["step"]) for s in own if s and "step" in s]
        if not all(s and set(s) == keys for s in own) or len(set(steps)) > 1:
            self.state, self.steps, self.t = None, None, None
            return
        self.create_state(state, make)  # `own` keeps the loaded tensors
        assert self.state is not None
        for i, s in enumerate(own):
            assert s is not None
            for k, flat in self.state.items():
                self.view(flat, i).copy_(s[k])
        if self.steps is not None:
            self.steps.fill_(steps[0])
        # without a counter (SGD) only the first update is special: any later count will do
        self.t = int(steps[0]) if steps else 2

    def create_state(self, state: dict, make: Callable[[Tensor], dict]) -> None:
        """Fresh state for every parameter, as views of new flat buffers."""
        fresh = make(self.param)
        self.state = {k: v for k, v in fresh.items() if k != "step"}
        self.steps = torch.zeros(len(self.params)) if "step" in fresh else None
        self.t = 0
        self._point_state(state)

    def _point_state(self, state: dict) -> None:
        assert self.state is not None
        for i, p in enumerate(self.params):
            own = {k: self.view(flat, i) for k, flat in self.state.items()}
            if self.steps is not None:
                own["step"] = self.steps[i]
            if own:  # like torch, no entry for a parameter without state (plain SGD)
                state[p] = own


def build(params: list[Tensor]) -> list[Bucket]:
    """The buckets of one param group: its trainable real floating-point parameters, one
    bucket per (device, dtype) in order of first appearance. Parameters with
    ``requires_grad=False`` are left out (they keep their own storage and step as before)."""
    kinds: dict[tuple, list[Tensor]] = {}
    for i, p in enumerate(params):
        if not p.requires_grad:
            continue
        if not p.is_floating_point():
            raise ValueError(
                f"flat=True: parameter {i} of its group is {p.dtype}; flat storage takes real "
                "floating-point parameters (use flat=False for complex ones)"
            )
        kinds.setdefault((p.device, p.dtype), []).append(p)
    return [Bucket(ps) for ps in kinds.values()]


def _dense_stride(p: Tensor) -> tuple[int, ...]:
    """The strides of a dense tensor laid out like ``p`` (channels-last stays channels-last)."""
    return torch.empty_like(p, device="meta", memory_format=torch.preserve_format).stride()
