"""Snapshot ensembles in the Trainer (``snapshots:``), seed groups (``gradwise train --seeds``)
and ``gradwise ensemble``: snapshots taken at the cycle ends, probabilities equal to the members'
mean computed independently, kill -9 + --resume with EMA and snapshots, and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from gradwise.cli import main
from gradwise.config import load_config
from gradwise.ensemble import snapshot_steps
from gradwise.nn import build_model
from gradwise.schedules import CosineRestarts
from gradwise.train import Trainer
from gradwise.train.seeds import parse_seeds

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
WALL_CLOCK = {"wall_seconds", "samples_per_second"}


def config(epochs=3, batch_size=256, **extra):
    """digits (1,293 training examples): 6 steps per epoch at batch 256."""
    return {"seed": 3, "data": "digits", "model": {"name": "mlp", "hidden": [32]},
            "optimizer": {"name": "sgd", "lr": 0.2, "momentum": 0.9},
            "train": {"epochs": epochs, "batch_size": batch_size}, **extra}


def cli(*args, cwd=None, timeout=300):
    """``gradwise ARGS`` in its own process."""
    return subprocess.run([sys.executable, "-m", "gradwise.cli", *map(str, args)],
                          capture_output=True, text=True, env=ENV, cwd=cwd, timeout=timeout)


def gradwise(capsys, *args) -> tuple[int, str]:
    """``gradwise ARGS`` in this process: (exit status, stderr)."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def softmax_of(state, cfg, x):
    """Test probabilities of a model rebuilt from its config and loaded with ``state``."""
    trainer = Trainer(cfg, out=None, quiet=True)
    model = build_model(trainer.config.model.name, trainer.data.input_shape,
                        trainer.data.num_classes, **trainer.config.model.options())
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        return torch.softmax(model(x), dim=1)


# -- snapshots in the Trainer -------------------------------------------------------------------

def test_snapshots_are_the_weights_at_each_cycle_end(tmp_path):
    """3 epochs of 6 steps, 2 cycles: P = 9 steps, snapshots after steps 9 and 18 (the first one
    mid-epoch). The weights a forward pre-hook sees at training forward 10 (right after step 9)
    and the final weights are, bit for bit, the snapshot files'; the learning rate of the snapshot
    steps is the cosine cycle's minimum."""
    cfg = config(snapshots={"cycles": 2})
    trainer = Trainer(cfg, tmp_path / "run", quiet=True)
    assert trainer.steps_per_epoch == 6 and trainer.total_steps == 18
    assert trainer.snapshot_steps == snapshot_steps(18, 2) == [8, 17]
    seen, count = {}, [0]

    def hook(module, args):
        if module.training:
            count[0] += 1
            if count[0] == 10:
                seen[9] = {k: v.clone() for k, v in module.state_dict().items()}

    trainer.model.register_forward_pre_hook(hook)
    lrs = []
    trainer.optimizer.register_step_pre_hook(
        lambda opt, a, k: lrs.append(opt.param_groups[0]["lr"]))
    summary = trainer.fit()
    files = [torch.load(tmp_path / "run" / "checkpoints" / f"snapshot-{k}.pt", weights_only=True)
             for k in (1, 2)]
    assert [f["step"] for f in files] == [9, 18] and [f["epoch"] for f in files] == [2, 3]
    for key, value in seen[9].items():
        assert torch.equal(files[0]["model"][key], value), key
    final = trainer.model.state_dict()  # the last snapshot is the end of training
    for key, value in final.items():
        assert torch.equal(files[1]["model"][key], value), key
    # the schedule: cosine_restarts(period=9), lowest at the end of each cycle
    factor = CosineRestarts(9)
    assert lrs == pytest.approx([0.2 * factor(t) for t in range(18)], rel=1e-12)
    for cycle in (range(0, 9), range(9, 18)):
        assert min(cycle, key=lambda t: lrs[t]) == cycle[-1]
    assert [s["step"] for s in summary["snapshots"]] == [9, 18]


