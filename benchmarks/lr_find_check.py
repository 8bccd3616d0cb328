"""Does the LR range test's suggestion train well? Checked against a grid, on MNIST-1D.

For each optimizer, `lr_find` (three seeds) suggests a learning rate; then the same config is
trained at that rate and at every rate of a log grid (half-decade steps), all for the same
epochs at a constant rate, each over `--seeds` seeds. The table gives the mean test accuracy per
rate, the grid's best, and where the suggestion lands.

    python benchmarks/lr_find_check.py
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from gradwise.config import load_config
from gradwise.train import Trainer, lr_find

BASE = Path(__file__).resolve().parents[1] / "examples" / "compare-optimizers.yaml"
OPTIMIZERS = {"momentum": {"name": "sgd", "momentum": 0.9}, "adam": {"name": "adam"}}
GRID = {"momentum": [1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0],
        "adam": [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2, help="training seeds per rate")
    args = parser.parse_args()
    base = load_config(BASE)
    for label, optimizer in OPTIMIZERS.items():
        config = base.model_dump()
        config["optimizer"] = optimizer
        found = lr_find(config, seeds=(0, 1, 2), start=1e-6, end=10, steps=200)
        suggested = found["suggested_lr"]

        results = {lr: test_accuracy(config, lr, args.seeds) for lr in GRID[label]}
        mine = test_accuracy(config, suggested, args.seeds)
        best = max(results, key=results.get)
        print(f"{label}: suggested lr {suggested:.3g} (steepest "
              f"{found['suggestions']['steepest']['value']:.3g}); warning: {found['warning']}")
        for lr, accuracy in results.items():
            print(f"  lr {lr:<8.3g} test {100 * accuracy:6.2f}%" + ("  <- grid best"
                                                                    if lr == best else ""))
        print(f"  lr {suggested:<8.3g} test {100 * mine:6.2f}%  <- suggested "
              f"({100 * (mine - results[best]):+.2f} points vs the grid's best)", flush=True)


def test_accuracy(config: dict, lr: float, seeds: int) -> float:
    """Mean test accuracy of ``config`` trained at ``lr`` over ``seeds`` seeds."""
    runs = []
    for seed in range(seeds):
        run = {**config, "seed": seed, "optimizer": {**config["optimizer"], "lr": lr}}
        runs.append(Trainer(run, out=None, quiet=True).fit()["test_accuracy"])
    return statistics.fmean(runs)


if __name__ == "__main__":
    main()
