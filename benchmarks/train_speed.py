"""MNIST: gradwise's Trainer against plain PyTorch loops, measured in one run.

1. Reference: the pytorch/examples MNIST recipe (2 conv + 2 fc layers with dropout, Adadelta
   lr 1.0, StepLR gamma 0.7, batch 64) in a plain loop over in-memory tensors, until its test
   accuracy reaches the target (99.0%).
2. gradwise: ``examples/mnist.yaml`` with a short budget (``--fast-epochs``, one-cycle over that
   budget): the training time until the test accuracy first reaches the target.
3. gradwise: ``examples/mnist.yaml`` as written: the final test accuracy.
4. Throughput: the Trainer against a hand-written loop doing the same work (same model, data
   layout, optimizer, schedule, shuffling and per-epoch validation), one epoch each, alternated.

Training times exclude this script's own test evaluations after each epoch.

    python benchmarks/train_speed.py --data ../shared/data/mnist/mnist.npz
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gradwise.config import load_config
from gradwise.data import load_data
from gradwise.nn import build_model
from gradwise.optim import SGD
from gradwise.schedules import LRScheduler, OneCycle
from gradwise.train import Trainer

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mnist.yaml"


class ExamplesNet(nn.Module):
    """The network of the pytorch/examples MNIST recipe, written out."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 32, 3), nn.Conv2d(32, 64, 3)
        self.fc1, self.fc2 = nn.Linear(9216, 128), nn.Linear(128, 10)
        self.drop1, self.drop2 = nn.Dropout(0.25), nn.Dropout(0.5)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        x = F.relu(self.fc1(torch.flatten(self.drop1(x), 1)))
        return F.log_softmax(self.fc2(self.drop2(x)), dim=1)


@torch.no_grad()
def accuracy(model, x, y, batch=1000, layout=None):
    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        xb = x[i:i + batch] if layout is None else layout(x[i:i + batch])
        correct += int((model(xb).argmax(1) == y[i:i + batch]).sum())
    model.train()
    return correct / len(x)


