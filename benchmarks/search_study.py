"""The search studies of docs/search.md, on MNIST-1D.

1. Coarse-to-fine: run examples/search-mnist1d.yaml (16 trials x 3 epochs, then 6 x 12 around
   the top 4), then train its best.yaml and the hand-picked base config (the same file without
   space/search: adamw lr 3e-3, wd 0.05, no dropout, 12 epochs) with training seeds 0..S-1
   and compare their test accuracy.
2. Random vs grid (Bergstra & Bengio): one stage of 16 trials x 4 epochs over the learning rate
   (important) and a weight decay in [1e-6, 1e-3] (unimportant for AdamW in 4 epochs); grid:
   4 x 4 points, random: 16 draws; best trial by validation accuracy, its test accuracy,
   averaged over seeds 0..S-1 (the seed of the training and of the random draws).

    python benchmarks/search_study.py --out runs/search-study --docs docs/search --workers 4
    python benchmarks/search_study.py --quick     # a smoke run: tiny stages, 1 seed

Writes OUT/study.json, prints a Markdown table; with --docs, the PNGs for docs/search.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

from gradwise import _io
from gradwise.config import read_yaml
from gradwise.report import plots
from gradwise.search import Search, load_search, with_settings
from gradwise.search.report import attr, history_figure, narrowing_figure, scatter_figure
from gradwise.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "search-mnist1d.yaml"


def train_seeds(config: dict, seeds: list[int]) -> list[float]:
    accs = []
    for seed in seeds:
        raw = copy.deepcopy(config)
        raw["seed"] = seed
        accs.append(Trainer(raw, quiet=True).fit()["test_accuracy"])
    return accs


def coarse_to_fine(out: Path, seeds: list[int], workers: int, quick: bool, docs: Path | None):
    raw = read_yaml(EXAMPLE)
    if quick:
        raw["search"]["stages"] = [{"name": "coarse", "trials": 4, "epochs": 1},
                                   {"name": "fine", "trials": 2, "epochs": 2, "top_k": 2}]
    spec = load_search(raw)
    search = Search(spec, out / "coarse-to-fine", quiet=False)
    start = time.perf_counter()
    summary = search.run(workers)
    seconds = time.perf_counter() - start
    epochs = spec.settings.stages[-1].epochs
    base = {k: v for k, v in raw.items() if k not in ("space", "search")}
    base["train"] = {**base["train"], "epochs": epochs}
    best = read_yaml(out / "coarse-to-fine" / "best.yaml")
    result = {"search_seconds": round(seconds, 1), "best": summary["best"],
              "baseline_test": train_seeds(base, seeds), "best_test": train_seeds(best, seeds),
              "epochs": epochs, "seeds": seeds,
              "stages": json.loads((out / "coarse-to-fine" / "stages.json").read_text())}
    if docs:
        stages = search.stages()
        for name, fig in (("scatter", scatter_figure(spec, stages)),
                          ("history", history_figure(spec, stages)),
                          ("narrowing", narrowing_figure(spec, stages))):
            if fig is not None:
                plots.save_png(fig, docs / f"{name}.png")
    return result


def random_vs_grid(out: Path, seeds: list[int], workers: int, quick: bool, docs: Path | None):
    raw = read_yaml(EXAMPLE)
    raw["space"] = {"optimizer.lr": "loguniform(1e-4, 1e-1)",
                    "optimizer.weight_decay": "loguniform(1e-6, 1e-3)"}
    trials, epochs = (4, 1) if quick else (16, 4)
    raw["search"] = {"stages": [{"name": "only", "trials": trials, "epochs": epochs}]}
    rows = {"random": [], "grid": []}
    points = {}
    for seed in seeds:
        raw["seed"] = seed
        raw["search"]["seed"] = seed
        spec = load_search(copy.deepcopy(raw))
        for sampler in ("random", "grid"):
            search = Search(with_settings(spec, sampler=sampler),
                            out / f"{sampler}-seed{seed}", quiet=True)
            summary = search.run(workers)
            best = summary["best"]
            trials_done = search.stages()[0]["trials"]
            lrs = {round(t.params["optimizer.lr"], 12) for t in trials_done}
            rows[sampler].append({"seed": seed, "val": best["value"],
                                  "test": best["test_accuracy"], "distinct_lr": len(lrs)})
            if seed == seeds[0]:
                points[sampler] = [(t.params["optimizer.lr"], t.params["optimizer.weight_decay"],
                                    attr(t, "val_accuracy")) for t in trials_done]
    if docs:
        plots.save_png(grid_figure(points), docs / "random-vs-grid.png")
    return {"trials": trials, "epochs": epochs, "runs": rows}


def grid_figure(points: dict):
    """Validation accuracy against the learning rate, and the two hyperparameters' plane,
    for the grid and the random search of the first seed."""
    fig = plots.new_figure(8.0, 3.2)
    left, right = fig.subplots(1, 2)
    colors = {"grid": "#d62728", "random": "#1f77b4"}
    for sampler, pts in points.items():
        left.scatter([p[0] for p in pts], [p[2] for p in pts], color=colors[sampler],
                     label=sampler, s=22, alpha=0.8)
        right.scatter([p[0] for p in pts], [p[1] for p in pts], color=colors[sampler],
                      label=sampler, s=22, alpha=0.8)
    left.set_xscale("log")
    left.set_xlabel("learning rate (important)")
    left.set_ylabel("val accuracy")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("learning rate")
    right.set_ylabel("weight decay (unimportant)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.2f}%"
    return f"{100 * statistics.mean(values):.2f}% ± {100 * statistics.stdev(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/search-study")
    parser.add_argument("--docs", help="write the PNGs for docs/search.md here")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=("coarse-to-fine", "random-vs-grid"))
    args = parser.parse_args()
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        sys.exit(f"{out} exists; choose another --out")
    docs = Path(args.docs) if args.docs else None
    seeds = list(range(1 if args.quick else args.seeds))
    result = {}
    start = time.perf_counter()
    if args.only != "random-vs-grid":
        result["coarse_to_fine"] = coarse_to_fine(out, seeds, args.workers, args.quick, docs)
        _io.write_json(out / "study.json", result)
    if args.only != "coarse-to-fine":
        result["random_vs_grid"] = random_vs_grid(out, seeds, args.workers, args.quick, docs)
    result["seconds"] = round(time.perf_counter() - start, 1)
    _io.write_json(out / "study.json", result)
    if "coarse_to_fine" in result:
        c = result["coarse_to_fine"]
        print(f"\n| config ({c['epochs']} epochs, seeds {c['seeds']}) | test accuracy |")
        print("|---|---|")
        print(f"| hand-picked base (adamw lr 3e-3, wd 0.05, dropout 0) | "
              f"{mean_std(c['baseline_test'])} |")
        params = ", ".join(f"{k.split('.')[-1]} {v:.3g}" for k, v in c["best"]["params"].items())
        print(f"| search's best.yaml ({params}) | {mean_std(c['best_test'])} |")
        print(f"search wall time: {c['search_seconds']} s")
    if "random_vs_grid" in result:
        r = result["random_vs_grid"]
        print(f"\n| {r['trials']} trials x {r['epochs']} epochs | best val | its test | "
              "distinct lr |")
        print("|---|---|---|---|")
        for sampler, runs in r["runs"].items():
            print(f"| {sampler} | {mean_std([x['val'] for x in runs])} | "
                  f"{mean_std([x['test'] for x in runs])} | "
                  f"{statistics.mean(x['distinct_lr'] for x in runs):g} |")
    print(f"total {result['seconds']} s")


if __name__ == "__main__":
    main()
