"""Transfer learning on real data: the lecture's strategies and ``strategy: auto`` side by side.

A small BN convnet is pretrained on MNIST digits 0-4 (one epoch on their ~29,000 training
images). Its weights then start the learning of a target task with 10, 100 or 1,000 training
examples per class (a seeded subsample, drawn per seed):

- *similar*: MNIST digits 5-9 (relabelled 0-4), tested on their ~4,900 test images;
- *different*: the CIFAR-10 subset (10 classes, 32x32 RGB, 300 training images per class, so
  1,000 per class is left out), tested on its 1,000 test images; the MNIST model's
  one-channel first conv is adapted to three channels (repeated, divided by 3).

Columns: from scratch (the same architecture, random weights), linear probe (freeze: backbone),
fine-tune top (the last stage, 1/10 learning rate), fine-tune all at 1/10 learning rate, LP-FT
(head for half the epochs, then everything at 1/10), auto (the 2x2 table from the measured
data size and similarity), and the linear probe again at 10x the learning rate (a head trained
alone from N(0, 0.01^2) weights is slow at the fine-tuning rate). Each cell is the mean test
accuracy over the seeds (the spread across seeds beside it); ``auto`` also gives the cell it
chose.

    python benchmarks/transfer_study.py --mnist ../shared/data/mnist/mnist.npz \\
        --cifar ../shared/data/cifar10-jpeg-subset/cifar10_jpeg_subset.npz

``--results FILE`` keeps one JSON line per run (appended as they finish); ``--sizes``,
``--seeds`` and ``--targets`` make it shorter.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from gradwise.config import set_key
from gradwise.train import fit

MODEL = {"name": "convnet", "channels": [16, 32]}
PRETRAIN = {
    "seed": 0,
    "data": {"classes": [0, 1, 2, 3, 4], "val_fraction": 0.05},
    "model": MODEL,
    "optimizer": {"name": "adamw", "lr": 3e-3},
    "train": {"epochs": 1, "batch_size": 128, "monitor_every": 0},
}
TARGET = {
    "data": {"val_fraction": 0.01},
    "model": MODEL,
    "optimizer": {"name": "adamw", "lr": 3e-3},
    "schedule": "cosine",
    "train": {"batch_size": 32, "checkpoint": False, "monitor_every": 0},
}
#: Epochs by examples per class (batches of 32): ~120 steps for 10 and 100 per class, ~470
#: for 1,000 (5 classes; 10 CIFAR classes take twice the steps).
EPOCHS = {10: 60, 100: 8, 1000: 3}

# (column, changes as {"dotted.key": value}; "EPOCHS/2" is half the run's epochs)
COLUMNS = [
    ("scratch", {"model.init": None}),
    ("linear probe", {"transfer.freeze": "backbone"}),
    ("fine-tune top", {"transfer.freeze": {"all-but-last": 2}, "transfer.lr_mult": 0.1}),
    ("fine-tune all 1/10", {"transfer.freeze": "none", "transfer.lr_mult": 0.1}),
    ("LP-FT", {"transfer.freeze": "none", "transfer.lr_mult": 0.1,
               "transfer.lp_ft": {"epochs": "EPOCHS/2"}}),
    ("auto", {"transfer.strategy": "auto"}),
    ("linear probe 10x lr", {"transfer.freeze": "backbone", "optimizer.lr": 3e-2}),
]
TARGETS = {"mnist": ("MNIST digits 5-9", [5, 6, 7, 8, 9]), "cifar": ("CIFAR-10 subset", None)}


def run(source: str, classes: list[int] | None, per_class: int, seed: int, changes: dict,
        init: str) -> dict:
    """One target run; the summary's numbers that the table needs."""
    config = copy.deepcopy(TARGET)
    epochs = EPOCHS.get(per_class, 8)
    set_key(config, "seed", seed)
    set_key(config, "data.source", source)
    set_key(config, "data.per_class", per_class)
    if classes is not None:
        set_key(config, "data.classes", classes)
    set_key(config, "train.epochs", epochs)
    set_key(config, "model.init", init)
    for key, value in changes.items():
        if value == {"epochs": "EPOCHS/2"}:
            value = {"epochs": epochs // 2}
        set_key(config, key, value)
    if config["model"].get("init") is None:
        config["model"] = dict(MODEL)
    start = time.perf_counter()
    summary = fit(config, None, quiet=True)
    transfer = summary.get("transfer") or {}
    choice = transfer.get("strategy") or {}
    return {"test_accuracy": summary["test_accuracy"], "seconds": time.perf_counter() - start,
            "auto": choice.get("action"), "measured": {
                k: choice.get(k) for k in ("examples_per_class", "probe_accuracy_pretrained",
                                           "probe_accuracy_random", "error_removed")}
            if choice else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mnist", default="../shared/data/mnist/mnist.npz")
    parser.add_argument("--cifar",
                        default="../shared/data/cifar10-jpeg-subset/cifar10_jpeg_subset.npz")
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--sizes", nargs="+", type=int, default=[10, 100, 1000])
    parser.add_argument("--columns", nargs="+", default=[c for c, _ in COLUMNS],
                        choices=[c for c, _ in COLUMNS], metavar="COLUMN",
                        help="the columns to run (default: all)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pretrained", help="the pretrained run folder: used if it holds a "
                        "run, else pretrained into (default: a temporary folder)")
    parser.add_argument("--results", help="append one JSON line per run to this file; runs "
                        "already in it are read back, not run again")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    done: dict = {}
    if args.results and Path(args.results).is_file():
        for line in Path(args.results).read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            done[(r["target"], r["per_class"], r["column"], r["seed"])] = r

    with tempfile.TemporaryDirectory() as tmp:
        init = args.pretrained or str(Path(tmp) / "pretrained")
        if not (Path(init) / "summary.json").is_file():
            pretrain = copy.deepcopy(PRETRAIN)
            set_key(pretrain, "data.source", f"npz:{args.mnist}")
            summary = fit(pretrain, init, quiet=True)
            print(f"pretrained on MNIST 0-4: test accuracy {summary['test_accuracy']:.2%} "
                  f"({summary['wall_seconds']:.0f} s)", file=sys.stderr)
        results: dict = {}
        for target in args.targets:
            name, classes = TARGETS[target]
            source = f"npz:{args.mnist if target == 'mnist' else args.cifar}"
            for per_class in args.sizes:
                for column, changes in COLUMNS:
                    if column not in args.columns:
                        continue
                    for seed in range(args.seeds):
                        key = (target, per_class, column, seed)
                        if key in done:
                            results.setdefault(key[:3], []).append(done[key])
                            continue
                        try:
                            result = run(source, classes, per_class, seed, changes, init)
                        except Exception as exc:  # a size a target cannot give: say so
                            print(f"{name} {per_class}/class {column}: {exc}", file=sys.stderr)
                            break
                        results.setdefault((target, per_class, column), []).append(result)
                        line = {"target": target, "per_class": per_class, "column": column,
                                "seed": seed, **result}
                        print(json.dumps(line), file=sys.stderr)
                        if args.results:
                            with open(args.results, "a", encoding="utf-8") as f:
                                f.write(json.dumps(line) + "\n")
        print(table(results, args))


def table(results: dict, args: argparse.Namespace) -> str:
    """The markdown table: test accuracy (mean +- spread over seeds) per size and column."""
    columns = [c for c, _ in COLUMNS if c in args.columns]
    lines = [f"| target | per class | {' | '.join(columns)} | auto chose |",
             "|---|---|" + "---|" * (len(columns) + 1)]
    for target in args.targets:
        for per_class in args.sizes:
            cells, chose = [], "-"
            for column in columns:
                found = results.get((target, per_class, column))
                if not found:
                    cells.append("-")
                    continue
                acc = [100 * r["test_accuracy"] for r in found]
                spread = statistics.stdev(acc) if len(acc) > 1 else 0.0
                cells.append(f"{statistics.mean(acc):.1f} ± {spread:.1f}")
                if column == "auto":
                    picks = sorted({r["auto"] for r in found})
                    chose = ", ".join(picks)
            if all(c == "-" for c in cells):
                continue  # a size the target cannot give
            lines.append(f"| {TARGETS[target][0]} | {per_class} | {' | '.join(cells)} | "
                         f"{chose} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
