"""How one update rule runs over many tensors.

An update rule is a pure function of one parameter's tensors, written as the slide writes it::

    new_p, *new_state = rule(p, g, *state, **scalars, **options)

``scalars`` are the numbers of this step (learning rate, bias corrections, ...) and ``options``
are static flags (``maximize``, ``amsgrad``, ...). The same function runs on three backends:

- ``reference``: eagerly, one parameter at a time; ``scalars`` are Python floats.
- ``foreach``: on lists of tensors at once, through ``torch._foreach_*`` kernels; the rule sees
  :class:`TensorList` values that overload the arithmetic it uses.
- ``fused``: compiled by ``torch.compile`` into one pass over memory per parameter; ``scalars``
  arrive as 0-d float64 tensors, so a changing learning rate never triggers a recompile.

A fourth backend, ``native``, calls torch's own fused kernels where torch implements exactly the
requested rule; each optimizer declares when that is the case.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor

BACKENDS = ("auto", "reference", "foreach", "fused", "native")

# On a CPU the fused backend pays a one-off compilation (seconds) and then saves about 4 ns per
# parameter and step over the reference backend; below this many parameters in a group (where
# the saving needs tens of thousands of steps to repay the compilation), `auto` keeps the
# reference backend, which starts at once.
FUSED_MIN_NUMEL = 1 << 17

# The fused kernel takes parameters in chunks of at most this many tensors. Chunk lengths are
# powers of two (a remainder of 7 runs as 4 + 2 + 1), so every model reuses at most four compiled
# kernels per rule; shapes are dynamic.
FUSED_CHUNK = 8

#: An update rule; it returns tensors, or :class:`TensorList` values on the foreach backend.
Rule = Callable[..., tuple[Any, ...]]
#: Tensors as torch's ``_foreach_*`` kernels take and return them.
Tensors = list[Tensor] | tuple[Tensor, ...]


class TensorList:
    """A list of tensors with the arithmetic of one tensor, computed by ``torch._foreach_*``.

    >>> a = TensorList([torch.ones(2), torch.ones(3)])
    >>> [t.tolist() for t in (2 * a + 1).tensors]
    [[3.0, 3.0], [3.0, 3.0, 3.0]]
    """

    __slots__ = ("tensors",)

    def __init__(self, tensors: Tensors):
        self.tensors = tensors

    # The operands of the foreach backend: other TensorLists and Python floats (the scalars).
    def __add__(self, other: TensorList | float) -> TensorList:
        if isinstance(other, TensorList):
            return TensorList(torch._foreach_add(self.tensors, other.tensors))
        return TensorList(torch._foreach_add(self.tensors, other))

    __radd__ = __add__

    def __sub__(self, other: TensorList | float) -> TensorList:
        if isinstance(other, TensorList):
            return TensorList(torch._foreach_sub(self.tensors, other.tensors))
        return TensorList(torch._foreach_sub(self.tensors, other))

    def __rsub__(self, other: float) -> TensorList:
        return TensorList(torch._foreach_add(torch._foreach_neg(self.tensors), other))

    def __mul__(self, other: TensorList | float) -> TensorList:
        if isinstance(other, TensorList):
            return TensorList(torch._foreach_mul(self.tensors, other.tensors))
        return TensorList(torch._foreach_mul(self.tensors, other))

    __rmul__ = __mul__

    def __truediv__(self, other: TensorList | float) -> TensorList:
        if isinstance(other, TensorList):
            return TensorList(torch._foreach_div(self.tensors, other.tensors))
        return TensorList(torch._foreach_div(self.tensors, other))

    def __rtruediv__(self, other: float) -> TensorList:
        return TensorList(torch._foreach_mul(torch._foreach_reciprocal(self.tensors), other))

    def __neg__(self) -> TensorList:
        return TensorList(torch._foreach_neg(self.tensors))

    def sqrt(self) -> TensorList:
        return TensorList(torch._foreach_sqrt(self.tensors))

    def lerp(self, end: TensorList, weight: float) -> TensorList:
        return TensorList(torch._foreach_lerp(self.tensors, end.tensors, weight))

    def maximum(self, other: TensorList) -> TensorList:
        return TensorList(torch._foreach_maximum(self.tensors, other.tensors))


#: A tensor operand of an update rule: one tensor (reference and fused backends) or a
#: TensorList (foreach backend). A rule's scalars are floats; the fused backend traces the rule
#: with 0-d tensors in their place (see the module docstring), which torch.compile treats alike.
T = TypeVar("T", Tensor, TensorList)


def run_reference(rule: Rule, params: list[Tensor], grads: list[Tensor],
                  states: list[list[Tensor]], scalars: Sequence[dict[str, float]],
                  options: dict[str, Any]) -> None:
    """Apply ``rule`` to one parameter at a time: the readable definition."""
    for i, (p, g) in enumerate(zip(params, grads, strict=True)):
        new = rule(p, g, *(s[i] for s in states), **scalars[i], **options)
        p.copy_(new[0])
        for s, value in zip(states, new[1:], strict=True):
            s[i].copy_(value)


def run_foreach(rule: Rule, params: list[Tensor], grads: list[Tensor],
                states: list[list[Tensor]], scalars: Sequence[dict[str, float]],
                options: dict[str, Any]) -> None:
    """Apply ``rule`` to all parameters that share the same scalars, with foreach kernels."""
    for idx in _same_scalars(scalars):
        new: tuple[TensorList, ...] = rule(
            TensorList([params[i] for i in idx]),
            TensorList([grads[i] for i in idx]),
            *(TensorList([s[i] for i in idx]) for s in states),
            **scalars[idx[0]],
            **options,
        )
        torch._foreach_copy_([params[i] for i in idx], new[0].tensors)
        for s, value in zip(states, new[1:], strict=True):
            torch._foreach_copy_([s[i] for i in idx], value.tensors)


def run_fused(rule: Rule, params: list[Tensor], grads: list[Tensor],
              states: list[list[Tensor]], scalars: Sequence[dict[str, float]],
              options: dict[str, Any]) -> None:
    """Apply ``rule`` through a compiled kernel, one pass over memory per parameter."""
    names = tuple(scalars[0])
    kernel = _fused_kernel(rule, tuple(sorted(options.items())), names)
    # The kernel sees every tensor as 1-D (a conv weight beside a bias would otherwise be a new
    # graph per mix of ranks) and as a plain tensor: torch.compile gives nn.Parameters static
    # shapes, a recompile per shape.
    rows = [_one_dim([p, g, *(s[i] for s in states)])
            for i, (p, g) in enumerate(zip(params, grads, strict=True))]
    params, grads = [r[0] for r in rows], [r[1] for r in rows]
    states = [[r[2 + k] for r in rows] for k in range(len(states))]
    h = torch.tensor([[sc[n] for n in names] for sc in scalars], dtype=torch.float64)
    if params[0].device.type != "cpu":
        h = h.to(params[0].device, non_blocking=True)
    start = 0
    for size in _chunk_sizes(len(params)):
        end = start + size
        kernel(params[start:end], grads[start:end], [s[start:end] for s in states], h[start:end])
        start = end


def _one_dim(tensors: list[Tensor]) -> list[Tensor]:
    """``tensors`` (one parameter's: itself, its gradient, its state) as 1-D aliases in memory
    order where they share one dense layout (contiguous or, say, channels-last); else as they
    are (an elementwise rule pairs elements by index, so the layouts must agree). Detached, so
    that none is a view: dynamo would guard on a view's base, its rank included."""
    if all(t.is_contiguous() for t in tensors):
        return [t.view(-1).detach() for t in tensors]
    strides = tensors[0].stride()
    order = sorted(range(len(strides)), key=lambda d: -strides[d])
    views = [t.permute(order) for t in tensors]
    if all(v.is_contiguous() for v in views):
        return [v.view(-1).detach() for v in views]
    return [t.detach() for t in tensors]


def _same_scalars(scalars: Sequence[dict]) -> list[list[int]]:
    """Indices grouped by identical scalar values (usually one group: all share one step)."""
    groups: dict[tuple, list[int]] = {}
    for i, sc in enumerate(scalars):
        groups.setdefault(tuple(sc.values()), []).append(i)
    return list(groups.values())


def _chunk_sizes(n: int) -> list[int]:
    """``n`` split into full chunks, then powers of two: 21 -> [8, 8, 4, 1]."""
    sizes = [FUSED_CHUNK] * (n // FUSED_CHUNK)
    rest = n % FUSED_CHUNK
    bit = FUSED_CHUNK
    while rest:
        bit //= 2
        if rest & bit:
            sizes.append(bit)
            rest -= bit
    return sizes


@functools.cache
def _fused_kernel(rule: Rule, options: tuple, names: tuple[str, ...]):
    opts = dict(options)

    def fused_step(params, grads, states, h):
        for i in range(len(params)):
            scalars = {name: h[i, j] for j, name in enumerate(names)}
            new = rule(params[i], grads[i], *(s[i] for s in states), **scalars, **opts)
            params[i].copy_(new[0])
            for s, value in zip(states, new[1:]):  # noqa: B905 (dynamo traces plain zip)
                s[i].copy_(value)

    # torch.compile keeps its cache and recompile budget per code object; a code object of its
    # own per (rule, options) keeps one optimizer's kernels from evicting another's.
    fused_step.__code__ = fused_step.__code__.replace(co_name=f"fused_{rule.__name__}")
    return torch.compile(fused_step, dynamic=True, fullgraph=True)


RUNNERS = {"reference": run_reference, "foreach": run_foreach, "fused": run_fused}


@functools.cache
def compile_works() -> bool:
    """Whether torch.compile can build a kernel here (it needs a C++ compiler on a CPU)."""
    try:
        f = torch.compile(lambda x: x * 2 + 1, dynamic=False, fullgraph=True)
        return bool(f(torch.ones(3)).eq(3).all())
    except Exception as exc:  # any failure means: do not pick `fused` automatically
        warnings.warn(
            f"gradwise: torch.compile is unavailable ({type(exc).__name__}: {exc}); "
            "backend='auto' falls back to the reference backend",
            RuntimeWarning,
            stacklevel=3,
        )
        return False
