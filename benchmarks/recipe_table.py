"""The table of docs/recipe.md from finished recipes: budget, wall time, time per phase,
the plan and the test accuracy with its 95% Wilson interval.

    gradwise recipe mnist1d --budget 2m --out runs/recipe-2m     # and 5m, 10m ...
    python benchmarks/recipe_table.py runs/recipe-2m runs/recipe-5m runs/recipe-10m
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gradwise.recipe import PHASES


def row(folder: Path) -> str:
    summary = json.loads((folder / "summary.json").read_text())
    plan = json.loads((folder / "plan.json").read_text())
    spent = summary["phase_seconds"]
    stages = " + ".join(f"{s['trials']}x{s['epochs']}" for s in plan["stages"]) or "none"
    low, high = summary["test_accuracy_ci95"]
    budget, wall = summary["budget_seconds"], summary["wall_seconds"]
    cells = [summary["data"], f"{budget:.0f}", f"{wall:.0f} ({wall / budget - 1:+.0%})",
             *(f"{spent.get(p, 0):.0f}" for p in PHASES), stages, str(summary["epochs"]),
             f"{100 * summary['test_accuracy']:.2f}% [{100 * low:.1f}, {100 * high:.1f}]"]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path)
    args = parser.parse_args()
    head = ["data", "budget s", "wall s", *PHASES, "search (trials x epochs)", "final epochs",
            "test [95% Wilson]"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for folder in args.folders:
        print(row(folder))


if __name__ == "__main__":
    main()
