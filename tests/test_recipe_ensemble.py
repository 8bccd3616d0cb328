"""The recipe's ensemble step: the decision rule against its closed form, a small recipe on
digits with a 3-run seed ensemble (its probabilities against the members' softmax recomputed
from their checkpoints, the test set read once after every choice, summary and page), and a
kill during the ensemble's runs then ``--resume`` (finished runs are kept, not trained again).

The recipes fix the search's stages, the final runs' epochs and their number (``stages``,
``final_epochs``, ``members``), so that the work does not depend on the machine's speed, under
a budget that no deadline reaches; one intra-op thread, as in tests/test_recipe.py.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from gradwise.config import load_config
from gradwise.data import load_data
from gradwise.ensemble import probability_scores
from gradwise.nn import build_model
from gradwise.recipe import ensemble as E
from gradwise.recipe import plan_members
from gradwise.train import Trainer

STAGES = [{"trials": 2, "epochs": 1}, {"trials": 2, "epochs": 1}]
RUNS, EPOCHS = 3, 3
SCRIPT = textwrap.dedent(f"""\
    import sys
    from gradwise.recipe import run
    run("digits", "10m", sys.argv[1], resume=sys.argv[2] == "resume", stages={STAGES!r},
        final_epochs={EPOCHS}, members={RUNS})
