"""What a user or a shared storage feeds gradwise may not overwrite their files, leave a stuck
run or end in a traceback. One regression test per reproduced failure (the search storage's
trust lives in tests/test_search_trust.py, the lab page's API in tests/test_lab_server.py, the
config fuzz and the bad values in tests/test_fuzz_config.py, the kill test in
tests/test_kill_resume.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from gradwise.cli import main
from gradwise.errors import UserError
from gradwise.rundir import RunDir, claim, kind_of
from gradwise.train import Trainer, fit


def tiny(epochs: int = 2, **changes) -> dict:
    return {"seed": 0, "data": "digits", "model": {"name": "mlp", "hidden": [16]},
            "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
            "train": {"epochs": epochs, "batch_size": 128, "monitor_every": 0}, **changes}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "done"
    fit(tiny(), run, quiet=True)
    return run


def _cli(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


# -- 2. outputs never replace a file gradwise did not write -----------------------------------

@pytest.mark.parametrize("target", ["checkpoints/last.pt", "metrics.jsonl", "report.html",
                                    "config.yaml"])
def test_compare_out_never_replaces_a_file_of_a_run(capsys, tmp_path, finished_run, target):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    before = _snapshot(run)
    code, err = _cli(capsys, "compare", run, run, "--out", run / target)
    assert code == 2 and "gradwise does not overwrite it" in err, err
    assert _snapshot(run) == before


def test_compare_out_replaces_its_own_comparison_page(capsys, tmp_path, finished_run):
    out = tmp_path / "compare.html"
    assert _cli(capsys, "compare", finished_run, "--out", out)[0] == 0
    assert _cli(capsys, "compare", finished_run, finished_run, "--out", out)[0] == 0
    out.write_text("<html>my own notes</html>")
    code, _err = _cli(capsys, "compare", finished_run, "--out", out)
    assert code == 2 and out.read_text() == "<html>my own notes</html>"


def test_train_out_refuses_a_folder_of_the_users_and_one_of_another_kind(
        capsys, tmp_path, monkeypatch):
    config = tmp_path / "config.yaml"
    config.write_text("data: digits\ntrain: {epochs: 1}\n")
    monkeypatch.chdir(tmp_path)
    code, err = _cli(capsys, "train", "config.yaml", "--out", ".")
    assert code == 2 and "gradwise did not write" in err, err
    assert config.read_text() == "data: digits\ntrain: {epochs: 1}\n"
    search = claim(tmp_path / "search", "search")
    code, err = _cli(capsys, "train", "config.yaml", "--out", search)
    assert code == 2 and "holds a gradwise search, not a run" in err, err
    assert sorted(p.name for p in search.iterdir()) == [".gradwise.json"]


def test_a_training_run_is_not_a_search_folder(finished_run):
    with pytest.raises(UserError, match="holds a gradwise run, not a search"):
        claim(finished_run, "search")
    assert kind_of(finished_run) == "run"


def test_an_output_path_that_is_a_file_or_unwritable_is_a_clear_error(capsys, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("data: digits\ntrain: {epochs: 1}\n")
    a_file = tmp_path / "file"
    a_file.write_text("mine")
    code, err = _cli(capsys, "train", config, "--out", a_file)
    assert code == 2 and "a file is there" in err and a_file.read_text() == "mine"
    code, err = _cli(capsys, "train", config, "--out", a_file / "run")
    assert code == 2 and "Traceback" not in err, err


# -- 3. best.pt and the summary never disagree ------------------------------------------------

def test_a_kill_between_last_and_best_is_repaired_on_resume(tmp_path):
    run = RunDir.create(tmp_path / "run", "seed: 0\n")
    run.save_checkpoint({"epoch": 1, "best": {"epoch": 1, "val_accuracy": 0.5}}, best=True)
    # epoch 2 improved: last.pt was written, the process died before best.pt
    run.save_checkpoint({"epoch": 2, "best": {"epoch": 2, "val_accuracy": 0.6}}, best=False)
    assert run.load_checkpoint("best")["epoch"] == 1
    assert run.load_last()["epoch"] == 2
    assert run.load_checkpoint("best")["epoch"] == 2
    # an epoch that did not improve leaves best.pt alone
    run.save_checkpoint({"epoch": 3, "best": {"epoch": 2, "val_accuracy": 0.6}}, best=False)
    run.load_last()
    assert run.load_checkpoint("best")["epoch"] == 2


def test_best_pt_holds_the_best_epoch_after_a_resumed_run(tmp_path, finished_run):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    summary = RunDir(run).read_summary()
    best = RunDir(run).load_checkpoint("best")
    assert best["epoch"] == summary["best_epoch"]


# -- 4. a run stopped in its first epoch simply starts again -----------------------------------

class _Interrupt:
    """A metrics sink that presses Ctrl-C at the first step record."""

    def __call__(self, record: dict) -> None:
        raise KeyboardInterrupt


def test_a_run_stopped_before_its_first_checkpoint_starts_again(tmp_path, capsys):
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny(), run, quiet=True, sinks=[_Interrupt()]).fit()
    assert not (run / "checkpoints" / "last.pt").exists()
    (run / "checkpoints").mkdir(exist_ok=True)
    (run / "checkpoints" / ".last.pt.abc.tmp").write_bytes(b"torn")
    resumed = Trainer(tiny(), run, quiet=True).fit(resume=True)
    assert not list(run.rglob("*.tmp"))
    fresh = fit(tiny(), tmp_path / "fresh", quiet=True)
    assert resumed["test_accuracy"] == fresh["test_accuracy"]
    assert resumed["train_loss"] == fresh["train_loss"]
    # and a new run into the folder of a run that never saved is allowed too
    run2 = tmp_path / "run2"
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny(), run2, quiet=True, sinks=[_Interrupt()]).fit()
    assert fit(tiny(), run2, quiet=True)["epochs"] == 2


def test_ctrl_c_names_the_resume_command(tmp_path, capsys, monkeypatch):
    def interrupted(self, resume=False):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "fit", interrupted)
    config = tmp_path / "c.yaml"
    config.write_text("data: digits\n")
    code, err = _cli(capsys, "train", config, "--out", tmp_path / "r")
    assert code == 130 and f"gradwise train --resume {tmp_path / 'r'}" in err
    assert "intact" not in err


# -- 6. counts that allocate are bounded -------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["lr-find", "{config}", "--seeds", "100000000000000000000"], "--seeds=100000000000000000000"
     " is invalid; --seeds must be an integer in [1, 100]"),
    (["lr-find", "{config}", "--steps", "10000000000"], "--steps must be an integer in [2, "),
    (["sanity", "{config}", "--size", "1000000000"], "--size must be an integer in [1, "),
    (["lab", "--steps", "1000000000000"], "steps must be an integer in [1, 100000]"),
    (["lab", "--seed", "100000000000000000000000000"], "seed=100000000000000000000000000 is"),
])
def test_counts_are_bounded(capsys, tmp_path, args, message):
    config = tmp_path / "c.yaml"
    config.write_text("data: digits\n")
    out = [] if args[0] == "sanity" else ["--out", tmp_path / "o"]
    code, err = _cli(capsys, *[a.format(config=config) for a in args], *out)
    assert code == 2 and message in err, err
    assert not (tmp_path / "o").exists()


# -- 9. silent nonsense is refused -------------------------------------------------------------

def test_data_with_one_class_is_refused(tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
    path = tmp_path / "one.npz"
    np.savez(path, x_train=x, y_train=np.zeros(40, np.int64), x_test=x[:5],
             y_test=np.zeros(5, np.int64))
    config = tmp_path / "c.yaml"
    config.write_text(f"data: npz:{path}\n")
    code, err = _cli(capsys, "train", config, "--out", tmp_path / "r")
    assert code == 2 and "needs at least 2" in err, err
    assert not (tmp_path / "r").exists()


def test_resume_refuses_a_hand_edited_config(tmp_path, capsys, finished_run):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    (run / "summary.json").unlink()
    text = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(text.replace("seed: 0", "seed: 7"))
    before = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    code, err = _cli(capsys, "train", "--resume", run)
    assert code == 2 and "seed: 0 -> 7" in err, err
    after = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_folders_written_before_markers_are_recognised_by_their_files(tmp_path):
    search = tmp_path / "search"
    search.mkdir()
    (search / "study.db").write_bytes(b"")  # a search killed before its first outputs
    assert kind_of(search) == "search"
    assert claim(search, "search") == search
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("x")
    assert kind_of(mine) is None
    with pytest.raises(UserError, match="gradwise did not write"):
        claim(mine, "lab")
