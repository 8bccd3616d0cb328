"""A search on Optuna: one study per stage, in one storage, run by one or many workers.

``Search(spec, out).run()`` runs every stage in order. Stage ``i`` is the Optuna study
``<name>:<stage>`` whose user attribute ``gradwise`` records its ranges, epochs and trial
count; stage ``i + 1`` is created, once stage ``i`` has finished, with the ranges narrowed around
its top-k trials (:func:`gradwise.search.stages.narrow`).

How workers share a stage through the storage (a local SQLite file, or PostgreSQL):

* a worker asks Optuna for a trial; the trial (a re-run too) holds a slot only if fewer than
  ``trials`` live trials (running, waiting or finished, not failed) have a smaller trial id;
  otherwise it is told FAIL with the user attribute ``surplus`` and ignored, so workers never
  overshoot;
* a grid stage enqueues its points as waiting trials (user attribute ``grid_point``), and
  again any point that no live trial holds; workers that start together may enqueue a point
  twice, and a trial whose point a live trial with a smaller id holds is told FAIL as
  ``surplus`` when asked, so each point runs once;
* a running trial sends a heartbeat every ``search.heartbeat`` seconds; one silent for
  ``search.grace`` seconds belongs to a dead worker: the first live worker to notice marks it
  FAIL and enqueues its params again (user attribute ``retry_of``), which the next ``ask`` pops
  and which takes the dead trial's slot (a fresh trial killed before it drew its params
  re-runs with a fresh draw; a grid point or a re-run repeats its params); a worker that was
  only slow finds its trial FAIL when it reports, drops its result and goes on;
* a stage is over when ``trials`` trials have finished (COMPLETE or PRUNED) and none is
  running or waiting.

So a search killed at any point and continued with ``--resume`` ends with exactly the planned
trials per stage; none is lost and none runs twice to completion.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import os
import random
import sys
import threading
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ..config import read_yaml, validate
from ..errors import UserError
from .space import Space, parse_space, set_key
from .stages import Settings, Stage, narrow_space, parse_settings

_PRIMITIVE = (str, int, float, bool, type(None))
POLL_SECONDS = 0.5
SCHEMA_ATTEMPTS = 5


@dataclass(frozen=True)
class SearchSpec:
    """A search config: the base training config (a dict), the space and the settings."""

    name: str
    base: dict
    space: Space
    settings: Settings

    def fingerprint(self) -> str:
        """A hash of what decides the trials (not the heartbeat); workers must agree on it."""
        s = self.settings
        data = {"base": self.base, "space": self.space.to_json(),
                "stages": [asdict(st) for st in s.stages], "sampler": s.sampler,
                "metric": s.metric, "pruner": s.pruner, "seed": s.seed, "margin": s.margin,
                "min_width": s.min_width}
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def load_search(source: str | Path | dict, overrides: dict | None = None,
                check: bool = True) -> SearchSpec:
    """The SearchSpec of a YAML file (or dict): the usual config keys (or a ``base:``
    mapping) beside ``space:`` and ``search:``. ``overrides`` set base keys
    (``train.epochs``), search settings (``search.sampler``) or ranges
    (``space.optimizer.lr``). With ``check``, a config built from the midpoint of every range
    is validated and its Trainer built (data, model, optimizer and schedule), so that a bad
    key or option fails here, before any trial runs."""
    raw = read_yaml(Path(source)) if not isinstance(source, dict) else copy.deepcopy(source)
    if "space" not in raw:
        raise UserError("a search config needs a 'space:' section, e.g. "
                        "space: {optimizer.lr: loguniform(1e-4, 1e-1)}")
    overrides = dict(overrides or {})
    space_raw, search_raw = raw.pop("space"), raw.pop("search", None)
    for key in [k for k in overrides if k.split(".")[0] in ("space", "search")]:
        section, _, rest = key.partition(".")
        value = overrides.pop(key)
        if section == "space" and rest and isinstance(space_raw, dict):
            space_raw = {**space_raw, rest: value}
        elif section == "search" and rest and "." not in rest and isinstance(
                search_raw or {}, dict):
            search_raw = {**(search_raw or {}), rest: value}
        else:
            raise UserError(f"--set {key}: set one range (space.optimizer.lr=...) or one "
                            "whole search setting (search.sampler=grid, "
                            "search.stages=[{trials: 8, epochs: 2}])")
    space = parse_space(space_raw)
    settings = parse_settings(search_raw)
    if "base" in raw:
        extra = set(raw) - {"base", "name"}
        if extra:
            raise UserError(f"with 'base:', the config keys go inside it; move "
                            f"{', '.join(sorted(extra))} into base")
        name = raw.get("name")
        raw = dict(raw["base"] or {})
        if name is not None:
            raw["name"] = name
    for key, value in overrides.items():
        set_key(raw, key, value)
    name = str(raw.get("name") or (Path(source).stem if not isinstance(source, dict)
                                   else "search"))
    spec = SearchSpec(name, raw, space, settings)
    if settings.plot:
        for key in settings.plot:
            if key not in space.keys():
                raise UserError(f"search.plot: {key!r} is not a key of the space "
                                f"({', '.join(space.keys())})")
    if check:
        check_spec(spec)
    return spec


def check_spec(spec: SearchSpec) -> None:
    """Raise a UserError for a space whose keys or values the training config rejects."""
    from ..train import Trainer

    stage = spec.settings.stages[0]
    for dim in spec.space:
        if dim.kind == "choice":
            for value in dim.choices:
                _checked_config(spec, {**spec.space.midpoint(), dim.key: value}, stage.epochs)
    config = _checked_config(spec, spec.space.midpoint(), stage.epochs)
    try:
        Trainer(config, out=None, quiet=True)
    except UserError as exc:
        raise UserError(f"space: the config at the middle of the ranges is rejected: "
                        f"{exc}") from None


def trial_config(spec: SearchSpec, params: dict, epochs: int):
    """The training Config of one trial: the base, the trial's values, the stage's epochs."""
    raw = copy.deepcopy(spec.base)
    for key, value in params.items():
        set_key(raw, key, value)
    set_key(raw, "train.epochs", epochs)
    raw.setdefault("name", spec.name)
    return validate(raw)


def _checked_config(spec, params, epochs):
    try:
        return trial_config(spec, params, epochs)
    except UserError as exc:
        shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
        raise UserError(f"space: a config of the space is rejected ({shown}): {exc}") from None


# -- storage ----------------------------------------------------------------------------------

def default_storage(out: Path) -> str:
    return f"sqlite:///{Path(out) / 'study.db'}"


def open_storage(url: str, settings: Settings):
    """Optuna's RDB storage with heartbeats; a stale trial is failed and its params enqueued
    again (:func:`_retry_stale`)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # heartbeats are "experimental" in Optuna and "meant for Study.optimize"; gradwise sends
    # its own (see _Heartbeat), so these warnings say nothing to a gradwise user
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    url = with_driver(url)
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["connect_args"] = {"timeout": 60}
    else:
        kwargs["pool_pre_ping"] = True
    import inspect

    # Optuna < 5 names the callback failed_trial_callback
    callback = ("heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in
                inspect.signature(optuna.storages.RDBStorage).parameters
                else "failed_trial_callback")
    try:
        for attempt in range(SCHEMA_ATTEMPTS):
            try:
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=kwargs, heartbeat_interval=settings.heartbeat,
                    grace_period=settings.grace, **{callback: _retry_stale})
            except Exception as exc:
                # workers started together on an empty database race to create Optuna's
                # tables; the loser sees a duplicate table or key and finds them next time
                if attempt + 1 == SCHEMA_ATTEMPTS or not _schema_race(exc):
                    raise
                time.sleep(0.2 * (attempt + 1))
    except ImportError as exc:
        raise UserError(f"--storage {url.split('://')[0]}://...: a driver is missing ({exc}); "
                        "for PostgreSQL: pip install 'gradwise[postgres]'") from None
    except Exception as exc:  # sqlalchemy's errors: a bad URL, a server that does not answer
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise UserError(f"cannot open the storage {_redact(url)}: {type(exc).__name__}: "
                        f"{first}") from None