""")
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


# -- the decision rule ---------------------------------------------------------------------------

@pytest.mark.parametrize("seconds, epoch, overhead, least, members, epochs", [
    (100, 1.0, 3.0, 5, 5, 16),    # 5 runs: floor((100 - 15) / 5.25) = 16 >= 5
    (30, 1.0, 3.0, 5, 3, 6),      # 5 runs: 2, 4 runs: 4 (< 5); 3 runs: floor(21 / 3.15) = 6
    (20, 1.0, 3.0, 5, 1, 16),     # 3 runs: floor(11 / 3.15) = 3 < 5: one run of 17 / 1.05
    (300, 2.0, 0.0, 40, 3, 47),   # 4 runs: floor(300 / 8.4) = 35 < 40; 3: floor(300 / 6.3)
    (10, 1.0, 20.0, 5, 1, 1),     # not even one run fits: still one epoch
])
def test_the_rule_in_closed_form(seconds, epoch, overhead, least, members, epochs):
    plan = plan_members(seconds, epoch, overhead, least)
    assert (plan["members"], plan["epochs"]) == (members, epochs)
    if members == 1:
        assert f"one run of {epochs} epochs" in plan["reason"]
    else:
        assert plan["reason"].startswith(f"{members} runs of {epochs} epochs fit")


@pytest.mark.parametrize("seconds, epochs, members", [
    (60, 4, 5),   # floor(60 / (1.05 * 4 + 3)) = 8 runs fit, 5 kept
    (25, 4, 3),   # floor(25 / 7.2) = 3
    (20, 4, 1),   # 2 runs fit: fewer than 3, no ensemble
])
def test_fixed_epochs_fill_the_phase_with_runs(seconds, epochs, members):
    plan = plan_members(seconds, 1.0, 3.0, 5, epochs=epochs)
    assert (plan["members"], plan["epochs"]) == (members, epochs)


def test_fixed_members_share_the_phase():
    plan = plan_members(30, 1.0, 3.0, 5, members=2)     # floor((30 - 6) / 2.1) = 11
    assert (plan["members"], plan["epochs"]) == (2, 11)
    assert plan_members(30, 1.0, 3.0, 5, members=4, epochs=7)["epochs"] == 7


def test_a_planned_ensemble_fits_its_time_and_a_refused_one_would_not():
    rng = random.Random(0)
    for _ in range(2000):
        seconds, epoch = rng.uniform(5, 5000), rng.uniform(0.01, 30)
        overhead, least = rng.uniform(0, 10), rng.randint(5, 80)
        plan = plan_members(seconds, epoch, overhead, least)
        m, n = plan["members"], plan["epochs"]
        if m > 1:
            assert E.MIN_MEMBERS <= m <= E.MAX_MEMBERS and n >= least
            assert m * (E.MARGIN * n * epoch + overhead) <= seconds + 1e-9
            if m < E.MAX_MEMBERS:   # one more run would have cut the members below least
                assert math.floor((seconds - (m + 1) * overhead)
                                  / (E.MARGIN * (m + 1) * epoch)) < least
        else:
            for k in range(E.MIN_MEMBERS, E.MAX_MEMBERS + 1):
                assert math.floor((seconds - k * overhead) / (E.MARGIN * k * epoch)) < least


# -- a recipe with an ensemble -------------------------------------------------------------------

@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    """A recipe run in this process, with every evaluation and training run recorded:
    ``(folder, summary, calls)``; ``calls`` lists ("fit-end", t), ("test", kind, t)."""
    from gradwise.recipe import run

    out = tmp_path_factory.mktemp("recipe-ens") / "recipe"
    calls: list[tuple] = []
    fit, probabilities, evaluate = Trainer.fit, Trainer.probabilities, Trainer.evaluate

    def is_test(trainer: Trainer, x: torch.Tensor) -> bool:
        return x is trainer.data.x_test or x.shape == trainer.data.x_test.shape

    def fit_(self, *args, **kwargs):
        try:
            return fit(self, *args, **kwargs)
        finally:
            calls.append(("fit-end", time.perf_counter()))

    def probabilities_(self, x):
        if is_test(self, x):
            calls.append(("test", "probabilities", time.perf_counter()))
        return probabilities(self, x)

    def evaluate_(self, x, y):
        if is_test(self, x):
            calls.append(("test", "evaluate", time.perf_counter()))
        return evaluate(self, x, y)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(Trainer, "fit", fit_)
            mp.setattr(Trainer, "probabilities", probabilities_)
            mp.setattr(Trainer, "evaluate", evaluate_)
            summary = run("digits", "10m", out, stages=STAGES, final_epochs=EPOCHS,
                          members=RUNS, quiet=True)
    finally:
        torch.set_num_threads(threads)
    return out, summary, calls


def _softmax_from_checkpoint(run: Path, weights: str, split: str) -> tuple[torch.Tensor, ...]:
    """A run's softmax on ``split`` recomputed from its files alone: its config, the data with
    the run's split seed, a fresh model and the checkpoint's live or averaged tensors."""
    config = load_config(run / "config.yaml")
    seed = config.seed if config.data.split_seed is None else config.data.split_seed
    data = load_data(config.data.source, val_fraction=config.data.val_fraction, seed=seed)
    model = build_model(config.model.name, data.input_shape, data.num_classes,
                        **config.model.options())
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True, map_location="cpu")
    if weights == "live":
        model.load_state_dict(state["model"])
    else:
        tensors = state["average"]["tensors"]
        model.load_state_dict({k: tensors[k] for k in model.state_dict()})
    model.eval()
    with torch.no_grad():
        x = getattr(data, f"x_{split}")
        return torch.softmax(model(x), dim=1), getattr(data, f"y_{split}")


def test_the_ensemble_is_the_mean_of_its_members_softmax(recipe):
    out, summary, _ = recipe
    ensemble = summary["ensemble"]
    assert ensemble["built"] and ensemble["kind"] == "seeds"
    members = ensemble["members"]
    assert [m["seed"] for m in members] == [0, 1, 2]
    assert [m["run"] for m in members] == ["final", "ensemble/seed-1", "ensemble/seed-2"]
    for split in ("val", "test"):
        probabilities = []
        for member in members:
            p, y = _softmax_from_checkpoint(out / member["run"], member["weights"], split)
            loss, accuracy = probability_scores(p, y)
            assert member[f"{split}_accuracy"] == accuracy
            assert member[f"{split}_loss"] == pytest.approx(loss, rel=1e-5)
            probabilities.append(p)
        mean = torch.stack(probabilities).mean(dim=0)
        nll = float(-mean[torch.arange(len(y)), y].log().mean())
        assert ensemble[f"{split}_loss"] == pytest.approx(nll, rel=1e-5)
        assert ensemble[f"{split}_accuracy"] == float((mean.argmax(1) == y).double().mean())
    # the members differ in their seed only: one validation split, one test set
    configs = [load_config(out / m["run"] / "config.yaml") for m in members[1:]]
    final = load_config(out / "final" / "config.yaml")
    for seed, config in zip((1, 2), configs, strict=True):
        assert config.seed == seed and config.data.split_seed == 0
        assert (config.model_dump() | {"seed": 0, "data": None}
                == final.model_dump() | {"data": None})
    assert all(m["epochs"] == EPOCHS for m in members)


def test_the_test_set_is_read_once_after_every_choice(recipe):
    out, summary, calls = recipe
    tests = [c for c in calls if c[0] == "test"]
    last_fit = max(c[1] for c in calls if c[0] == "fit-end")
    # one softmax per run, after the last run's training, and no other test evaluation
    assert [c[1] for c in tests] == ["probabilities"] * RUNS
    assert all(t > last_fit for _, _, t in tests)
    for run in ("final", "ensemble/seed-1", "ensemble/seed-2"):
        assert math.isnan(json.loads((out / run / "summary.json").read_text())["test_accuracy"])
    # the headline was chosen by validation: the rule, recomputed from the numbers
    single, ensemble = summary["single"], summary["ensemble"]
    better = (ensemble["val_accuracy"], -ensemble["val_loss"]) > (single["val_accuracy"],
                                                                  -single["val_loss"])
    assert summary["headline"] == ("ensemble" if better else "single")
    chosen = ensemble if better else single
    assert summary["test_accuracy"] == chosen["test_accuracy"] > 0.9
    assert summary["val_accuracy"] == chosen["val_accuracy"]
    assert summary["test_accuracy_from"] == ("ensemble" if better else single["weights"])
    assert single == {"run": "final", "weights": ensemble["members"][0]["weights"],
                      **{k: ensemble["members"][0][k] for k in (
                          "val_loss", "val_accuracy", "test_loss", "test_accuracy")}}
    assert json.loads((out / "evaluation.json").read_text())["headline"] == summary["headline"]


def test_summary_and_page_show_the_ensemble(recipe):
    out, summary, _ = recipe
    assert json.loads((out / "summary.json").read_text()) == summary
    plan = json.loads((out / "final_plan.json").read_text())
    assert plan["members"] == RUNS and plan["seeds"] == [0, 1, 2]
    assert summary["ensemble"]["reason"] == plan["reason"] == "3 runs asked for (members=3)"
    html = (out / "report.html").read_text()
    section = html[html.index('<section id="ensemble"'):]
    section = section[:section.index("</section>")]
    text = re.sub(r"<[^>]+>", " ", section)
    for member in summary["ensemble"]["members"]:
        assert member["run"] in text
        assert f"{100 * member['test_accuracy']:.2f}%" in text
    assert "ensemble (mean of the softmax)" in text
    assert f"{100 * summary['ensemble']['test_accuracy']:.2f}%" in text
    assert f"the {summary['headline']}: " in text
    header = html[html.index("<header"):html.index("</header>")]
    assert f"{100 * summary['test_accuracy']:.2f}%" in header
    # best.yaml trains the configuration again, with the test set on and the run's epochs
    best = load_config(out / "best.yaml")
    assert best.evaluate.test and best.train.epochs == EPOCHS and best.seed == 0


# -- kill during the ensemble's runs, then resume ------------------------------------------------

def _start(out: Path, mode: str, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", SCRIPT, str(out), mode], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"))


@pytest.mark.slow
def test_a_kill_in_the_ensemble_keeps_the_finished_runs(recipe, tmp_path):
    out, log = tmp_path / "killed", tmp_path / "killed.log"
    proc = _start(out, "new", log)
    end = time.monotonic() + 240
    while "run 3/3 (seed 2)" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < end, log.read_text()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    phases = json.loads((out / "phases.json").read_text())
    assert "fine" in phases and "final" not in phases
    finished = {run: (out / run / "summary.json").stat().st_mtime_ns
                for run in ("final", "ensemble/seed-1")}
    log2 = tmp_path / "resumed.log"
    resumed = _start(out, "resume", log2)
    assert resumed.wait(300) == 0, log2.read_text()
    after = log2.read_text()
    assert "run 1/3 (seed 0): finished before, kept" in after
    assert "run 2/3 (seed 1): finished before, kept" in after
    assert "run 3/3 (seed 2) into ensemble/seed-2" in after
    assert after.count("epoch 1/3") <= 1   # only the killed run trains (again or on)
    for run, mtime in finished.items():
        assert (out / run / "summary.json").stat().st_mtime_ns == mtime, run
    summary = json.loads((out / "summary.json").read_text())
    reference = recipe[1]
    assert summary["headline"] == reference["headline"]
    for key in ("val_accuracy", "test_accuracy"):
        assert summary["ensemble"][key] == reference["ensemble"][key], key
        assert [m[key] for m in summary["ensemble"]["members"]] == [
            m[key] for m in reference["ensemble"]["members"]], key


def test_split_seed_keeps_one_validation_split_across_seeds():
    raw = {"data": "digits", "model": {"name": "mlp", "hidden": [16]}, "train": {"epochs": 1}}
    a = Trainer({**raw, "seed": 0}, quiet=True)
    b = Trainer({**raw, "seed": 1, "data": {"source": "digits", "split_seed": 0}}, quiet=True)
    c = Trainer({**raw, "seed": 1}, quiet=True)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(a.data, f"x_{split}"), getattr(b.data, f"x_{split}"))
        assert torch.equal(getattr(a.data, f"y_{split}"), getattr(b.data, f"y_{split}"))
    assert not torch.equal(a.data.y_val, c.data.y_val)      # without it, the seed moves it
    assert not torch.equal(next(a.model.parameters()), next(b.model.parameters()))


def test_runs_that_no_longer_fit_are_dropped(tmp_path):
    """The first run's measured time decides the rest: with the phase's time spent by it, the
    two planned members are dropped (the plan says so) and nothing of them is written."""
    raw = {"data": "digits", "model": {"name": "mlp", "hidden": [16]}, "seed": 0,
           "optimizer": {"name": "adamw", "lr": 3e-3}, "train": {"epochs": 1}}
    plan = E.runs_plan(raw, {"members": 3, "epochs": 1, "reason": "3 runs asked for"})
    said: list[str] = []
    recipe = type("R", (), {"out": tmp_path, "quiet": True, "_say": staticmethod(said.append)})
    plan, summaries = E.train_runs(recipe, plan, time.time() + 0.05)
    assert plan["members"] == 1 and plan["seeds"] == [0] and len(summaries) == 1
    assert re.search(r"then run 1 took \d+ s, so 0 of the 2 runs after it fit: 1 run$",
                     plan["reason"])
    assert json.loads((tmp_path / "final_plan.json").read_text()) == plan
    assert (tmp_path / "final" / "summary.json").is_file()
    assert not (tmp_path / "ensemble").exists()
