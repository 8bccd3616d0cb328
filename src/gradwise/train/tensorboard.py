"""TensorBoard logging for users who live there: every metrics record, as scalars.

``gradwise train CONFIG --tensorboard`` writes ``RUN/tensorboard/``; open it with
``tensorboard --logdir RUN/tensorboard``. Needs the ``tensorboard`` package
(``pip install 'gradwise[tensorboard]'``).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError

_EPOCH_KEYS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


class TensorBoardSink:
    """Receives metrics records (see the Trainer) and writes them as TensorBoard scalars:
    ``step/loss``, ``step/lr``, ``step/grad_norm``; ``epoch/<key>`` at the epoch's last step;
    ``update_ratio/<param>``, ``grad_norm/<param>`` and ``dead_relu/<module>``."""

    def __init__(self, log_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("--tensorboard needs the tensorboard package: "
                            "pip install tensorboard") from None
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def __call__(self, record: dict) -> None:
        step = record["step"]
        if "monitor" in record:
            for group, values in record["monitor"].items():
                for name, value in values.items():
                    self.writer.add_scalar(f"{group}/{name}", value, step)
        elif "train_loss" in record:
            for key in _EPOCH_KEYS:
                self.writer.add_scalar(f"epoch/{key}", record[key], step)
        else:
            for key in ("loss", "lr", "grad_norm"):
                if record.get(key) is not None:
                    self.writer.add_scalar(f"step/{key}", record[key], step)

    def close(self) -> None:
        self.writer.close()
