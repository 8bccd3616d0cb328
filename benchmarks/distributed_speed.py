"""One process with T threads against T processes with one thread each (data-parallel, gloo).

Both train the same config at the same global batch through the command line:

* ``OMP_NUM_THREADS=T gradwise train CONFIG``               (1 process x T threads)
* ``OMP_NUM_THREADS=1 gradwise train CONFIG --nproc T``     (T processes x 1 thread)
* ``OMP_NUM_THREADS=1 gradwise train CONFIG``               (1 process x 1 thread, the baseline)
* ``OMP_NUM_THREADS=T OMP_WAIT_POLICY=passive gradwise train CONFIG`` (threads that sleep at
  OpenMP barriers instead of spinning: on a machine with more runnable processes than cores a
  spinning thread holds a core its partner needs)

The four alternate, round after round (the order flipping each round), so that a change in what
else runs on the machine hits both. Reported per run: the training throughput from
``summary.json`` (``samples_per_second``: the training loop with its per-epoch validation,
measured by rank 0) and the wall time of the whole command (start-up, data, training, report).

    python benchmarks/distributed_speed.py --rounds 4 --set train.epochs=2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mnist1d.yaml"


def run(config: Path, overrides: list[str], threads: int, nproc: int, out: Path,
        env: dict[str, str]) -> dict:
    """One training command; its summary with the command's wall time added."""
    env = {**os.environ, **env, "OMP_NUM_THREADS": str(1 if nproc > 1 else threads)}
    command = [sys.executable, "-m", "gradwise", "train", str(config), "--out", str(out),
               "--quiet", *[f"--set={item}" for item in overrides]]
    if nproc > 1:
        command += ["--nproc", str(nproc)]
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    summary = json.loads((out / "summary.json").read_text())
    return {"samples_per_second": summary["samples_per_second"], "command_seconds": wall,
            "test_accuracy": summary["test_accuracy"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=EXAMPLE)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=2, help="T (default 2)")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    kinds = {f"1 process x {args.threads} threads": (args.threads, 1, {}),
             f"{args.threads} processes x 1 thread": (1, args.threads, {}),
             "1 process x 1 thread": (1, 1, {}),
             f"1 process x {args.threads} threads passive": (args.threads, 1,
                                                            {"OMP_WAIT_POLICY": "passive"})}
    results: dict[str, list[dict]] = {kind: [] for kind in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = list(kinds) if r % 2 == 0 else list(reversed(kinds))
            for kind in order:
                threads, nproc, env = kinds[kind]
                result = run(args.config, args.overrides, threads, nproc,
                             Path(tmp) / f"{r}-{list(kinds).index(kind)}", env)
                results[kind].append(result)
                print(f"round {r + 1} {kind:34s} {result['samples_per_second']:8.1f} samples/s "
                      f"command {result['command_seconds']:6.1f} s  "
                      f"test acc {result['test_accuracy']:.4f}", flush=True)
    print("\n| run | samples/s median (min-max) | command s median (min-max) |")
    print("|---|---:|---:|")
    for kind, rows in results.items():
        sps = [row["samples_per_second"] for row in rows]
        wall = [row["command_seconds"] for row in rows]
        print(f"| {kind} | {statistics.median(sps):.0f} ({min(sps):.0f}-{max(sps):.0f}) | "
              f"{statistics.median(wall):.1f} ({min(wall):.1f}-{max(wall):.1f}) |")
    threaded, processes, single, passive = results.values()
    for name, base in (("threads", threaded), ("1 thread", single), ("passive threads", passive)):
        ratios = [b["samples_per_second"] / a["samples_per_second"]
                  for a, b in zip(base, processes, strict=True)]
        print(f"throughput ratio processes / {name} per round: "
              f"{', '.join(f'{x:.2f}' for x in ratios)}; median {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
