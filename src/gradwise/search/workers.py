"""How workers share a stage through the storage (a local SQLite file, or PostgreSQL):

* a worker asks Optuna for a trial; the trial (a re-run too) holds a slot only if fewer than
  ``trials`` live trials (running, waiting or finished, not failed) have a smaller trial id;
  otherwise it is told FAIL with the user attribute ``surplus`` and ignored, so workers never
  overshoot (:func:`has_slot`);
* a grid stage enqueues its points as waiting trials (user attribute ``grid_point``), and
  again any point that no live trial holds; workers that start together may enqueue a point
  twice, and a trial whose point a live trial with a smaller id holds is told FAIL as
  ``surplus`` when asked, so each point runs once;
* a running trial sends a heartbeat every ``search.heartbeat`` seconds (:class:`Heartbeat`);
  one silent for ``search.grace`` seconds belongs to a dead worker: the first live worker to
  notice marks it FAIL and enqueues its params again (:func:`retry_stale`; user attribute
  ``retry_of``), which the next ``ask`` pops and which takes the dead trial's slot (a fresh
  trial killed before it drew its params re-runs with a fresh draw; a grid point or a re-run
  repeats its params); a worker that was only slow finds its trial FAIL when it reports, drops
  its result and goes on; a trial whose worker died before its first heartbeat gets one from a
  worker that has watched it for ``grace + heartbeat`` seconds (:meth:`Worker.watch`);
* a stage is over when ``trials`` trials have finished (COMPLETE or PRUNED) and none is
  running or waiting, or, for a worker given a ``deadline`` (a time budget), once no trial
  fits before it: it starts no trial that the median time of the stage's COMPLETE trials
  would carry past it, and stops its running trial at the end of the epoch that a further
  epoch would carry past it (the trial is told PRUNED, its ``stop_reason`` says why);
* a fresh trial's draw is seeded by its *slot* (the number of live trials before it, user
  attribute ``slot``), not by its trial number, and a re-run keeps the slot of the trial it
  replaces, so a search resumed after a crash draws the points an uninterrupted search draws
  (a trial killed before drawing its params draws them again in its re-run).

A worker runs the ranges, epochs and trial count of its own config's plan
(:meth:`gradwise.search.Search.plan`); a value the storage holds for a trial (an enqueued
re-run or grid point) is used only if it is one of that plan's own values.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import sys
import threading
import time

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import fail_stale_trials
from optuna.trial import TrialState

from .. import train
from ..errors import UserError
from .grid import enqueue_grid, grid_points
from .space import Dimension, Space
from .spec import SearchSpec, trial_config
from .stages import Settings

#: seconds a worker waits for the others' trials before it looks at the stage again
POLL_SECONDS = 0.5


def holds_slot(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether ``trial`` is live: not ``surplus``, and not FAIL unless its config was rejected
    (user attribute ``error``: a finished trial, not a lost one)."""
    if trial.user_attrs.get("surplus"):
        return False
    return trial.state != TrialState.FAIL or "error" in trial.user_attrs


def slot(study: optuna.Study, trial: optuna.Trial | optuna.trial.FrozenTrial) -> int:
    """The number of live trials (:func:`holds_slot`) with a smaller id than ``trial``'s."""
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t._trial_id < trial._trial_id and holds_slot(t))


def has_slot(study: optuna.Study, trial: optuna.Trial, target: int, grid: bool) -> bool:
    """Whether ``trial`` may run: fewer than ``target`` live trials have a smaller id; in a
    grid stage, no live trial with a smaller id holds its grid point. (A re-run passes, as
    the dead trial it replaces is no longer live, unless a fresh trial took the slot first.)"""
    earlier = [t for t in study.get_trials(deepcopy=False)
               if t._trial_id < trial._trial_id and holds_slot(t)]
    if grid:
        point = trial.user_attrs.get("grid_point")
        return point is not None and all(t.user_attrs.get("grid_point") != point
                                         for t in earlier)
    return len(earlier) < target


