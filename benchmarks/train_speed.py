"""MNIST: gradwise's Trainer against plain PyTorch loops, measured in one run.

1. Reference: the pytorch/examples MNIST recipe (2 conv + 2 fc layers with dropout, Adadelta
   lr 1.0, StepLR gamma 0.7, batch 64) in a plain loop over in-memory tensors, until its test
   accuracy reaches the target (99.0%).
2. gradwise: ``examples/mnist.yaml`` with a short budget (``--fast-epochs``, one-cycle over that
   budget): the training time until the test accuracy first reaches the target.
3. gradwise: ``examples/mnist.yaml`` as written: the final test accuracy.
4. Loops (seconds per epoch, validation included): gradwise's Trainer (without and with a run
   folder and checkpoints, as ``gradwise train`` keeps), a plain loop doing the same work (same
   model, NHWC layout, optimizer, schedule, shuffling and per-epoch validation) and Lightning's
   Trainer on the same model, optimizer and per-step schedule, fed by a ``DataLoader`` over a
   ``TensorDataset``; interleaved over ``--rounds`` rounds in rotating order, medians compared.
   Skipped with a message where Lightning is not installed.

Training times exclude this script's own test evaluations after each epoch.

    python benchmarks/train_speed.py --data ../shared/data/mnist/mnist.npz
    python benchmarks/train_speed.py --data ../shared/data/mnist/mnist.npz --only loops
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gradwise.config import load_config
from gradwise.data import load_data
from gradwise.nn import build_model
from gradwise.optim import SGD, param_groups
from gradwise.schedules import LRScheduler, build_schedule
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


def _clock():
    """(wall, CPU) seconds now: the CPU time of the process (every thread) tells the work done
    on a loaded machine, where the wall time mostly tells the load."""
    return time.perf_counter(), time.process_time()


def _since(start, end=None):
    end = end or _clock()
    return end[0] - start[0], end[1] - start[1]


def _peer_setup(config, data, seed):
    """The Trainer's model, optimizer and schedule for ``config``, built by hand (the peers)."""
    torch.manual_seed(seed)
    cfg = config
    model = build_model(cfg.model.name, data.input_shape, data.num_classes, **cfg.model.options())
    groups = param_groups(model, weight_decay=cfg.optimizer.weight_decay,
                          decay_norm_and_bias=cfg.optimizer.decay_norm_and_bias)
    for group in groups:
        group.pop("name")
    opt = SGD(groups, lr=cfg.optimizer.lr, **cfg.optimizer.options())
    steps = math.ceil(len(data.x_train) / cfg.train.batch_size)
    sched = LRScheduler(opt, build_schedule(cfg.schedule.name, total_steps=cfg.train.epochs * steps,
                                            **cfg.schedule.options()))
    return model, opt, sched, steps


def _nhwc(x):
    return x.contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def _validate(model, x, y, batch, layout):
    """Mean loss and accuracy on (x, y) in eval mode, as the Trainer's per-epoch validation."""
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(x), batch):
        logits = model(layout(x[i:i + batch]))
        loss += float(F.cross_entropy(logits, y[i:i + batch], reduction="sum"))
        correct += int((logits.argmax(1) == y[i:i + batch]).sum())
    model.train()
    return loss / len(x), correct / len(x)


