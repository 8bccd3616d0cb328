"""The lecture's optimizer race on MNIST-1D: one model, one budget, six update rules.

Each optimizer gets its learning rate from the LR range test (three seeds, the median
`min_over_10` reading), then trains for the same number of epochs at that constant rate (no
decay, as the lecture advises for a first look). The runs land in OUT/<optimizer>/ and one
page overlays them: OUT/compare.html.

    python examples/compare_optimizers.py --out runs/compare-optimizers
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gradwise.config import load_config
from gradwise.report import compare_runs
from gradwise.train import Trainer, lr_find

BASE = Path(__file__).with_name("compare-optimizers.yaml")
OPTIMIZERS = {
    "sgd": {"name": "sgd"},
    "momentum": {"name": "sgd", "momentum": 0.9},
    "nesterov": {"name": "sgd", "momentum": 0.9, "nesterov": True},
    "adagrad": {"name": "adagrad"},
    "rmsprop": {"name": "rmsprop"},
    "adam": {"name": "adam"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/compare-optimizers")
    parser.add_argument("--epochs", type=int, help="override the YAML's train.epochs")
    args = parser.parse_args()
    out = Path(args.out)
    base = load_config(BASE, [f"train.epochs={args.epochs}"] if args.epochs else [])
    rows = []
    for label, optimizer in OPTIMIZERS.items():
        config = base.model_copy(update={"name": label}).model_dump()
        config["optimizer"] = optimizer
        found = lr_find(config, seeds=(0, 1, 2), start=1e-6, end=10, steps=200)
        config["optimizer"] = {**optimizer, "lr": found["suggested_lr"]}
        summary = Trainer(config, out / label, quiet=True).fit()
        rows.append((label, found["suggested_lr"], summary))
        print(f"{label:9s} lr {found['suggested_lr']:<9.3g} "
              f"test {100 * summary['test_accuracy']:.2f}%  "
              f"val {100 * summary['val_accuracy']:.2f}%  "
              f"train loss {summary['train_loss']:.4f}  {summary['diagnosis']['label']}  "
              f"{summary['wall_seconds']:.0f} s", flush=True)
    page = compare_runs([out / label for label, _, _ in rows], out / "compare.html")
    print(f"comparison: {page}")


if __name__ == "__main__":
    main()
