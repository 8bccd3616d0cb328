"""The adapter between an update rule and ``torch.optim.Optimizer``.

A concrete optimizer says four things: the state it keeps per parameter, the scalars of one step
(learning rate, bias corrections, ...), the static options of its rule, and (optionally) which of
torch's fused kernels implements the same rule. This base class does the rest: closures, param
groups, ``zero_grad``, lazy state, the step counter, torch-compatible ``state_dict``, validation,
backend dispatch and flat storage (``flat=True``, see :mod:`gradwise.optim.flat`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import overload

import torch
from torch import Tensor

from . import _backends
from ._backends import BACKENDS, FUSED_MIN_NUMEL, RUNNERS
from .flat import Bucket, build


class Optimizer(torch.optim.Optimizer):
    """Base class of gradwise's first-order optimizers (a ``torch.optim.Optimizer``)."""

    #: The update rule: ``rule(p, g, *state, **scalars, **options) -> (p, *state)``.
    rule: Callable
    #: Whether the state keeps torch's ``step`` counter (a 0-d float32 tensor).
    has_step: bool = True
    #: Whether state is created when the optimizer is built (torch's Adagrad) or at first use.
    eager_state: bool = False

    def __init__(self, params, defaults: dict, flat: bool = False):
        if not isinstance(flat, bool):
            raise ValueError(f"flat={flat!r} is invalid; flat is True or False")
        #: Whether each param group keeps its parameters, gradients and state in flat buffers.
        self.flat = flat
        self._buckets: list[list[Bucket]] = []  # per param group, with flat storage
        self._loose: list[list[Tensor]] = []  # per param group: the parameters outside them
        super().__init__(params, defaults)

    # -- what a concrete optimizer provides ------------------------------------------------

    def _init_state(self, group: dict, p: Tensor) -> dict:
        raise NotImplementedError

    def _state_keys(self, group: dict) -> tuple[str, ...]:
        """The state tensors the rule reads and returns, in the rule's argument order."""
        raise NotImplementedError

    def _scalars(self, group: dict, t: float) -> dict[str, float]:
        """The numbers of update number ``t`` (1 for the first update)."""
        raise NotImplementedError

    def _options(self, group: dict) -> dict:
        """Static flags of the rule for this group."""
        raise NotImplementedError

    def _validate(self, group: dict) -> None:
        """Raise ValueError for a bad hyperparameter of ``group``."""

    def _native(self, group: dict, device: torch.device) -> Callable | None:
        """torch's fused kernel ``kernel(params, grads, states)`` for this group's rule on
        ``device``, or None where torch has none."""
        return None

    # -- param groups and state dict -------------------------------------------------------

    def add_param_group(self, param_group: dict) -> None:
        params = param_group["params"] if isinstance(param_group, dict) else None
        if isinstance(params, Tensor):
            params = [params]
        if params is not None and not isinstance(params, set):
            params = list(params)
            for i, p in enumerate(params):
                if not isinstance(p, Tensor):
                    raise ValueError(
                        f"params[{i}] is a {type(p).__name__}; an optimizer takes tensors "
                        "(nn.Parameter), dicts of param groups, or (name, tensor) pairs"
                    )
            param_group = {**param_group, "params": params}
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        _check_backend(group)
        self._validate(group)
        if group["backend"] == "native" and group["params"]:
            self._choose_backend(group, group["params"])  # fail now, not at the first step
        loose = group["params"]
        if self.flat:
            self._buckets.append([])
            self._loose.append([])
            self._flatten(len(self.param_groups) - 1)
            loose = self._loose[-1]
            if self.eager_state:
                for b in self._buckets[-1]:
                    b.create_state(self.state, self._maker(group))
        if self.eager_state:
            for p in loose:
                self.state[p] = self._init_state(group, p)

    def _flatten(self, i: int) -> list[Bucket]:
        """(Re)build the buckets of group ``i`` from its parameters where they are now,
        adopting whatever state they have."""
        group = self.param_groups[i]
        buckets = self._buckets[i] = build(group["params"])
        inside = {id(p) for b in buckets for p in b.params}
        self._loose[i] = [p for p in group["params"] if id(p) not in inside]
        for b in buckets:
            b.adopt_state(self.state, self._maker(group))
        return buckets

    def __setstate__(self, state: dict) -> None:
        # A state dict saved by torch.optim lacks gradwise's own keys: take them from defaults.
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)
        # pickling keeps torch's three fields only: a copy steps per tensor (state views work)
        if "_buckets" not in self.__dict__:
            self.flat, self._buckets, self._loose = False, [], []

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        for group, buckets in zip(self.param_groups, self._buckets, strict=False):
            for b in buckets:  # the loaded state, copied into flat buffers
                b.adopt_state(self.state, self._maker(group))

    def zero_grad(self, set_to_none: bool = True) -> None:
        """torch's ``zero_grad``; with flat storage the gradient buffers are zeroed instead
        and the gradients stay views of them, whatever ``set_to_none`` says."""
        if not self.flat:
            return super().zero_grad(set_to_none)
        for buckets, loose in zip(self._buckets, self._loose, strict=True):
            for b in buckets:
                b.grad.zero_()
                if not b.intact():  # gradients replaced or parameters moved by other code
                    for p in b.params:
                        if p.grad is not None:
                            _zero(p, set_to_none)
            for p in loose:
                if p.grad is not None:
                    _zero(p, set_to_none)
        return None

    def _maker(self, group: dict) -> Callable[[Tensor], dict]:
        return lambda flat: self._init_state(group, flat)

    # -- the step ----------------------------------------------------------------------------

    @overload
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Perform one update. ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for i, group in enumerate(self.param_groups):
            if self.flat:
                self._step_flat(i, group)
                continue
            params, grads = [], []
            for p in group["params"]:
                if p.grad is not None:
                    params.append(p)
                    grads.append(p.grad)
            if params:
                self._update(group, params, grads)
        return loss

    def _step_flat(self, i: int, group: dict) -> None:
        """One update of group ``i`` with flat storage: one kernel per bucket."""
        loose = [p for p in self._loose[i] if p.grad is not None]
        if loose:
            self._update(group, loose, _grads(loose))
        buckets = self._buckets[i]
        if not all(b.intact() for b in buckets):
            # Gradients set to None or replaced, or parameters moved: rebuild the buckets where
            # the parameters now are (state included); a parameter without a gradient is
            # skipped this step, as torch skips it.
            skipped = {id(p) for b in buckets for p in b.params if p.grad is None}
            buckets = self._flatten(i)
            if skipped:
                params = [p for b in buckets for p in b.params if id(p) not in skipped]
                if params:
                    self._update(group, params, _grads(params))
                for b in buckets:  # the state, now partly or unevenly advanced, flat again
                    b.adopt_state(self.state, self._maker(group))
                return
        for b in buckets:
            if b.t is None:  # uneven state: per tensor
                self._update(group, b.params, b.grads)
                continue
            if b.state is None:
                b.create_state(self.state, self._maker(group))
            self._update_bucket(group, b)

    def _update_bucket(self, group: dict, b: Bucket) -> None:
        assert b.state is not None and b.t is not None
        backend = self._choose_backend(group, [b.param])
        b.t += 1
        state = dict(b.state)
        if b.steps is not None:
            b.steps.add_(1)
            state["step"] = b.steps[0]  # every parameter's counter holds the same count
        if backend == "native":
            kernel = self._native(group, b.param.device)
            assert kernel is not None
            call_native(kernel, [b.param], [b.grad], [state])
            return
        columns = [[b.state[k]] for k in self._state_keys(group)]
        RUNNERS[backend](type(self).rule, [b.param], [b.grad], columns,
                         [self._scalars(group, float(b.t))], self._options(group))

    def _update(self, group: dict, params: list[Tensor], grads: list[Tensor]) -> None:
        fresh: set[int] = set()
        states: list[dict] = []
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            if g.is_sparse:
                raise ValueError(
                    f"{type(self).__name__} got a sparse gradient for parameter {i} of its group; "
                    "sparse gradients are not supported (torch.optim.SparseAdam takes them)"
                )
            state = self.state.get(p)
            if not state:
                state = self._init_state(group, p)
                fresh.add(i)
                if state:  # like torch, keep no entry for a parameter without state
                    self.state[p] = state
            states.append(state)
        backend = self._choose_backend(group, params)  # may refuse: before any state changes
        if self.has_step:
            steps = [s["step"] for s in states]
            torch._foreach_add_(steps, 1)

        if backend == "native":
            kernel = self._native(group, params[0].device)
            assert kernel is not None  # _choose_backend picks "native" only where there is one
            call_native(kernel, params, grads, states)
            return

        keys = self._state_keys(group)
        columns = [[s[k] for s in states] for k in keys]
        if any(p.is_complex() for p in params):
            params, grads = _as_real(params), _as_real(grads)
            columns = [_as_real(c) for c in columns]
        if self.has_step:
            ts = [float(s) for s in steps]
        else:  # only the first update is special (torch's SGD starts its buffer at g)
            ts = [1.0 if i in fresh else 2.0 for i in range(len(params))]
        per_t = {t: self._scalars(group, t) for t in set(ts)}
        scalars = [per_t[t] for t in ts]
        RUNNERS[backend](type(self).rule, params, grads, columns, scalars, self._options(group))

    def _choose_backend(self, group: dict, params: list[Tensor]) -> str:
        backend = group["backend"]
        if group.get("foreach"):
            backend = "foreach"
        native = self._native(group, params[0].device) is not None and _native_dtypes(params)
        if backend == "native" and not native:
            raise ValueError(
                f"backend='native': torch has no fused {type(self).__name__} kernel for these "
                "options or tensors; use backend='fused' or 'auto'"
            )
        if group.get("fused"):  # torch's flag: one kernel per step, torch's own where it has one
            return "native" if native else "fused"
        if backend != "auto":
            return backend
        if native:
            return "native"
        cuda = params[0].device.type == "cuda"
        big = sum(p.numel() for p in params) >= FUSED_MIN_NUMEL
        if (cuda or big) and _backends.compile_works():
            return "fused"
        return "foreach" if cuda else "reference"