def _schema_race(exc: Exception) -> bool:
    from sqlalchemy import exc as sql

    return isinstance(exc, sql.IntegrityError) or "already exists" in str(exc)


def with_driver(url: str) -> str:
    """``postgresql://`` with the driver installed: SQLAlchemy 2.1 defaults to psycopg 3,
    gradwise's ``postgres`` extra installs psycopg2.

    >>> with_driver("sqlite:///x.db")
    'sqlite:///x.db'
    """
    if not url.startswith(("postgresql://", "postgres://")):
        return url
    import importlib.util

    rest = url.split("://", 1)[1]
    for module, dialect in (("psycopg2", "psycopg2"), ("psycopg", "psycopg")):
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{dialect}://{rest}"
    return url


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


def _retry_stale(study, trial) -> None:
    """Called by the one worker that marked the dead ``trial`` FAIL: run its params again."""
    if trial.user_attrs.get("surplus"):
        return
    attrs = {"retry_of": trial.user_attrs.get("retry_of", trial.number)}
    if "grid_point" in trial.user_attrs:
        attrs["grid_point"] = trial.user_attrs["grid_point"]
    # an enqueued trial (a grid point, a re-run) has all its params even if killed before
    # drawing them
    params = trial.system_attrs.get("fixed_params") or trial.params
    study.enqueue_trial(dict(params), user_attrs=attrs)


