"""The recipe: every phase in order under one time budget, each leaving its files in the
recipe folder, and ``--resume`` picking up after the last finished phase.

The folder (claimed as a ``recipe``)::

    recipe.json      what was asked: data, budget, BASE, storage (a resume must match)
    phases.json      per finished phase: its seconds, its allotted seconds and a few results
                     (the phase markers: a phase listed there never runs again)
    data.json        the look at the data, with the model family and augmentation candidates
    sanity.json      the sanity check (overfit 20 examples)
    lr_find.json     the LR range test, lr_find.png its curve with the searched range
    plan.json        the search plan: base config, space, stages (fixed once, for resume)
    search/          the coarse and fine stages (a gradwise search folder: study.db ...)
    best.yaml        the final configuration, for gradwise train
    final_plan.json  the final phase's runs: how many, their epochs and seeds, and why
    final/           the final training run (a gradwise run folder)
    ensemble/        the other runs of a seed ensemble (a gradwise seed group), if planned
    evaluation.json  the single run's and the ensemble's val/test scores, the headline's choice
    summary.json     test accuracy with its 95% Wilson interval, the configuration, times
    report.html      the whole story on one page

The test split is read once, at the end of the final phase, by :mod:`.ensemble`'s evaluation,
after validation chose between the single run and the ensemble: the trials and the final
phase's runs train with ``evaluate.test: false``, the sanity check and the LR range test use
training data only.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from pathlib import Path
from typing import IO, Any

from .. import _checks, _io
from ..config import dump, read_yaml, validate
from ..errors import UserError
from ..report import lr_find_figure, save_png
from ..rundir import RunDir, claim
from ..search import Search, SearchSpec, Settings, Stage, check_spec, trial_config
from ..search.space import Space
from ..search.storage import open_storage
from ..search.study import MAX_WORKERS
from ..train import Trainer, lr_find, sanity_check
from . import budget as B
from . import ensemble as E
from .look import base_config, fixed_keys, look_at_data, read_base, search_space
from .plan import spec_of

#: Seconds of a trial that are not epochs (building the Trainer, the storage's writes).
TRIAL_OVERHEAD = 0.3
#: Seconds of the final run that are not epochs (its Trainer, report.html, the recipe's own).
FINAL_OVERHEAD = 3.0
#: The final run's weight average: an EMA with timm's decay warmup, so short runs work too.
FINAL_AVERAGE = {"ema": {"decay": 0.999, "warmup": True}}
LR_FIND_STEPS = 100


class SanityFailed(Exception):
    """The sanity check failed: the recipe stops (exit status 1); ``summary`` says why."""

    def __init__(self, summary: dict):
        super().__init__(summary.get("stop_reason", "sanity check failed"))
        self.summary = summary


class Recipe:
    """The recipe on ``data`` within ``budget`` (``"10m"``, seconds ...) into ``out``.

    Everything the user gave is checked here, before anything is written (a UserError names
    the culprit). :meth:`run` runs the phases. ``started``: when the budget began (as
    ``time.time()``; default now; the command line passes its process's start). ``stages``
    (``[{name, trials, epochs, top_k}, ...]``, coarse then fine) and ``final_epochs`` fix the
    search's stages and the final run's length instead of fitting them to the budget (a
    reproducible recipe; the deadlines still apply); ``members`` fixes the number of runs of
    the final configuration (1: no ensemble; default: as many as the final phase's time holds,
    :func:`.ensemble.plan_members`). Example::

        summary = Recipe("digits", "1m", "runs/recipe-digits").run()
        summary["test_accuracy"], summary["test_accuracy_ci95"]
    """

    def __init__(self, data: str, budget: str | float | None = None,
                 out: str | Path | None = None, *, workers: int = 1, storage: str | None = None,
                 resume: bool = False, config: str | Path | None = None, quiet: bool = False,
                 stream: IO[str] | None = None, started: float | None = None,
                 stages: list[dict] | None = None, final_epochs: int | None = None,
                 members: int | None = None):
        began = time.perf_counter() - (0.0 if started is None else max(0.0, time.time() - started))
        self.stream = stream or sys.stderr
        self.quiet = quiet
        if not isinstance(data, str) or not data:
            raise UserError(f"DATA {data!r} is invalid; give a data source such as digits, "
                            "mnist1d, npz:PATH, folder:PATH or csv:PATH")
        self.data = data
        self.out = Path(out) if out is not None else Path("runs") / f"recipe-{data_name(data)}"
        self.workers = _checks.integer("--workers", workers, 1, MAX_WORKERS)
        self.fixed_stages = _checked_stages(stages)
        self.final_epochs = None if final_epochs is None else _checks.integer(
            "final_epochs", final_epochs, 1)
        self.members = None if members is None else _checks.integer("members", members, 1,
                                                                    E.MAX_MEMBERS)
        self.resume = resume
        request = self._stored_request() if resume else None
        if request is not None:
            budget = request["budget_seconds"] if budget is None else budget
            storage = request["storage"] if storage is None else storage
        self.budget = B.parse_budget("10m" if budget is None else budget)
        self.storage = storage
        self.base = request["base"] if request is not None and config is None \
            else read_base(config, data)
        if not resume:
            claim(self.out, "recipe", create=False)
            if (self.out / "recipe.json").exists():
                raise UserError(f"{str(self.out)!r} holds a recipe already; continue it with "
                                "--resume or choose another --out")
        self.request = {"data": data, "budget_seconds": self.budget, "base": self.base,
                        "storage": storage}
        if request is not None:
            changed = [k for k in ("data", "budget_seconds", "base", "storage")
                       if request.get(k) != self.request[k]]
            if changed:
                raise UserError(f"--resume: {', '.join(changed)} differ from the recipe in "
                                f"{str(self.out)!r}; resume with what it was started with "
                                "(or start a new recipe with another --out)")
        self.facts = look_at_data(data, self.base.get("data") if isinstance(
            self.base.get("data"), dict) else None)
        self.name = f"recipe-{data_name(data)}"
        self.base_raw = base_config(self.facts, self.base, self.name)
        try:
            Trainer(_trial_raw(self.base_raw), out=None, quiet=True)
        except UserError as exc:
            where = "--config" if self.base else "the data"
            raise UserError(f"{where}: the recipe's training config is rejected: {exc}") from None
        if storage is not None:
            open_storage(storage, Settings(stages=(Stage("check", 1, 1),)))
        self.look_seconds = time.perf_counter() - began
        self.phases: dict[str, dict] = {}
        self.spent = 0.0  # seconds of the phases finished, this process and earlier ones
        self._started = time.perf_counter()  # of the phase running now

    # -- the folder -------------------------------------------------------------------------

    def _stored_request(self) -> dict:
        path = self.out / "recipe.json"
        if not path.is_file():
            raise UserError(f"--resume: no recipe in {str(self.out)!r} (recipe.json is "
                            "missing)")
        claim(self.out, "recipe", create=False)
        request = _read_json(path)
        if not isinstance(request, dict) or "budget_seconds" not in request:
            raise UserError(f"--resume: {str(path)!r} is not a recipe's record")
        return request

    def _mark(self, phase: str, seconds: float, allotted: float, **results: Any) -> None:
        self.phases[phase] = {"seconds": round(seconds, 3), "allotted": round(allotted, 3),
                              **results}
        self.spent += seconds
        _io.write_json(self.out / "phases.json", self.phases)

    def _say(self, text: str) -> None:
        if not self.quiet:
            self.stream.write(text + "\n")
            self.stream.flush()

    # -- running ----------------------------------------------------------------------------

    def run(self) -> dict:
        """Run the phases not yet finished; returns the summary (also ``summary.json``).
        A failing sanity check raises :class:`SanityFailed` after writing the summary and the
        report."""
        claim(self.out, "recipe")
        if self.resume:
            stored = _read_json(self.out / "phases.json") \
                if (self.out / "phases.json").is_file() else {}
            self.phases = {p: stored[p] for p in B.PHASES if isinstance(stored.get(p), dict)}
            self.spent = sum(float(r.get("seconds", 0.0)) for r in self.phases.values())
            if self.phases:
                self._say(f"resuming {self.out}: {', '.join(self.phases)} done "
                          f"({B.clock(self.spent)} of the budget used)")
        else:
            _io.write_json(self.out / "recipe.json", self.request)
        _io.write_json(self.out / "data.json", self.facts)
        if "look" not in self.phases:
            self._mark("look", self.look_seconds, B.SHARES["look"] * self.budget,
                       family=self.facts["family"])
        steps = {"sanity": self._sanity, "lr_find": self._lr_find, "coarse": self._coarse,
                 "fine": self._fine, "final": self._final, "report": self._report}
        for index, phase in enumerate(B.PHASES):
            if phase in self.phases or phase == "look":
                continue
            allotted = B.phase_seconds(phase, self.budget - self.spent, set(self.phases))
            self._say(f"[{index + 1}/{len(B.PHASES)}] {B.TITLES[phase]}: share "
                      f"{B.SHARES[phase]:.0%}, {B.clock(allotted)} of the "
                      f"{B.clock(self.budget - self.spent)} left")
            self._started = start = time.perf_counter()
            results = steps[phase](time.time() + allotted, allotted) or {}
            seconds = time.perf_counter() - start
            if phase == "sanity" and not results["passed"]:  # not a finished phase: no marker
                self.phases["sanity"] = {"seconds": round(seconds, 3),
                                         "allotted": round(allotted, 3), "passed": False}
                summary = self._write_summary("sanity-failed", results["message"])
                raise SanityFailed(summary)
            if phase != "report":
                self._mark(phase, seconds, allotted, **results)
            self._say(f"      {B.TITLES[phase]} done in {B.clock(seconds)}")
        return _read_json(self.out / "summary.json")

    def _sanity(self, deadline: float, allotted: float) -> dict:
        result = sanity_check(_trial_raw(self.base_raw))
        _io.write_json(self.out / "sanity.json", result)
        self._say("      " + result["message"].replace("\n", "\n      "))
        return {"passed": bool(result["passed"]), "message": result["message"]}

    def _lr_find(self, deadline: float, allotted: float) -> dict:
        raw = _trial_raw(self.base_raw)
        speed = calibrate(raw)
        sweep = LR_FIND_STEPS * speed["step_seconds"]
        seeds = max(1, min(3, math.floor(0.8 * allotted / max(sweep, 1e-9))))
        steps = LR_FIND_STEPS if seeds > 1 or sweep <= 0.8 * allotted else max(
            20, math.floor(0.8 * allotted / max(speed["step_seconds"], 1e-9)))
        result = lr_find(raw, seeds=tuple(range(seeds)), start=1e-6, end=10.0, steps=steps)
        centre = float(result["suggested_lr"])
        if not math.isfinite(centre) or centre <= 0:
            centre = float(raw["optimizer"]["lr"])
        space = search_space(self.facts, fixed_keys(self.base), centre)
        searched = [d for d in space if d.key == "optimizer.lr"]
        result.update(speed=speed, centre=centre,
                      range=list(searched[0].bounds) if searched else None)
        _io.write_json(self.out / "lr_find.json", result)
        fig = lr_find_figure(result)
        if result["range"]:
            fig.axes[0].axvspan(*result["range"], color="#0969da", alpha=0.08, lw=0,
                                label="searched range")
        save_png(fig, self.out / "lr_find.png")
        plan = self._plan(space, speed)
        _io.write_json(self.out / "plan.json", plan)
        stages = ", ".join(f"{s['name']} {s['trials']} x {s['epochs']} epochs"
                           for s in plan["stages"])
        self._say(f"      suggested lr {centre:.3g} ({seeds} seed{'s' * (seeds > 1)}); "
                  f"search plan: {stages or 'nothing to search (BASE fixes every key)'}")
        return {"suggested_lr": centre, "seeds": seeds}

    def _plan(self, space: Space, speed: dict) -> dict:
        """The stages (trials x epochs) that fit the coarse and fine phases' time."""
        epoch = speed["epoch_seconds"]
        overhead = TRIAL_OVERHEAD + speed["finish_seconds"]   # a trial beside its epochs
        left = self.budget - self.spent - (time.perf_counter() - self._started)
        done = set(self.phases) | {"lr_find"}
        coarse = B.phase_seconds("coarse", left, done)
        fine = B.phase_seconds("fine", left - coarse, done | {"coarse"})
        stages: list[dict] = []
        if len(space) and self.fixed_stages is not None:
            stages = self.fixed_stages
        elif len(space):
            c_epochs = _clamp(math.floor((coarse / 8 - overhead) / epoch), 1, 4)
            c_trials = _clamp(math.floor(coarse / (c_epochs * epoch + overhead)),
                              max(2, self.workers), 60)
            f_epochs = _clamp(math.floor((fine / 4 - overhead) / epoch), c_epochs, 40)
            f_trials = _clamp(math.floor(fine / (f_epochs * epoch + overhead)), 2, 12)
            stages = [{"name": "coarse", "trials": c_trials, "epochs": c_epochs, "top_k": 4},
                      {"name": "fine", "trials": f_trials, "epochs": f_epochs,
                       "top_k": min(3, f_trials)}]
        return {"name": self.name, "base": _trial_raw(self.base_raw),
                "space": space.to_json(), "stages": stages, "speed": speed,
                "final_epochs": self.final_epochs, "members": self.members}

    def spec(self) -> SearchSpec | None:
        """The search of ``plan.json`` (None: nothing to search)."""
        return spec_of(_read_json(self.out / "plan.json"))

    def _search(self, stage: int, deadline: float) -> dict:
        spec = self.spec()
        if spec is None:
            self._say("      skipped: BASE fixes every searched key")
            return {"skipped": True}
        if stage == 0:
            check_spec(spec)
        folder = self.out / "search"
        local = self.storage is None
        search = Search(spec, folder, self.storage, quiet=self.quiet,
                        resume=local and (folder / "study.db").exists())
        workers = min(self.workers, spec.settings.stages[stage].trials)
        summary = search.run(workers, stages=[stage], deadline=deadline)
        stages = _read_json(folder / "stages.json")
        best = stages[stage].get("best") if stage < len(stages) else None
        if best:
            self._say(f"      best of the {spec.settings.stages[stage].name} stage: val "
                      f"accuracy {best['value']:.4f} ({_shown(best['params'])})")
        return {"best": summary.get("best"), "counts": stages[stage].get("counts")
                if stage < len(stages) else None}

    def _coarse(self, deadline: float, allotted: float) -> dict:
        return self._search(0, deadline)

    def _fine(self, deadline: float, allotted: float) -> dict:
        return self._search(1, deadline)

    def _final(self, deadline: float, allotted: float) -> dict:
        plan = self._final_plan(allotted)
        runs = len(plan["seeds"])
        self._say(f"      {plan['epochs']} epochs of the chosen configuration with an EMA of "
                  f"the weights, {runs} run{'s' * (runs > 1)}"
                  + (f" (seeds {', '.join(map(str, plan['seeds']))}) for a seed ensemble"
                     if runs > 1 else "") + f": {plan['reason']}")
        plan, summaries = E.train_runs(self, plan, deadline)
        runs = len(plan["seeds"])
        result = E.evaluate_runs(self, plan, summaries)
        chosen = result["ensemble"] if result["headline"] == "ensemble" else result["single"]
        self._say(f"      chosen on validation: the {result['headline']} "
                  f"({result['why']}); test accuracy {100 * chosen['test_accuracy']:.2f}%")
        return {"test_accuracy": chosen["test_accuracy"], "headline": result["headline"],
                "runs": runs, "epochs": summaries[0]["epochs"],
                "stop_reason": summaries[0]["stop_reason"]}

    def _final_plan(self, allotted: float) -> dict:
        """The final phase's runs (``final_plan.json``, fixed once, for resume): the final
        configuration, the number of runs and their epochs (:func:`.ensemble.plan_members`,
        from the phase's time and an epoch of the configuration timed now), their seeds; and
        ``best.yaml``."""
        path = self.out / "final_plan.json"
        if path.is_file():
            return _read_json(path)
        start = time.perf_counter()
        raw = self.final_config()
        stored = _read_json(self.out / "plan.json")
        fixed, members = stored.get("final_epochs"), stored.get("members")
        min_epochs = max(E.MIN_EPOCHS, self.searched_epochs())
        if fixed is not None and members is not None:   # nothing to time
            decision = E.plan_members(allotted, 0.0, 0.0, min_epochs, epochs=fixed,
                                      members=members)
            decision.update(epoch_seconds=None, run_overhead=None)
        else:
            # timed now, at this moment's speed: an epoch, the EMA's validation pass, and the
            # last evaluations (train, validation; the test pass at the end)
            speed = calibrate(raw)
            epoch = speed["epoch_seconds"] + speed["eval_seconds"]
            overhead = FINAL_OVERHEAD + 2 * speed["finish_seconds"]
            decision = E.plan_members(allotted - (time.perf_counter() - start), epoch,
                                      overhead, min_epochs, epochs=fixed, members=members)
            # what the evaluation at the end takes: each run's validation and test pass
            decision["evaluation_seconds"] = round(decision["members"]
                                                   * speed["finish_seconds"], 3)
        plan = E.runs_plan(raw, decision)
        raw["train"]["epochs"] = plan["epochs"]
        _io.write_text(self.out / "best.yaml", _best_header(self) + dump(validate(raw)))
        _io.write_json(path, plan)
        return plan

    def searched_epochs(self) -> int:
        """The epochs of the search stage whose best trial is the final configuration (0: none
        searched)."""
        stages = _read_json(self.out / "plan.json").get("stages") or []
        for index, name in ((1, "fine"), (0, "coarse")):
            if (self.phases.get(name) or {}).get("best") and index < len(stages):
                return int(stages[index]["epochs"])
        return 0

    def final_config(self) -> dict:
        """The final configuration: the search's best trial (or the base when nothing was
        searched or no trial finished) with the test split on, the monitor on and an EMA (its
        ``train.epochs`` is set by :meth:`_final_plan`)."""
        plan = _read_json(self.out / "plan.json")
        best = (self.phases.get("fine") or {}).get("best") \
            or (self.phases.get("coarse") or {}).get("best")
        spec = self.spec()
        if spec is not None and best:
            raw = trial_config(spec, best["params"], 1).model_dump(mode="json")
        else:
            raw = copy.deepcopy(plan["base"])
        raw["average"] = copy.deepcopy(FINAL_AVERAGE)
        raw["name"] = self.name
        raw["train"]["epochs"] = plan.get("final_epochs") or 1
        raw["evaluate"] = {**raw.get("evaluate", {}), "test": True}
        raw["train"]["monitor_every"] = 50
        return raw

    def _report(self, deadline: float, allotted: float) -> dict:
        self._write_summary("finished", report_start=time.perf_counter())
        return {}

    def _write_summary(self, status: str, stop_reason: str | None = None,
                       report_start: float | None = None) -> dict:
        from .page import render

        final = _read_optional(self.out / "final" / RunDir.SUMMARY)
        summary: dict[str, Any] = {
            "status": status, "stop_reason": stop_reason, "data": self.data,
            "budget_seconds": self.budget, "family": self.facts["family"],
            "modality": self.facts["modality"]}
        evaluation = _read_optional(self.out / "evaluation.json") \
            if status == "finished" else None
        if final is not None and evaluation is not None:
            n = evaluation["test_examples"]
            single = evaluation["single"]
            ensemble = evaluation["ensemble"]
            chosen = ensemble if evaluation["headline"] == "ensemble" else single
            accuracy = chosen["test_accuracy"]
            low, high = B.wilson_interval(round(accuracy * n), n)
            plan = _read_json(self.out / "final_plan.json")
            summary.update({
                "test_accuracy": accuracy, "test_accuracy_ci95": [low, high],
                "ci_method": "Wilson score interval, 95%", "test_size": n,
                "test_loss": chosen["test_loss"],
                "test_accuracy_from": "ensemble" if chosen is ensemble else single["weights"],
                "headline": evaluation["headline"], "headline_why": evaluation["why"],
                "val_accuracy": chosen["val_accuracy"], "single": single,
                "ensemble": ({"built": False, "reason": plan["reason"]} if ensemble is None
                             else {"built": True, "kind": "seeds", "reason": plan["reason"],
                                   "epochs": plan["epochs"], **ensemble,
                                   "members": evaluation["members"]}),
                "epochs": final["epochs"], "final_stop_reason": final["stop_reason"],
                "diagnosis": (final.get("diagnosis") or {}).get("label")})
        if (self.out / "best.yaml").is_file():
            summary["config"] = read_yaml(self.out / "best.yaml")
        allotted = B.phase_seconds("report", self.budget - self.spent, set(self.phases))

        def times(summary: dict) -> None:
            """The phases' times, the report's own counted up to its page's last piece."""
            if report_start is not None:
                self.phases["report"] = {
                    "seconds": round(time.perf_counter() - report_start, 3),
                    "allotted": round(allotted, 3)}
            summary["phase_seconds"] = {p: r["seconds"] for p, r in self.phases.items()}
            summary["phase_allotted_seconds"] = {p: r["allotted"]
                                                 for p, r in self.phases.items()}
            summary["wall_seconds"] = round(sum(summary["phase_seconds"].values()), 3)

        html = render(self.out, summary, times)
        if report_start is not None:
            _io.write_json(self.out / "phases.json", self.phases)
        _io.write_json(self.out / "summary.json", summary)
        _io.write_file(self.out / "report.html", html)
        return summary


def run(data: str, budget: str | float | None = "10m", out: str | Path | None = None, *,
        workers: int = 1, storage: str | None = None, resume: bool = False,
        config: str | Path | None = None, quiet: bool = False,
        stages: list[dict] | None = None, final_epochs: int | None = None,
        members: int | None = None) -> dict:
    """The whole procedure on ``data`` within ``budget``; returns the summary (also
    ``OUT/summary.json``). The Python equivalent of ``gradwise recipe``. A failing sanity
    check raises :class:`SanityFailed` (its ``summary`` says why).

    >>> summary = run("digits", "1m", "runs/recipe-digits")   # doctest: +SKIP
    """
    return Recipe(data, budget, out, workers=workers, storage=storage, resume=resume,
                  config=config, quiet=quiet, stages=stages, final_epochs=final_epochs,
                  members=members).run()


def calibrate(raw: dict, steps: int = 8, warmup: int = 2) -> dict:
    """Seconds per training step (the lower quartile of ``steps`` steps after ``warmup``: the
    first steps of a fresh model and a passing load spike run slow) and per validation pass of the
    config ``raw``, what an epoch of it takes (``steps_per_epoch * step + validation``) and
    what a run's last evaluation takes (the train and validation sets: ``finish_seconds``)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        trainer = Trainer(raw, out=None, quiet=True)
        batches = trainer.epoch_batches(0)
        timings = []
        for _ in range(steps + warmup):
            x, _, target = next(batches)
            start = time.perf_counter()
            with trainer._autocast():
                loss = trainer._loss(trainer.model(trainer._layout(x)), target)
            trainer.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            trainer.optimizer.step()
            timings.append(time.perf_counter() - start)
        start = time.perf_counter()
        trainer.evaluate(trainer.data.x_val, trainer.data.y_val)
        evaluation = time.perf_counter() - start
    step = sorted(timings[warmup:])[steps // 4]
    ratio = len(trainer.data.x_train) / max(1, len(trainer.data.x_val))
    return {"step_seconds": step, "eval_seconds": evaluation,
            "steps_per_epoch": trainer.steps_per_epoch,
            "epoch_seconds": trainer.steps_per_epoch * step + evaluation,
            "finish_seconds": (1 + ratio) * evaluation}


def data_name(source: str) -> str:
    """A short name for a data source: ``digits``, or the file's stem of ``npz:PATH``.

    >>> data_name("npz:data/mnist.npz"), data_name("mnist1d")
    ('mnist', 'mnist1d')
    """
    kind, _, arg = source.partition(":")
    stem = Path(arg).stem if arg else ""
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in (stem or kind))
    return name.strip("-.") or "data"


def _trial_raw(raw: dict) -> dict:
    """A search trial's config: no test evaluation, no monitor (speed)."""
    raw = copy.deepcopy(raw)
    raw.setdefault("evaluate", {})["test"] = False
    raw.setdefault("train", {})["monitor_every"] = 0
    return raw


def _checked_stages(stages: list[dict] | None) -> list[dict] | None:
    """``stages`` as the plan holds them: two, coarse then fine, each with trials, epochs and
    an optional top_k (default 4 for coarse, 3 for fine)."""
    if stages is None:
        return None
    if not isinstance(stages, list | tuple) or len(stages) != 2 or not all(
            isinstance(s, dict) for s in stages):
        raise UserError("stages: expected two mappings, coarse then fine, e.g. [{trials: 8, "
                        "epochs: 2}, {trials: 3, epochs: 6}]")
    checked = []
    for name, stage, top_k in zip(("coarse", "fine"), stages, (4, 3), strict=True):
        unknown = set(stage) - {"name", "trials", "epochs", "top_k"}
        if unknown or stage.get("name", name) != name:
            raise UserError(f"stages: the {name} stage takes trials, epochs and top_k "
                            f"(got {sorted(stage)})")
        checked.append({"name": name,
                        "trials": _checks.integer(f"stages.{name}.trials",
                                                  stage.get("trials"), 1),
                        "epochs": _checks.integer(f"stages.{name}.epochs",
                                                  stage.get("epochs"), 1),
                        "top_k": _checks.integer(f"stages.{name}.top_k",
                                                 stage.get("top_k", top_k), 1)})
    return checked


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def _shown(params: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in params.items())


def _best_header(recipe: Recipe) -> str:
    return (f"# The final configuration of the recipe on {recipe.data!r} "
            f"(budget {B.clock(recipe.budget)}); train it again with:\n"
            f"#   gradwise train {recipe.out / 'best.yaml'}\n")


def _read_optional(path: Path) -> dict | None:
    return _read_json(path) if path.is_file() else None


def _read_json(path: Path) -> Any:
    """A JSON file the recipe wrote; an unreadable one is a UserError naming it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{str(path)!r} is missing; the recipe folder is incomplete") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {str(path)!r}: {_io.reason(exc)}") from None
