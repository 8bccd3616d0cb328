"""Watching a run from the inside: the lecture's sanity numbers, measured while training.

- **Initial loss.** A softmax classifier that starts from near-uniform predictions has loss
  ``ln(C)`` for ``C`` classes (2.303 for 10). A first loss outside ``[0.7, 1.3] * ln(C)`` means
  the initialisation, the labels or the loss is not what it seems (mixup and label smoothing
  move it by far less than that).
- **Update/weight ratio.** ``||w_after - w_before|| / ||w_before||`` per weight tensor, the
  rule of thumb being about ``1e-3``. A median over the layers below ``1e-5`` says the learning
  rate is far too low; above ``1e-1``, far too high. Judged only while the schedule keeps the
  learning rate at ``MIN_LR_FRACTION`` (10%) or more of its base value: during a warmup or at
  the end of a decay a tiny ratio is the schedule's doing, not a mistake.
- **Gradient norms** per weight tensor, and the total norm in the step records.
- **Dead ReLUs.** Per ``nn.ReLU`` module, the fraction of units (features, or channels of a
  conv map) that output zero for every sample of the batch. Above half is worth a warning.

Measurements happen on "monitor steps" (step 1, then every ``every`` steps) and cost one copy
of the weights and a pass of forward hooks on those steps only.
"""

from __future__ import annotations

import math

import torch
from torch import nn

INITIAL_LOSS_BAND = (0.7, 1.3)   # x ln(C)
UPDATE_RATIO_BAND = (1e-5, 1e-1)  # median over layers; the rule of thumb is ~1e-3
DEAD_RELU_WARNING = 0.5
MIN_LR_FRACTION = 0.1


class Monitor:
    """Collects the numbers above for ``model``; ``warnings`` holds each distinct warning once.

    Usage per training step::

        measuring = monitor.begin(step)      # before the forward pass
        ... forward, backward ...
        monitor.before_update()              # before optimizer.step()
        ... optimizer.step() ...
        record = monitor.end(lr_fraction)    # a dict for metrics.jsonl, or None

    Gradient norms are read at ``end`` (after clipping, if any).
    """

    def __init__(self, model: nn.Module, num_classes: int, every: int):
        self.model = model
        self.num_classes = num_classes
        self.every = every
        self._warnings: dict[str, str] = {}  # kind -> first message of that kind
        self._weights = {name: p for name, p in model.named_parameters()
                         if p.requires_grad and p.ndim >= 2}
        self._relus = {name: m for name, m in model.named_modules() if isinstance(m, nn.ReLU)}
        self._active = False
        self._before: dict[str, torch.Tensor] = {}
        self._dead: dict[str, float] = {}
        self._hooks: list = []

    def check_initial_loss(self, loss: float) -> None:
        expected = math.log(self.num_classes)
        low, high = INITIAL_LOSS_BAND
        if self.num_classes > 1 and not low * expected <= loss <= high * expected:
            self._warn("initial-loss",
                       f"initial loss {loss:.3f} is far from ln({self.num_classes}) = "
                       f"{expected:.3f}, the loss of uniform predictions: check the labels, "
                       "the loss and the scale of the last layer's initial weights")

    def begin(self, step: int) -> bool:
        """Start measuring if ``step`` (1-based) is a monitor step; returns whether it is."""
        self._active = self.every > 0 and (step == 1 or step % self.every == 0)
        if self._active:
            self._dead = {}
            self._hooks = [m.register_forward_hook(self._dead_hook(name))
                           for name, m in self._relus.items()]
        return self._active

    def before_update(self) -> None:
        """Remember the weights, to measure the update."""
        if self._active:
            self._before = {name: p.detach().clone() for name, p in self._weights.items()}

    def end(self, lr_fraction: float = 1.0) -> dict | None:
        """The monitor record of this step (``None`` if it was not a monitor step);
        ``lr_fraction``: the step's learning rate over its base value (the schedule's factor)."""
        if not self._active:
            return None
        self._active = False
        self._remove_hooks()
        grad_norms = {name: float(p.grad.norm()) for name, p in self._weights.items()
                      if p.grad is not None}
        ratios = {}
        for name, before in self._before.items():
            scale = float(before.norm())
            if scale > 0:
                ratios[name] = float((self._weights[name].detach() - before).norm()) / scale
        self._before = {}
        self._check(ratios if lr_fraction >= MIN_LR_FRACTION else {})
        return {"update_ratio": ratios, "grad_norm": grad_norms, "dead_relu": self._dead}

    def _check(self, ratios: dict[str, float]) -> None:
        if ratios:
            # the lower median: with few layers, the head (initialised near zero on purpose,
            # so its first updates are large next to it) must not decide alone
            median = sorted(ratios.values())[(len(ratios) - 1) // 2]
            low, high = UPDATE_RATIO_BAND
            if not low <= median <= high:
                side, verdict = ("below", "too low") if median < low else ("above", "too high")
                self._warn("update-ratio",
                           f"update/weight ratio {median:.1e} (median over layers) is far "
                           f"{side} the ~1e-3 rule of thumb: the learning rate is probably "
                           f"{verdict}")
        for name, fraction in self._dead.items():
            if fraction > DEAD_RELU_WARNING:
                self._warn(f"dead:{name}",
                           f"{100 * fraction:.0f}% of the units after {name} are dead (zero "
                           "for a whole batch): lower the learning rate or check the "
                           "initialisation")

    def _dead_hook(self, name: str):
        def hook(module, inputs, output):
            # units are features (N, F) or channels (N, C, ...): alive if any sample fires.
            # A ReLU's outputs are >= 0, so a unit fired iff its sum is > 0 (NaN: not fired,
            # as NaN > 0 is false); one sum is ~40x cheaper than (output > 0).any() over NHWC
            dims = [0] + list(range(2, output.ndim))
            fired = output.detach().sum(dim=dims) > 0
            self._dead[name] = float((~fired).float().mean())
        return hook

    def _remove_hooks(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    @property
    def warnings(self) -> list[str]:
        return list(self._warnings.values())

    def state_dict(self) -> dict[str, str]:
        """The warnings so far (kept in checkpoints, so a resumed run still reports them)."""
        return dict(self._warnings)

    def load_state_dict(self, state: dict[str, str]) -> None:
        self._warnings = dict(state)

    def _warn(self, kind: str, text: str) -> None:
        self._warnings.setdefault(kind, text)
