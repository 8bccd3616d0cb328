"""One config trained with several seeds: the members of an independent-model ensemble.

``gradwise train CONFIG --seeds 0-4 --out runs/NAME`` writes a *seed group*::

    runs/NAME/config.yaml    the config every member shares (its ``seed`` is the first one's)
    runs/NAME/seeds.json     {"seeds": [0, 1, 2, 3, 4]}
    runs/NAME/seed-K/        an ordinary run directory, trained with ``seed: K``

The seed changes everything random in a run: the initialisation, the batch order, the
augmentation, dropout and the validation split (the test split is the data's own or carved
with seed 0, the same for every member). ``gradwise ensemble runs/NAME`` then evaluates the
members together (:mod:`gradwise.train.run_ensemble`). ``gradwise train --resume runs/NAME``
finishes a group: finished members are kept, interrupted ones resumed, missing ones started.
"""

from __future__ import annotations

import re
import statistics
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from .. import _io
from .._processes import run_processes, threads_per_worker
from ..config import MAX_SEED, Config, dump, load_config, validate
from ..errors import UserError
from ..rundir import RunDir, claim, kind_of
from .trainer import Trainer

SEEDS_FILE = "seeds.json"
#: the most members one group trains (each is a full run)
MAX_MEMBERS = 100
_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse_seeds(text: str) -> list[int]:
    """Seeds from ``--seeds``: ranges and single seeds, comma-separated, in order, no repeats.

    >>> parse_seeds("0-4"), parse_seeds("3"), parse_seeds("0-2,7")
    ([0, 1, 2, 3, 4], [3], [0, 1, 2, 7])
    """
    seeds: list[int] = []
    for part in str(text).split(","):
        match = _RANGE.match(part.strip())
        if match is None:
            raise UserError(f"--seeds {text!r} is invalid at {part.strip()!r}; accepted: seeds "
                            "and ranges such as 0-4, 7 or 0-2,7 (whole numbers)")
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) is not None else low
        if high < low or high > MAX_SEED:
            raise UserError(f"--seeds {text!r}: the range {part.strip()} is empty or goes past "
                            f"the largest seed {MAX_SEED}")
        if high - low + 1 + len(seeds) > MAX_MEMBERS:
            raise UserError(f"--seeds {text!r} names more than {MAX_MEMBERS} seeds")
        seeds.extend(s for s in range(low, high + 1))
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise UserError(f"--seeds {text!r} names seed {repeated[0]} twice")
    return seeds


def member_dir(group: str | Path, seed: int) -> Path:
    """``GROUP/seed-K``."""
    return Path(group) / f"seed-{seed}"


def members(group: str | Path) -> list[Path]:
    """The member run directories of a seed group, in the order of its seeds."""
    return [member_dir(group, s) for s in read_seeds(group)]


def read_seeds(group: str | Path) -> list[int]:
    """The seeds a group was started with (``seeds.json``)."""
    path = Path(group) / SEEDS_FILE
    data = _io.read_json(path, "the seed list gradwise train --seeds writes")
    seeds = data.get("seeds") if isinstance(data, dict) else None
    if (not isinstance(seeds, list) or not seeds or len(seeds) > MAX_MEMBERS
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED
                       for s in seeds)):
        raise UserError(f"{str(path)!r} is corrupt: expected {{\"seeds\": [0, 1, ...]}} with "
                        f"1 to {MAX_MEMBERS} seeds from 0 to {MAX_SEED}")
    return seeds


def with_seed(config: Config, seed: int) -> Config:
    """``config`` with ``seed`` replaced."""
    return validate({**config.model_dump(), "seed": seed})


def train_seeds(config: Config | dict | str | Path, seeds: list[int], out: str | Path, *,
                workers: int = 1, quiet: bool = False) -> list[dict]:
    """Train ``config`` once per seed into the seed group ``out`` (see the module docstring),
    ``workers`` runs at a time in their own processes; returns the members' summaries.

    Everything is checked (config, data, model, seeds, workers) before anything is written."""
    config = load_config(config)
    if not seeds:
        raise UserError("give at least one seed")
    _check_workers(workers, len(seeds))
    with torch.random.fork_rng(devices=[]):
        Trainer(config, out=None, quiet=True)  # the data, model and options, before writing
    out = start_group(config, seeds, out)
    return _train_members(config, out, seeds, workers, quiet)


