"""Kill `gradwise train` with SIGKILL at random moments, then `gradwise train --resume RUN`: the
result must equal one uninterrupted run, bit for bit (the model tensors of checkpoints/last.pt
and best.pt, summary.json but for its wall-clock keys, metrics.jsonl but for elapsed seconds),
and no ``.*.tmp`` file may be left behind.

How the kills are placed. An uninterrupted reference run is timed from its start (Popen) to the
moment its run directory appears (its config.yaml: the end of the interpreter and import
start-up), its first checkpoint, and its exit. The reference runs the Trainer exactly as
``gradwise train CONFIG --out DIR`` does (``Trainer(load_config(CONFIG), DIR).fit()``), with
one callback that snapshots the run directory after every epoch (see below). Beside it, a
second run is killed at once: as soon as its run directory appears (kill #0; it also measures
the start-up, which is reported). A kill during the start-up only tests Python's start-up
(nothing is on disk yet; a kill inside ``claim`` is tested on disk below), so the start-up is
subtracted: each timed kill waits for its own run directory, then for a random delay drawn
from a seeded ``random.Random``:

* "first epoch" kills: a delay shorter than the reference's first epoch (run directory to first
  checkpoint): the run has no checkpoint yet and ``--resume`` must start it from the beginning;
* "anywhere" kills: a delay drawn uniformly across the reference's duration after its start-up
  (training, the checkpoint writes, summary.json, report.html);
* "between last.pt and best.pt" kills: a moment too short to hit by timing, so the state is made
  on disk instead: the reference's run directory is snapshotted after every epoch (the
  Trainer's callbacks run right after the epoch's checkpoints are written), and in a copy of
  the snapshot of epoch k whose validation improved (``last.pt`` at epoch k, best epoch k)
  ``best.pt`` is put back from an earlier epoch, or removed (epoch 1), optionally with the torn
  temporary file of an interrupted ``best.pt`` write beside it.

All processes run with one intra-op thread (OMP_NUM_THREADS=1), two at a time on 2 cores, the
reference included, so timings are measured under the load the kills see; the numerics of a
process do not depend on what runs beside it.

The normal suite runs 6 kills: about 70 s of CPU time in all, 45-85 s on 2 cores depending on
what else runs on them. The 20-kill campaign is marked slow (``pytest -m slow
tests/test_kill_resume.py``: about 200 s of CPU time, 2-8 minutes).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

# 4 epochs of 162 steps of a 512-512 MLP with dropout (global RNG), momentum SGD and a cosine
# schedule (optimizer and schedule state), a step record every 5 steps and a monitor record every
# 7: about 1 s of training inside 5-8 s of process (imports, data, report.html). Its validation
# accuracy improves at every epoch (checked below), which the best.pt states need.
CONFIG = textwrap.dedent("""\
    seed: 1
    data: digits
    model: {name: mlp, hidden: [512, 512], dropout: 0.1}
    optimizer: {name: sgd, lr: 0.05, momentum: 0.9}
    schedule: cosine
    train: {epochs: 4, batch_size: 8, log_every: 5, monitor_every: 7}
    """)
EPOCHS = 4
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
#: Summary keys that measure wall-clock time, the only ones allowed to differ.
WALL_CLOCK = {"wall_seconds", "samples_per_second"}
TIMEOUT = 300
POLL = 0.002


def cli(*args) -> list[str]:
    return [sys.executable, "-m", "gradwise.cli", *map(str, args)]


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(cli(*args), capture_output=True, text=True, env=ENV, timeout=TIMEOUT)


def tmp_files(run: Path) -> list[str]:
    return sorted(str(p.relative_to(run)) for p in run.rglob(".*.tmp"))


def wait_for(path: Path, proc: subprocess.Popen, t0: float) -> float | None:
    """Seconds from ``t0`` until ``path`` exists (None: the process ended first)."""
    while not path.exists():
        if proc.poll() is not None or time.perf_counter() - t0 > TIMEOUT:
            return None
        time.sleep(POLL)
    return time.perf_counter() - t0


# -- the reference run and the start-up -----------------------------------------------------------

@dataclass
class Reference:
    root: Path
    config: Path
    run: Path
    startup: float       # Popen -> run directory (config.yaml), of the run killed at once
    first_epoch: float   # run directory -> first last.pt, in the reference
    after_startup: float  # run directory -> exit, in the reference
    at_once: Path        # what the run killed at once left (kill #0), kept as it was
    improved: list[int] = field(default_factory=list)  # epochs whose val accuracy improved


SNAPSHOT = textwrap.dedent("""\
    import shutil, sys
    from gradwise.config import load_config
    from gradwise.train import Trainer
    config, out, snaps = sys.argv[1:4]

    def snapshot(trainer, record):
        shutil.copytree(out, f"{snaps}/epoch-{record['epoch']}")

    Trainer(load_config(config), out, quiet=True, callbacks=[snapshot]).fit()
    """)


def _timed_reference(config: Path, out: Path, snaps: Path) -> tuple[float, float, float]:
    """Run ``config`` uninterrupted into ``out`` (what ``gradwise train`` runs, plus snapshots
    into ``snaps/epoch-K``); (to run dir, to first checkpoint, to exit) in seconds."""
    t0 = time.perf_counter()
    with open(out.with_suffix(".log"), "w") as log:
        proc = subprocess.Popen([sys.executable, "-c", SNAPSHOT, str(config), str(out),
                                 str(snaps)], stdout=log, stderr=subprocess.STDOUT, env=ENV)
        to_dir = wait_for(out / "config.yaml", proc, t0)
        to_ckpt = wait_for(out / "checkpoints" / "last.pt", proc, t0)
        rc = proc.wait(TIMEOUT)
    duration = time.perf_counter() - t0
    assert rc == 0, out.with_suffix(".log").read_text()
    assert to_dir is not None and to_ckpt is not None, "the reference run ended too soon to time"
    return to_dir, to_ckpt, duration


def _kill_at_once(config: Path, out: Path) -> float:
    """Start a run and SIGKILL it as soon as its run directory appears; the seconds it took."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cli("train", config, "--out", out, "--quiet"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    startup = wait_for(out / "config.yaml", proc, t0)
    proc.kill()
    proc.wait()
    assert startup is not None, "the run ended before it could be killed at once"
    return startup


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Reference:
    root = tmp_path_factory.mktemp("kill")
    config = root / "config.yaml"
    config.write_text(CONFIG)
    with ThreadPoolExecutor(2) as pool:
        timed = pool.submit(_timed_reference, config, root / "reference", root / "snapshots")
        at_once = pool.submit(_kill_at_once, config, root / "kill-00")
        to_dir, to_ckpt, duration = timed.result()
        startup = at_once.result()
    shutil.copytree(root / "kill-00", root / "at-once")  # each campaign resumes its own copy
    run = root / "reference"
    epochs = [r for r in read_metrics(run) if "val_accuracy" in r]
    best, improved = -1.0, []
    for record in epochs:
        if record["val_accuracy"] > best:
            best = record["val_accuracy"]
            improved.append(record["epoch"])
    assert len(epochs) == EPOCHS and len(improved) >= 3, (
        f"the config must improve its val accuracy at several epochs: {improved}")
    print(f"\nreference: run dir at {to_dir:.2f} s, first checkpoint at {to_ckpt:.2f} s, "
          f"exit at {duration:.2f} s; killed-at-once run: start-up {startup:.2f} s; "
          f"val accuracy improved at epochs {improved}")
    return Reference(root, config, run, startup=startup, first_epoch=to_ckpt - to_dir,
                     after_startup=duration - to_dir, at_once=root / "at-once",
                     improved=improved)