def retry_stale(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Enqueue the params of a dead worker's FAIL ``trial`` again (user attribute ``retry_of``,
    and its ``grid_point`` or its ``slot``); a ``surplus`` trial is not re-run. Optuna calls
    it in the one worker that marked the trial FAIL (the storage's stale-trial callback); a
    worker stopped by Ctrl-C calls it for its own trial."""
    if trial.user_attrs.get("surplus"):
        return
    attrs = {"retry_of": trial.user_attrs.get("retry_of", trial.number)}
    if "grid_point" in trial.user_attrs:
        attrs["grid_point"] = trial.user_attrs["grid_point"]
    else:  # its draw's seed; one killed before recording it: counted now
        attrs["slot"] = trial.user_attrs["slot"] if "slot" in trial.user_attrs \
            else slot(study, trial)
    # an enqueued trial (a grid point, a re-run) has all its params even if killed before
    # drawing them
    params = trial.system_attrs.get("fixed_params") or trial.params
    study.enqueue_trial(dict(params), user_attrs=attrs)


def record_heartbeat(storage: optuna.storages.RDBStorage,
                     trial: optuna.Trial | optuna.trial.FrozenTrial) -> None:
    """Record one heartbeat of the running ``trial`` in ``storage``."""
    storage.record_heartbeat(trial._trial_id)


class Heartbeat:
    """A thread that records ``trial``'s heartbeat every ``interval`` seconds until
    :meth:`stop`."""

    def __init__(self, storage: optuna.storages.RDBStorage, trial: optuna.Trial,
                 interval: int):
        self.storage, self.trial, self.interval = storage, trial, interval
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.done.set()
        self.thread.join()

    def _beat(self) -> None:
        while not self.done.wait(self.interval):
            with contextlib.suppress(Exception):  # a storage hiccup: the next beat retries
                record_heartbeat(self.storage, self.trial)


class Worker:
    """Runs trials of one stage after another, sharing each stage with the other workers of
    the storage. ``number`` tells this process's workers apart (each trial's ``worker`` result
    is ``host:pid:number``). ``deadline`` (seconds since the epoch, as ``time.time()``): the
    time by which this worker's trials end (see the module doc); None: none."""

    def __init__(self, spec: SearchSpec, storage: optuna.storages.RDBStorage,
                 number: int = 0, quiet: bool = False, deadline: float | None = None):
        self.spec, self.storage, self.number, self.quiet = spec, storage, number, quiet
        self.deadline = deadline
        self._first_seen: dict[int, float] = {}  # running trial id -> when this worker saw it
        self._beaten: set[int] = set()  # running trials this worker has sent a heartbeat for

    def run_stage(self, study: optuna.Study, plan: dict) -> None:
        """Run trials of the stage's ``study`` until it is over. ``plan`` is this config's
        own plan of the stage (``stage``, ``name``, ``epochs``, ``trials``,
        ``requested_trials``, ``space``), never the one stored with the study."""
        settings = self.spec.settings
        target, index = plan["trials"], plan["stage"]
        space = Space.from_json(plan["space"])
        study.pruner = _pruner(settings.pruner)
        grid = settings.sampler == "grid"
        if grid:
            points = grid_points(space, plan["requested_trials"], settings.seed)
            study.sampler = _sampler(settings, index, 0, target)  # draws nothing
        while True:
            fail_stale_trials(study)
            trials = study.get_trials(deepcopy=False)
            self.watch(trials)
            live = [t for t in trials if holds_slot(t)]
            finished = [t for t in live if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                        or t.state == TrialState.FAIL]
            busy = [t for t in live if t.state in (TrialState.RUNNING, TrialState.WAITING)]
            waiting = [t for t in live if t.state == TrialState.WAITING]
            if len(finished) >= target and not busy:
                return
            held = {t.user_attrs.get("grid_point") for t in live}
            if grid and not waiting and enqueue_grid(study, points, held):
                continue
            if self.deadline is not None and time.time() + _typical_seconds(trials) \
                    >= self.deadline:
                return   # out of time: the trials left are not run
            if not waiting and (grid or len(live) >= target):
                time.sleep(POLL_SECONDS)   # the other workers' trials are running
                continue
            trial = study.ask()
            record_heartbeat(self.storage, trial)
            self._beaten.add(trial._trial_id)
            if not has_slot(study, trial, target, grid):
                try:
                    trial.set_user_attr("surplus", True)
                    study.tell(trial, state=TrialState.FAIL)
                except UpdateFinishedTrialError:  # this worker stalled: already failed as stale
                    pass
                continue
            if not grid:
                position = trial.user_attrs.get("slot")
                if isinstance(position, bool) or not isinstance(position, int):
                    position = slot(study, trial)
                    trial.set_user_attr("slot", position)
                study.sampler = _sampler(settings, index, position, target)
            try:
                self._run_trial(study, trial, space, plan)
            except UpdateFinishedTrialError:
                self._say(f"{plan['name']} trial {trial.number}: another worker gave it up "
                          f"(no heartbeat for {settings.grace} s); its re-run counts")

    def watch(self, trials: list[optuna.trial.FrozenTrial]) -> None:
        """Look at a stage's ``trials`` for one whose worker died before its first heartbeat
        (Optuna never calls a trial without any heartbeat stale). A trial still running
        ``grace + heartbeat`` seconds after this worker first saw it has had a heartbeat since
        then or has none (else it would be FAIL by now): send it one, after which Optuna
        judges it too."""
        now, settings = time.monotonic(), self.spec.settings
        for t in trials:
            if t.state != TrialState.RUNNING or t._trial_id in self._beaten:
                continue
            first = self._first_seen.setdefault(t._trial_id, now)
            if now - first > settings.grace + settings.heartbeat:
                self._beaten.add(t._trial_id)
                try:
                    record_heartbeat(self.storage, t)
                except Exception:  # a storage hiccup: the next look retries
                    self._beaten.discard(t._trial_id)

    def _run_trial(self, study: optuna.Study, trial: optuna.Trial, space: Space,
                   plan: dict) -> None:
        settings = self.spec.settings
        metric = settings.metric
        beat = Heartbeat(self.storage, trial, settings.heartbeat)
        beat.start()
        pruned: list[str] = []
        try:
            params = {dim.key: _suggest(trial, dim) for dim in space}
            config = trial_config(self.spec, params, plan["epochs"])

            def report(trainer, record):
                value = record[metric]
                if not math.isfinite(value):
                    return
                trial.report(value, record["epoch"])
                epoch_seconds = record["elapsed_seconds"] / max(record["epoch"], 1)
                if (self.deadline is not None and not trainer.stop_reason
                        and record["epoch"] < trainer.config.train.epochs
                        and time.time() + epoch_seconds > self.deadline):
                    reason = f"time budget: stopped after epoch {record['epoch']}"
                    trainer.stop(reason)
                    pruned.append(reason)
                    return
                # a trial at its last epoch has nothing left to save: it finishes
                if (settings.pruner != "none" and record["epoch"] < trainer.config.train.epochs
                        and trial.should_prune()):
                    reason = (f"pruned after epoch {record['epoch']}: {metric} {value:.4g} "
                              "behind the other trials")
                    trainer.stop(reason)
                    pruned.append(reason)

            start = time.perf_counter()
            summary = train.Trainer(config, out=None, quiet=True, callbacks=[report]).fit()
            seconds = time.perf_counter() - start
        except UserError as exc:
            beat.stop()
            trial.set_user_attr("error", str(exc))
            study.tell(trial, state=TrialState.FAIL)
            self._say(f"{plan['name']} trial {trial.number}: rejected: {exc}")
            return
        except KeyboardInterrupt:  # Ctrl-C: give the trial back now, not after the grace
            beat.stop()
            # the storage may be gone too: then the heartbeat rule still applies
            with contextlib.suppress(Exception):
                retry_stale(study, study.tell(trial, state=TrialState.FAIL))
            raise
        except BaseException:
            beat.stop()
            raise
        beat.stop()
        result = {key: _finite_or_none(summary.get(key))
                  for key in ("val_accuracy", "val_loss", "test_accuracy", "test_loss",
                              "train_accuracy", "train_loss", "epochs", "stop_reason")}
        result["seconds"] = round(seconds, 3)
        result["worker"] = f"{os.uname().nodename}:{os.getpid()}:{self.number}"
        trial.set_user_attr("result", result)  # one attribute: one write to the storage
        value = summary[metric]
        if pruned:
            frozen = study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
        else:
            if not math.isfinite(value):
                value = 0.0 if settings.direction == "maximize" else math.inf
            frozen = study.tell(trial, value, skip_if_finished=True)
        if frozen.state == TrialState.FAIL:  # given up by another worker a moment ago
            raise UpdateFinishedTrialError(f"trial {trial.number} is FAIL")
        done = sum(1 for t in study.get_trials(deepcopy=False)
                   if t.state in (TrialState.COMPLETE, TrialState.PRUNED))
        shown = " ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in frozen.params.items())
        note = ("  pruned" if pruned else
                f"  stopped: {summary['stop_reason']}" if summary.get("stop_reason") else "")
        self._say(f"{plan['name']} {done}/{plan['trials']}  trial {trial.number}  {shown}  "
                  f"{metric}={value:.4f}  ({seconds:.1f} s){note}")

    def _say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)