def study_name(spec: SearchSpec, stage: Stage) -> str:
    return f"{spec.name}:{stage.name}"


def existing_studies(storage) -> set[str]:
    return {s.study_name for s in storage.get_all_studies()}


# -- the search -------------------------------------------------------------------------------

class Search:
    """Runs ``spec`` with its studies in ``storage`` (default: ``OUT/study.db``).

    ``resume=False`` refuses a storage that already holds this search's first stage unless
    the storage was given explicitly (workers on other machines join a PostgreSQL study by
    running the same command); ``resume=True`` requires it.

    Example::

        spec = load_search("examples/search-mnist1d.yaml")
        summary = Search(spec, "runs/search-mnist1d").run()
    """

    def __init__(self, spec: SearchSpec, out: str | Path, storage: str | None = None, *,
                 resume: bool = False, quiet: bool = False):
        self.spec = spec
        self.out = Path(out)
        self.explicit_storage = storage is not None
        self.url = storage or default_storage(self.out)
        self.resume = resume
        self.quiet = quiet
        self.storage = None
        self._first_seen: dict[int, float] = {}  # running trial id -> when this worker saw it
        self._beaten: set[int] = set()  # running trials this worker has sent a heartbeat for

    # -- opening --------------------------------------------------------------------------

    def open(self) -> None:
        """Open the storage and check it against ``resume`` and the config's fingerprint."""
        if self.storage is not None:
            return
        local = not self.explicit_storage
        if local and not self.resume and (self.out / "study.db").exists():
            raise UserError(f"{self.out} holds a search already; continue it with --resume "
                            "or choose another --out")
        if local and self.resume and not (self.out / "study.db").exists():
            raise UserError(f"--resume: no search in {self.out} (study.db is missing)")
        if local:
            self.out.mkdir(parents=True, exist_ok=True)
        self.storage = open_storage(self.url, self.spec.settings)
        first = study_name(self.spec, self.spec.settings.stages[0])
        studies = existing_studies(self.storage)
        if self.resume and first not in studies:
            raise UserError(f"--resume: the storage holds no study {first!r}")
        if first in studies:
            import optuna
            plan = optuna.load_study(study_name=first, storage=self.storage).user_attrs.get(
                "gradwise")  # None: another worker created the study a moment ago
            if plan is not None and plan["fingerprint"] != self.spec.fingerprint():
                raise UserError(f"the study {first!r} in the storage was started from a "
                                "different search config; use the same config, another "
                                "name or another storage")

    def stage_study(self, index: int):
        """The study of stage ``index``, created (with its narrowed ranges) if missing."""
        import optuna

        stage = self.spec.settings.stages[index]
        name = study_name(self.spec, stage)
        if name in existing_studies(self.storage):
            study = optuna.load_study(study_name=name, storage=self.storage)
            if "gradwise" in study.user_attrs:
                return study
        space = self.spec.space if index == 0 else self._narrowed(index)
        plan = {"stage": index, "name": stage.name, "epochs": stage.epochs,
                "trials": planned_trials(self.spec.settings, stage, space),
                "requested_trials": stage.trials, "top_k": stage.top_k,
                "space": space.to_json(), "fingerprint": self.spec.fingerprint(),
                "metric": self.spec.settings.metric, "sampler": self.spec.settings.sampler}
        study = optuna.create_study(study_name=name, storage=self.storage,
                                    direction=self.spec.settings.direction,
                                    load_if_exists=True)
        if "gradwise" not in study.user_attrs:
            study.set_user_attr("gradwise", plan)
        return study

    def _narrowed(self, index: int) -> Space:
        previous = self.stage_study(index - 1)
        plan = previous.user_attrs["gradwise"]
        top = ranked(previous)[:self.spec.settings.stages[index].top_k]
        settings = self.spec.settings
        return narrow_space(Space.from_json(plan["space"]), [t.params for t in top],
                            settings.margin, settings.min_width)

    # -- running --------------------------------------------------------------------------

    def run(self, workers: int = 1) -> dict:
        """Run every stage (with ``workers`` local processes), then write the outputs;
        returns the summary (best trial, its config, trials per stage)."""
        from .report import write_outputs

        self.open()
        self.stage_study(0)
        if workers > 1:
            self._run_workers(workers)
        else:
            self.work()
        return write_outputs(self)

    def work(self, worker: int = 0) -> None:
        """The worker loop: every stage in order, until each has its trials."""
        for index in range(len(self.spec.settings.stages)):
            self._work_stage(index, worker)

    def _run_workers(self, workers: int) -> None:
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        threads = max(1, (os.cpu_count() or 1) // workers)
        procs = [context.Process(target=_worker_main, name=f"gradwise-search-{i}",
                                 args=(self.spec, str(self.out), self.url, i, threads,
                                       self.quiet)) for i in range(workers)]
        for proc in procs:
            proc.start()
        try:
            for proc in procs:
                proc.join()
        except KeyboardInterrupt:
            for proc in procs:
                proc.terminate()
            raise
        failed = [p.exitcode for p in procs if p.exitcode != 0]
        if len(failed) == len(procs):
            raise UserError(f"all {workers} workers failed (exit codes {failed}); "
                            "see the messages above")
        # a worker that died left its trials to the others; finish what is left here
        if failed:
            self.work()

    def _work_stage(self, index: int, worker: int) -> None:
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.storages import fail_stale_trials
        from optuna.trial import TrialState

        study = self.stage_study(index)
        plan = study.user_attrs["gradwise"]
        target = plan["trials"]
        space = Space.from_json(plan["space"])
        study.pruner = _pruner(self.spec.settings.pruner)
        grid = self.spec.settings.sampler == "grid"
        if grid:
            points = grid_points(space, plan["requested_trials"], self.spec.settings.seed)
            study.sampler = _sampler(self.spec.settings, index, 0, target)  # draws nothing
        while True:
            fail_stale_trials(study)
            trials = study.get_trials(deepcopy=False)
            self._watch(trials)
            live = [t for t in trials if _holds_slot(t)]
            finished = [t for t in live if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                        or t.state == TrialState.FAIL]
            busy = [t for t in live if t.state in (TrialState.RUNNING, TrialState.WAITING)]
            waiting = [t for t in live if t.state == TrialState.WAITING]
            if len(finished) >= target and not busy:
                return
            if grid and not waiting and _enqueue_grid(study, points, trials):
                continue
            if not waiting and (grid or len(live) >= target):
                time.sleep(POLL_SECONDS)   # the other workers' trials are running
                continue
            trial = study.ask()
            self.storage.record_heartbeat(trial._trial_id)
            self._beaten.add(trial._trial_id)
            if not _has_slot(study, trial, target, grid):
                try:
                    trial.set_user_attr("surplus", True)
                    study.tell(trial, state=TrialState.FAIL)
                except UpdateFinishedTrialError:  # this worker stalled: already failed as stale
                    pass
                continue
            if not grid:
                study.sampler = _sampler(self.spec.settings, index, trial.number, target)
            try:
                self._run_trial(study, trial, index, space, plan, worker)
            except UpdateFinishedTrialError:
                self._say(f"{plan['name']} trial {trial.number}: another worker gave it up "
                          f"(no heartbeat for {self.spec.settings.grace} s); its re-run counts")

    def _watch(self, trials) -> None:
        """Optuna never calls a trial stale that has no heartbeat at all (its worker died
        between ``ask`` and its first beat). A trial still running ``grace + heartbeat``
        seconds after this worker first saw it has had a heartbeat since then or has none
        (else it would be FAIL by now): send it one, after which Optuna judges it too."""
        from optuna.trial import TrialState

        now, settings = time.monotonic(), self.spec.settings
        for t in trials:
            if t.state != TrialState.RUNNING or t._trial_id in self._beaten:
                continue
            first = self._first_seen.setdefault(t._trial_id, now)
            if now - first > settings.grace + settings.heartbeat:
                self._beaten.add(t._trial_id)
                try:
                    self.storage.record_heartbeat(t._trial_id)
                except Exception:  # a storage hiccup: the next look retries
                    self._beaten.discard(t._trial_id)

    def _run_trial(self, study, trial, index: int, space: Space, plan: dict,
                   worker: int) -> None:
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        from ..train import Trainer

        settings = self.spec.settings
        metric = settings.metric
        beat = _Heartbeat(self.storage, trial._trial_id, settings.heartbeat)
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
                if settings.pruner != "none" and trial.should_prune():
                    reason = (f"pruned after epoch {record['epoch']}: {metric} {value:.4g} "
                              "behind the other trials")
                    trainer.stop(reason)
                    pruned.append(reason)

            start = time.perf_counter()
            summary = Trainer(config, out=None, quiet=True, callbacks=[report]).fit()
            seconds = time.perf_counter() - start
        except UserError as exc:
            beat.stop()
            trial.set_user_attr("error", str(exc))
            study.tell(trial, state=TrialState.FAIL)
            self._say(f"{plan['name']} trial {trial.number}: rejected: {exc}")
            return
        except KeyboardInterrupt:  # Ctrl-C: give the trial back now, not after the grace
            beat.stop()
            try:
                _retry_stale(study, study.tell(trial, state=TrialState.FAIL))
            except Exception:  # the storage is gone too: the heartbeat rule still applies
                pass
            raise
        except BaseException:
            beat.stop()
            raise
        beat.stop()
        result = {key: _finite_or_none(summary.get(key))
                  for key in ("val_accuracy", "val_loss", "test_accuracy", "test_loss",
                              "train_accuracy", "train_loss", "epochs", "stop_reason")}
        result["seconds"] = round(seconds, 3)
        result["worker"] = f"{os.uname().nodename}:{os.getpid()}:{worker}"
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


def ranked(study) -> list:
    """The COMPLETE trials of a study, best first (ties: the earlier trial)."""
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value is not None]
    sign = -1.0 if study.direction.name == "MAXIMIZE" else 1.0
    return sorted(done, key=lambda t: (sign * t.value, t.number))


