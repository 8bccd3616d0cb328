"""Weight averaging (Polyak/EMA, SWA), snapshot ensembles and ensembles of models.

The lecture's last free points once training error is low: test with an average of the weights
along the trajectory, or with the average of several models' predictions.

- :class:`EMA`: an exponential moving average of the weights, ``avg <- d * avg + (1 - d) * w``
  after each optimizer step, with an optional warmup of ``d``.
- :class:`SWA`: the uniform average of the weights from a start on (Izmailov et al. 2018),
  ``avg_n = avg_{n-1} + (w_n - avg_{n-1}) / n``; :class:`SWASchedule` gives its constant or
  cyclic learning rate.
- :func:`update_bn`: batch-norm statistics recomputed for the weights a model holds (averaged
  weights need their own: the running statistics of the live model belong to other weights).
- :func:`snapshot_steps`: where a snapshot ensemble (Huang et al. 2017) takes its snapshots.
- :func:`ensemble_predict`, :func:`member_probabilities`, :func:`majority_vote`,
  :func:`disagreement`: predictions of an ensemble and how much its members disagree.

Both averages hold their own copy of the model's tensors, work with any ``nn.Module`` and any
optimizer, swap their weights into the model and back bit for bit, refuse to be used before
their first update, and keep their whole state in :meth:`EMA.state_dict`.

Example::

    >>> import torch
    >>> model = torch.nn.Linear(2, 1)
    >>> ema = EMA(model, decay=0.9)
    >>> with torch.no_grad():
    ...     _ = model.weight.add_(1.0)          # stands for an optimizer step
    >>> ema.update()
    >>> with ema.swapped():                      # the model holds the average here
    ...     averaged = model.weight.clone()
    >>> torch.allclose(averaged, model.weight - 0.9)
    True
"""

from __future__ import annotations

import contextlib
import copy
import operator
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ._checks import choice, integer, number
from .errors import UserError

#: What an average does with the model's buffers (batch-norm statistics and others).
BUFFER_MODES = ("average", "copy", "recompute")


_BatchNorm = nn.modules.batchnorm._BatchNorm


