"""The final phase's ensemble step: how many runs of the final configuration its time holds,
their training within that time, and the one evaluation of the test set.

**The decision** (:func:`plan_members`), made when the final phase starts, from its seconds
``S``, the final configuration's epoch ``e`` timed at that moment, and a run's fixed cost ``o``
(its Trainer, its last evaluations, its report). ``M`` runs of ``E`` epochs take about
``M (1.05 E e + o)`` seconds, so with the phase's time split evenly::

    E(M) = floor((S - M o) / (1.05 M e))

The recipe takes the largest ``M`` from 5 down to 3 whose ``E(M)`` is at least ``min_epochs``
(the epochs of the search stage that chose the configuration, at least 5: each member trains
at least as long as the trial whose validation accuracy chose it); when none is, one run of
``E(1)`` epochs and no ensemble. A 2-member ensemble is never planned: it halves each run for
the smallest of the gains. With ``final_epochs`` fixed, ``M = floor(S / (1.05 E e + o))`` runs
(at most 5; fewer than 3 is one run). The runs differ in their ``seed`` only (the
initialisation, the batch order, dropout, augmentation); ``data.split_seed`` keeps one
validation split for all of them, so that validation can compare the ensemble with the single
model.

**The runs**: ``final/`` (the configuration's own seed) then the seed group ``ensemble/``
(``seed-K/`` per other member, :mod:`gradwise.train.seeds`). The first may use the whole
phase; its measured time then decides how many of the others still fit (those that do not
are dropped: the plan may end with 2 runs, or 1), and each of them runs under a deadline that
gives it an even share of the time left. On ``--resume`` a finished run is kept, an
interrupted one continues from its last checkpoint.

**The evaluation** (:func:`evaluate_runs`): each run contributes the weights its own validation
chose (live or EMA). First the validation set: each run's softmax ``p_m``, the ensemble's
``p = (1/M) sum_m p_m``, and the choice of the headline: the ensemble when its validation
accuracy is higher than the single model's (``final/``), or equal with a lower validation NLL;
else the single model. Then, once, the test set: every run's ``p_m``, the ensemble's mean,
their accuracies and NLLs. No run of the recipe evaluates the test set before this.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from .. import _io
from ..config import MAX_SEED, validate
from ..ensemble import disagreement, probability_scores
from ..errors import UserError
from ..rundir import RunDir
from ..train import Trainer
from ..train.seeds import SEEDS_FILE, member_dir, read_seeds, start_group, train_member


class Recipe(Protocol):
    """What the ensemble step uses of the recipe running it (:class:`gradwise.recipe.Recipe`):
    its folder, whether it is quiet, and its progress line."""

    out: Path
    quiet: bool

    def _say(self, text: str) -> None: ...


#: The most and the fewest members the rule plans (5: what docs/ensembles.md measured).
MAX_MEMBERS = 5
MIN_MEMBERS = 3
#: The fewest epochs a member trains (and the floor of ``min_epochs``).
MIN_EPOCHS = 5
#: The margin on an epoch's time, as for a single final run.
MARGIN = 1.05
#: The folder of the members beyond ``final/`` (a seed group).
GROUP = "ensemble"


def plan_members(seconds: float, epoch_seconds: float, run_overhead: float, min_epochs: int,
                 *, epochs: int | None = None, members: int | None = None) -> dict:
    """How many runs (``members``) of how many ``epochs`` the final phase's ``seconds`` hold
    (the rule of the module doc), with the reason in words.

    >>> plan_members(100, 1.0, 3.0, 5)["members"], plan_members(100, 1.0, 3.0, 5)["epochs"]
    (5, 16)
    >>> plan_members(20, 1.0, 3.0, 5)["members"]     # 3 runs would get 3 epochs each
    1
    """
    e, o = max(epoch_seconds, 1e-9), max(run_overhead, 0.0)

    def fitted(m: int) -> int:
        return math.floor((seconds - m * o) / (MARGIN * m * e))

    base = {"seconds": round(seconds, 3), "epoch_seconds": round(epoch_seconds, 4),
            "run_overhead": round(run_overhead, 3), "min_epochs": min_epochs}
    if members is not None:
        m = members
        n = epochs if epochs is not None else max(1, fitted(m))
        why = f"{m} run{'s' * (m > 1)} asked for (members={m})"
    elif epochs is not None:
        fit = math.floor(seconds / (MARGIN * epochs * e + o))
        m = min(MAX_MEMBERS, fit) if fit >= MIN_MEMBERS else 1
        n = epochs
        why = (f"{fit} runs of the fixed {epochs} epochs fit the phase's {seconds:.0f} s"
               + (f"; {m} kept" if m > 1 and fit > m else "")
               + (f" (fewer than {MIN_MEMBERS}: no ensemble)" if m == 1 else ""))
    else:
        m = next((k for k in range(MAX_MEMBERS, MIN_MEMBERS - 1, -1)
                  if fitted(k) >= min_epochs), 1)
        n = max(1, fitted(m))
        if m > 1:
            why = (f"{m} runs of {n} epochs fit the phase's {seconds:.0f} s at {e:.2f} s an "
                   f"epoch (each at least {min_epochs} epochs)")
        elif seconds <= MIN_MEMBERS * o:
            why = (f"the phase's {max(0.0, seconds):.0f} s do not hold {MIN_MEMBERS} runs' fixed "
                   f"cost of {o:.1f} s each: one run of {max(1, n)} epochs")
        else:
            why = (f"{MIN_MEMBERS} runs would get {max(0, fitted(MIN_MEMBERS))} epochs each, "
                   f"fewer than the {min_epochs} a member needs, in the phase's {seconds:.0f} s "
                   f"at {e:.2f} s an epoch: one run of {max(1, n)} epochs instead")
    return {**base, "members": m, "epochs": max(1, n), "reason": why}


def run_folders(out: Path, seeds: list[int]) -> list[Path]:
    """``final/`` for the first seed, ``ensemble/seed-K/`` for the others."""
    return [out / "final"] + [member_dir(out / GROUP, s) for s in seeds[1:]]


def member_config(raw: dict) -> dict:
    """The members' shared config: ``raw`` with its validation split fixed to its seed."""
    return {**raw, "data": {**raw["data"], "split_seed": raw.get("seed", 0)}}