# -- comparing a resumed run with the reference ------------------------------------------------

def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _without_clock(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "elapsed_seconds"} for r in records]


def differences(run: Path, ref: Path) -> list[str]:
    """What ``run`` (resumed) holds that differs from the uninterrupted ``ref``."""
    problems = []
    left = tmp_files(run)
    if left:
        problems.append(f"temporary files left: {left}")
    if not (run / "summary.json").is_file():
        return problems + ["no summary.json"]
    a = json.loads((ref / "summary.json").read_text())
    b = json.loads((run / "summary.json").read_text())
    for key in sorted((a.keys() | b.keys()) - WALL_CLOCK):
        if a.get(key) != b.get(key):
            problems.append(f"summary.json[{key!r}]: {b.get(key)!r} != reference {a.get(key)!r}")
    for name in ("last", "best"):
        path = run / "checkpoints" / f"{name}.pt"
        if not path.is_file():
            problems.append(f"checkpoints/{name}.pt missing")
            continue
        want = torch.load(ref / "checkpoints" / f"{name}.pt", weights_only=True)
        got = torch.load(path, weights_only=True)
        if got.get("epoch") != want["epoch"]:
            problems.append(f"{name}.pt is of epoch {got.get('epoch')}, reference "
                            f"{want['epoch']}")
        model_a, model_b = want["model"], got.get("model", {})
        if model_a.keys() != model_b.keys():
            problems.append(f"{name}.pt model keys differ")
            continue
        unequal = [k for k in model_a if not torch.equal(model_a[k], model_b[k])]
        if unequal:
            problems.append(f"{name}.pt model tensors differ: {unequal}")
    if _without_clock(read_metrics(run)) != _without_clock(read_metrics(ref)):
        problems.append("metrics.jsonl differs from the reference (elapsed_seconds aside)")
    return problems


