"""Per-trial overhead of gradwise's search on top of Optuna (a benchmark, not a test).

Both sides run N trials of the same 3-parameter space against a fresh SQLite storage, with a
training that costs nothing (a stand-in Trainer that reports E epochs and returns at once),
so the times are the search machinery alone:

* optuna:   ``study.optimize(objective)``: suggest 3 values, report E epochs, one user
            attribute, return the value (RandomSampler);
* gradwise: ``Search(spec, out).run()``: the same plus the slot check through the storage,
            the heartbeat thread, the stale-trial check, the per-trial seeded sampler and the
            outputs (results.csv, stages.json, best.yaml, report.html) at the end.

    python benchmarks/search_overhead.py --trials 100 --epochs 3
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import optuna

import gradwise.train
from gradwise.search import Search, load_search
from gradwise.search.report import write_outputs

SPACE = {"optimizer.lr": "loguniform(1e-4, 1e-1)",
         "optimizer.weight_decay": "loguniform(1e-5, 1e-1)",
         "model.dropout": "uniform(0.0, 0.5)"}


class FreeTrainer:
    """Stands in for gradwise.train.Trainer: E epoch records, a summary, no training."""

    def __init__(self, config, out=None, quiet=True, callbacks=()):
        self.config, self.callbacks, self.stop_reason = config, list(callbacks), None

    def fit(self) -> dict:
        lr = self.config.optimizer.lr
        acc = 1.0 / (1.0 + abs(lr - 0.01))
        epoch = 0
        for epoch in range(1, self.config.train.epochs + 1):
            for callback in self.callbacks:
                callback(self, {"epoch": epoch, "val_accuracy": acc * epoch / 10,
                                "val_loss": 1.0 / epoch})
            if self.stop_reason:
                break
        return {"val_accuracy": acc, "val_loss": 0.5, "test_accuracy": acc, "test_loss": 0.5,
                "train_accuracy": acc, "train_loss": 0.5, "epochs": epoch,
                "stop_reason": None}


def plain_optuna(folder: Path, trials: int, epochs: int) -> float:
    storage = optuna.storages.RDBStorage(f"sqlite:///{folder / 'plain.db'}")
    study = optuna.create_study(storage=storage, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial):
        lr = trial.suggest_float("optimizer.lr", 1e-4, 1e-1, log=True)
        trial.suggest_float("optimizer.weight_decay", 1e-5, 1e-1, log=True)
        trial.suggest_float("model.dropout", 0.0, 0.5)
        acc = 1.0 / (1.0 + abs(lr - 0.01))
        for epoch in range(1, epochs + 1):
            trial.report(acc * epoch / 10, epoch)
        trial.set_user_attr("result", {"val_accuracy": acc, "seconds": 0.0})
        return acc

    start = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    return time.perf_counter() - start


def gradwise_search(folder: Path, trials: int, epochs: int) -> tuple[float, float]:
    config = {"name": "overhead", "data": "digits", "space": SPACE,
              "search": {"stages": [{"name": "only", "trials": trials, "epochs": epochs}]}}
    spec = load_search(config, check=False)
    search = Search(spec, folder / "gradwise", quiet=True)
    start = time.perf_counter()
    search.open()
    search.work()
    loop = time.perf_counter() - start
    write_outputs(search)
    return loop, time.perf_counter() - start - loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    gradwise.train.Trainer = FreeTrainer
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        plain = plain_optuna(folder, args.trials, args.epochs)
        loop, outputs = gradwise_search(folder, args.trials, args.epochs)
    n = args.trials
    print(f"{n} trials x {args.epochs} epochs, SQLite storage, no training:")
    print(f"  optuna study.optimize  {1000 * plain / n:7.1f} ms/trial")
    print(f"  gradwise search loop   {1000 * loop / n:7.1f} ms/trial "
          f"(+{1000 * (loop - plain) / n:.1f} ms)")
    print(f"  gradwise outputs       {outputs:7.2f} s once (results.csv, stages.json, "
          "best.yaml, report.html)")


if __name__ == "__main__":
    main()
