"""The lecture's first check before a long run: can the model overfit a tiny subset?

Take ~20 training examples (class-balanced), switch every regularizer off (weight decay,
penalties, label smoothing, dropout and its relatives, augmentation), keep the model, optimizer
and learning rate, and train on that one batch. A correct setup reaches 100% train accuracy and
a loss near zero within a few hundred steps; one that cannot has a bug (labels, loss, data
scale) or a learning rate far off. The first loss should also be about ``ln(C)``.
"""

from __future__ import annotations

import math
from pathlib import Path

from .. import _checks
from ..config import Config, load_config
from .monitor import INITIAL_LOSS_BAND

#: model options that regularize, switched off for the check
REGULARIZING_OPTIONS = ("dropout", "channel_dropout", "drop_connect", "stochastic_depth")
LOW_LOSS = 0.05


def sanity_check(config: Config | dict | str | Path, *, size: int = 20,
                 max_steps: int = 300) -> dict:
    """Train ``config``'s model on ``size`` examples for up to ``max_steps`` full-batch steps.

    Returns ``{"passed", "message", "steps", "train_accuracy", "loss", "initial_loss",
    "expected_initial_loss", "size"}``; passed means 100% train accuracy and a loss below
    ``LOW_LOSS`` (0.05).
    """
    from .trainer import Trainer

    size = _checks.integer("size", size, 1)
    max_steps = _checks.integer("max_steps", max_steps, 1)
    raw = load_config(config).model_dump()
    raw["data"]["train_size"] = size
    raw["regularization"], raw["augment"], raw["evaluate"] = {}, {}, {}
    raw["optimizer"]["weight_decay"] = 0.0
    for key in REGULARIZING_OPTIONS:
        if key in raw["model"]:
            raw["model"][key] = 0.0
    raw["schedule"] = {"name": "constant"}
    raw["train"].update(batch_size=size, full_batch=True, checkpoint=False, monitor_every=0,
                        epochs=max_steps)
    trainer = Trainer(raw, out=None, quiet=True)
    model, x, y = trainer.model, trainer._layout(trainer.data.x_train), trainer.data.y_train
    state = {}

    def closure():
        trainer.optimizer.zero_grad(set_to_none=True)
        logits = model(x)
        loss = trainer._loss(logits, y)
        loss.backward()
        state["loss"] = float(loss.detach())
        state["accuracy"] = float((logits.argmax(1) == y).float().mean())
        return loss

    model.train()
    initial, steps = None, 0
    while steps < max_steps:
        trainer.optimizer.step(closure)
        steps += 1
        if initial is None:
            initial = state["loss"]
        if not math.isfinite(state["loss"]) or (state["accuracy"] == 1.0
                                                and state["loss"] < LOW_LOSS):
            break
    expected = math.log(trainer.data.num_classes)
    passed = state["accuracy"] == 1.0 and state["loss"] < LOW_LOSS
    result: dict[str, object] = {
        "passed": passed, "steps": steps, "train_accuracy": state["accuracy"],
        "loss": state["loss"], "initial_loss": initial, "expected_initial_loss": expected,
        "size": len(y)}
    result["message"] = _verdict(result, trainer.config.optimizer.lr)
    return result


def _verdict(r: dict, lr: float) -> str:
    lines = []
    if r["passed"]:
        lines.append(f"PASS: {r['size']} examples fitted (100% train accuracy, loss "
                     f"{r['loss']:.3g}) in {r['steps']} steps")
    else:
        lines.append(f"FAIL: after {r['steps']} steps on {r['size']} examples, train accuracy "
                     f"{100 * r['train_accuracy']:.0f}% and loss {r['loss']:.3g}")
        if not math.isfinite(r["loss"]) or r["loss"] > r["initial_loss"]:
            lines.append(f"  the loss blew up: lr {lr:g} is too high for this model")
        elif r["loss"] > 0.5 * r["initial_loss"]:
            lines.append(f"  the loss hardly fell: raise lr {lr:g} (try 10x), check that labels "
                         "match inputs, and that the model can express the task")
        else:
            lines.append("  it is learning, but slowly: raise the learning rate or allow more "
                         "steps (--steps)")
    low, high = (f * r["expected_initial_loss"] for f in INITIAL_LOSS_BAND)
    note = "as expected" if low <= r["initial_loss"] <= high else "far off: check the last " \
        "layer's initialisation and the loss"
    lines.append(f"  initial loss {r['initial_loss']:.3f} vs ln(C) = "
                 f"{r['expected_initial_loss']:.3f}: {note}")
    return "\n".join(lines)