# -- one kill ----------------------------------------------------------------------------------

def state_of(run: Path) -> str:
    """What a killed run left on disk, in words."""
    if not (run / "config.yaml").is_file():
        return "no run directory yet" if not run.exists() else "run directory without config"
    last = run / "checkpoints" / "last.pt"
    if (run / "summary.json").is_file():
        where = "finished (summary.json written)"
    elif not last.is_file():
        where = "first epoch, no checkpoint"
    else:
        where = f"after epoch {torch.load(last, weights_only=True)['epoch']}"
    torn = tmp_files(run)
    return where + (f", torn {', '.join(torn)}" if torn else "")


def recover_and_check(ref: Reference, run: Path, label: str) -> tuple[str, list[str]]:
    """Resume ``run`` and compare it with the reference; (state before, problems)."""
    state = state_of(run)
    problems = []
    if (run / "config.yaml").is_file():
        result = run_cli("train", "--resume", run, "--quiet")
        if result.returncode != 0:
            problems.append(f"--resume exited {result.returncode}: {result.stderr[-2000:]}")
    else:
        # killed before the run directory held its config: --resume cannot know the config, it
        # must say so (exit 2); the same command again must then start the run
        result = run_cli("train", "--resume", run, "--quiet")
        if result.returncode != 2 or "Traceback" in result.stderr:
            problems.append(f"--resume of a run without config.yaml exited "
                            f"{result.returncode}: {result.stderr[-2000:]}")
        result = run_cli("train", ref.config, "--out", run, "--quiet")
        if result.returncode != 0:
            problems.append(f"re-running the command exited {result.returncode}: "
                            f"{result.stderr[-2000:]}")
    if not problems:
        problems = differences(run, ref.run)
    return state, [f"{label} ({state}): {p}" for p in problems]