def test_snapshot_ensemble_is_the_mean_of_the_snapshots_softmax(tmp_path):
    """The summary's ensemble accuracy and loss equal those of the mean of the softmax outputs of
    the last ``keep`` snapshot files, recomputed from fresh models; each snapshot's accuracy too.
    test_accuracy comes from the candidate with the best validation accuracy."""
    cfg = config(epochs=6, snapshots={"cycles": 3, "keep": 2})
    run = tmp_path / "run"
    summary = Trainer(cfg, run, quiet=True).fit()
    reference = Trainer(cfg, out=None, quiet=True)
    x, y = reference.data.x_test, reference.data.y_test
    probs = [softmax_of(torch.load(run / "checkpoints" / f"snapshot-{k}.pt",
                                   weights_only=True)["model"], cfg, x) for k in (1, 2, 3)]
    for k, p in enumerate(probs):
        accuracy = (p.argmax(1) == y).double().mean().item()
        assert summary["snapshots"][k]["test_accuracy"] == pytest.approx(accuracy, abs=1e-12)
    mean = (probs[1] + probs[2]) / 2
    ensemble = summary["snapshot_ensemble"]
    assert ensemble["members"] == [2, 3]
    assert ensemble["test_accuracy"] == pytest.approx((mean.argmax(1) == y).double().mean().item(),
                                                      abs=1e-12)
    nll = -torch.log(mean[torch.arange(len(y)), y]).mean().item()
    assert ensemble["test_loss"] == pytest.approx(nll, rel=1e-5)
    differ = (probs[1].argmax(1) != probs[2].argmax(1)).double().mean().item()
    assert ensemble["test_disagreement"] == pytest.approx(differ, abs=1e-12)
    chosen = summary["test_accuracy_from"]
    if chosen == "snapshots":
        assert ensemble["val_accuracy"] > summary["val_accuracy"]
        assert summary["test_accuracy"] == ensemble["test_accuracy"]
    else:
        assert chosen == "live" and summary["test_accuracy"] == summary["test_accuracy_live"]
    report = (run / "report.html").read_text()
    assert "Snapshot ensemble" in report and "(in the ensemble)" in report


def test_kill_9_with_ema_and_snapshots_then_resume_equals_an_uninterrupted_run(tmp_path):
    """A gradwise train process with an EMA and 3 snapshot cycles is killed with SIGKILL once its
    first snapshot is on disk; --resume then gives the uninterrupted run's summary, snapshots,
    EMA state and metrics, bit for bit."""
    cfg = config(epochs=6, batch_size=64, model={"name": "mlp", "hidden": [256, 256],
                                                 "dropout": 0.1},
                 average={"ema": {"decay": 0.9, "warmup": True}},
                 snapshots={"cycles": 3})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    ref, run = tmp_path / "ref", tmp_path / "run"
    done = cli("train", path, "--out", ref, "--quiet")
    assert done.returncode == 0, done.stderr
    proc = subprocess.Popen([sys.executable, "-m", "gradwise.cli", "train", str(path), "--out",
                             str(run), "--quiet"], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    first = run / "checkpoints" / "snapshot-1.pt"
    deadline = time.monotonic() + 240
    while not first.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "summary.json").is_file(), "the run finished before the kill"
    resumed = cli("train", "--resume", run, "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    a = json.loads((ref / "summary.json").read_text())
    b = json.loads((run / "summary.json").read_text())
    assert {k: v for k, v in a.items() if k not in WALL_CLOCK} == \
        {k: v for k, v in b.items() if k not in WALL_CLOCK}
    for name in ("snapshot-1", "snapshot-2", "snapshot-3", "last"):
        want = torch.load(ref / "checkpoints" / f"{name}.pt", weights_only=True)
        got = torch.load(run / "checkpoints" / f"{name}.pt", weights_only=True)
        for key, value in want["model"].items():
            assert torch.equal(got["model"][key], value), (name, key)
        if name == "last":
            for key, value in want["average"]["tensors"].items():
                assert torch.equal(got["average"]["tensors"][key], value), key

    def records(r):
        return [{k: v for k, v in json.loads(line).items() if k != "elapsed_seconds"}
                for line in (r / "metrics.jsonl").read_text().splitlines()]
    assert records(run) == records(ref)
    assert not list(run.rglob(".*.tmp"))


@pytest.mark.parametrize(("snapshots", "extra", "message"), [
    ({"cycles": 5}, {}, "snapshots.cycles=5 is more cycles than epochs (train.epochs=3)"),
    ({"cycles": 2, "keep": 3}, {}, "keep=3 is more snapshots than there are cycles"),
    ({"cycles": 1}, {}, "greater than or equal to 2"),
    ({"cycles": 2}, {"schedule": "cosine"}, "snapshots runs its own cosine cycles"),
    ({"cycles": 2}, {"average": {"swa": {"start_epoch": 2, "lr": 0.01}}},
     "snapshots and average.swa.lr both set the learning rate"),
])
def test_bad_snapshot_settings_exit_2_with_nothing_written(tmp_path, capsys, snapshots, extra,
                                                          message):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config(snapshots=snapshots, **extra)))
    code, err = gradwise(capsys, "train", path, "--out", tmp_path / "run")
    assert code == 2 and message in err, err
    assert not (tmp_path / "run").exists()


