"""Progress output: a one-line bar on a terminal, plain lines otherwise (CI, logs)."""

from __future__ import annotations

import sys
import time


class Progress:
    """Shows training progress on ``stream``.

    On a terminal a bar is redrawn in place at most ten times a second; elsewhere only one line
    per epoch is printed, so logs stay readable.
    """

    def __init__(self, epochs: int, steps_per_epoch: int, stream=None, interactive=None):
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
        self._last_draw = 0.0

    def step(self, epoch: int, batch: int, loss: float | None) -> None:
        now = time.monotonic()
        if not self.interactive or now - self._last_draw < 0.1:
            return
        self._last_draw = now
        done = (batch + 1) / self.steps_per_epoch
        bar = "#" * int(24 * done) + "." * (24 - int(24 * done))
        loss_text = "" if loss is None else f" loss {loss:.4f}"
        self.stream.write(f"\repoch {epoch + 1}/{self.epochs} [{bar}] "
                          f"{batch + 1}/{self.steps_per_epoch}{loss_text}\033[K")
        self.stream.flush()

    def epoch(self, record: dict) -> None:
        line = (f"epoch {record['epoch']}/{self.epochs}  train_loss {record['train_loss']:.4f}  "
                f"train_acc {100 * record['train_accuracy']:.2f}%  "
                f"val_loss {record['val_loss']:.4f}  val_acc {100 * record['val_accuracy']:.2f}%  "
                f"lr {record['lr']:.3g}  {record['elapsed_seconds']:.1f}s")
        self.message(line)

    def message(self, text: str) -> None:
        self.stream.write(("\r\033[K" if self.interactive else "") + text + "\n")
        self.stream.flush()