def timed_kill(ref: Reference, run: Path, delay: float) -> str:
    """SIGKILL a run ``delay`` s after its run directory appears (after its start-up)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cli("train", ref.config, "--out", run, "--quiet"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    start = t0 + (wait_for(run / "config.yaml", proc, t0) or 0.0)
    while proc.poll() is None and time.perf_counter() - start < delay:
        time.sleep(POLL)
    ended = proc.poll() is not None
    proc.kill()
    proc.wait()
    return "ended before the kill" if ended else f"killed at {time.perf_counter() - t0:.2f} s"


# -- states between last.pt and best.pt, made on disk -------------------------------------------

def between_last_and_best(snaps: Path, run: Path, epoch: int, older: int | None,
                          torn: bool) -> str:
    """In a copy of epoch ``epoch``'s snapshot (last.pt at ``epoch``, its best epoch), put back
    best.pt of epoch ``older`` (None: no best.pt yet), optionally beside a torn best.pt
    temporary file: a kill between the write of last.pt and that of best.pt."""
    shutil.copytree(snaps / f"epoch-{epoch}", run)
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == epoch and state["best"]["epoch"] == epoch
    best = run / "checkpoints" / "best.pt"
    best.unlink()
    if older is not None:
        shutil.copy(snaps / f"epoch-{older}" / "checkpoints" / "best.pt", best)
        assert torch.load(best, weights_only=True)["epoch"] == older
    if torn:
        data = (snaps / f"epoch-{epoch}" / "checkpoints" / "best.pt").read_bytes()
        (run / "checkpoints" / ".best.pt.k1ll3d.tmp").write_bytes(data[:len(data) // 3])
    return (f"last.pt epoch {epoch}, best.pt " + (f"epoch {older}" if older else "missing")
            + (", torn .best.pt tmp" if torn else ""))


# -- the campaign --------------------------------------------------------------------------------

def campaign(ref: Reference, seed: int, first_epoch: int, anywhere: int,
             between: int) -> None:
    """Kill #0 is the run killed at once; then ``first_epoch`` + ``anywhere`` timed kills and
    ``between`` states between last.pt and best.pt, two at a time; every one resumed and
    compared. Fails with the list of every kill that did not end as the reference did."""
    rng = random.Random(seed)
    root = ref.root / f"campaign-{seed}"
    root.mkdir()
    plans = []  # (label, delay after the run directory appears)
    for _ in range(first_epoch):
        delay = rng.uniform(0.0, 0.8 * ref.first_epoch)
        plans.append((f"in the first epoch, {delay:.3f} s after start-up", delay))
    for _ in range(anywhere):
        delay = rng.uniform(0.0, ref.after_startup)
        plans.append((f"anywhere, {delay:.3f} s after start-up", delay))
    improved = [e for e in ref.improved if e >= 2]
    states = [(1, None, True)]  # kill between epoch 1's last.pt and its (first) best.pt
    for i in range(between - 1):
        epoch = improved[-1 - i % len(improved)]
        earlier = [e for e in ref.improved if e < epoch]
        states.append((epoch, rng.choice(earlier), bool(i % 2)))
    states = states[:between]

    def timed(i, label, delay):
        run = root / f"kill-{i:02d}"
        how = timed_kill(ref, run, delay)
        return recover_and_check(ref, run, f"kill #{i} {label} ({how})")

    def emulated(i, epoch, older, torn):
        run = root / f"kill-{i:02d}"
        label = between_last_and_best(ref.root / "snapshots", run, epoch, older, torn)
        return recover_and_check(ref, run, f"kill #{i} between last.pt and best.pt: {label}")

    shutil.copytree(ref.at_once, root / "kill-00")
    with ThreadPoolExecutor(2) as pool:
        jobs = [pool.submit(recover_and_check, ref, root / "kill-00",
                            f"kill #0 at once ({ref.startup:.2f} s)")]
        jobs += [pool.submit(timed, i, *plan) for i, plan in enumerate(plans, 1)]
        jobs += [pool.submit(emulated, i, *s) for i, s in enumerate(states, len(plans) + 1)]
        results = [job.result() for job in jobs]
    kills = len(results)
    table = "\n".join(f"  #{i:2d}: {state}" for i, (state, _) in enumerate(results))
    print(f"\n{kills} kills (seed {seed}), states before --resume:\n{table}")
    problems = [p for _, found in results for p in found]
    assert not problems, f"{len(problems)} problems in {kills} kills:\n" + "\n".join(problems)
    before_checkpoint = [s for s, _ in results if "no checkpoint" in s]
    assert before_checkpoint, f"no kill landed in the first epoch:\n{table}"


def test_six_kills_then_resume_equal_an_uninterrupted_run(reference):
    # 6 kills: at once, 1 in the first epoch, 2 anywhere, 2 between last.pt and best.pt
    campaign(reference, seed=2024, first_epoch=1, anywhere=2, between=2)


@pytest.mark.slow
def test_twenty_kills_then_resume_equal_an_uninterrupted_run(reference):
    # 20 kills: at once, 4 in the first epoch, 11 anywhere, 4 between last.pt and best.pt
    campaign(reference, seed=7, first_epoch=4, anywhere=11, between=4)


def test_kill_while_claiming_the_folder_leaves_it_usable(reference, tmp_path):
    """A kill inside ``claim`` (after mkdir, during the atomic write of the folder's
    ``.gradwise.json`` marker) leaves a folder that holds only gradwise's own torn temporary
    file. The same command again must start the run there."""
    run = tmp_path / "run"
    run.mkdir()
    (run / ".gradwise.json.k1ll3d.tmp").write_text('{"ki')
    result = run_cli("train", reference.config, "--out", run, "--quiet")
    assert result.returncode == 0, result.stderr
    assert differences(run, reference.run) == []