def until(deadline: float) -> Callable[[Trainer, dict], None]:
    """A Trainer callback that stops the run at an epoch's end when another epoch at its mean
    pace would pass ``deadline`` (a ``time.time()``)."""
    def in_time(trainer: Trainer, record: dict) -> None:
        per_epoch = record["elapsed_seconds"] / max(record["epoch"], 1)
        if (record["epoch"] < trainer.config.train.epochs
                and time.time() + per_epoch > deadline):
            trainer.stop(f"time budget: stopped after epoch {record['epoch']} of "
                         f"{trainer.config.train.epochs}")
    return in_time


def train_runs(recipe: Recipe, plan: dict, deadline: float) -> tuple[dict, list[dict]]:
    """Train the planned runs (kept when finished, continued when interrupted): the first
    within the phase's time, each later one within an even share of the time left to
    ``deadline``. After each run it trains, the runs still to come that would not fit at that
    run's measured time are dropped (the plan in ``final_plan.json`` says so). Returns the plan
    as it ends and the runs' summaries."""
    deadline -= plan.get("evaluation_seconds") or 0.0   # kept for the evaluation
    summaries: list[dict] = []
    index = 0
    while index < len(plan["seeds"]):
        seeds: list[int] = plan["seeds"]
        seed, folder = seeds[index], run_folders(recipe.out, seeds)[index]
        done = RunDir(folder).read_summary() if folder.is_dir() else None
        if done is not None:
            recipe._say(f"      run {index + 1}/{len(seeds)} (seed {seed}): finished before, "
                        "kept")
            summaries.append(done)
            index += 1
            continue
        recipe._say(f"      run {index + 1}/{len(seeds)} (seed {seed}) into "
                    f"{folder.relative_to(recipe.out)}")
        started = time.perf_counter()
        share = deadline if index == 0 else (
            time.time() + (deadline - time.time()) / (len(seeds) - index))
        if index == 0:
            resume = (folder / RunDir.CONFIG).is_file()
            trainer = Trainer(plan["config"], folder, quiet=recipe.quiet,
                              callbacks=[until(share)])
            summaries.append(trainer.fit(resume=resume))
        else:
            group = recipe.out / GROUP
            config = validate(member_config(plan["config"]))
            if not (group / SEEDS_FILE).is_file():
                start_group(config, seeds[1:], group)
            elif read_seeds(group) != seeds[1:]:
                raise UserError(f"{str(group)!r} holds other seeds than the recipe's plan "
                                f"({read_seeds(group)} vs {seeds[1:]})")
            summaries.append(train_member(config, group, seed, quiet=recipe.quiet, say=False,
                                          callbacks=[until(share)]))
        took = time.perf_counter() - started
        more = len(seeds) - index - 1
        fit = math.floor(max(0.0, deadline - time.time()) / max(took, 1e-9))
        if fit < more:
            plan = _drop_runs(recipe, plan, index + 1 + fit,
                              f"run {index + 1} took {took:.0f} s, so {fit} of the "
                              f"{more} runs after it fit")
        index += 1
    return plan, summaries


def _drop_runs(recipe: Recipe, plan: dict, keep: int, why: str) -> dict:
    """``plan`` with its first ``keep`` runs only (``final_plan.json`` and the group's seeds
    rewritten), ``why`` added to its reason."""
    seeds = plan["seeds"][:keep]
    plan = {**plan, "seeds": seeds, "members": keep,
            "reason": f"{plan['reason']}; then {why}: {keep} run{'s' * (keep > 1)}"}
    recipe._say(f"      {why}: {keep} run{'s' * (keep > 1)} in all")
    group = recipe.out / GROUP
    if keep > 1 and (group / SEEDS_FILE).is_file():
        _io.write_json(group / SEEDS_FILE, {"seeds": seeds[1:]})
    _io.write_json(recipe.out / "final_plan.json", plan)
    return plan


