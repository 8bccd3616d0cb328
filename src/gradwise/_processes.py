"""Local worker processes (a search's workers, the runs of ``gradwise train --seeds``)."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
from collections.abc import Callable, Iterator


def run_processes(target: Callable[..., None], args: list[tuple],
                  name: str = "gradwise-worker") -> list[int | None]:
    """Run ``target(*a)`` for each ``a`` of ``args`` in its own (spawned) process and wait for
    all of them; Ctrl-C terminates them. Returns their exit codes (multiprocessing's type; set
    once a process is joined)."""
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=target, name=f"{name}-{i}", args=a)
             for i, a in enumerate(args)]
    with _main_not_rerun():
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


@contextlib.contextmanager
def _main_not_rerun() -> Iterator[None]:
    """While children start: hide the path of a ``__main__`` that has no module name (the
    ``gradwise`` console script, whose ``sys.exit(main())`` has no ``__name__`` guard), which
    a spawned child would otherwise run again: the whole command, in every worker. The
    target runs from its own module either way."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or path is None or getattr(main, "__spec__", None) is not None:
        yield
        return
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = path


def threads_per_worker(workers: int) -> int:
    """The torch threads each of ``workers`` processes gets: the cores shared out, at least 1."""
    return max(1, (os.cpu_count() or 1) // workers)