def _norms(model: nn.Module) -> list[_BatchNorm]:
    """The batch norms of ``model`` that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats
            and m.running_mean is not None]


def update_bn(model: nn.Module, batches: Iterable[Any],
              device: torch.device | str | None = None) -> int:
    """Recompute the running statistics of every batch norm in ``model`` from ``batches``.

    Each batch is an input tensor or a ``(inputs, targets, ...)`` tuple or list (its first item
    is fed to the model). The statistics are reset, then accumulated with ``momentum=None``: a
    cumulative average in which each batch counts once,
    ``running_n = running_{n-1} + (batch_stat_n - running_{n-1}) / n``. The model runs in
    training mode (as during training, so dropout is active) without gradients.

    Afterwards every batch norm gets back its own ``momentum`` (never left at 0 or ``None``
    unless it was so before) and every module its own training flag. If no batch comes, or the
    model fails on one, the statistics are left as they were. Returns the number of batches.
    """
    norms = _norms(model)
    if not norms:
        return 0
    momenta = [m.momentum for m in norms]
    modes = [(m, m.training) for m in model.modules()]
    saved = [{k: v.clone() for k, v in m.named_buffers(recurse=False)} for m in norms]
    count = 0
    try:
        with torch.no_grad():
            for batch in batches:
                x = batch[0] if isinstance(batch, list | tuple) and batch else batch
                if not isinstance(x, Tensor):
                    raise UserError(f"update_bn: batch {count} is a {type(x).__name__}; each "
                                    "batch must be a tensor or a (inputs, targets) pair")
                if count == 0:
                    for m in norms:
                        m.reset_running_stats()
                        m.momentum = None
                    model.train()
                model(x if device is None else x.to(device))
                count += 1
        if count == 0:
            raise UserError("update_bn got no batches; pass an iterable of input batches "
                            "(tensors or (inputs, targets) pairs) from the training data")
    except BaseException:
        with torch.no_grad():
            for m, buffers in zip(norms, saved, strict=True):
                for name, value in buffers.items():
                    getattr(m, name).copy_(value)
        raise
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        for module, training in modes:
            module.training = training
    return count


def _state_tensors(model: nn.Module) -> list[Tensor]:
    """``[*model.parameters(), *model.buffers()]`` in the same order and without duplicates
    (shared modules and tensors count once), but without ``named_modules``' generators and
    names: several times faster, which matters for an update after every step."""
    modules: list[nn.Module] = []
    seen_modules: set[int] = set()

    def visit(module: nn.Module) -> None:
        if id(module) in seen_modules:
            return
        seen_modules.add(id(module))
        modules.append(module)
        for child in module._modules.values():
            if child is not None:
                visit(child)

    visit(model)
    out: list[Tensor] = []
    for table in ("_parameters", "_buffers"):
        seen: set[int] = set()
        for module in modules:
            for t in getattr(module, table).values():
                if t is not None and id(t) not in seen:
                    seen.add(id(t))
                    out.append(t)
    return out


class _Average:
    """What :class:`EMA` and :class:`SWA` share: a copy of the model's parameters and buffers,
    updated by one ``torch._foreach_lerp_`` over the averaged tensors (and one
    ``torch._foreach_copy_`` over those that are copied), swapped in and out, saved and loaded.
    """

    _kind = "average"

    def __init__(self, model: nn.Module, buffers: str):
        if not isinstance(model, nn.Module):
            raise UserError(f"model={model!r} is invalid; model must be a torch.nn.Module")
        self.buffers = choice("buffers", buffers, BUFFER_MODES)
        self.model = model
        n_params = len(list(model.parameters()))
        if not n_params:
            raise UserError(f"the model has no parameters: there is nothing to average "
                            f"({type(model).__name__})")
        #: Names of the tensors kept: parameters, then buffers (non-persistent ones too).
        self._names = ([n for n, _ in model.named_parameters()]
                       + [n for n, _ in model.named_buffers()])
        self._seen = _state_tensors(model)
        self._pointers = [t.data_ptr() for t in self._seen]
        with torch.no_grad():
            self._tensors = [t.detach().clone() for t in self._seen]
        floating = [t.is_floating_point() or t.is_complex() for t in self._tensors]
        # averaged: floating parameters, and floating buffers in "average" mode; the rest
        # (integer tensors such as num_batches_tracked, buffers otherwise) is copied
        self._lerp = [i for i, f in enumerate(floating)
                      if f and (i < n_params or self.buffers == "average")]
        lerp = set(self._lerp)
        self._copy = [i for i in range(len(self._tensors)) if i not in lerp]
        self._lerp_mine = [self._tensors[i] for i in self._lerp]
        self._copy_mine = [self._tensors[i] for i in self._copy]
        self._has_bn = bool(_norms(model))
        #: Number of updates averaged so far.
        self.n_updates = 0
        self._stale_bn = False
        self._inside = 0  # how deep swapped() has the model holding the average

    # -- the live model's tensors ------------------------------------------------------------

    def _live(self, model: nn.Module, *, check: bool = True) -> list[Tensor]:
        """``model``'s tensors in the order of ours; a clear error if they do not match. With
        ``check=False`` (the update after each step), the very tensors seen last time, on the
        same memory (``.to()``/``.double()`` replace a parameter's memory, not the parameter),
        pass without a look at their shapes."""
        live = _state_tensors(model)
        if (not check and model is self.model and len(live) == len(self._seen)
                and all(map(operator.is_, live, self._seen))
                and [t.data_ptr() for t in live] == self._pointers):
            return live
        if len(live) != len(self._tensors):
            names = [n for n, _ in model.named_parameters()] + [n for n, _ in
                                                                 model.named_buffers()]
            missing = sorted(set(self._names) - set(names))
            extra = sorted(set(names) - set(self._names))
            raise UserError(f"the model's tensors differ from those the {self._kind} was made "
                            f"with (missing: {missing or 'none'}, new: {extra or 'none'})")
        for name, mine, theirs in zip(self._names, self._tensors, live, strict=True):
            if (mine.shape != theirs.shape or mine.dtype != theirs.dtype
                    or mine.device != theirs.device):
                raise UserError(
                    f"the model's tensor {name!r} is {tuple(theirs.shape)} {theirs.dtype} on "
                    f"{theirs.device}, but the {self._kind} keeps {tuple(mine.shape)} "
                    f"{mine.dtype} on {mine.device}; make the {self._kind} after moving or "
                    "converting the model")
        if model is self.model:
            self._seen, self._pointers = live, [t.data_ptr() for t in live]
        return live

    def _average(self, weight: float) -> None:
        """``avg <- avg + weight * (w - avg)`` for the averaged tensors, copy the others."""
        if self._inside:
            raise UserError(f"{self._kind}.update() inside {self._kind}.swapped(): the model "
                            "holds the average there; update after the block")
        live = self._live(self.model, check=False)
        with torch.no_grad():
            torch._foreach_lerp_(self._lerp_mine, [live[i] for i in self._lerp], weight)
            if self._copy:
                torch._foreach_copy_(self._copy_mine, [live[i] for i in self._copy])
        self.n_updates += 1
        self._stale_bn = self.buffers == "recompute" and self._has_bn

    # -- using the average -------------------------------------------------------------------

    @property
    def stale_bn(self) -> bool:
        """Whether the batch-norm statistics must be recomputed (``buffers="recompute"``, an
        update since the last :meth:`recompute_bn`) before the average is used."""
        return self._stale_bn

    def _not_ready(self) -> str:
        return (f"the {self._kind} has no update yet: call update() after an optimizer step "
                "before using it (a never-updated copy holds the initial weights)")

    def _check_ready(self) -> None:
        if self.n_updates == 0:
            raise UserError(self._not_ready())
        if self._stale_bn:
            raise UserError(
                f"the {self._kind}'s batch-norm statistics are stale (buffers='recompute'): "
                "call recompute_bn(batches) with training data after the last update(), "
                "or choose buffers='average' or 'copy'")

    @contextlib.contextmanager
    def _swap(self, model: nn.Module) -> Iterator[list[Tensor]]:
        live = self._live(model)
        with torch.no_grad():
            saved = [t.clone() for t in live]
            torch._foreach_copy_(live, self._tensors)
        try:
            yield live
        finally:
            with torch.no_grad():
                torch._foreach_copy_(live, saved)

    @contextlib.contextmanager
    def swapped(self, model: nn.Module | None = None) -> Iterator[nn.Module]:
        """Inside the block, ``model`` (the one the average was made with by default) holds the
        averaged parameters and buffers; on leaving, its own come back bit for bit, and
        whatever changed them inside the block is undone.

        Raises :class:`~gradwise.errors.UserError` before the first :meth:`update`, and with
        ``buffers="recompute"`` while the statistics are stale (see :meth:`recompute_bn`).
        """
        self._check_ready()
        model = self.model if model is None else model
        with self._swap(model):
            self._inside += model is self.model
            try:
                yield model
            finally:
                self._inside -= model is self.model

    def recompute_bn(self, batches: Iterable[Any],
                     device: torch.device | str | None = None) -> int:
        """Recompute the batch-norm statistics of the averaged weights with :func:`update_bn`
        on ``batches`` (training data) and keep them as the average's buffers; the live model
        is left as it was. Needed after the last update with ``buffers="recompute"``; in the
        other modes the next update replaces the statistics again. Returns the batch count.
        """
        if self.n_updates == 0:
            raise UserError(self._not_ready())
        with self._swap(self.model) as live:
            count = update_bn(self.model, batches, device)
            with torch.no_grad():
                torch._foreach_copy_(self._tensors, live)
        self._stale_bn = False
        return count

    def module(self) -> nn.Module:
        """A standalone copy of the model holding the averaged weights and buffers, for
        evaluation (``.eval()`` it first); the average and the live model stay as they are."""
        self._check_ready()
        twin = copy.deepcopy(self.model)
        for p in twin.parameters():
            p.grad = None
        with torch.no_grad():
            torch._foreach_copy_(self._live(twin), self._tensors)
        return twin

    # -- checkpoints -------------------------------------------------------------------------

    def _settings(self) -> dict[str, Any]:
        return {"buffers": self.buffers}

    def state_dict(self) -> dict[str, Any]:
        """The whole averaging state: counters, settings and the averaged tensors by name (the
        tensors themselves, as torch's state dicts give them: save or clone before updating)."""
        return {"kind": self._kind, "n_updates": self.n_updates, "stale_bn": self._stale_bn,
                "settings": self._settings(),
                "tensors": dict(zip(self._names, self._tensors, strict=True))}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` gave (the settings stay the constructor's), so that
        further updates continue exactly where the saved average stopped."""
        if not isinstance(state, dict) or not {"kind", "n_updates", "tensors"} <= set(state):
            raise UserError(f"not a {self._kind} state: expected a dict with kind, n_updates "
                            "and tensors, as state_dict() gives")
        if state["kind"] != self._kind:
            raise UserError(f"this is the state of a {state['kind']!r}, not of a "
                            f"{self._kind!r}")
        tensors = state["tensors"]
        if not isinstance(tensors, dict) or set(tensors) != set(self._names):
            got = set(tensors) if isinstance(tensors, dict) else set()
            raise UserError(f"the saved {self._kind} holds other tensors than the model "
                            f"(missing: {sorted(set(self._names) - got) or 'none'}, "
                            f"unknown: {sorted(got - set(self._names)) or 'none'})")
        for name, mine in zip(self._names, self._tensors, strict=True):
            saved = tensors[name]
            if not isinstance(saved, Tensor) or saved.shape != mine.shape:
                shape = tuple(saved.shape) if isinstance(saved, Tensor) else type(saved).__name__
                raise UserError(f"the saved {self._kind}'s tensor {name!r} is {shape}, the "
                                f"model's is {tuple(mine.shape)}")
        counters = {"n_updates": integer("n_updates", state["n_updates"], 0),
                    **self._counters(state)}
        with torch.no_grad():
            for name, mine in zip(self._names, self._tensors, strict=True):
                mine.copy_(tensors[name])
        for key, value in counters.items():
            setattr(self, key, value)
        self._stale_bn = bool(state.get("stale_bn", False))

    def _counters(self, state: dict[str, Any]) -> dict[str, int]:
        """A subclass's own counters in a saved state, checked."""
        return {}

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self._settings().items())
        return f"{type(self).__name__}({settings}, n_updates={self.n_updates})"


class EMA(_Average):
    """Exponential moving average of a model's weights (Polyak averaging with a decay).

    Made from the model's weights ``w_0``; after the ``t``-th call of :meth:`update`
    (``t = 0, 1, ...``, one after each optimizer step, the live weights being ``w_{t+1}``)::

        avg_0     = w_0
        avg_{t+1} = d_t * avg_t + (1 - d_t) * w_{t+1}          (one torch._foreach_lerp_)
        d_t       = decay                                       (warmup=False)
        d_t       = min(decay, 1 - (1 + t / gamma) ** -power)   (warmup=True)

    so without warmup ``avg_n = d^n w_0 + sum_{k=1..n} (1 - d) d^(n-k) w_k``. The warmup
    (timm's ``ModelEmaV3`` form) starts at ``d_0 = 0``: the first update copies the model, and
    the early, poor weights are soon forgotten; ``gamma=1, power=3/4`` reaches 0.999 near 10k
    updates, ``power=2/3`` reaches 0.9999 near 1M.

    ``buffers``: ``"average"`` (floating buffers such as batch-norm statistics averaged like the
    weights, integer ones copied), ``"copy"`` (taken from the live model at each update), or
    ``"recompute"`` (copied, but the batch-norm statistics must be recomputed for the averaged
    weights with :meth:`recompute_bn` before use).

    Args: ``decay`` in [0, 1); ``gamma`` > 0 and ``power`` > 0 shape the warmup.
    """

    _kind = "EMA"

    def __init__(self, model: nn.Module, decay: float = 0.999, *, warmup: bool = False,
                 gamma: float = 1.0, power: float = 0.75, buffers: str = "average"):
        self.decay = number("decay", decay, 0, 1, open_high=True)
        if not isinstance(warmup, bool):
            raise UserError(f"warmup={warmup!r} is invalid; warmup must be true or false")
        self.warmup = warmup
        self.gamma = number("gamma", gamma, 0, open_low=True)
        self.power = number("power", power, 0, open_low=True)
        super().__init__(model, buffers)

    def decay_at(self, t: int) -> float:
        """``d_t``, the decay of update ``t`` (0 for the first)."""
        if not self.warmup:
            return self.decay
        return min(self.decay, 1 - (1 + t / self.gamma) ** -self.power)

    def update(self) -> None:
        """Fold the model's current weights into the average (after each optimizer step)."""
        self._average(1 - self.decay_at(self.n_updates))

    def _settings(self) -> dict[str, Any]:
        return {"decay": self.decay, "warmup": self.warmup, "gamma": self.gamma,
                "power": self.power, "buffers": self.buffers}


class SWA(_Average):
    """Stochastic weight averaging: the uniform average of the weights from a start on.

    :meth:`update` is called at a fixed rhythm (usually once an epoch, or at each cycle's end
    with a cyclic LR); the first ``start`` calls are counted but not averaged. From then on,
    with ``w_n`` the weights at the ``n``-th averaged call (``n = 1, 2, ...``)::

        avg_n = avg_{n-1} + (w_n - avg_{n-1}) / n     (one torch._foreach_lerp_; avg_1 = w_1)

    which is ``(w_1 + ... + w_n) / n``, as torch's ``AveragedModel`` computes it.

    ``buffers`` as for :class:`EMA`; the default ``"recompute"`` is SWA's recipe: after the
    last update, :meth:`recompute_bn` on the training data (torch's ``AveragedModel`` copies
    the live statistics unless ``use_buffers=True``, and needs ``update_bn`` by hand).
    """

    _kind = "SWA"

    def __init__(self, model: nn.Module, start: int = 0, *, buffers: str = "recompute"):
        self.start = integer("start", start, 0)
        #: Number of update() calls so far, averaged or not.
        self.calls = 0
        super().__init__(model, buffers)

    def update(self) -> bool:
        """Count one call and, from call ``start`` on, fold the weights into the average.
        Returns whether this call averaged."""
        self.calls += 1
        if self.calls <= self.start:
            return False
        self._average(1 / (self.n_updates + 1))
        return True

    def _not_ready(self) -> str:
        return (f"the SWA has averaged nothing yet: it skips its first {self.start} update() "
                f"calls and has had {self.calls}; use the live model until then")

    def _settings(self) -> dict[str, Any]:
        return {"start": self.start, "buffers": self.buffers}

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "calls": self.calls}

    def _counters(self, state: dict[str, Any]) -> dict[str, int]:
        return {"calls": integer("calls", state.get("calls", 0), 0)}


@dataclass
class SWASchedule:
    """SWA's learning-rate factor (``lr(t) = base_lr * factor(t)``, a ``LambdaLR`` lambda):
    ``before(t)`` until step ``start`` (1 if ``before`` is None), then cycles of ``cycle`` steps
    that each fall linearly from ``high`` to ``low`` (Izmailov et al. 2018)::

        factor(t) = before(t)                                  t < start
        factor(t) = low + (high - low) * (1 - (i + 1) / cycle)   i = (t - start) mod cycle

    ``cycle=1`` (the default) is the constant ``low``. Average at the cycles' ends, where
    :meth:`averages_at` is true (every step from ``start`` when ``cycle=1``).

    >>> s = SWASchedule(start=2, low=0.1, cycle=3)
    >>> [round(s(t), 2) for t in range(7)]
    [1.0, 1.0, 0.7, 0.4, 0.1, 0.7, 0.4]
    >>> [t for t in range(8) if s.averages_at(t)]
    [4, 7]
    """

    start: int
    low: float
    high: float = 1.0
    cycle: int = 1
    before: Callable[[int], float] | None = None

    def __post_init__(self) -> None:
        self.start = integer("start", self.start, 0)
        self.low = number("low", self.low, 0, open_low=True)
        self.high = number("high", self.high, 0, open_low=True)
        self.cycle = integer("cycle", self.cycle, 1)
        if self.before is not None and not callable(self.before):
            raise UserError(f"before={self.before!r} is invalid; before must be a function of "
                            "the step (a schedule) or None")

    def __call__(self, step: int) -> float:
        if step < self.start:
            return 1.0 if self.before is None else float(self.before(step))
        i = (step - self.start) % self.cycle
        return self.low + (self.high - self.low) * (1 - (i + 1) / self.cycle)

    def averages_at(self, step: int) -> bool:
        """Whether step ``step`` ends a cycle, where SWA takes the weights."""
        return step >= self.start and (step - self.start + 1) % self.cycle == 0


# -- snapshot ensembles --------------------------------------------------------------------------

def snapshot_steps(total_steps: int, cycles: int) -> list[int]:
    """The steps (0-based, as schedules count them) after which a snapshot ensemble takes its
    snapshots: the last step of each cosine cycle of ``P = ceil(total_steps / cycles)`` steps,
    where the learning rate is lowest (Huang et al. 2017)::

        snapshot_k = min((k + 1) * P, total_steps) - 1        k = 0 .. cycles - 1

    The cycles are those of gradwise's ``cosine_restarts`` schedule with ``period=P``
    (``CosineRestarts(P)``); when ``cycles`` does not divide ``total_steps``, the last cycle is
    cut short and its snapshot is the last step of training. ``cycles`` must leave every cycle
    at least one step: ``(cycles - 1) * P < total_steps`` (a divisor of ``total_steps`` does).

    >>> snapshot_steps(12, 3), snapshot_steps(10, 3)
    ([3, 7, 11], [3, 7, 9])
    """
    total_steps = integer("total_steps", total_steps, 1)
    cycles = integer("cycles", cycles, 1, total_steps)
    period = -(-total_steps // cycles)
    if (cycles - 1) * period >= total_steps:
        raise UserError(
            f"cycles={cycles} is invalid for total_steps={total_steps}: cycles of "
            f"ceil({total_steps}/{cycles}) = {period} steps leave the last "
            f"{cycles - (total_steps - 1) // period - 1} cycle(s) without a step; choose cycles "
            f"with (cycles - 1) * ceil(total_steps / cycles) < total_steps, such as a divisor "
            f"of {total_steps}")
    return [min((k + 1) * period, total_steps) - 1 for k in range(cycles)]


# -- ensembles of models ---------------------------------------------------------------------

@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _device_of(model: nn.Module, default: torch.device) -> torch.device:
    for t in model.parameters():
        return t.device
    return default


def member_probabilities(models: Sequence[nn.Module], x: Tensor,
                         batch_size: int | None = None) -> list[Tensor]:
    """Each model's softmax probabilities on ``x`` (``N`` examples): a list of ``(N, C)``
    float tensors on ``x``'s device. The models run in eval mode without gradients, ``x`` in
    batches of ``batch_size`` (all at once if None) on each model's device; each module's
    training flag is restored afterwards."""
    if isinstance(models, nn.Module) or not isinstance(models, Sequence) or not models:
        raise UserError("models must be a non-empty list of torch.nn.Module")
    for i, m in enumerate(models):
        if not isinstance(m, nn.Module):
            raise UserError(f"models[{i}] is a {type(m).__name__}, not a torch.nn.Module")
    if not isinstance(x, Tensor) or x.dim() < 1 or len(x) == 0:
        raise UserError("x must be a tensor with at least one example (first dimension)")
    size = len(x) if batch_size is None else integer("batch_size", batch_size, 1)
    out = []
    with torch.no_grad():
        for model in models:
            device = _device_of(model, x.device)
            with _eval_mode(model):
                parts = [torch.softmax(model(x[i:i + size].to(device)).float(), dim=1)
                         for i in range(0, len(x), size)]
            out.append(torch.cat(parts).to(x.device))
    return out


def ensemble_predict(models: Sequence[nn.Module], x: Tensor,
                     batch_size: int | None = None) -> Tensor:
    """The ensemble's probabilities: the mean over the ``M`` members of their softmax,
    ``p(y | x) = (1 / M) sum_m softmax(f_m(x))``, an ``(N, C)`` tensor (see
    :func:`member_probabilities` for how the models run)."""
    return torch.stack(member_probabilities(models, x, batch_size)).mean(dim=0)


def _stack(probabilities: Sequence[Tensor] | Tensor) -> Tensor:
    """The members' probabilities as one ``(M, N, C)`` tensor, or a clear error."""
    if isinstance(probabilities, Tensor):
        members = list(probabilities) if probabilities.dim() == 3 else []
    elif isinstance(probabilities, Sequence) and all(isinstance(p, Tensor)
                                                      for p in probabilities):
        members = list(probabilities)
    else:
        members = []
    if not members or any(p.dim() != 2 or p.shape != members[0].shape for p in members):
        raise UserError("probabilities must be a non-empty list of (examples, classes) "
                        "tensors of one shape, one per member (or an (M, N, C) tensor)")
    return torch.stack(members)


def probability_scores(probabilities: Tensor, y: Tensor) -> tuple[float, float]:
    """``(loss, accuracy)`` of class probabilities ``(N, C)`` against labels ``(N,)``: the mean
    negative log-likelihood ``-(1/N) sum_i log p(y_i | x_i)`` and the fraction of examples whose
    most probable class is ``y_i`` (NaN, NaN for no examples).

    >>> loss, acc = probability_scores(torch.tensor([[0.5, 0.5], [0.8, 0.2]]), torch.tensor([0, 1]))
    >>> round(loss, 4), acc          # (log 2 + log 5) / 2; the second example is missed
    (1.1513, 0.5)
    """
    if len(y) == 0:
        return float("nan"), float("nan")
    p_true = probabilities.gather(1, y[:, None]).clamp_min(torch.finfo(torch.float32).tiny)
    correct = int((probabilities.argmax(1) == y).sum())
    return float(-p_true.log().mean()), correct / len(y)


def majority_vote(probabilities: Sequence[Tensor] | Tensor) -> Tensor:
    """The class most members predict (each member's argmax is one vote), per example: an
    ``(N,)`` long tensor. A tie goes to the tied class with the highest mean probability
    (then to the lowest class index).

    >>> p = [torch.tensor([[0.9, 0.1], [0.4, 0.6]]), torch.tensor([[0.2, 0.8], [0.3, 0.7]])]
    >>> majority_vote(p).tolist()      # example 0: one vote each, class 0 has mean 0.55
    [0, 1]
    """
    probs = _stack(probabilities).double()
    votes = torch.nn.functional.one_hot(probs.argmax(dim=2), probs.shape[2]).sum(dim=0)
    # votes are whole numbers; half the mean probability (< 1) only breaks ties
    return (votes + probs.mean(dim=0) / 2).argmax(dim=1)


def disagreement(probabilities: Sequence[Tensor] | Tensor) -> float:
    """The members' pairwise disagreement: over all ``M (M - 1) / 2`` pairs of members, the
    mean fraction of examples on which the two predict different classes (argmax)::

        D = 2 / (M (M - 1)) * sum_{a < b} (1 / N) * #{i : argmax p_a(x_i) != argmax p_b(x_i)}

    0 when all members agree everywhere; needs at least two members.

    >>> p = [torch.tensor([[0.9, 0.1], [0.4, 0.6]]), torch.tensor([[0.2, 0.8], [0.3, 0.7]])]
    >>> disagreement(p)
    0.5
    """
    labels = _stack(probabilities).argmax(dim=2)
    m = len(labels)
    if m < 2:
        raise UserError(f"disagreement needs at least 2 members, got {m}")
    differ = (labels[:, None, :] != labels[None, :, :]).double().mean(dim=2)
    return float(differ.sum() / (m * (m - 1)))


__all__ = ["BUFFER_MODES", "EMA", "SWA", "SWASchedule", "disagreement", "ensemble_predict",
           "majority_vote", "member_probabilities", "probability_scores", "snapshot_steps",
           "update_bn"]