def planned_trials(settings: Settings, stage: Stage, space: Space) -> int:
    """The stage's trial count: ``stage.trials``, or the grid's size where that is smaller."""
    if settings.sampler != "grid":
        return stage.trials
    return len(grid_points(space, stage.trials, settings.seed))


def grid_values(space: Space, trials: int) -> dict[str, list]:
    """The grid of a stage: every choice, and ``n`` points per numeric range with
    ``n = floor((trials / choices) ** (1 / numeric dims))``, at the centres of ``n`` equal
    cells (on the log scale for loguniform): ``low * (high / low) ** ((i + 0.5) / n)``.

    >>> from gradwise.search.space import parse_space
    >>> grid_values(parse_space({"lr": "loguniform(1e-4, 1)"}), 2)["lr"]
    [0.001, 0.1]
    """
    numeric = [d for d in space if d.kind != "choice"]
    combos = math.prod(len(d.choices) for d in space if d.kind == "choice")
    per = max(1, math.floor((trials / combos) ** (1 / max(1, len(numeric))) + 1e-9))
    values: dict[str, list] = {}
    for dim in space:
        if dim.kind == "choice":
            values[dim.key] = [_encode(c) for c in dim.choices]
        elif dim.log:
            ratio = dim.high / dim.low
            values[dim.key] = [float(f"{dim.low * ratio ** ((i + 0.5) / per):.12g}")
                               for i in range(per)]
        else:
            points = [dim.low + (dim.high - dim.low) * (i + 0.5) / per for i in range(per)]
            if dim.kind == "int":
                points = sorted({int(round(p)) for p in points})
            values[dim.key] = [float(f"{p:.12g}") if dim.kind != "int" else p for p in points]
    return values


