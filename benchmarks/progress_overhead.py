"""What a progress bar costs per training step: gradwise's Progress against tqdm and rich.

Each contender receives ``--updates`` updates (one per training step, each carrying the loss)
into a non-terminal stream (an in-memory text buffer, as in CI or a redirected log), the way a
training loop drives it:

- ``gradwise Progress``: ``progress.step(epoch, i, loss)``; not a terminal, so it draws nothing
  (one line per epoch comes from ``progress.epoch``, outside this loop);
- ``gradwise Progress, terminal mode``: the same with ``interactive=True``, the bar redrawn at
  most ten times a second (what it costs on a terminal);
- ``tqdm``: ``bar.update(1)``; ``bar.update(1); bar.set_postfix(loss=loss)`` to show the loss
  as the other bars do (``set_postfix`` redraws on every call unless ``refresh=False``, also
  timed); ``tqdm(disable=None)``, which turns itself off when the stream is not a terminal;
- ``rich``: ``progress.update(task, advance=1, loss=loss)`` with a non-terminal Console
  (skipped with a note where rich is not installed, as tqdm is).

A contender is one timed run of all its updates; every round runs each contender once, in a
rotating order, and the table gives the median over rounds in ns per update, the ratio to
gradwise's Progress and the bytes each wrote to the stream (what ends up in a log file).
``--step-ms`` busy-waits that long before each update, a stand-in for the training step, so
that the bytes column shows what a run of that length leaves in a log.

    python benchmarks/progress_overhead.py
    python benchmarks/progress_overhead.py --updates 2000 --step-ms 1 --repeats 1
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import time
from collections.abc import Callable
from importlib.metadata import version

from gradwise.train.progress import Progress


def losses(n: int) -> list[float]:
    """A plausible falling loss, one value per update (made before timing)."""
    return [2.3 / (1 + i / 1000) for i in range(n)]


def steps(values: list[float], step_s: float):
    """``values``, each after busy-waiting ``step_s`` seconds (none for 0)."""
    if not step_s:
        yield from values
        return
    for loss in values:
        until = time.perf_counter() + step_s
        while time.perf_counter() < until:
            pass
        yield loss


Run = Callable[[list[float], float], io.StringIO]


def gradwise_run(interactive: bool) -> Run:
    def run(values: list[float], step_s: float) -> io.StringIO:
        stream = io.StringIO()
        bar = Progress(1, len(values), stream=stream, interactive=interactive)
        for i, loss in enumerate(steps(values, step_s)):
            bar.step(0, i, loss)
        return stream
    return run


def tqdm_run(postfix: bool | None, disable: bool | None) -> Run:
    """``postfix``: None shows no loss, else ``set_postfix(loss=..., refresh=postfix)``."""
    from tqdm import tqdm

    def run(values: list[float], step_s: float) -> io.StringIO:
        stream = io.StringIO()
        with tqdm(total=len(values), file=stream, disable=disable, desc="epoch 1/1") as bar:
            for loss in steps(values, step_s):
                bar.update(1)
                if postfix is not None:
                    bar.set_postfix(loss=loss, refresh=postfix)
        return stream
    return run


def rich_run(values: list[float], step_s: float) -> io.StringIO:
    from rich.console import Console
    from rich.progress import Progress as RichProgress

    stream = io.StringIO()
    with RichProgress(console=Console(file=stream)) as bar:
        task = bar.add_task("epoch 1/1", total=len(values), loss=None)
        for loss in steps(values, step_s):
            bar.update(task, advance=1, loss=loss)
    return stream


def empty_run(values: list[float], step_s: float) -> io.StringIO:
    """The loop alone, to subtract."""
    for _ in steps(values, step_s):
        pass
    return io.StringIO()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--updates", type=int, default=100_000,
                        help="updates per timed run (default 100000)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--step-ms", type=float, default=0.0,
                        help="busy-wait before each update, standing in for a training step")
    args = parser.parse_args(argv)
    values = losses(args.updates)
    step_s = args.step_ms / 1e3

    contenders: dict[str, Run] = {
        "gradwise Progress": gradwise_run(interactive=False),
        "gradwise Progress, terminal mode": gradwise_run(interactive=True),
    }
    try:
        import tqdm
        contenders["tqdm update"] = tqdm_run(postfix=None, disable=False)
        contenders["tqdm + set_postfix(loss)"] = tqdm_run(postfix=True, disable=False)
        contenders["tqdm + set_postfix(loss, refresh=False)"] = tqdm_run(postfix=False,
                                                                        disable=False)
        contenders["tqdm(disable=None): off, not a tty"] = tqdm_run(postfix=False, disable=None)
        versions = [f"tqdm {tqdm.__version__}"]
    except ImportError:
        print("note: tqdm is not installed (pip install tqdm); skipping it")
        versions = []
    try:
        import rich.progress  # noqa: F401
        contenders["rich Progress"] = rich_run
        versions.append(f"rich {version('rich')}")
    except ImportError:
        print("note: rich is not installed (pip install rich); skipping it")
    contenders["empty loop"] = empty_run

    times: dict[str, list[float]] = {name: [] for name in contenders}
    written: dict[str, int] = {}
    names = list(contenders)
    for r in range(args.repeats + 1):  # the first round warms up
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            stream = contenders[name](values, step_s)
            elapsed = time.perf_counter() - start
            if r:
                times[name].append(elapsed)
            written[name] = len(stream.getvalue().encode())

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"python {platform.python_version()}, {', '.join(versions) or 'no peers'}, "
          f"{os.cpu_count()} cpus, 1-min load {load:.1f}; {args.updates} updates into a "
          f"non-terminal stream, {args.step_ms:g} ms step, median of {args.repeats} interleaved "
          "rounds")
    if step_s:
        print("(the busy-wait steps dominate the time, so only the bytes are shown)")
        print(f"{'contender':40s} {'bytes written':>14s} {'bytes per second':>17s}")
        seconds = args.updates * step_s
        for name in times:
            print(f"{name:40s} {written[name]:14d} {written[name] / seconds:17.0f}")
        return
    base = statistics.median(times["empty loop"])
    ours = statistics.median(times["gradwise Progress"]) - base
    print(f"{'contender':40s} {'ns/update':>10s} {'minus loop':>11s} {'vs gradwise':>12s} "
          f"{'bytes written':>14s}")
    for name, t in times.items():
        per = statistics.median(t) / args.updates * 1e9
        net = (statistics.median(t) - base) / args.updates * 1e9
        ratio = "" if name == "empty loop" else f"{net / (ours / args.updates * 1e9):11.1f}x"
        print(f"{name:40s} {per:10.0f} {net:11.0f} {ratio:>12s} {written[name]:14d}")


if __name__ == "__main__":
    main()
