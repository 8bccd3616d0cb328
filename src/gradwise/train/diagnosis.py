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

RISE = 1.5
GIVE_BACK = 0.1
STALL = 0.9
GAP = 0.05
GAP_SHARE = 1 / 3
FLAT = 0.02
FIT = 0.95
CONVERGED = 0.99

LABELS = ("diverging", "not-learning", "overfitting", "plateau", "underfitting", "healthy")


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
    initial = steps[0]["loss"]
    losses = [r["train_loss"] for r in epochs]
    final, lowest = losses[-1], min(losses)
    if train_accuracy is None:
        train_accuracy = epochs[-1]["train_accuracy"]
    if val_accuracy is None:
        val_accuracy = epochs[-1]["val_accuracy"]
    gap = train_accuracy - val_accuracy
    base = {"initial_loss": initial, "final_train_loss": final,
            "train_accuracy": train_accuracy, "val_accuracy": val_accuracy, "gap": gap}

    if (final > RISE * lowest and final - lowest > GIVE_BACK * (initial - lowest)
            and losses.index(lowest) < len(losses) - 1):
        epoch = losses.index(lowest) + 1
        return _result("diverging", f"the train loss fell to {lowest:.3g} at epoch {epoch}, "
                       f"then rose to {final:.3g}", _DIVERGING_ADVICE,
                       {**base, "lowest_train_loss": lowest, "lowest_epoch": epoch})
    if final > STALL * initial:
        return _result("not-learning",
                       f"the train loss barely moved: {initial:.3g} at the start, {final:.3g} "
                       f"after {len(epochs)} epochs", _NOT_LEARNING_ADVICE,
                       {**base, "loss_ratio": final / initial, "lr": epochs[-1]["lr"]})
    if gap > GAP and gap >= GAP_SHARE * (1 - val_accuracy):
        opened = next((r["epoch"] for r in epochs
                       if r["train_accuracy"] - r["val_accuracy"] > GAP), epochs[-1]["epoch"])
        best = max(epochs, key=lambda r: r["val_accuracy"])
        return _result("overfitting",
                       f"train accuracy {100 * train_accuracy:.1f}% vs val "
                       f"{100 * val_accuracy:.1f}%: a gap of {100 * gap:.1f} points, "
                       f"above {100 * GAP:.0f} since epoch {opened}",
                       _overfitting_advice(best["epoch"], len(epochs)),
                       {**base, "gap_opened_epoch": opened, "best_val_epoch": best["epoch"],
                        "best_val_accuracy": best["val_accuracy"]})
    flat_from = _plateau_start(epochs)
    if flat_from is not None and train_accuracy < CONVERGED:
        return _result("plateau",
                       f"the train loss has stayed flat (within {100 * FLAT:.0f}%) since epoch "
                       f"{flat_from} at a constant learning rate",
                       [f"decay the learning rate (e.g. 10x, or a step/cosine schedule) around "
                        f"epoch {flat_from}, where the curve flattened",
                        "a plateau can also be a learning rate slightly too high: the loss "
                        "bounces at the noise floor; decay breaks it"],
                       {**base, "flat_since_epoch": flat_from, "lr": epochs[-1]["lr"]})
    if train_accuracy < FIT:
        return _result("underfitting",
                       f"train accuracy {100 * train_accuracy:.1f}% is low and val accuracy "
                       f"{100 * val_accuracy:.1f}% is not far below it: the model could fit "
                       "harder", _UNDERFITTING_ADVICE, base)
    return _result("healthy",
                   f"the loss went from {initial:.3g} to {final:.3g}; train "
                   f"{100 * train_accuracy:.1f}% / val {100 * val_accuracy:.1f}%", [], base)


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
