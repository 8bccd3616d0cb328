"""The search: one Optuna study per stage, in one storage, run by one or many workers.

``Search(spec, out).run()`` runs every stage in order, then writes the outputs
(:mod:`gradwise.search.report`). Stage ``i`` is the Optuna study ``<name>:<stage>``; its
*plan* (ranges, epochs, trial count) is this config's own: stage 0 has the config's space,
stage ``i + 1`` is planned once stage ``i`` has finished, with the config's ranges of stage
``i`` narrowed around its top-k trials (:func:`gradwise.search.stages.narrow`). The plan is
stored with the study (user attribute ``gradwise``) for the record and for Optuna's dashboard.

**Trust.** A storage may be shared across machines, so it is trusted for trial results and
bookkeeping only. Every worker computes each plan from its own config and compares it, field
by field, with the stored one: any difference is refused with the field named, and a worker
always runs its own plan. A value held in the storage becomes part of a trial's config, a
report or ``best.yaml`` only if it is one of the config's own values
(:meth:`gradwise.search.space.Dimension.decode`).

How the workers share a stage is in :mod:`gradwise.search.workers`. A search killed at any
point and continued with ``--resume`` ends with exactly the planned trials per stage; none is
lost and none runs twice to completion.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path

import optuna
import torch

from .._processes import run_processes, threads_per_worker
from ..errors import UserError
from ..rundir import claim
from .grid import planned_trials
from .report import write_outputs
from .space import Space
from .spec import SearchSpec
from .stages import narrow_space, ranked
from .storage import default_storage, existing_studies, open_storage, study_name
from .workers import Worker

#: the most local worker processes one command starts
MAX_WORKERS = 64


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
        self.storage: optuna.storages.RDBStorage | None = None
        self._plans: dict[int, dict] = {}

    # -- opening --------------------------------------------------------------------------

    def open(self) -> optuna.storages.RDBStorage:
        """Claim ``out`` as a search folder (:func:`gradwise.rundir.claim`), before anything
        is written; open the storage and check it against ``resume`` and this config's plan.
        Returns the storage (opened once: later calls return it)."""
        if self.storage is not None:
            return self.storage
        local = not self.explicit_storage
        if local and not self.resume and (self.out / "study.db").exists():
            raise UserError(f"{self.out} holds a search already; continue it with --resume "
                            "or choose another --out")
        if local and self.resume and not (self.out / "study.db").exists():
            raise UserError(f"--resume: no search in {self.out} (study.db is missing)")
        claim(self.out, "search")  # new, empty or a search's own: never a training run's
        self.storage = storage = open_storage(self.url, self.spec.settings)
        first = study_name(self.spec, self.spec.settings.stages[0])
        if self.resume and first not in existing_studies(storage):
            raise UserError(f"--resume: the storage holds no study {first!r}")
        self._stored_study(0)  # refuses another config's study
        return storage

    def plan(self, index: int) -> dict:
        """This config's plan of stage ``index``: ``stage``, ``name``, ``epochs``, ``trials``
        (planned), ``requested_trials``, ``top_k``, ``space`` (the ranges, as
        :meth:`Space.to_json`), ``fingerprint``, ``metric`` and ``sampler``. A later stage's
        ranges are the previous stage's narrowed around its top-k trials, so ask once that
        stage has finished."""
        if index not in self._plans:
            settings = self.spec.settings
            stage = settings.stages[index]
            space = self.spec.space
            if index > 0:
                previous = Space.from_json(self.plan(index - 1)["space"])
                top = ranked(self.stage_study(index - 1), previous)[:stage.top_k]
                space = narrow_space(previous, [previous.decode(t.params) for t in top],
                                     settings.margin, settings.min_width)
            self._plans[index] = {
                "stage": index, "name": stage.name, "epochs": stage.epochs,
                "trials": planned_trials(settings, stage, space),
                "requested_trials": stage.trials, "top_k": stage.top_k,
                "space": space.to_json(), "fingerprint": self.spec.fingerprint(),
                "metric": settings.metric, "sampler": settings.sampler}
        return self._plans[index]

    def stage_study(self, index: int) -> optuna.Study:
        """The study of stage ``index``, created with this config's plan if missing; a stored
        plan that differs from this config's is refused (a UserError naming the field)."""
        study = self._stored_study(index)
        if study is not None:
            return study
        plan = self.plan(index)
        name = study_name(self.spec, self.spec.settings.stages[index])
        study = optuna.create_study(study_name=name, storage=self.open(),
                                    direction=self.spec.settings.direction, load_if_exists=True)
        stored = study.user_attrs.get("gradwise")
        if stored is None:
            study.set_user_attr("gradwise", plan)
        else:  # another worker created it a moment ago
            self._check_plan(index, stored)
        return study

    def stages(self) -> list[dict]:
        """Per stage that exists, in order: ``plan`` (this config's, checked against the
        stored one), ``study`` and ``trials`` (the Optuna trials, ``surplus`` copies left
        out). What the outputs are written from."""
        self.open()
        found = []
        for index in range(len(self.spec.settings.stages)):
            study = self._stored_study(index)
            if study is None:
                break
            trials = [t for t in study.get_trials(deepcopy=False)
                      if not t.user_attrs.get("surplus")]
            found.append({"plan": self.plan(index), "study": study, "trials": trials})
        return found

    def _stored_study(self, index: int) -> optuna.Study | None:
        """The study of stage ``index`` if the storage holds it with a plan (checked)."""
        storage = self.open()
        name = study_name(self.spec, self.spec.settings.stages[index])
        if name not in existing_studies(storage):
            return None
        study = optuna.load_study(study_name=name, storage=storage)
        stored = study.user_attrs.get("gradwise")
        if stored is None:  # created a moment ago by another worker, not yet planned
            return None
        self._check_plan(index, stored)
        return study

    def _check_plan(self, index: int, stored) -> None:
        name = study_name(self.spec, self.spec.settings.stages[index])
        if not isinstance(stored, dict) or stored.get("fingerprint") != self.spec.fingerprint():
            raise UserError(f"the study {name!r} in the storage was started from a "
                            "different search config; use the same config, another "
                            "name or another storage")
        where = _difference(self.plan(index), stored)
        if where is not None:
            raise UserError(f"the study {name!r} in the storage holds a plan that this config "
                            f"does not make ({where}); a storage is trusted for results only, "
                            "so every worker runs its own config's plan: check the storage, "
                            "or use another name or another storage")

    # -- running --------------------------------------------------------------------------

    def run(self, workers: int = 1, *, stages: Sequence[int] | None = None,
            deadline: float | None = None) -> dict:
        """Run every stage (or the ``stages`` given, by index, in order; the ones before them
        must have finished) with ``workers`` local processes, then write the outputs; returns
        the summary (best trial, its config, trials per stage). ``deadline`` (as
        ``time.time()``): no trial starts after it, and running ones stop at an epoch's end
        before it (:class:`gradwise.search.workers.Worker`)."""
        check_workers(self.spec, workers)
        self.open()
        self.stage_study(0)
        if workers > 1:
            self._run_workers(workers, stages, deadline)
        else:
            self.work(stages=stages, deadline=deadline)
        return write_outputs(self)

    def work(self, worker: int = 0, stages: Sequence[int] | None = None,
             deadline: float | None = None) -> None:
        """The worker loop: every stage (or ``stages``) in order, until each has its trials
        or ``deadline`` has come."""
        runner = Worker(self.spec, self.open(), worker, self.quiet, deadline)
        for index in range(len(self.spec.settings.stages)) if stages is None else stages:
            study = self.stage_study(index)
            runner.run_stage(study, self.plan(index))

    def _run_workers(self, workers: int, stages: Sequence[int] | None = None,
                     deadline: float | None = None) -> None:
        threads = threads_per_worker(workers)
        chosen = None if stages is None else tuple(stages)
        codes = run_processes(_worker_main, [
            (self.spec, str(self.out), self.url, i, threads, self.quiet, chosen, deadline)
            for i in range(workers)], name="gradwise-search")
        failed = [code for code in codes if code != 0]
        if len(failed) == len(codes):
            raise UserError(f"all {workers} workers failed (exit codes {failed}); "
                            "see the messages above")
        # a worker that died left its trials to the others; finish what is left here
        if failed:
            self.work(stages=stages, deadline=deadline)