# -- pieces -----------------------------------------------------------------------------------

def grid_points(space: Space, trials: int, seed: int) -> list[dict]:
    """The first ``trials`` points of the stage's grid (:func:`grid_values`, as Optuna stores
    them), in an order shuffled by ``seed``.

    >>> from gradwise.search.space import parse_space
    >>> grid_points(parse_space({"lr": "loguniform(1e-4, 1)"}), 2, seed=0)
    [{'lr': 0.001}, {'lr': 0.1}]
    """
    values = grid_values(space, trials)
    points = [dict(zip(values, combo, strict=True))
              for combo in itertools.product(*values.values())]
    random.Random(seed).shuffle(points)
    return points[:trials]


def _enqueue_grid(study, points: list[dict], trials) -> bool:
    """Enqueue each grid point that no live trial holds (at the start, and for a point whose
    worker died before its re-run was enqueued); returns whether it enqueued any."""
    held = {t.user_attrs.get("grid_point") for t in trials if _holds_slot(t)}
    missing = [i for i in range(len(points)) if i not in held]
    for i in missing:
        study.enqueue_trial(points[i], user_attrs={"grid_point": i})
    return bool(missing)


def _has_slot(study, trial, target: int, grid: bool) -> bool:
    """Whether ``trial`` may run: fewer than ``target`` live trials have a smaller id; in a
    grid stage, no live trial with a smaller id holds its grid point. (A re-run passes, as
    the dead trial it replaces is no longer live, unless a fresh trial took the slot first.)"""
    earlier = [t for t in study.get_trials(deepcopy=False)
               if t._trial_id < trial._trial_id and _holds_slot(t)]
    if grid:
        point = trial.user_attrs.get("grid_point")
        return point is not None and all(t.user_attrs.get("grid_point") != point
                                         for t in earlier)
    return len(earlier) < target