def start_group(config: Config, seeds: list[int], out: str | Path) -> Path:
    """Claim ``out`` as a seed group of ``config`` and ``seeds`` (its ``config.yaml`` and
    ``seeds.json``; no member trained yet); returns it."""
    out = claim(out, "seeds")
    if (out / SEEDS_FILE).is_file():
        raise UserError(f"{str(out)!r} already holds a seed group; finish it with gradwise "
                        f"train --resume {out}, or choose another --out")
    _io.write_text(out / RunDir.CONFIG, dump(config))
    _io.write_json(out / SEEDS_FILE, {"seeds": seeds})
    return out


def resume_seeds(group: str | Path, *, workers: int = 1, quiet: bool = False) -> list[dict]:
    """Finish the seed group ``group``: finished members are kept, interrupted ones resumed
    from their last checkpoint, the others started."""
    group = Path(group)
    if kind_of(group) != "seeds":
        raise UserError(f"{str(group)!r} is not a seed group written by gradwise train --seeds")
    seeds = read_seeds(group)
    config = load_config(group / RunDir.CONFIG)
    _check_workers(workers, len(seeds))
    return _train_members(config, group, seeds, workers, quiet)


def _check_workers(workers: object, members: int) -> None:
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= members:
        raise UserError(f"--workers {workers!r} is invalid; accepted: 1 to {members} (one run "
                        "per worker at most)")


def is_group(path: str | Path) -> bool:
    """Whether ``path`` is a seed group."""
    return kind_of(path) == "seeds"


def _train_members(config: Config, group: Path, seeds: list[int], workers: int,
                   quiet: bool) -> list[dict]:
    if workers == 1:
        for seed in seeds:
            train_member(config, group, seed, quiet=quiet, say=not quiet)
    else:
        shares = [seeds[i::workers] for i in range(workers)]
        threads = threads_per_worker(workers)
        run_processes(_worker_main, [(config.model_dump(mode="json"), str(group), share,
                                      threads) for share in shares], name="gradwise-seeds")
    summaries = []
    for seed in seeds:
        summary = RunDir(member_dir(group, seed)).read_summary()
        if summary is None:
            raise UserError(f"seed {seed} did not finish (see the messages above); continue "
                            f"with gradwise train --resume {group}")
        summaries.append(summary)
    return summaries


def train_member(config: Config, group: Path, seed: int, *, quiet: bool, say: bool,
                 callbacks: Iterable[Callable[[Trainer, dict], None]] = ()) -> dict:
    """Member ``seed``: kept if finished, resumed if interrupted, else trained (``quiet``:
    without the Trainer's progress; ``say``: a line when it starts and ends; ``callbacks``:
    the Trainer's, e.g. one that stops it at a deadline)."""
    run = RunDir(member_dir(group, seed))
    summary = run.read_summary() if run.path.is_dir() else None
    if summary is not None:
        if say:
            print(f"seed {seed}: finished before, kept", file=sys.stderr)
        return summary
    if say:
        print(f"seed {seed}: training into {run.path}", file=sys.stderr, flush=True)
    trainer = Trainer(with_seed(config, seed), run.path, quiet=quiet, callbacks=callbacks)
    summary = trainer.fit(resume=run.checkpoint_path("last").is_file())
    if say:
        print(f"seed {seed}: test accuracy {100 * summary['test_accuracy']:.2f}%",
              file=sys.stderr, flush=True)
    return summary


def _worker_main(config: dict, group: str, seeds: list[int], threads: int) -> None:
    """One worker process: its share of the seeds, one after another."""
    torch.set_num_threads(threads)
    try:
        for seed in seeds:
            train_member(load_config(config), Path(group), seed, quiet=True, say=True)
    except UserError as exc:
        print(f"gradwise: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def describe(summaries: list[dict], seeds: list[int]) -> str:
    """The members' test accuracies and their mean and spread, one line each."""
    accuracies = [100 * s["test_accuracy"] for s in summaries]
    lines = [f"seed {seed}: test accuracy {a:.2f}%" for seed, a in zip(seeds, accuracies,
                                                                         strict=True)]
    if len(accuracies) > 1:
        lines.append(f"mean {statistics.mean(accuracies):.2f}% +- "
                     f"{statistics.stdev(accuracies):.2f} (sample std over {len(accuracies)} "
                     "seeds)")
    return "\n".join(lines)