def _chosen_weights(trainer: Trainer, folder: Path, summary: dict) -> tuple[str, dict]:
    """The weights the run's own validation chose (``test_accuracy_from``: live, or the
    average's) from its last checkpoint, as a CPU state dict, and their name."""
    state = RunDir.open(folder).load_last(map_location=trainer.device)
    kind = summary.get("test_accuracy_from", "live")
    trainer.model.load_state_dict(state["model"])
    if kind in ("ema", "swa") and trainer.average is not None and "average" in state:
        trainer.average.load_state_dict(state["average"])
        trainer._recompute_bn()
        with trainer.average.swapped():
            weights = {k: v.detach().to("cpu", copy=True)
                       for k, v in trainer.model.state_dict().items()}
        return kind, weights
    return "live", {k: v.detach().to("cpu", copy=True)
                    for k, v in trainer.model.state_dict().items()}


def evaluate_runs(recipe: Recipe, plan: dict, summaries: list[dict]) -> dict:
    """The validation choice, then the one test evaluation (the module doc); written to
    ``evaluation.json`` and returned."""
    seeds: list[int] = plan["seeds"]
    folders = run_folders(recipe.out, seeds)
    with torch.random.fork_rng(devices=[]):
        trainer = Trainer(plan["config"], out=None, quiet=True)
    data = trainer.data
    weights = [_chosen_weights(trainer, f, s) for f, s in zip(folders, summaries, strict=True)]

    def predict(x: Tensor) -> list[Tensor]:
        out = []
        for _, state in weights:
            trainer.model.load_state_dict(state)
            out.append(trainer.probabilities(x).cpu())
        return out

    rows: list[dict[str, Any]] = []
    for seed, folder, summary, (kind, _) in zip(seeds, folders, summaries, weights, strict=True):
        rows.append({"seed": seed, "run": str(folder.relative_to(recipe.out)),
                     "epochs": summary["epochs"], "weights": kind,
                     "stop_reason": summary.get("stop_reason")})
    y_val, y_test = data.y_val.cpu(), data.y_test.cpu()
    val = predict(data.x_val)
    for row, p in zip(rows, val, strict=True):
        row["val_loss"], row["val_accuracy"] = probability_scores(p, y_val)
    result: dict[str, Any] = {"members": rows, "single": {"run": "final",
                                                           "weights": rows[0]["weights"]}}
    ensemble: dict[str, Any] | None = None
    if len(rows) > 1:
        mean = torch.stack(val).mean(dim=0)
        ensemble = dict(zip(("val_loss", "val_accuracy"), probability_scores(mean, y_val),
                            strict=True))
        ensemble["val_disagreement"] = disagreement(val)
    single = rows[0]
    # the choice, on validation only
    if ensemble is None:
        headline, why = "single", plan["reason"]
    elif (ensemble["val_accuracy"], -ensemble["val_loss"]) > (single["val_accuracy"],
                                                              -single["val_loss"]):
        headline = "ensemble"
        better = ("higher validation accuracy" if ensemble["val_accuracy"]
                  > single["val_accuracy"] else "the same validation accuracy and a lower "
                  "validation NLL")
        why = (f"the {len(rows)}-run ensemble has {better} than the single run "
               f"({100 * ensemble['val_accuracy']:.2f}% vs {100 * single['val_accuracy']:.2f}%)")
    else:
        headline = "single"
        why = (f"the single run validates at least as well as the {len(rows)}-run ensemble "
               f"({100 * single['val_accuracy']:.2f}% vs {100 * ensemble['val_accuracy']:.2f}%,"
               " ties go to the single run unless the ensemble's NLL is lower)")
    # the test set, once, after every choice
    test = predict(data.x_test)
    for row, p in zip(rows, test, strict=True):
        row["test_loss"], row["test_accuracy"] = probability_scores(p, y_test)
    if ensemble is not None:
        ensemble["test_loss"], ensemble["test_accuracy"] = probability_scores(
            torch.stack(test).mean(dim=0), y_test)
        ensemble["test_disagreement"] = disagreement(test)
    result["single"].update({k: single[k] for k in ("val_loss", "val_accuracy", "test_loss",
                                                    "test_accuracy")})
    result.update(ensemble=ensemble, headline=headline, why=why,
                  test_examples=len(y_test))
    _io.write_json(recipe.out / "evaluation.json", result)
    return result


def runs_plan(raw: dict, decision: dict) -> dict:
    """The final phase's runs for the final configuration ``raw`` and a :func:`plan_members`
    ``decision``: their seeds (``raw``'s seed first, then the next ones) and their config
    (``raw`` with the decided ``train.epochs``, checkpoints on, and the test set off:
    :func:`evaluate_runs` reads it, once)."""
    runs = dict(raw)
    runs["train"] = {**raw["train"], "epochs": decision["epochs"]}
    runs["evaluate"] = {**raw.get("evaluate", {}), "test": False}
    runs["train"]["checkpoint"] = True   # the evaluation reads each run's weights
    first = int(raw.get("seed", 0))
    seeds = [(first + k) % (MAX_SEED + 1) for k in range(decision["members"])]
    return {**decision, "seeds": seeds, "config": validate(runs).model_dump(mode="json")}
