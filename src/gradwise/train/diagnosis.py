"""Reading the curves for the user: one label, the numbers behind it, and what to try next.

The lecture's babysitting rules, checked in this order (the first that matches wins):

==============  ===================================================================================
label           fires when (thresholds are the module constants)
==============  ===================================================================================
diverging       the run was stopped (loss NaN or above 3x the initial loss), or the epoch train
                loss ended above ``RISE`` (1.5) x its minimum and gave back at least
                ``GIVE_BACK`` (10%) of its fall from the first loss: it went down, then up
                (near zero, 0.0008 -> 0.0013 is noise, not divergence)
not-learning    the final epoch train loss is above ``STALL`` (0.9) x the first step's loss
overfitting     final train accuracy - val accuracy > ``GAP`` (0.05, eval mode for both), and
                the gap is at least ``GAP_SHARE`` (1/3) of the val error: closing it would
                remove a good share of the mistakes (a 5-point gap at 35% accuracy is a weak
                model first, not overfitting)
plateau         over the last ``max(3, epochs // 4)`` epochs the train loss improved by less
                than ``FLAT`` (2%) while the learning rate stayed within 1.5x, and training has
                not converged (train accuracy < 99%)
underfitting    train accuracy < ``FIT`` (0.95) without the gap above: you could fit harder
healthy         none of the above
==============  ===================================================================================

A plateau needs at least 4 epochs of records; gaps use the eval-mode accuracies of the summary
when given (the epoch records' train accuracy is a running mean with dropout and augmentation on).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

RISE = 1.5
GIVE_BACK = 0.1
STALL = 0.9
GAP = 0.05
GAP_SHARE = 1 / 3
FLAT = 0.02
FIT = 0.95
CONVERGED = 0.99


@dataclass(frozen=True)
class Facts:
    """What every rule reads: the step and epoch records of a run and the numbers drawn from
    them (``evidence``: the facts every label's evidence starts with)."""

    steps: list[dict]
    epochs: list[dict]
    initial: float             # the first step's loss
    losses: list[float]        # the epoch train losses
    train_accuracy: float
    val_accuracy: float

    @property
    def final(self) -> float:
        return self.losses[-1]

    @property
    def lowest(self) -> float:
        return min(self.losses)

    @property
    def gap(self) -> float:
        return self.train_accuracy - self.val_accuracy

    @property
    def evidence(self) -> dict:
        return {"initial_loss": self.initial, "final_train_loss": self.final,
                "train_accuracy": self.train_accuracy, "val_accuracy": self.val_accuracy,
                "gap": self.gap}


def _diverging(f: Facts) -> dict | None:
    if (f.final > RISE * f.lowest and f.final - f.lowest > GIVE_BACK * (f.initial - f.lowest)
            and f.losses.index(f.lowest) < len(f.losses) - 1):
        epoch = f.losses.index(f.lowest) + 1
        return _result("diverging", f"the train loss fell to {f.lowest:.3g} at epoch {epoch}, "
                       f"then rose to {f.final:.3g}", _DIVERGING_ADVICE,
                       {**f.evidence, "lowest_train_loss": f.lowest, "lowest_epoch": epoch})
    return None


def _not_learning(f: Facts) -> dict | None:
    if f.final > STALL * f.initial:
        return _result("not-learning",
                       f"the train loss barely moved: {f.initial:.3g} at the start, "
                       f"{f.final:.3g} after {len(f.epochs)} epochs", _NOT_LEARNING_ADVICE,
                       {**f.evidence, "loss_ratio": f.final / f.initial,
                        "lr": f.epochs[-1]["lr"]})
    return None


def _overfitting(f: Facts) -> dict | None:
    if f.gap > GAP and f.gap >= GAP_SHARE * (1 - f.val_accuracy):
        opened = next((r["epoch"] for r in f.epochs
                       if r["train_accuracy"] - r["val_accuracy"] > GAP), f.epochs[-1]["epoch"])
        best = max(f.epochs, key=lambda r: r["val_accuracy"])
        return _result("overfitting",
                       f"train accuracy {100 * f.train_accuracy:.1f}% vs val "
                       f"{100 * f.val_accuracy:.1f}%: a gap of {100 * f.gap:.1f} points, "
                       f"above {100 * GAP:.0f} since epoch {opened}",
                       _overfitting_advice(best["epoch"], len(f.epochs)),
                       {**f.evidence, "gap_opened_epoch": opened,
                        "best_val_epoch": best["epoch"], "best_val_accuracy": best["val_accuracy"]})
    return None


def _plateau(f: Facts) -> dict | None:
    flat_from = _plateau_start(f.epochs)
    if flat_from is not None and f.train_accuracy < CONVERGED:
        return _result("plateau",
                       f"the train loss has stayed flat (within {100 * FLAT:.0f}%) since epoch "
                       f"{flat_from} at a constant learning rate",
                       [f"decay the learning rate (e.g. 10x, or a step/cosine schedule) around "
                        f"epoch {flat_from}, where the curve flattened",
                        "a plateau can also be a learning rate slightly too high: the loss "
                        "bounces at the noise floor; decay breaks it"],
                       {**f.evidence, "flat_since_epoch": flat_from, "lr": f.epochs[-1]["lr"]})
    return None


def _underfitting(f: Facts) -> dict | None:
    if f.train_accuracy < FIT:
        return _result("underfitting",
                       f"train accuracy {100 * f.train_accuracy:.1f}% is low and val accuracy "
                       f"{100 * f.val_accuracy:.1f}% is not far below it: the model could fit "
                       "harder", _UNDERFITTING_ADVICE, f.evidence)
    return None


#: The rules in the order they are checked (the first that fires wins; none: healthy). A new
#: rule is its function ``Facts -> result or None`` plus one entry here.
RULES: list[tuple[str, Callable[[Facts], dict | None]]] = [
    ("diverging", _diverging), ("not-learning", _not_learning), ("overfitting", _overfitting),
    ("plateau", _plateau), ("underfitting", _underfitting)]


def labels() -> tuple[str, ...]:
    """Every label a run can get, in the order the rules are checked."""
    return (*(label for label, _ in RULES), "healthy")


def diagnose(records: list[dict], *, stop_reason: str | None = None,
             train_accuracy: float | None = None, val_accuracy: float | None = None) -> dict:
    """``{"label", "message", "advice": [...], "evidence": {...}}`` for a run's metrics records
    (as in ``metrics.jsonl``). ``train_accuracy``/``val_accuracy``: the final eval-mode
    accuracies, when known; otherwise the last epoch record's are used.

    >>> diagnose([{"step": 1, "epoch": 1, "loss": 2.3, "lr": 0.1}], stop_reason="loss became nan")
    ... # doctest: +ELLIPSIS
    {'label': 'diverging', ...}
    """
    steps = [r for r in records if "loss" in r]
    epochs = [r for r in records if "train_loss" in r]
    if stop_reason:
        return _result("diverging", f"the run was stopped: {stop_reason}", _DIVERGING_ADVICE,
                       {"stop_reason": stop_reason, "lr": steps[-1]["lr"] if steps else None})
    if not steps or not epochs:
        return _result("healthy", "too few records to judge yet", [], {"epochs": len(epochs)})
    facts = Facts(steps, epochs, steps[0]["loss"], [r["train_loss"] for r in epochs],
                  epochs[-1]["train_accuracy"] if train_accuracy is None else train_accuracy,
                  epochs[-1]["val_accuracy"] if val_accuracy is None else val_accuracy)
    for _, rule in RULES:
        result = rule(facts)
        if result is not None:
            return result
    return _result("healthy",
                   f"the loss went from {facts.initial:.3g} to {facts.final:.3g}; train "
                   f"{100 * facts.train_accuracy:.1f}% / val {100 * facts.val_accuracy:.1f}%", [],
                   facts.evidence)


def _plateau_start(epochs: list[dict]) -> int | None:
    """The epoch since which the train loss improved by less than FLAT at a steady LR."""
    if len(epochs) < 4:
        return None
    window = epochs[-max(3, len(epochs) // 4):]
    lrs = [r["lr"] for r in window]
    if min(lrs) <= 0 or max(lrs) > 1.5 * min(lrs):
        return None
    start = window[0]["train_loss"]
    if start - min(r["train_loss"] for r in window[1:]) > FLAT * start:
        return None
    # walk back while the curve stays flat at this LR
    first = len(epochs) - len(window)
    while first > 0:
        previous = epochs[first - 1]
        if (previous["train_loss"] - start > FLAT * previous["train_loss"]
                or not min(lrs) / 1.5 <= previous["lr"] <= 1.5 * max(lrs)):
            break
        first -= 1
    return epochs[first]["epoch"]


def _result(label: str, message: str, advice: list[str], evidence: dict) -> dict:
    return {"label": label, "message": message, "advice": advice, "evidence": evidence}


_DIVERGING_ADVICE = [
    "lower the learning rate 3-10x (gradwise lr-find CONFIG suggests one)",
    "add warmup (schedule.warmup_epochs) or gradient clipping (train.grad_clip)",
    "check the data for extreme values",
]
_NOT_LEARNING_ADVICE = [
    "raise the learning rate 10x, or run gradwise lr-find CONFIG",
    "check that the labels match the inputs: gradwise sanity CONFIG should overfit 20 examples",
]
_UNDERFITTING_ADVICE = [
    "use a bigger model (wider or deeper)",
    "train longer, or with a higher learning rate",
    "weaken the regularization (weight decay, dropout, augmentation)",
]


def _overfitting_advice(best_epoch: int, epochs: int) -> list[str]:
    advice = ["regularize: weight decay or L2 (optimizer.weight_decay, regularization.l2), "
              "dropout (model.dropout), data augmentation (augment)",
              "get more training data, or use a smaller model"]
    if best_epoch < epochs:
        advice.insert(1, f"stop earlier: validation accuracy peaked at epoch {best_epoch} "
                         "(checkpoints/best.pt holds those weights)")
    return advice
