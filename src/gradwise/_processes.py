"""Local worker processes (a search's workers, the runs of ``gradwise train --seeds``)."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable


def run_processes(target: Callable[..., None], args: list[tuple],
                  name: str = "gradwise-worker") -> list[int | None]:
    """Run ``target(*a)`` for each ``a`` of ``args`` in its own (spawned) process and wait for
    all of them; Ctrl-C terminates them. Returns their exit codes (multiprocessing's type; set
    once a process is joined)."""
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=target, name=f"{name}-{i}", args=a)
             for i, a in enumerate(args)]
    for proc in procs:
        proc.start()
    try:
        for proc in procs:
            proc.join()
    except KeyboardInterrupt:
        for proc in procs:
            proc.terminate()
        raise
    return [proc.exitcode for proc in procs]


def threads_per_worker(workers: int) -> int:
    """The torch threads each of ``workers`` processes gets: the cores shared out, at least 1."""
    return max(1, (os.cpu_count() or 1) // workers)
