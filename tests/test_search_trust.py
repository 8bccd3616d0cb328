"""What a search trusts: its own config for every plan and value a trial runs, the storage only
for results. A plan, a trial or a string planted in a SQLite study runs no code, reaches no
config and no page unescaped; and what can be checked before the first trial is."""

from __future__ import annotations

import sys

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial
from test_search import opened, rows, search_config, trials_of, write

from gradwise.cli import main
from gradwise.errors import UserError
from gradwise.rundir import claim
from gradwise.search import Search, load_search
from gradwise.search.report import render

HOSTILE = '<script>alert("x")</script>'


@pytest.fixture()
def planted_module(tmp_path, monkeypatch):
    """An importable module that leaves a file behind when imported (code that must not run)."""
    marker = tmp_path / "planted-module-was-imported"
    (tmp_path / "gw_planted_module.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "def build(input_shape, num_classes):\n    raise SystemExit('planted code ran')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "python:gw_planted_module:build", marker
    sys.modules.pop("gw_planted_module", None)


def lr_config(trials: int) -> dict:
    config = search_config(stages=[{"name": "only", "trials": trials, "epochs": 1}])
    config["space"] = {"optimizer.lr": "loguniform(1e-3, 1e-1)"}
    return config


def test_a_plan_planted_in_the_storage_is_refused_and_runs_no_code(tmp_path, capsys,
                                                                   planted_module):
    spec_text, marker = planted_module
    config = lr_config(2)
    out = tmp_path / "out"
    _, study = opened(config, out)
    plan = study.user_attrs["gradwise"]  # the same fingerprint, another space
    study.set_user_attr("gradwise", {**plan, "space": {
        "model.name": {"kind": "choice", "choices": [spec_text]}}})
    path = write(tmp_path / "s.yaml", config)
    assert main(["search", str(path), "--out", str(out), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "holds a plan that this config does not make" in err
    assert "plan.space.model.name" in err
    assert not marker.exists() and "gw_planted_module" not in sys.modules
    # a planted trial count or epoch count is refused the same way
    study.set_user_attr("gradwise", {**plan, "epochs": HOSTILE})
    with pytest.raises(UserError, match="plan.epochs"):
        Search(load_search(config), out, resume=True, quiet=True).run()


@pytest.mark.filterwarnings("ignore:Fixed parameter")  # Optuna's, about the planted value
def test_planted_trials_reach_no_config_and_no_page(tmp_path, planted_module):
    spec_text, marker = planted_module
    config = lr_config(4)
    out = tmp_path / "out"
    _search, study = opened(config, out)
    lr = FloatDistribution(1e-3, 1e-1, log=True)
    # "finished" trials with the best values: one names code beside a valid learning rate
    # and has strings for results, one has a learning rate outside the space
    study.add_trial(create_trial(
        state=TrialState.COMPLETE, value=0.99,
        params={"optimizer.lr": 0.01, "model.name": spec_text},
        distributions={"optimizer.lr": lr, "model.name": CategoricalDistribution([spec_text])},
        user_attrs={"result": {"stop_reason": HOSTILE, "worker": HOSTILE,
                               "test_accuracy": HOSTILE}}))
    study.add_trial(create_trial(
        state=TrialState.COMPLETE, value=1.0, params={"optimizer.lr": 50.0},
        distributions={"optimizer.lr": FloatDistribution(1e-3, 100.0, log=True)}))
    # a waiting trial whose value is outside the space: rejected, never trained
    study.enqueue_trial({"optimizer.lr": 5.0}, skip_if_exists=False)
    summary = Search(load_search(config), out, resume=True, quiet=True).run()
    assert not marker.exists() and "gw_planted_module" not in sys.modules
    best_yaml = (out / "best.yaml").read_text()
    assert "python:" not in best_yaml and "50.0" not in best_yaml
    assert summary["best"]["params"] == {"optimizer.lr": 0.01}  # the result is trusted
    page = (out / "report.html").read_text()
    assert "<script" not in page
    trials = trials_of(f"sqlite:///{out / 'study.db'}", "tiny:only")
    (rejected,) = [t for t in trials if t.state == TrialState.FAIL]
    assert "not in this config's space" in rejected.user_attrs["error"]
    assert "result" not in rejected.user_attrs
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3  # 2 planted + 1 run
    assert len(rows(out / "results.csv")) == 4


def test_every_value_on_the_report_page_is_escaped(tmp_path):
    """The page escapes what it shows, even a stage's numbers and a best trial's fields."""
    config = lr_config(1)
    config["name"] = f"n{HOSTILE}"
    spec = load_search(config, check=False)
    study = optuna.create_study(direction="maximize")
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.5,
                                 params={"optimizer.lr": 0.01},
                                 distributions={"optimizer.lr": FloatDistribution(1e-3, 1e-1,
                                                                                  log=True)}))
    plan = {"name": f"s{HOSTILE}", "epochs": f"e{HOSTILE}", "trials": f"t{HOSTILE}",
            "space": spec.space.to_json()}
    stages = [{"plan": plan, "study": study, "trials": study.get_trials()}]
    summary = {"best": {"stage": f"b{HOSTILE}", "trial": f"n{HOSTILE}", "value": f"v{HOSTILE}",
                        "test_accuracy": HOSTILE, "params": {"optimizer.lr": f"p{HOSTILE}"}}}
    page = render(spec, stages, summary)
    assert "<script" not in page
    assert page.count("&lt;script&gt;") >= 8


# -- checks before the first trial ------------------------------------------------------------

def test_workers_are_bounded_before_anything_is_written(tmp_path, capsys):
    path = write(tmp_path / "s.yaml", lr_config(4))
    out = tmp_path / "out"
    for workers, accepted in (("100000", "1 to 4"), ("0", "1 to 4")):
        assert main(["search", str(path), "--out", str(out), "--workers", workers]) == 2
        err = capsys.readouterr().err
        assert f"--workers {workers} is invalid; accepted: {accepted}" in err
    assert not out.exists()
    big = lr_config(500)
    with pytest.raises(UserError, match="accepted: 1 to 64"):
        Search(load_search(big, check=False), out).run(workers=65)
    assert not out.exists()


def test_a_plot_axis_on_a_choice_is_refused_up_front():
    config = lr_config(2)
    config["space"]["optimizer.name"] = "choice([adam, adamw])"
    config["search"]["plot"] = {"x": "optimizer.lr", "y": "optimizer.name"}
    with pytest.raises(UserError, match="search.plot: 'optimizer.name' is not a numeric key"):
        load_search(config, check=False)


def test_a_search_cannot_write_into_a_training_run(tmp_path, capsys):
    run = claim(tmp_path / "run", "run")  # a folder gradwise marked as a training run
    path = write(tmp_path / "s.yaml", lr_config(1))
    assert main(["search", str(path), "--out", str(run), "--quiet"]) == 2
    assert "holds a gradwise run, not a search" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == [".gradwise.json"]
