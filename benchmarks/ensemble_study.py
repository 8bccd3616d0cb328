"""Single models vs weight averaging vs snapshot ensembles vs seed ensembles, on real data.

For one example config, trains (into ``--out``; finished runs are kept, interrupted ones
resumed, so the study can be stopped and started again):

* ``seed-K``: the config as it is, seeds 0 .. ``--ensemble``-1 (the first ``--seeds`` are the
  single-model rows; all of them together are the seed ensemble, at ``--ensemble`` x the budget);
* ``ema-K``: with ``average: {ema: {decay: D, warmup: true}}``;
* ``swa-K``: with ``average: {swa: {start_epoch: 3/4 of the epochs + 1, lr: peak / 3}}`` (the
  schedule runs as configured until SWA starts);
* ``snap-K``: with ``snapshots: {cycles: M, keep: M}`` instead of the config's schedule;

at the same epoch budget as a single model (but the seed ensemble), and prints a markdown table
of the test accuracy: mean +- sample std over the seeds, the best validation-chosen figure of
each run (``test_accuracy``, which for EMA/SWA/snapshots is the averaged model's or the
ensemble's when its validation accuracy is higher) and the plain average's own test accuracy.

    python benchmarks/ensemble_study.py examples/mnist1d.yaml --out runs/study-mnist1d
    python benchmarks/ensemble_study.py examples/mnist.yaml --set data=npz:PATH/mnist.npz \\
        --set train.epochs=3 --out runs/study-mnist

Order of the runs: the single models first, then one seed of each variant, then the ensemble's
extra seeds, then the other seeds of the variants, so that a study cut short still fills every
row.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from gradwise.config import load_config, validate
from gradwise.rundir import RunDir
from gradwise.train import Trainer
from gradwise.train.run_ensemble import evaluate_runs


def variants(base: dict, ema_decay: float, cycles: int) -> dict[str, dict]:
    epochs = base["train"]["epochs"]
    lr = base["optimizer"]["lr"]
    swa_start = min(epochs, epochs * 3 // 4 + 1)
    return {
        "seed": base,
        "ema": {**base, "average": {"ema": {"decay": ema_decay, "warmup": True}}},
        "swa": {**base, "average": {"swa": {"start_epoch": swa_start, "lr": lr / 3}}},
        "snap": {**{k: v for k, v in base.items() if k != "schedule"},
                 "snapshots": {"cycles": cycles}},
    }


def plan(seeds: int, ensemble: int) -> list[tuple[str, int]]:
    first = [("seed", s) for s in range(seeds)] + [(v, 0) for v in ("ema", "swa", "snap")]
    rest = [("seed", s) for s in range(seeds, ensemble)]
    rest += [(v, s) for s in range(1, seeds) for v in ("ema", "swa", "snap")]
    return first + rest


def run(name: str, config: dict, out: Path) -> dict:
    run_dir = RunDir(out / name)
    if run_dir.summary_path.is_file():
        summary = run_dir.read_summary()
        assert summary is not None
        return summary
    resume = run_dir.checkpoint_path("last").is_file()
    print(f"training {name}{' (resumed)' if resume else ''}", file=sys.stderr, flush=True)
    return Trainer(config, out / name, quiet=True).fit(resume=resume)


def row(label: str, summaries: list[dict], key: str = "test_accuracy") -> str:
    values = [100 * s[key] for s in summaries if key in s]
    if not values:
        return f"| {label} | — | 0 |"
    spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
    runs = ", ".join(f"{v:.2f}" for v in values)
    return f"| {label} | {statistics.mean(values):.2f}{spread} | {len(values)} ({runs}) |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--out", required=True)
    parser.add_argument("--seeds", type=int, default=3, help="seeds per variant (default 3)")
    parser.add_argument("--ensemble", type=int, default=5, help="seed ensemble size (5)")
    parser.add_argument("--ema-decay", type=float, default=0.995)
    parser.add_argument("--cycles", type=int, default=4, help="snapshot cycles (default 4)")
    args = parser.parse_args()
    base = load_config(args.config, args.overrides).model_dump(mode="json")
    configs = {k: validate(v) for k, v in
               variants(base, args.ema_decay, args.cycles).items()}
    out = Path(args.out)
    done: dict[str, list[dict]] = {k: [] for k in configs}
    for variant, seed in plan(args.seeds, args.ensemble):
        config = validate({**configs[variant].model_dump(mode="json"), "seed": seed})
        summary = run(f"{variant}-{seed}", config, out)
        done[variant].append(summary)
    single = done["seed"][:args.seeds]
    print(f"| {Path(args.config).name} {' '.join(args.overrides)} | test accuracy % "
          f"(mean ± std) | runs |")
    print("|---|---:|---|")
    print(row("single model", single))
    for variant, key, label in (
            ("ema", "test_accuracy_ema", "EMA weights"),
            ("ema", "test_accuracy", "EMA or live, chosen on validation"),
            ("swa", "test_accuracy_swa", "SWA weights"),
            ("swa", "test_accuracy", "SWA or live, chosen on validation"),
            ("snap", "test_accuracy_live", "snapshot run, last snapshot alone")):
        print(row(label, done[variant], key))
    snaps = [{"test_accuracy": s["snapshot_ensemble"]["test_accuracy"]}
             for s in done["snap"] if "snapshot_ensemble" in s]
    print(row(f"snapshot ensemble ({args.cycles} snapshots)", snaps))
    members = [out / f"seed-{s}" for s in range(args.ensemble)]
    result = evaluate_runs(members)
    print(f"| {args.ensemble}-seed ensemble ({args.ensemble}x the budget), average of "
          f"probabilities | {100 * result['average']['test_accuracy']:.2f} | 1 |")
    print(f"| {args.ensemble}-seed ensemble, majority vote | "
          f"{100 * result['vote']['test_accuracy']:.2f} | 1 |")
    print(f"\nmembers' mean {100 * result['member_mean_accuracy']:.2f} ± "
          f"{100 * result['member_std_accuracy']:.2f}, disagreement "
          f"{100 * result['disagreement']:.2f}% per pair")
    wall = [s["wall_seconds"] for s in single]
    print(f"single-model wall time: {statistics.mean(wall):.0f} s mean")


if __name__ == "__main__":
    main()
