"""`gradwise search`: the space's syntax and errors, coarse-to-fine narrowing, the outputs, the
3x-loss abort, pruning, grid vs random, and a resume after kill -9 that loses no trial and runs
none twice."""

from __future__ import annotations

import ast
import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from gradwise.cli import main
from gradwise.config import load_config
from gradwise.errors import UserError
from gradwise.search import (
    Dimension,
    Search,
    grid_points,
    grid_values,
    load_search,
    narrow,
    narrow_space,
    parse_space,
    with_settings,
)
from gradwise.search.storage import with_driver
from gradwise.search.workers import Worker, record_heartbeat, retry_stale

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def slow_mlp(input_shape, num_classes, delay=0.0):
    """A one-layer model whose training forward sleeps ``delay`` s (to kill a trial in it)."""
    class Slow(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(math.prod(input_shape), num_classes)

        def forward(self, x):
            if self.training and delay:
                time.sleep(delay)
            return self.linear(x.flatten(1))
    return Slow()


GIVEN_UP: list[int] = []


def given_up_mlp(input_shape, num_classes, storage: str = ""):
    """A one-layer model whose first training forward (in this process) fails the running
    trial and enqueues its re-run, as another worker does when the trial's heartbeat is late."""
    import optuna
    from optuna.trial import TrialState

    class GivenUp(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(math.prod(input_shape), num_classes)

        def forward(self, x):
            if self.training and not GIVEN_UP:
                study = optuna.load_study(study_name="tiny:only", storage=storage)
                (running,) = study.get_trials(states=(TrialState.RUNNING,))
                retry_stale(study, study.tell(running.number, state=TrialState.FAIL))
                GIVEN_UP.append(running.number)
            return self.linear(x.flatten(1))
    return GivenUp()


def search_config(**search) -> dict:
    """A tiny search on digits: an MLP on 300 examples, 1-epoch coarse, 2-epoch fine."""
    return {
        "name": "tiny",
        "data": {"source": "digits", "train_size": 300},
        "model": {"name": "mlp", "hidden": [32]},
        "optimizer": {"name": "adamw"},
        "train": {"batch_size": 64, "monitor_every": 0},
        "space": {"optimizer.lr": "loguniform(1e-4, 1e-1)",
                  "optimizer.weight_decay": "loguniform(1e-5, 1e-1)",
                  "model.dropout": "uniform(0.0, 0.5)"},
        "search": {"stages": [{"name": "coarse", "trials": 6, "epochs": 1},
                              {"name": "fine", "trials": 3, "epochs": 2, "top_k": 2}],
                   "heartbeat": 1, "grace": 3, **search},
    }


def write(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# -- the package's layers ---------------------------------------------------------------------

SEARCH_LAYERS = ["space", "stages", "spec", "grid", "workers", "storage", "report", "study"]


def test_each_search_module_imports_only_the_ones_before_it():
    """No import circle, none hidden in a function: the report never imports the Search."""
    package = ROOT / "src" / "gradwise" / "search"
    assert {p.stem for p in package.glob("*.py")} == {*SEARCH_LAYERS, "__init__"}
    for i, name in enumerate(SEARCH_LAYERS):
        imported = set()
        for node in ast.walk(ast.parse((package / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                imported |= {node.module} if node.module else {a.name for a in node.names}
        assert imported <= set(SEARCH_LAYERS[:i]), f"{name} imports {imported}"


# -- the space --------------------------------------------------------------------------------

def test_space_forms_parse_to_ranges_and_choices():
    space = parse_space({"optimizer.lr": "loguniform(1e-4, 1e-1)",
                         "model.dropout": "uniform(0, 0.5)",
                         "train.batch_size": "int(32, 256)",
                         "optimizer.name": "choice([adam, sgd])",
                         "model.hidden": "choice([[32], [64, 64]])"})
    assert space["optimizer.lr"] == Dimension("optimizer.lr", "loguniform", 1e-4, 0.1)
    assert space["model.dropout"].low == 0.0 and space["model.dropout"].high == 0.5
    assert space["train.batch_size"].midpoint() == 144
    assert space["optimizer.lr"].midpoint() == pytest.approx(math.sqrt(1e-5))
    assert space["optimizer.name"].choices == ("adam", "sgd")
    assert space["model.hidden"].choices == ([32], [64, 64])


BAD_SPACES = [
    ({"optimizer.lr": "loguniform(0.1, 0.01)"}, "low must be < high"),
    ({"optimizer.lr": "uniform(0.5, 0.5)"}, "low must be < high"),
    ({"optimizer.lr": "loguniform(0, 0.1)"}, "both bounds must be > 0"),
    ({"optimizer.lr": "loguniform(-1e-3, 0.1)"}, "both bounds must be > 0"),
    ({"optimizer.name": "choice([])"}, "choice([]) is empty"),
    ({"train.batch_size": "int(8, 16.5)"}, "takes integers"),
    ({"optimizer.lr": "normal(0, 1)"}, "unknown kind 'normal'"),
    ({"optimizer.lr": 0.01}, "expected one of loguniform(...)"),
    ({"train.epochs": "int(1, 5)"}, "set by each stage"),
    ({"train.epoch": "int(1, 5)"}, "unknown key 'train.epoch'"),
    ({"optimiser.lr": "loguniform(1e-4, 1e-1)"}, "unknown key 'optimiser'"),
    ({"model.dropuot": "uniform(0, 0.5)"}, "dropuot"),
    ({"optimizer.name": "choice([adam, adamax])"}, "unknown optimizer 'adamax'"),
    # every choice goes the way a trial's config goes (its Trainer is built), not just the first
    ({"model.name": "choice([mlp, 'python:os:system'])"}, "python:os:system"),
    ({"model.name": "choice([mlp, convnet])", "model.hidden": "choice([[32]])"},
     "unknown option 'hidden' for model 'convnet'"),
    # the config at each bound of a range is validated too
    ({"train.batch_size": "int(0, 64)"}, "train.batch_size=0"),
    # ranges that overflow a float fail here, not in the report after every trial ran
    ({"optimizer.lr": "loguniform(1e-300, 1e300)"}, "the range is too wide"),
    ({"model.dropout": "uniform(-1e308, 1e308)"}, "the range is too wide"),
    ({"train.batch_size": "int(1, 1e400)"}, "takes integers"),
    ({"train.batch_size": "int(1, 1e17)"}, "too large"),
]


@pytest.mark.parametrize(("space", "message"), BAD_SPACES)
def test_bad_space_fails_before_any_trial(tmp_path, capsys, space, message):
    config = search_config()
    config["space"] = space
    out = tmp_path / "out"
    code = main(["search", str(write(tmp_path / "s.yaml", config)), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err, err
    assert err.startswith("gradwise: error: space: ") or "unknown key" in err
    assert not out.exists()  # no folder, no study: nothing ran


@pytest.mark.parametrize(("search", "message"), [
    ({"sampler": "bayes"}, "search.sampler='bayes' is invalid"),
    ({"stages": []}, "search.stages: expected a non-empty list"),
    ({"stages": [{"trials": 0, "epochs": 1}]}, "search.stages[0].trials=0 is invalid"),
    ({"stages": [{"trials": 2}]}, "search.stages[0]: epochs is missing"),
    ({"pruner": "hyperband"}, "search.pruner='hyperband' is invalid"),
    ({"plot": {"x": "optimizer.lr", "y": "optimizer.momentum"}}, "search.plot"),
    ({"budget": 3}, "unknown key search.budget"),
])
def test_bad_search_section_is_a_clear_error(tmp_path, search, message):
    with pytest.raises(UserError, match=None) as info:
        load_search(search_config(**search), check=False)
    assert message in str(info.value)


def test_checking_a_search_config_leaves_the_global_random_state_alone():
    config = search_config()
    config["space"]["optimizer.name"] = "choice([adamw, sgd])"
    torch.manual_seed(123)
    state = torch.get_rng_state()
    load_search(config)  # two Trainers built: at the middle of the ranges, and with sgd
    assert torch.equal(torch.get_rng_state(), state)


def test_the_example_search_config_is_valid():
    spec = load_search(ROOT / "examples" / "search-mnist1d.yaml")  # builds its Trainer once
    assert spec.name == "search-mnist1d"
    assert [(s.name, s.trials, s.epochs) for s in spec.settings.stages] == [
        ("coarse", 16, 3), ("fine", 6, 12)]
    assert spec.space["optimizer.lr"].log
    large = load_search(ROOT / "examples" / "search-mnist1d-large.yaml")
    assert [(s.name, s.trials, s.epochs) for s in large.settings.stages] == [
        ("coarse", 12, 6), ("fine", 4, 60)]


# -- narrowing and grids (hand-checked arithmetic) --------------------------------------------

def test_loguniform_narrows_on_the_log_scale():
    lr = Dimension("optimizer.lr", "loguniform", 1e-4, 1e-1)
    # top-k at 1e-3 and 4e-3: spread log10(4) = 0.602 decades, pad = 0.301 decades each side
    # (> min_width 0.2 * 3 decades / 2 = 0.3): [1e-3 / 2, 4e-3 * 2] = [5e-4, 8e-3]
    n = narrow(lr, [1e-3, 4e-3], margin=0.5, min_width=0.2)
    assert n.low == pytest.approx(5e-4, rel=1e-9) and n.high == pytest.approx(8e-3, rel=1e-9)
    # one point: pad = min_width * 3 / 2 = 0.3 decades, and the top is clipped at 1e-1
    n = narrow(lr, [0.08], margin=0.5, min_width=0.2)
    assert n.low == pytest.approx(0.08 / 10 ** 0.3) and n.high == 0.1


def test_linear_int_and_choice_narrowing():
    dropout = Dimension("model.dropout", "uniform", 0.0, 0.5)
    n = narrow(dropout, [0.1, 0.2], margin=0.5, min_width=0.2)  # pad max(0.05, 0.05)
    assert (n.low, n.high) == pytest.approx((0.05, 0.25))
    n = narrow(dropout, [0.0, 0.02], margin=0.5, min_width=0.2)  # clipped at 0
    assert (n.low, n.high) == pytest.approx((0.0, 0.07))
    batch = Dimension("train.batch_size", "int", 16, 256)
    n = narrow(batch, [64, 100], margin=0.5, min_width=0.0)  # [46, 118] exactly
    assert (n.low, n.high) == (46, 118)
    n = narrow(batch, [64, 101], margin=0.5, min_width=0.0)  # [45.5, 119.5] rounded outwards
    assert (n.low, n.high) == (45, 120)
    name = Dimension("optimizer.name", "choice", choices=("sgd", "adam", "adamw"))
    assert narrow(name, ["adamw", "sgd", "adamw"]).choices == ("sgd", "adamw")
    space = parse_space({"optimizer.lr": "loguniform(1e-4, 1e-1)",
                         "optimizer.name": "choice([sgd, adam])"})
    narrowed = narrow_space(space, [{"optimizer.lr": 1e-3, "optimizer.name": "adam"}])
    assert narrowed["optimizer.name"].choices == ("adam",)


def test_values_read_from_the_storage_become_the_spaces_own():
    space = parse_space({"model.hidden": "choice([[32], [64, 64]])",
                         "optimizer.lr": "loguniform(1e-4, 1e-1)",
                         "train.batch_size": "int(8, 64)"})
    assert space.decode({"model.hidden": "[64, 64]", "optimizer.lr": 0.01,
                         "train.batch_size": 16.0}) == {"model.hidden": [64, 64],
                                                        "optimizer.lr": 0.01,
                                                        "train.batch_size": 16}
    for bad in ({"model.hidden": "python:os:system"}, {"model.hidden": [32]},
                {"optimizer.lr": 0.5}, {"optimizer.lr": "0.01"}, {"optimizer.lr": math.nan},
                {"train.batch_size": 16.5}, {"train.batch_size": True}):
        with pytest.raises(ValueError):
            space.decode({"model.hidden": "[32]", "optimizer.lr": 0.01,
                          "train.batch_size": 16, **bad})
    with pytest.raises(ValueError, match="no value for optimizer.lr"):
        space.decode({"model.hidden": "[32]", "train.batch_size": 16})


def test_grid_is_evenly_spaced_cell_centres():
    space = parse_space({"a": "loguniform(1e-4, 1e-0)", "b": "uniform(0, 1)",
                         "c": "choice([x, y])"})
    grid = grid_values(space, 18)  # 18 / 2 choices = 9 = 3 x 3
    assert grid["c"] == ["x", "y"]
    assert grid["b"] == pytest.approx([1 / 6, 3 / 6, 5 / 6])
    assert grid["a"] == pytest.approx([10 ** -(4 - 4 / 6), 10 ** -2, 10 ** -(4 / 6)])


# -- running searches -------------------------------------------------------------------------

def test_coarse_to_fine_search_writes_every_output(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["search", str(write(tmp_path / "s.yaml", search_config())), "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "best: stage fine" in captured.out
    table = rows(out / "results.csv")
    assert [r["stage"] for r in table] == ["coarse"] * 6 + ["fine"] * 3
    assert all(r["state"] == "COMPLETE" for r in table)
    assert {r["epochs"] for r in table if r["stage"] == "fine"} == {"2"}
    stages = json.loads((out / "stages.json").read_text())
    coarse, fine = stages
    assert fine["space"]["optimizer.lr"]["low"] >= coarse["space"]["optimizer.lr"]["low"]
    # the fine ranges are the narrowing of the coarse top-2, recomputed here
    top = sorted((r for r in table if r["stage"] == "coarse"),
                 key=lambda r: (-float(r["val_accuracy"]), int(r["trial"])))[:2]
    lrs = [float(r["optimizer.lr"]) for r in top]
    expected = narrow(Dimension("optimizer.lr", "loguniform", 1e-4, 1e-1), lrs)
    assert fine["space"]["optimizer.lr"]["low"] == pytest.approx(expected.low, rel=1e-5)
    assert fine["space"]["optimizer.lr"]["high"] == pytest.approx(expected.high, rel=1e-5)
    for r in table[6:]:
        assert expected.low <= float(r["optimizer.lr"]) <= expected.high
    best = load_config(out / "best.yaml")  # a plain training config
    summary = json.loads((out / "summary.json").read_text())
    assert best.train.epochs == 2
    assert best.optimizer.lr == pytest.approx(summary["best"]["params"]["optimizer.lr"])
    fine_best = max(float(r["val_accuracy"]) for r in table[6:])
    assert summary["best"]["value"] == pytest.approx(fine_best, rel=1e-5)
    page = (out / "report.html").read_text()
    assert page.count("<img src=\"data:image/png;base64,") == 3
    assert "http" not in page.replace("http-equiv", "")
    # a second search into the same folder is refused; --resume of a finished one runs nothing
    assert main(["search", str(tmp_path / "s.yaml"), "--out", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["search", str(tmp_path / "s.yaml"), "--out", str(out), "--resume"]) == 0
    assert len(rows(out / "results.csv")) == 9
    # a changed config cannot resume the study
    changed = search_config()
    changed["space"]["model.dropout"] = "uniform(0.0, 0.3)"
    write(tmp_path / "s2.yaml", changed)
    assert main(["search", str(tmp_path / "s2.yaml"), "--out", str(out), "--resume"]) == 2
    assert "different search config" in capsys.readouterr().err


def test_a_choice_of_lists_narrows_to_the_values_of_the_top_trials(tmp_path):
    """Optuna stores a list choice as JSON text: the next stage keeps the lists themselves."""
    config = search_config(stages=[{"name": "coarse", "trials": 3, "epochs": 1},
                                   {"name": "fine", "trials": 2, "epochs": 1, "top_k": 1}])
    config["space"] = {"optimizer.lr": "loguniform(1e-2, 1e-1)",
                       "model.hidden": "choice([[16], [32]])"}
    summary = Search(load_search(config), tmp_path / "out", quiet=True).run()
    coarse, fine = json.loads((tmp_path / "out" / "stages.json").read_text())
    best_coarse = coarse["best"]["params"]["model.hidden"]
    assert fine["space"]["model.hidden"] == {"kind": "choice", "choices": [best_coarse]}
    assert fine["counts"] == {"COMPLETE": 2}
    assert summary["best"]["params"]["model.hidden"] == best_coarse


def test_divergent_trials_stop_at_3x_the_initial_loss(tmp_path):
    config = search_config(stages=[{"name": "only", "trials": 2, "epochs": 3}],
                           sampler="grid")
    config["optimizer"] = {"name": "sgd"}
    config["space"] = {"optimizer.lr": "loguniform(1e3, 1e5)"}
    summary = Search(load_search(config), tmp_path / "out", quiet=True).run()
    table = rows(tmp_path / "out" / "results.csv")
    assert len(table) == 2
    for r in table:
        assert "exceeded 3 x the initial loss" in r["stop_reason"] or "became" in r["stop_reason"]
        assert int(r["epochs"]) < 3
    assert summary["best"] is not None


def test_pruned_trials_stop_early_and_count_as_finished(tmp_path):
    config = search_config(stages=[{"name": "only", "trials": 8, "epochs": 3}],
                           pruner="median")
    Search(load_search(config), tmp_path / "out", quiet=True).run()
    table = rows(tmp_path / "out" / "results.csv")
    assert len(table) == 8
    pruned = [r for r in table if r["state"] == "PRUNED"]
    assert pruned, "a median pruner over 8 random learning rates prunes some trials"
    for r in pruned:
        assert r["stop_reason"].startswith("pruned after epoch")
        assert int(r["epochs"]) < 3 or r["stop_reason"].startswith("pruned after epoch 3")


def lr_dropout_config(**search) -> dict:
    """One stage of 4 one-epoch trials over the learning rate and dropout (a 2 x 2 grid)."""
    config = search_config(stages=[{"name": "only", "trials": 4, "epochs": 1}], **search)
    config["space"] = {"optimizer.lr": "loguniform(1e-3, 1e-1)",
                       "model.dropout": "uniform(0.0, 0.5)"}
    return config


def test_grid_search_of_the_same_budget_tries_fewer_distinct_values(tmp_path):
    spec = load_search(lr_dropout_config())
    Search(with_settings(spec, sampler="grid"), tmp_path / "grid", quiet=True).run()
    Search(spec, tmp_path / "random", quiet=True).run()
    grid = rows(tmp_path / "grid" / "results.csv")
    rand = rows(tmp_path / "random" / "results.csv")
    assert len(grid) == len(rand) == 4
    assert len({r["optimizer.lr"] for r in grid}) == 2  # a 2 x 2 grid
    assert len({r["optimizer.lr"] for r in rand}) == 4  # random: a new lr every trial
    assert sorted({float(r["optimizer.lr"]) for r in grid}) == pytest.approx(
        [1e-3 * 100 ** 0.25, 1e-3 * 100 ** 0.75])


def opened(config: dict, out: Path):
    """The search of ``config`` in ``out``, its storage open, and the study of its first stage
    (as a worker sees it before it runs a trial)."""
    search = Search(load_search(config), out, quiet=True)
    search.open()
    return search, search.stage_study(0)


def test_a_grid_point_enqueued_twice_runs_once(tmp_path):
    """Two workers starting together may both enqueue a grid point: the later copy is dropped
    when asked (``surplus``), and a fresh trial in a grid stage never runs."""
    import optuna

    search, study = opened(lr_dropout_config(sampler="grid"), tmp_path / "out")
    points = grid_points(search.spec.space, 4, seed=0)
    # the first worker enqueues points 0, 1; the second all four; the first goes on with 2, 3
    for i in (0, 1, 0, 1, 2, 3, 2, 3):
        study.enqueue_trial(points[i], user_attrs={"grid_point": i})
    # and the re-run of a copy of point 1 killed before it was told surplus
    study.enqueue_trial(points[1], user_attrs={"grid_point": 1, "retry_of": 3})
    search.run()
    trials = optuna.load_study(study_name="tiny:only",
                               storage=f"sqlite:///{tmp_path / 'out' / 'study.db'}").get_trials()
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert sorted(t.user_attrs["grid_point"] for t in complete) == [0, 1, 2, 3]
    assert sorted(tuple(sorted(t.params.items())) for t in complete) == sorted(
        tuple(sorted(p.items())) for p in points)
    surplus = [t for t in trials if t.user_attrs.get("surplus")]
    assert sorted(t.user_attrs["grid_point"] for t in surplus) == [0, 1, 1, 2, 3]
    first = {t.user_attrs["grid_point"]: t.number for t in complete}
    assert all(t.number > first[t.user_attrs["grid_point"]] for t in surplus)  # later copies
    assert len(rows(tmp_path / "out" / "results.csv")) == 4


def test_a_grid_point_whose_rerun_was_lost_is_enqueued_again(tmp_path):
    from optuna.trial import TrialState

    config = lr_dropout_config(sampler="grid")
    search, study = opened(config, tmp_path / "out")
    for i, params in enumerate(grid_points(search.spec.space, 4, seed=0)):
        study.enqueue_trial(params, user_attrs={"grid_point": i})
    # a worker takes point 0 and dies; the one that marks it FAIL dies before the re-run
    trial = study.ask()
    study.tell(trial, state=TrialState.FAIL)
    proc = start_search(write(tmp_path / "s.yaml", config), "--out", tmp_path / "out",
                        "--resume")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    trials = trials_of(f"sqlite:///{tmp_path / 'out' / 'study.db'}", "tiny:only")
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert sorted(t.user_attrs["grid_point"] for t in complete) == [0, 1, 2, 3]


def test_a_trial_whose_worker_died_before_its_first_heartbeat_is_rerun(tmp_path):
    config = search_config(stages=[{"name": "only", "trials": 2, "epochs": 1}])
    silent = opened(config, tmp_path / "out")[1].ask()  # a worker dies right after the ask
    proc = start_search(write(tmp_path / "s.yaml", config), "--out", tmp_path / "out",
                        "--resume")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    trials = trials_of(f"sqlite:///{tmp_path / 'out' / 'study.db'}", "tiny:only")
    assert [t.state.name for t in trials if t.number == silent.number] == ["FAIL"]
    assert sum(t.state.name == "COMPLETE" for t in trials) == 2
    assert [t.user_attrs.get("retry_of") for t in trials].count(silent.number) == 1


def test_workers_that_keep_starting_do_not_keep_a_dead_trial_alive(tmp_path):
    from optuna.storages import fail_stale_trials

    config = search_config(stages=[{"name": "only", "trials": 2, "epochs": 1}])
    config["search"].update(heartbeat=1, grace=2)
    search, study = opened(config, tmp_path / "out")
    dead = study.ask()
    record_heartbeat(search.storage, dead)  # its worker beat once, then died
    for _ in range(6):  # a new worker every half second looks at the stage
        Worker(search.spec, search.storage).watch(study.get_trials())
        time.sleep(0.5)
    fail_stale_trials(study)
    assert study.get_trials()[dead.number].state.name == "FAIL"


def test_a_grid_with_merged_integer_values_runs_every_point(tmp_path):
    """Rounding merges int values (32, 32.5, 33 -> 32, 33): the plan counts the real points."""
    config = search_config(stages=[{"name": "only", "trials": 9, "epochs": 1}], sampler="grid")
    config["space"] = {"optimizer.lr": "loguniform(1e-3, 1e-1)",
                       "train.batch_size": "int(32, 33)"}
    proc = start_search(write(tmp_path / "s.yaml", config), "--out", tmp_path / "out")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    table = rows(tmp_path / "out" / "results.csv")
    assert len(table) == 6
    assert len({(r["optimizer.lr"], r["train.batch_size"]) for r in table}) == 6


def test_a_grid_trial_killed_before_drawing_reruns_its_grid_point(tmp_path):
    import optuna
    from optuna.trial import TrialState

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    study.enqueue_trial({"lr": 0.01, "depth": 3}, user_attrs={"grid_point": 5})
    trial = study.ask()           # the worker dies here, before any suggest_*
    retry_stale(study, study.tell(trial, state=TrialState.FAIL))
    (again,) = study.get_trials(states=(TrialState.WAITING,))
    assert again.system_attrs["fixed_params"] == {"lr": 0.01, "depth": 3}
    assert again.user_attrs == {"retry_of": trial.number, "grid_point": 5}


def test_set_overrides_search_settings_and_ranges(tmp_path, capsys):
    config = search_config(stages=[{"name": "only", "trials": 4, "epochs": 1}])
    config["space"] = {"optimizer.lr": "loguniform(1e-4, 1e-1)",
                       "model.dropout": "uniform(0.0, 0.5)"}
    path = write(tmp_path / "s.yaml", config)
    out = tmp_path / "out"
    assert main(["search", str(path), "--out", str(out), "--quiet", "--set", "search.sampler=grid",
                 "--set", "space.optimizer.lr=loguniform(1e-3, 1e-1)"]) == 0
    table = rows(out / "results.csv")
    assert sorted({float(r["optimizer.lr"]) for r in table}) == pytest.approx(
        [1e-3 * 100 ** 0.25, 1e-3 * 100 ** 0.75])  # a 2 x 2 grid over the new range
    for bad, message in [("search.stages.0.trials=2", "one whole search setting"),
                         ("search.colour=red", "colour"),
                         ("space.optimizer.lr=loguniform(1, 0.1)", "low must be < high")]:
        assert main(["search", str(path), "--out", str(tmp_path / "bad"), "--set", bad]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_same_seed_draws_the_same_trials(tmp_path):
    config = search_config(stages=[{"name": "only", "trials": 2, "epochs": 1}])
    for name in ("a", "b"):
        Search(load_search(config), tmp_path / name, quiet=True).run()
    key = ["optimizer.lr", "optimizer.weight_decay", "model.dropout"]
    a, b = (rows(tmp_path / n / "results.csv") for n in ("a", "b"))
    assert [[r[k] for k in key] for r in a] == [[r[k] for k in key] for r in b]


# -- kill -9 and --resume ---------------------------------------------------------------------

SLOW_KEYS = {"optimizer.lr", "optimizer.weight_decay"}


def slow_search_config(trials: int) -> dict:
    """One stage of ``trials`` trials of ~1.5 s each (a model that sleeps in forward)."""
    config = search_config(stages=[{"name": "only", "trials": trials, "epochs": 2}])
    config["data"] = {"source": "digits", "train_size": 200}
    config["model"] = {"name": "python:test_search:slow_mlp", "delay": 0.08}
    config["train"] = {"batch_size": 50, "monitor_every": 0}
    config["space"] = {"optimizer.lr": "loguniform(1e-3, 1e-1)",
                       "optimizer.weight_decay": "loguniform(1e-5, 1e-1)"}
    config["search"]["grace"] = 5  # a loaded machine may delay a live worker's heartbeat
    assert set(config["space"]) == SLOW_KEYS
    return config


def start_search(config_path: Path, *args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT / "src")])}
    return subprocess.Popen([sys.executable, "-m", "gradwise.cli", "search", str(config_path),
                             "--quiet", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def trials_of(storage: str, name: str):
    import optuna

    study = optuna.load_study(study_name=name, storage=with_driver(storage))
    return [t for t in study.get_trials() if not t.user_attrs.get("surplus")]


def kill_mid_trial(proc: subprocess.Popen, storage: str, name: str, busy: int = 1,
                   timeout: float = 60):
    """Wait until a trial has finished and ``busy`` trials (one per live worker) are running
    with all their params drawn, so that ``proc`` is inside one; kill -9 it; return the
    trials that were running."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        try:
            trials = trials_of(storage, name)
        except Exception:  # the study is not created yet
            trials = []
        done = [t for t in trials if t.state.name == "COMPLETE"]
        running = [t for t in trials if t.state.name == "RUNNING"]
        if done and len(running) == busy and all(set(t.params) == SLOW_KEYS for t in running):
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            # the trial it was running, as the storage saw it at the kill
            killed = [t for t in trials_of(storage, name) if t.state.name == "RUNNING"]
            return killed
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the search never reached a second trial")


def assert_every_trial_once(trials, planned: int, killed, others_live: bool = False) -> None:
    """Exactly ``planned`` trials COMPLETE, no params twice, each ``killed`` trial FAIL and
    re-run once. With ``others_live``, a fresh trial that another worker asked in the moment
    between a dead trial's FAIL and its re-run's enqueue may hold the slot instead."""
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == planned
    assert len({t.number for t in complete}) == planned
    params = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(params)) == planned, "no params ran twice to completion"
    assert {t.state.name for t in trials} <= {"COMPLETE", "FAIL"}
    for dead in killed:
        again = [t for t in complete if t.user_attrs.get("retry_of") == dead.number]
        assert len(again) == 1 or (others_live and not again), "the killed trial re-ran once"
        # a trial killed before it drew its params re-runs with a fresh draw
        assert all(t.params == dead.params or not dead.params for t in again)
        assert [t.state.name for t in trials if t.number == dead.number] == ["FAIL"]


def test_resume_after_kill_9_reruns_the_dead_trial_once(tmp_path):
    planned = 4
    path = write(tmp_path / "s.yaml", slow_search_config(planned))
    out = tmp_path / "out"
    storage = f"sqlite:///{out / 'study.db'}"
    killed = kill_mid_trial(start_search(path, "--out", out), storage, "tiny:only")
    assert len(killed) == 1
    finished_before = {t.number for t in trials_of(storage, "tiny:only")
                       if t.state.name == "COMPLETE"}
    sys.path.insert(0, str(TESTS))  # the slow model's module, for the in-process resume
    try:
        assert main(["search", str(path), "--out", str(out), "--resume", "--quiet"]) == 0
    finally:
        sys.path.remove(str(TESTS))
    trials = trials_of(storage, "tiny:only")
    assert_every_trial_once(trials, planned, killed)
    # the trials finished before the kill were kept, not re-run
    assert finished_before <= {t.number for t in trials if t.state.name == "COMPLETE"}
    table = rows(out / "results.csv")
    assert sum(r["state"] == "COMPLETE" for r in table) == planned
    assert [r["retry_of"] for r in table if r["retry_of"]] == [str(killed[0].number)]


@pytest.mark.slow  # ~25 s; tests/test_search_postgres.py runs --workers 2 on PostgreSQL
def test_two_local_workers_share_one_stage(tmp_path):
    planned = 6
    path = write(tmp_path / "s.yaml", slow_search_config(planned))
    out = tmp_path / "out"
    proc = start_search(path, "--out", out, "--workers", 2)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    trials = trials_of(f"sqlite:///{out / 'study.db'}", "tiny:only")
    assert_every_trial_once(trials, planned, [])
    assert len({t.user_attrs["result"]["worker"] for t in trials}) == 2


def test_a_slow_worker_whose_trial_was_given_up_drops_it_and_goes_on(tmp_path):
    out = tmp_path / "out"
    config = search_config(stages=[{"name": "only", "trials": 2, "epochs": 2}])
    config["model"] = {"name": "python:test_search:given_up_mlp",
                       "storage": f"sqlite:///{out / 'study.db'}"}
    config["space"] = {"optimizer.lr": "loguniform(1e-3, 1e-1)"}
    GIVEN_UP.clear()
    Search(load_search(config), out, quiet=True).run()
    trials = trials_of(f"sqlite:///{out / 'study.db'}", "tiny:only")
    (dead,) = [t for t in trials if t.state.name == "FAIL"]
    assert [dead.number] == GIVEN_UP and "result" not in dead.user_attrs
    assert_every_trial_once(trials, 2, [dead])
    assert sum(r["state"] == "COMPLETE" for r in rows(out / "results.csv")) == 2


def test_torch_threads_untouched_by_a_search_in_process(tmp_path):
    before = torch.get_num_threads()
    Search(load_search(search_config(stages=[{"trials": 1, "epochs": 1}])), tmp_path / "o",
           quiet=True).run()
    assert torch.get_num_threads() == before