def check_workers(spec: SearchSpec, workers: int) -> int:
    """``workers`` unless it is not an integer from 1 to the most that can be busy: the
    largest stage's trials, and at most :data:`MAX_WORKERS`.

    >>> from gradwise.search import load_search
    >>> spec = load_search({"space": {"optimizer.lr": "loguniform(1e-3, 1e-1)"},
    ...                     "search": {"stages": [{"trials": 8, "epochs": 1}]}}, check=False)
    >>> check_workers(spec, 8)
    8
    >>> check_workers(spec, 9)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    gradwise.errors.UserError: --workers 9 is invalid; accepted: 1 to 8 (...)
    """
    limit = min(MAX_WORKERS, max(stage.trials for stage in spec.settings.stages))
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= limit:
        raise UserError(f"--workers {workers!r} is invalid; accepted: 1 to {limit} (one "
                        f"worker per trial of the largest stage at most, and never more than "
                        f"{MAX_WORKERS})")
    return workers


def _difference(own, stored, where: str = "plan") -> str | None:
    """Where ``stored`` differs from ``own`` (a JSON value), or None; floats agree to a
    relative 1e-9 (narrowed ranges may differ in the last bit from machine to machine)."""
    if isinstance(own, bool) or isinstance(stored, bool):
        same = type(own) is type(stored) and own == stored
    elif isinstance(own, float) and isinstance(stored, int | float):
        same = math.isclose(own, stored, rel_tol=1e-9, abs_tol=1e-300)
    elif isinstance(own, dict) and isinstance(stored, dict):
        for key in sorted(set(own) | set(stored), key=str):
            if key not in own or key not in stored:
                return f"{where}.{key}: {'missing' if key not in stored else 'not expected'}"
            found = _difference(own[key], stored[key], f"{where}.{key}")
            if found is not None:
                return found
        return None
    elif isinstance(own, list | tuple) and isinstance(stored, list | tuple):
        if len(own) != len(stored):
            return f"{where}: {len(stored)} values stored, {len(own)} expected"
        for i, (a, b) in enumerate(zip(own, stored, strict=True)):
            found = _difference(a, b, f"{where}[{i}]")
            if found is not None:
                return found
        return None
    else:
        same = type(own) is type(stored) and own == stored
    if same:
        return None
    shown = repr(stored)
    return f"{where}: stored {shown[:60]}{'...' if len(shown) > 60 else ''}, expected {own!r}"


def _worker_main(spec: SearchSpec, out: str, url: str, worker: int, threads: int,
                 quiet: bool, stages: tuple[int, ...] | None = None,
                 deadline: float | None = None) -> None:
    """One worker process of ``Search.run(workers)``."""
    torch.set_num_threads(threads)
    search = Search(spec, out, url, resume=True, quiet=quiet)
    search.explicit_storage = True
    try:
        search.open()
        search.work(worker, stages, deadline)
    except UserError as exc:
        print(f"gradwise: error: worker {worker}: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