# -- pieces -----------------------------------------------------------------------------------

def _suggest(trial: optuna.Trial, dim: Dimension):
    """The trial's value of ``dim``, drawn, or the one enqueued with the trial if it is one
    of ``dim``'s own values (else the trial is rejected)."""
    try:
        if dim.kind == "choice":
            value = trial.suggest_categorical(dim.key, [dim.encode(c) for c in dim.choices])
        else:
            low, high = dim.bounds
            if dim.kind == "int":
                value = trial.suggest_int(dim.key, int(low), int(high))
            else:
                value = trial.suggest_float(dim.key, low, high, log=dim.kind == "loguniform")
        return dim.decode(value)
    except ValueError as exc:  # an enqueued value outside the space
        raise UserError(f"space: {dim.key}: the value enqueued for trial {trial.number} is "
                        f"not in this config's space ({exc})") from None


def _sampler(settings: Settings, stage: int, number: int, target: int):
    """A sampler seeded by (search seed, stage, ``number``: the trial's slot): the same search
    draws the same points whatever the number of workers or crashes."""
    seed = (settings.seed * 1_000_003 + stage * 10_007 + number) % (2 ** 31)
    if settings.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed,
                                          n_startup_trials=max(2, min(10, target // 3)))
    return optuna.samplers.RandomSampler(seed=seed)


def _pruner(name: str):
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def _typical_seconds(trials: list[optuna.trial.FrozenTrial]) -> float:
    """The median seconds of the COMPLETE ``trials`` (0 before the first)."""
    seconds = [t.user_attrs["result"]["seconds"] for t in trials
               if t.state == TrialState.COMPLETE and isinstance(t.user_attrs.get("result"), dict)
               and isinstance(t.user_attrs["result"].get("seconds"), int | float)]
    return statistics.median(seconds) if seconds else 0.0


def _finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
