"""An ensemble of finished runs, evaluated on their common test set (``gradwise ensemble``).

Each member is a finished run directory (or every member of a seed group, see
:mod:`gradwise.train.seeds`) with its weights in ``checkpoints/last.pt`` (the final weights;
``best.pt`` with ``checkpoint="best"``). Every member predicts the test set with its own
normalisation, then::

    average   p(y | x) = (1 / M) sum_m softmax(f_m(x))        (the lecture's model ensemble)
    vote      the class most members predict (ties: the higher mean probability)
    disagreement  the mean over member pairs of the fraction of examples they label differently

Runs of different data (another test set, other classes or input shape) are refused.

    >>> result = evaluate_runs(["runs/mnist1d/seed-0", "runs/mnist1d/seed-1"])  # doctest: +SKIP
    >>> result["average"]["test_accuracy"]                                     # doctest: +SKIP
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from .. import _io
from ..config import load_config
from ..ensemble import disagreement, majority_vote, probability_scores
from ..errors import UserError
from ..rundir import RunDir, claim
from .seeds import is_group, members
from .trainer import Trainer

RESULT_FILE = "ensemble.json"
PAGE_FILE = "ensemble.html"
CHECKPOINTS = ("last", "best")
MAX_MEMBERS = 100


def expand(paths: Sequence[str | Path]) -> list[Path]:
    """The run directories named by ``paths``: a seed group stands for its members."""
    runs: list[Path] = []
    for path in paths:
        runs.extend(members(path) if is_group(path) else [Path(path)])
    return runs


def evaluate_runs(paths: Sequence[str | Path], checkpoint: str = "last") -> dict:
    """Each member's, the averaged and the voted test accuracy of the runs ``paths`` (see the
    module docstring), with the members' disagreement; a JSON-ready dict."""
    if checkpoint not in CHECKPOINTS:
        raise UserError(f"checkpoint {checkpoint!r} is invalid; accepted: last, best")
    runs = expand(paths)
    if len(runs) < 2 or len(runs) > MAX_MEMBERS:
        raise UserError(f"an ensemble needs 2 to {MAX_MEMBERS} finished runs; got {len(runs)}")
    repeated = sorted({str(r) for r in runs if runs.count(r) > 1})
    if repeated:
        raise UserError(f"run {repeated[0]!r} is named twice")
    for run in runs:  # every member's files, before the slow part
        _check_finished(run, checkpoint)
    reference: dict | None = None
    rows, probabilities = [], []
    y: Tensor | None = None
    for run in runs:
        p, y_run, facts = _predict(run, checkpoint)
        if reference is None:
            reference, y = facts, y_run
        else:
            _check_same_data(run, runs[0], facts, reference)
        probabilities.append(p)
        rows.append({"run": str(run), "seed": facts["seed"], **_scores(p, y_run)})
    assert y is not None and reference is not None
    accuracies = [r["test_accuracy"] for r in rows]
    vote = majority_vote(probabilities)
    return {
        "checkpoint": checkpoint, "data": reference["source"],
        "classes": reference["classes"], "test_examples": len(y),
        "members": rows,
        "member_mean_accuracy": statistics.mean(accuracies),
        "member_std_accuracy": statistics.stdev(accuracies),
        "average": _scores(torch.stack(probabilities).mean(dim=0), y),
        "vote": {"test_accuracy": int((vote == y).sum()) / len(y)},
        "disagreement": disagreement(probabilities),
    }


def write_ensemble(result: dict, out: str | Path) -> Path:
    """``OUT/ensemble.json`` and ``OUT/ensemble.html`` (``OUT`` claimed as an ``ensemble``
    folder); returns ``OUT``."""
    from ..report.ensemble import render_ensemble

    out = claim(out, "ensemble")
    _io.write_json(out / RESULT_FILE, result)
    _io.write_output(out / PAGE_FILE, render_ensemble(result), kind="ensemble",
                     example=PAGE_FILE)
    return out


def describe(result: dict) -> str:
    """The result as a few lines of text."""
    lines = [f"{r['run']}: test accuracy {100 * r['test_accuracy']:.2f}%"
             for r in result["members"]]
    lines.append(f"members: mean {100 * result['member_mean_accuracy']:.2f}% +- "
                 f"{100 * result['member_std_accuracy']:.2f}")
    lines.append(f"ensemble ({len(result['members'])} members, average of probabilities): "
                 f"{100 * result['average']['test_accuracy']:.2f}%; majority vote "
                 f"{100 * result['vote']['test_accuracy']:.2f}%; disagreement "
                 f"{100 * result['disagreement']:.2f}% of examples per pair")
    return "\n".join(lines)


def _check_finished(run: Path, checkpoint: str) -> None:
    run_dir = RunDir.open(run)
    if run_dir.read_summary() is None:
        raise UserError(f"run {str(run)!r} has not finished (no summary.json); finish it with "
                        f"gradwise train --resume {run}")
    if not run_dir.checkpoint_path(checkpoint).is_file():
        raise UserError(f"run {str(run)!r} has no checkpoints/{checkpoint}.pt (trained with "
                        "train.checkpoint: false?); an ensemble needs each member's weights")


def _predict(run: Path, checkpoint: str) -> tuple[Tensor, Tensor, dict]:
    """The member's test probabilities, the test labels, and facts about its data."""
    run_dir = RunDir.open(run)
    config = load_config(run_dir.config_path)
    with torch.random.fork_rng(devices=[]):
        trainer = Trainer(config, out=None, quiet=True)
    state = run_dir.load_checkpoint(checkpoint, map_location=trainer.device)
    try:
        trainer.model.load_state_dict(state["model"])
    except (KeyError, RuntimeError, TypeError) as exc:
        raise UserError(f"{str(run_dir.checkpoint_path(checkpoint))!r} does not hold the "
                        f"weights of the run's model ({_io.reason(exc)})") from None
    data = trainer.data
    if len(data.y_test) == 0:
        raise UserError(f"run {str(run)!r} has no test examples to evaluate")
    facts = {"source": config.data.source, "seed": config.seed, "classes": data.num_classes,
             "input_shape": tuple(data.input_shape), "y": data.y_test.cpu(),
             "raw": (data.x_test * data.std + data.mean).cpu()}
    return trainer.probabilities(data.x_test).cpu(), data.y_test.cpu(), facts


def _check_same_data(run: Path, first: Path, facts: dict, reference: dict) -> None:
    """Members must predict the same examples: classes, input shape and the (un-normalised)
    test set of ``first``."""
    where = f"run {str(run)!r} and run {str(first)!r}"
    for key, what in (("classes", "class count"), ("input_shape", "input shape")):
        if facts[key] != reference[key]:
            raise UserError(f"{where} differ in {what} ({facts[key]} vs {reference[key]}); an "
                            "ensemble's members must be trained on the same data")
    same = (facts["y"].shape == reference["y"].shape and torch.equal(facts["y"], reference["y"])
            and torch.allclose(facts["raw"], reference["raw"], rtol=1e-4, atol=1e-4))
    if not same:
        raise UserError(f"{where} have different test sets (data {facts['source']!r} vs "
                        f"{reference['source']!r}); an ensemble's members must be evaluated on "
                        "the same examples")


def _scores(probabilities: Tensor, y: Tensor) -> dict:
    loss, accuracy = probability_scores(probabilities, y)
    return {"test_loss": loss, "test_accuracy": accuracy}