def reference_time_to(target, data, max_epochs):
    """The pytorch/examples recipe: (seconds to reach target or None, accuracy per epoch)."""
    torch.manual_seed(1)
    x, y = data.x_train, data.y_train  # normalised with the train statistics, as the recipe does
    model = ExamplesNet()
    opt = torch.optim.Adadelta(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
    elapsed, history = 0.0, []
    for epoch in range(max_epochs):
        start = time.perf_counter()
        model.train()
        order = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = order[i:i + 64]
            opt.zero_grad()
            F.nll_loss(model(x[idx]), y[idx]).backward()
            opt.step()
        sched.step()
        elapsed += time.perf_counter() - start
        acc = accuracy(model, data.x_test, data.y_test)
        history.append((epoch + 1, round(elapsed, 1), acc))
        print(f"  reference epoch {epoch + 1}: test {100 * acc:.2f}% at {elapsed:.1f} s",
              flush=True)
        if acc >= target:
            return elapsed, history
    return None, history


def gradwise_run(config, target):
    """Train ``config``; (seconds to reach target or None, final test accuracy, summary)."""
    own_eval = [0.0]
    reached = [None]

    def test_each_epoch(trainer, record):
        start = time.perf_counter()
        _, acc = trainer.evaluate(trainer.data.x_test, trainer.data.y_test)
        train_time = record["elapsed_seconds"] - own_eval[0]
        own_eval[0] += time.perf_counter() - start
        print(f"  gradwise epoch {record['epoch']}: test {100 * acc:.2f}% at {train_time:.1f} s",
              flush=True)
        if reached[0] is None and acc >= target:
            reached[0] = train_time

    summary = Trainer(config, None, quiet=True, callbacks=[test_each_epoch]).fit()
    return reached[0], summary["test_accuracy"], summary


def hand_loop_epoch(config, data, seed):
    """One epoch of the example's work written as a plain loop (the throughput peer)."""
    torch.manual_seed(seed)
    cfg = config
    model = build_model(cfg.model.name, data.input_shape, data.num_classes,
                        **cfg.model.options()).to(memory_format=torch.channels_last)
    opt = SGD(model.parameters(), lr=cfg.optimizer.lr, momentum=0.9, nesterov=True,
              weight_decay=cfg.optimizer.weight_decay)
    steps = math.ceil(len(data.x_train) / cfg.train.batch_size)
    sched = LRScheduler(opt, OneCycle(steps))
    layout = lambda t: t.contiguous(memory_format=torch.channels_last)  # noqa: E731
    start = time.perf_counter()
    order = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(seed))
    bs = cfg.train.batch_size
    for b in range(steps):
        idx = order[b * bs:(b + 1) * bs]
        loss = F.cross_entropy(model(layout(data.x_train[idx])), data.y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    accuracy(model, data.x_val, data.y_val, batch=cfg.train.eval_batch_size, layout=layout)
    return len(data.x_train) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="an MNIST .npz (x_train, y_train, ...)")
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--fast-epochs", type=int, default=1)
    parser.add_argument("--ref-epochs", type=int, default=8)
    parser.add_argument("--skip", default="", help="comma list of parts to skip: ref,fast,full,"
                        "throughput")
    args = parser.parse_args()
    skip = set(args.skip.split(","))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    data = load_data(f"npz:{args.data}", seed=0)
    base = load_config(EXAMPLE, [f"data=npz:{args.data}"])

    results = {}
    if "ref" not in skip:
        print("reference: pytorch/examples recipe in a plain loop")
        results["ref"], _ = reference_time_to(args.target, data, args.ref_epochs)
    if "fast" not in skip:
        print(f"gradwise: examples/mnist.yaml, {args.fast_epochs}-epoch budget")
        fast = load_config(base, [f"train.epochs={args.fast_epochs}"])
        results["fast"], results["fast_acc"], _ = gradwise_run(fast, args.target)
    if "full" not in skip:
        print("gradwise: examples/mnist.yaml as written")
        _, results["full_acc"], full = gradwise_run(base, args.target)
        results["full_s"] = full["wall_seconds"]
    if "throughput" not in skip:
        print("throughput: Trainer vs hand-written loop, one epoch each, alternated x2")
        one = load_config(base, ["train.epochs=1", "train.checkpoint=false"])
        ours, theirs = [], []
        for rep in range(2):
            theirs.append(hand_loop_epoch(one, data, seed=rep))
            summary = Trainer(load_config(one, [f"seed={rep}"]), None, quiet=True).fit()
            ours.append(summary["samples_per_second"])
        results["throughput"] = (max(ours), max(theirs))

    print("\n| measurement | value |\n|---|---|")
    if results.get("ref") is not None and results.get("fast") is not None:
        target = f"{100 * args.target:.1f}%"
        print(f"| time to {target} test: reference recipe | {results['ref']:.1f} s |")
        print(f"| time to {target} test: gradwise ({args.fast_epochs}-epoch "
              f"budget) | {results['fast']:.1f} s |")
        print(f"| ratio gradwise / reference | {results['fast'] / results['ref']:.3f}x |")
    elif "fast" in results:
        print(f"| gradwise {args.fast_epochs}-epoch budget | reached: {results['fast']}, "
              f"final {100 * results['fast_acc']:.2f}% |")
    if "full_acc" in results:
        print(f"| examples/mnist.yaml final test accuracy | {100 * results['full_acc']:.2f}% "
              f"({results['full_s']:.0f} s) |")
    if "throughput" in results:
        ours, theirs = results["throughput"]
        print(f"| Trainer samples/s vs hand-written loop | {ours:.0f} vs {theirs:.0f} "
              f"({ours / theirs:.3f}x) |")


if __name__ == "__main__":
    main()