def _check_backend(group: dict) -> None:
    backend = group["backend"]
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {', '.join(BACKENDS)}")
    if group.get("fused") and group.get("foreach"):
        raise ValueError("fused=True and foreach=True exclude each other; set at most one")
    if backend != "auto" and (group.get("fused") or group.get("foreach")):
        raise ValueError(
            f"backend={backend!r} and torch's fused/foreach flags both given; use backend= alone"
        )
    for flag in ("capturable", "differentiable"):
        if group.get(flag):
            raise ValueError(f"{flag}=True is not supported by gradwise; use torch.optim for it")


def _grads(params: list[Tensor]) -> list[Tensor]:
    """The gradients of ``params``, every one of which has one."""
    return [p.grad for p in params if p.grad is not None]


def _zero(p: Tensor, set_to_none: bool) -> None:
    """torch's ``zero_grad`` for one parameter."""
    if set_to_none:
        p.grad = None
        return
    assert p.grad is not None
    if p.grad.grad_fn is not None:
        p.grad.detach_()
    else:
        p.grad.requires_grad_(False)
    p.grad.zero_()


def _native_dtypes(params: list[Tensor]) -> bool:
    return all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def _as_real(tensors: list[Tensor]) -> list[Tensor]:
    return [torch.view_as_real(t) if t.is_complex() else t for t in tensors]


def step_counter() -> Tensor:
    """torch's per-parameter step counter: a 0-d float32 tensor on the CPU."""
    return torch.tensor(0.0, dtype=torch.float32)


def call_native(kernel: Callable, params: list[Tensor], grads: list[Tensor],
                states: list[dict]) -> None:
    """Call ``kernel(params, grads, states)`` once per (device, dtype), as torch's kernels need.

    On an accelerator torch's fused kernels read the step counters on the device: move them there.
    """
    by_kind: dict[tuple, list[int]] = {}
    for i, p in enumerate(params):
        by_kind.setdefault((p.device, p.dtype), []).append(i)
    for (device, _), idx in by_kind.items():
        if device.type != "cpu":
            for i in idx:
                if "step" in states[i] and states[i]["step"].device != device:
                    states[i]["step"] = states[i]["step"].to(device)
        kernel([params[i] for i in idx], [grads[i] for i in idx], [states[i] for i in idx])