def test_cycles_that_leave_a_cycle_without_a_step_are_refused():
    cfg = config(epochs=3, snapshots={"cycles": 3}, train={"epochs": 3, "batch_size": 256,
                                                           "max_steps": 2})
    with pytest.raises(Exception, match=r"snapshots.cycles=3: cycles=3 is invalid"):
        Trainer(cfg, out=None, quiet=True)


# -- seed groups and gradwise ensemble ----------------------------------------------------------

@pytest.fixture(scope="module")
def group(tmp_path_factory):
    """Seeds 0-2 of a small config, trained by two worker processes."""
    root = tmp_path_factory.mktemp("seeds")
    path = root / "c.yaml"
    path.write_text(yaml.safe_dump(config(epochs=2)))
    done = cli("train", path, "--seeds", "0-2", "--workers", "2", "--out", root / "g", "--quiet")
    assert done.returncode == 0, done.stderr
    return root


def test_a_seed_group_holds_one_run_per_seed(group):
    g = group / "g"
    assert json.loads((g / "seeds.json").read_text()) == {"seeds": [0, 1, 2]}
    for seed in (0, 1, 2):
        saved = load_config(g / f"seed-{seed}" / "config.yaml")
        assert saved.seed == seed
        assert saved.model_dump(exclude={"seed"}) == \
            load_config(g / "config.yaml").model_dump(exclude={"seed"})
        assert (g / f"seed-{seed}" / "summary.json").is_file()


def test_a_member_trained_in_a_worker_equals_one_trained_alone(group, tmp_path):
    alone = Trainer({**config(epochs=2), "seed": 1}, tmp_path / "alone", quiet=True).fit()
    in_group = json.loads((group / "g" / "seed-1" / "summary.json").read_text())
    assert in_group["test_accuracy"] == pytest.approx(alone["test_accuracy"], abs=2e-3)
    assert in_group["epochs"] == alone["epochs"] and in_group["steps"] == alone["steps"]