def _holds_slot(trial) -> bool:
    from optuna.trial import TrialState

    if trial.user_attrs.get("surplus"):
        return False
    return trial.state != TrialState.FAIL or "error" in trial.user_attrs


def _suggest(trial, dim):
    if dim.kind == "loguniform":
        return trial.suggest_float(dim.key, dim.low, dim.high, log=True)
    if dim.kind == "uniform":
        return trial.suggest_float(dim.key, dim.low, dim.high)
    if dim.kind == "int":
        return trial.suggest_int(dim.key, int(dim.low), int(dim.high))
    encoded = [_encode(c) for c in dim.choices]
    value = trial.suggest_categorical(dim.key, encoded)
    return dim.choices[encoded.index(value)]


def _encode(value):
    """Optuna's categorical values are plain scalars: lists and mappings go as JSON text."""
    return value if isinstance(value, _PRIMITIVE) else json.dumps(value)


def decode_param(space: Space, key: str, value):
    """A trial's stored param back to the config value (undoing :func:`_encode`)."""
    try:
        dim = space[key]
    except KeyError:
        return value
    if dim.kind == "choice":
        for choice in dim.choices:
            if _encode(choice) == value:
                return choice
    return value


def _sampler(settings: Settings, stage: int, number: int, target: int):
    """A sampler seeded by (search seed, stage, trial number): the same search draws the same
    points whatever the number of workers, and a resumed search draws no point twice."""
    import optuna

    seed = (settings.seed * 1_000_003 + stage * 10_007 + number) % (2 ** 31)
    if settings.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed,
                                          n_startup_trials=max(2, min(10, target // 3)))
    return optuna.samplers.RandomSampler(seed=seed)


def _pruner(name: str):
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def _finite_or_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


class _Heartbeat:
    """A thread that records the trial's heartbeat every ``interval`` seconds."""

    def __init__(self, storage, trial_id: int, interval: int):
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.done.set()
        self.thread.join()

    def _beat(self) -> None:
        while not self.done.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:  # a storage hiccup: the next beat retries
                pass


def _worker_main(spec: SearchSpec, out: str, url: str, worker: int, threads: int,
                 quiet: bool) -> None:
    import torch

    torch.set_num_threads(threads)
    search = Search(spec, out, url, resume=True, quiet=quiet)
    search.explicit_storage = True
    try:
        search.open()
        search.work(worker)
    except UserError as exc:
        print(f"gradwise: error: worker {worker}: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def with_settings(spec: SearchSpec, **changes) -> SearchSpec:
    """``spec`` with some settings replaced (e.g. ``sampler="grid"`` for a comparison)."""
    return replace(spec, settings=replace(spec.settings, **changes))