def plain_loop(config, data, layout=_nhwc):
    """The Trainer's work written as a plain loop over in-memory tensors (same model, NHWC
    layout, optimizer, schedule, shuffling and per-epoch validation, in batches of the training
    batch size as such loops are written): (wall, CPU) seconds per epoch."""
    seed = config.seed
    model, opt, sched, steps = _peer_setup(config, data, seed)
    model.to(memory_format=torch.channels_last)
    bs, times = config.train.batch_size, []
    model.train()
    for epoch in range(config.train.epochs):
        start = _clock()
        order = torch.randperm(len(data.x_train),
                               generator=torch.Generator().manual_seed(seed * 1000 + epoch))
        for b in range(steps):
            idx = order[b * bs:(b + 1) * bs]
            loss = F.cross_entropy(model(layout(data.x_train[idx])), data.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        _validate(model, data.x_val, data.y_val, bs, layout)  # batches as in training
        times.append(_since(start))
    return times


def gradwise_trainer(config, data, out=None):
    """``Trainer(config).fit()`` (with a run folder at ``out``, as ``gradwise train`` keeps
    one): (wall, CPU) seconds per epoch, each up to the end of its validation (and checkpoint)."""
    stamps = []
    trainer = Trainer(config, out, quiet=True,
                      callbacks=[lambda _trainer, _record: stamps.append(_clock())])
    stamps.append(_clock())
    trainer.fit()
    return [_since(a, b) for a, b in itertools.pairwise(stamps)]


def lightning_trainer(config, data, nhwc=True):
    """Lightning's Trainer on the same model, optimizer, per-step schedule and batch size, fed
    by a ``DataLoader`` over a ``TensorDataset`` as its users write it: (wall, CPU) seconds per
    epoch, each up to the end of its validation. None when Lightning is not installed."""
    try:
        import lightning as L
    except ImportError:
        return None
    import logging
    import warnings

    from torch.utils.data import DataLoader, TensorDataset

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*is deprecated.*", module="lightning")
    seed = config.seed
    model, opt, sched, _ = _peer_setup(config, data, seed)
    layout = _nhwc if nhwc else (lambda x: x)
    if nhwc:
        model.to(memory_format=torch.channels_last)

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(layout(x))

        def training_step(self, batch, batch_idx):
            x, y = batch
            logits = self(x)
            loss = F.cross_entropy(logits, y)
            self.log("train_loss", loss, on_step=False, on_epoch=True)
            self.log("train_acc", (logits.argmax(1) == y).float().mean(), on_step=False,
                     on_epoch=True)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            logits = self(x)
            self.log("val_loss", F.cross_entropy(logits, y))
            self.log("val_acc", (logits.argmax(1) == y).float().mean())

        def configure_optimizers(self):
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

        def lr_scheduler_step(self, scheduler, metric):  # a non-torch scheduler: step it here
            scheduler.step()

    times, start = [], [_clock()]

    class Clock(L.Callback):
        def on_train_epoch_start(self, trainer, module):
            start[0] = _clock()

        def on_train_epoch_end(self, trainer, module):  # after the epoch's validation
            times.append(_since(start[0]))

    torch.manual_seed(seed)
    train = DataLoader(TensorDataset(data.x_train, data.y_train),
                       batch_size=config.train.batch_size, shuffle=True)
    val = DataLoader(TensorDataset(data.x_val, data.y_val),
                     batch_size=config.train.batch_size)
    trainer = L.Trainer(max_epochs=config.train.epochs, accelerator="cpu", devices=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[Clock()])
    trainer.fit(Module(), train, val)
    return times


def compare_loops(config, data, rounds, contenders):
    """Each contender trains ``config`` once per round, in an order that rotates by one each
    round, after one unrecorded warm-up fit on 512 images (the first fit of a process pays for
    the convolution kernels' setup); returns {name: [(wall, CPU) seconds of every epoch of
    every round]}."""
    results = {name: [] for name in contenders}
    names = list(contenders)
    small = min(512, len(data.x_train))
    warm_config = load_config(config, [f"data.train_size={small}", "train.epochs=1"])
    for name in names:
        contenders[name](warm_config, data.train_subset(small, config.seed))
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            times = contenders[name](config, data)
            if times is None:
                continue
            results[name] += times
            print(f"  round {r + 1}/{rounds} {name}: "
                  + ", ".join(f"{wall:.2f} s ({cpu:.2f} s CPU)" for wall, cpu in times)
                  + " an epoch", flush=True)
    return results


def loops_table(results, samples):
    """The per-epoch medians as a Markdown table, each against the fastest peer (not gradwise)
    in wall and in CPU time: above 1x is slower than that peer."""
    wall = {name: statistics.median(w for w, _ in t) for name, t in results.items() if t}
    cpu = {name: statistics.median(c for _, c in t) for name, t in results.items() if t}
    peers = [name for name in wall if not name.startswith("gradwise")]
    best_wall = min((wall[n] for n in peers), default=None)
    best_cpu = min((cpu[n] for n in peers), default=None)
    lines = ["| loop | s / epoch (median) | min-max | samples/s | vs fastest peer "
             "| CPU s / epoch | CPU vs fastest peer |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name in wall:
        walls = [w for w, _ in results[name]]
        ratio = f"{wall[name] / best_wall:.3f}x" if best_wall else "-"
        cpu_ratio = f"{cpu[name] / best_cpu:.3f}x" if best_cpu else "-"
        lines.append(f"| {name} | {wall[name]:.2f} | {min(walls):.2f}-{max(walls):.2f} | "
                     f"{samples / wall[name]:,.0f} | {ratio} | {cpu[name]:.2f} | {cpu_ratio} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="an MNIST .npz (x_train, y_train, ...)")
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--fast-epochs", type=int, default=1)
    parser.add_argument("--ref-epochs", type=int, default=8)
    parser.add_argument("--skip", default="", help="comma list of parts to skip: ref,fast,full,"
                        "loops")
    parser.add_argument("--only", default=None, help="run only these parts (same names)")
    parser.add_argument("--rounds", type=int, default=5, help="loops: rounds of all contenders")
    parser.add_argument("--epochs", type=int, default=1, help="loops: epochs per fit")
    parser.add_argument("--train-subset", type=int, default=None,
                        help="loops: train on this many images (default: all 54,000)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's, one per core)")
    parser.add_argument("--lightning-layout", choices=["nhwc", "nchw"], default="nhwc",
                        help="loops: Lightning's model in the Trainer's NHWC layout (the same "
                        "work) or in PyTorch's default NCHW")
    args = parser.parse_args()
    parts = {"ref", "fast", "full", "loops"}

    def names(text):  # "throughput": the earlier name of "loops"
        return {"loops" if name == "throughput" else name for name in text.split(",")}
    parts = names(args.only) if args.only else parts - names(args.skip)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    data = load_data(f"npz:{args.data}", seed=0)
    base = load_config(EXAMPLE, [f"data=npz:{args.data}"])

    results = {}
    if "ref" in parts:
        print("reference: pytorch/examples recipe in a plain loop")
        results["ref"], _ = reference_time_to(args.target, data, args.ref_epochs)
    if "fast" in parts:
        print(f"gradwise: examples/mnist.yaml, {args.fast_epochs}-epoch budget")
        fast = load_config(base, [f"train.epochs={args.fast_epochs}"])
        results["fast"], results["fast_acc"], _ = gradwise_run(fast, args.target)
    if "full" in parts:
        print("gradwise: examples/mnist.yaml as written")
        _, results["full_acc"], full = gradwise_run(base, args.target)
        results["full_s"] = full["wall_seconds"]
    if "loops" in parts:
        results["loops"] = run_loops(base, args)

    if parts - {"loops"}:
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
    if "loops" in results:
        print()
        print(results["loops"])


def run_loops(base, args):
    """The Trainer against Lightning and a plain loop, interleaved; a Markdown table."""
    overrides = [f"train.epochs={args.epochs}", "train.checkpoint=false"]
    if args.train_subset is not None:
        overrides.append(f"data.train_size={args.train_subset}")
    config = load_config(base, overrides)
    cfg = config.data
    data = load_data(cfg.source, val_fraction=cfg.val_fraction, seed=config.seed)
    if cfg.train_size is not None:  # the Trainer's own subset
        data = data.train_subset(cfg.train_size, config.seed)
    folders = tempfile.TemporaryDirectory()
    runs = iter(range(10**6))
    contenders = {
        "gradwise Trainer": gradwise_trainer,
        "gradwise Trainer + run folder": lambda c, d: gradwise_trainer(
            load_config(c, ["train.checkpoint=true"]), d, Path(folders.name) / f"run-{next(runs)}"),
        "plain loop": plain_loop,
        "Lightning": lambda c, d: lightning_trainer(c, d, nhwc=args.lightning_layout == "nhwc"),
    }
    try:
        import lightning
        lightning_version = lightning.__version__
    except ImportError:
        print("Lightning is not installed: its contender is skipped")
        del contenders["Lightning"]
        lightning_version = None
    print(f"loops: {len(data.x_train)} training images, {args.epochs} epoch(s) a fit, "
          f"{args.rounds} rounds in rotating order (Lightning {lightning_version}, "
          f"{args.lightning_layout.upper()})")
    with folders:
        results = compare_loops(config, data, args.rounds, contenders)
    return loops_table(results, len(data.x_train))


if __name__ == "__main__":
    main()