def test_resuming_a_finished_group_trains_nothing_again(group, capsys):
    g = group / "g"
    before = {s: (g / f"seed-{s}" / "summary.json").stat().st_mtime_ns for s in (0, 1, 2)}
    capsys.readouterr()
    assert main(["train", "--resume", str(g), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "seed 2: test accuracy" in out and "mean" in out
    after = {s: (g / f"seed-{s}" / "summary.json").stat().st_mtime_ns for s in (0, 1, 2)}
    assert after == before


def test_ensemble_average_equals_the_mean_of_the_members_softmax(group, capsys):
    """gradwise ensemble on the group: each member's accuracy, the average, the vote and the
    disagreement recomputed from the members' last.pt with fresh models."""
    out = group / "ens"
    code, err = gradwise(capsys, "ensemble", group / "g", "--out", out)
    assert code == 0, err
    result = json.loads((out / "ensemble.json").read_text())
    assert (out / "ensemble.html").is_file()
    probs, y = [], None
    for seed in (0, 1, 2):
        cfg = {**config(epochs=2), "seed": seed}
        state = torch.load(group / "g" / f"seed-{seed}" / "checkpoints" / "last.pt",
                           weights_only=True)["model"]
        data = Trainer(cfg, out=None, quiet=True).data
        y = data.y_test
        probs.append(softmax_of(state, cfg, data.x_test))
        member = result["members"][seed]
        assert member["seed"] == seed
        assert member["test_accuracy"] == pytest.approx(
            (probs[-1].argmax(1) == y).double().mean().item(), abs=1e-12)
    mean = torch.stack(probs).mean(0)
    assert result["average"]["test_accuracy"] == pytest.approx(
        (mean.argmax(1) == y).double().mean().item(), abs=1e-12)
    votes = torch.stack([p.argmax(1) for p in probs])
    majority = torch.mode(votes, dim=0).values
    clear = (votes == majority).sum(0) >= 2  # examples where two of three agree
    expected = ((majority == y) & clear).sum().item()
    ties = (~clear).nonzero().flatten()
    for i in ties.tolist():  # three different votes: the voted class of highest mean probability
        voted = votes[:, i].tolist()
        expected += int(max(voted, key=lambda c: mean[i, c].item()) == y[i].item())
    assert result["vote"]["test_accuracy"] == pytest.approx(expected / len(y), abs=1e-12)
    pairs = [(0, 1), (0, 2), (1, 2)]
    differ = sum((votes[a] != votes[b]).double().mean().item() for a, b in pairs) / 3
    assert result["disagreement"] == pytest.approx(differ, abs=1e-12)


def test_ensemble_refuses_other_data_and_runs_without_checkpoints(group, tmp_path, capsys):
    g = group / "g"
    Trainer({**config(), "train": {"epochs": 1, "checkpoint": False}}, tmp_path / "nockpt",
            quiet=True).fit()
    cases = [
        ((g / "seed-0", tmp_path / "nockpt"), "has no checkpoints/last.pt"),
        ((g / "seed-0",), "an ensemble needs 2 to 100 finished runs; got 1"),
        ((g / "seed-0", g / "seed-0"), "is named twice"),
        ((g / "seed-0", tmp_path / "missing"), "not found"),
    ]
    for runs, message in cases:
        out = tmp_path / "out"
        code, err = gradwise(capsys, "ensemble", *runs, "--out", out)
        assert code == 2 and message in err, (runs, err)
        assert not out.exists()
    # a member trained on other data (MNIST-1D: inputs of length 40, not 64)
    Trainer({**config(epochs=1), "data": "mnist1d", "train": {"epochs": 1, "max_steps": 1}},
            tmp_path / "m1d", quiet=True).fit()
    code, err = gradwise(capsys, "ensemble", g / "seed-0", tmp_path / "m1d", "--out",
                         tmp_path / "out")
    assert code == 2 and "input shape" in err, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("args", "message"), [
    (("--seeds", "4-2"), "the range 4-2 is empty"),
    (("--seeds", "0,x"), "accepted: seeds and ranges"),
    (("--seeds", "1,1"), "names seed 1 twice"),
    (("--seeds", "0-1", "--workers", "3"), "--workers 3 is invalid; accepted: 1 to 2"),
    (("--workers", "2"), "it needs --seeds"),
])
def test_bad_seed_arguments_exit_2_with_nothing_written(tmp_path, capsys, args, message):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config(epochs=1)))
    code, err = gradwise(capsys, "train", path, *args, "--out", tmp_path / "g")
    assert code == 2 and message in err, err
    assert not (tmp_path / "g").exists()


def test_parse_seeds():
    assert parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert parse_seeds("7, 0-1") == [7, 0, 1]
