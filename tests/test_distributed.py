"""Data-parallel training (gradwise.train.distributed) on 2 processes, gloo on loopback.

The oracle of a distributed run is the one-process Trainer: without batch norm or dropout, N
steps on 2 ranks at a global batch equal N steps in one process (parameters to 1e-6 relative).
With batch norm, dropout and augmentation the ranks must hold bit-identical weights and buffers,
the validation metrics must equal an independent evaluation of the final weights on the whole
split (every example once: 173 validation examples do not split evenly), a run killed on one
rank and resumed on 2 must equal an uninterrupted one bit for bit, and ZeroRedundancyOptimizer
must give the plain run's weights (the batch-norm run uses it too, so that its sharded state
goes through a checkpoint and a resume).

Each ``launch`` starts 2 fresh Python processes (about 5 s of imports on a loaded 2-core
machine); the process group times out after 60 s, and every test is bounded by an alarm, so a
hang fails instead of blocking the suite.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gradwise import cli
from gradwise.config import load_config
from gradwise.data import load_data
from gradwise.errors import UserError
from gradwise.nn import build_model
from gradwise.train import Trainer
from gradwise.train import distributed as gdist

pytestmark = pytest.mark.skipif(not torch.distributed.is_available()
                                or sys.platform == "win32",
                                reason="needs torch.distributed and fork-safe signals")

DATA = {"source": "digits", "val_fraction": 0.12, "train_size": 201}  # 173 val, 359 test
# 201 examples in batches of 32: 6 full batches and a last one of 9, split 5 + 4 on 2 ranks
PLAIN = {"seed": 3, "data": DATA, "model": {"name": "mlp", "hidden": [24]},
         "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
         "regularization": {"l2": 1e-3}, "schedule": "cosine",
         "train": {"epochs": 2, "batch_size": 32, "log_every": 1, "monitor_every": 0}}
ADAMW = {**PLAIN, "optimizer": {"name": "adamw", "lr": 0.01, "weight_decay": 0.05}}
ZERO = {**ADAMW, "distributed": {"zero": True}}
FLAT = {**ADAMW, "optimizer": {**ADAMW["optimizer"], "flat": True}}
FLAT_ZERO = {**FLAT, "distributed": {"zero": True}}
BN = {"seed": 5, "data": DATA,
      "model": {"name": "mlp", "hidden": [32, 16], "batch_norm": True, "dropout": 0.2},
      "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
      "augment": {"crop": {"padding": 1}},
      "average": {"ema": {"decay": 0.9}}, "distributed": {"zero": True},
      "train": {"epochs": 4, "batch_size": 32, "log_every": 3, "monitor_every": 5}}
KILL_AFTER_EPOCH = 2
WALL_CLOCK = {"wall_seconds", "samples_per_second"}


def _numpy(state: dict) -> dict:
    return {k: v.detach().cpu().numpy().copy() for k, v in state.items()}


def _worker(jobs: list[dict]) -> list[dict]:
    """Rank r of the job: run ``jobs`` one after the other in one process group."""
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", timeout=timedelta(seconds=60))
    results = []
    for job in jobs:
        callbacks = []
        if job.get("kill") and torch.distributed.get_rank() == 1:
            def kill(trainer, record):
                if record["epoch"] == KILL_AFTER_EPOCH:
                    os.kill(os.getpid(), signal.SIGKILL)
            callbacks.append(kill)
        trainer = gdist.DistributedTrainer(job["config"], job.get("out"), quiet=True,
                                           callbacks=callbacks)
        summary = trainer.fit(resume=job.get("resume", False))
        results.append({"state": _numpy(trainer.model.state_dict()), "summary": summary,
                        "records": trainer.records, "rank": trainer.rank})
    gdist.shutdown()
    return results


def _launch(jobs: list[dict]) -> dict[int, list[dict]]:
    """The job on 2 processes of one thread each, bounded by an alarm."""
    def timeout(signum, frame):
        raise TimeoutError("a distributed job ran past 240 s")

    threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(240)
    try:
        return gdist.launch(_worker, 2, jobs)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        if threads is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = threads


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """One job: plain SGD, plain AdamW, ZeRO AdamW, the batch-norm run (into a run dir), and
    AdamW with flat storage, plain and with ZeRO."""
    out = tmp_path_factory.mktemp("ddp") / "bn"
    results = _launch([{"config": PLAIN}, {"config": ADAMW}, {"config": ZERO},
                       {"config": BN, "out": str(out)}, {"config": FLAT},
                       {"config": FLAT_ZERO}])
    return results, out


def test_two_ranks_equal_one_process_at_the_same_global_batch(uninterrupted):
    results, _ = uninterrupted
    for job, config in ((0, PLAIN), (1, ADAMW)):
        single = Trainer(config, quiet=True)
        summary = single.fit()
        expected = _numpy(single.model.state_dict())
        for rank in (0, 1):
            got = results[rank][job]
            assert got["rank"] == rank
            for name, value in expected.items():
                assert _relative(got["state"][name], value) < 1e-6, (config["optimizer"], name)
            # the logged step loss is the loss of the global batch, not of one rank's half
            losses = [r["loss"] for r in got["records"] if "loss" in r]
            reference = [r["loss"] for r in single.records if "loss" in r]
            assert len(losses) == len(reference) == single.step == 14
            np.testing.assert_allclose(losses, reference, rtol=1e-5)
            for key in ("train_loss", "val_loss", "test_loss"):
                assert got["summary"][key] == pytest.approx(summary[key], rel=1e-5)
            for key in ("train_accuracy", "val_accuracy", "test_accuracy"):
                assert got["summary"][key] == summary[key]
            assert got["summary"]["processes"] == 2 and got["summary"]["backend"] == "gloo"


def test_zero_equals_the_plain_optimizer(uninterrupted):
    results, _ = uninterrupted
    for rank in (0, 1):
        plain, zero = results[rank][1], results[rank][2]
        assert zero["summary"]["zero"] is True and plain["summary"]["zero"] is False
        for name, value in plain["state"].items():
            assert _relative(zero["state"][name], value) < 1e-6, name
        assert not np.array_equal(plain["state"]["head.weight"],
                                  results[rank][0]["state"]["head.weight"])  # not SGD's


def test_flat_storage_trains_data_parallel_as_per_tensor_storage(uninterrupted):
    """optimizer.flat under DDP (gradients reduced into the flat views) and under ZeRO (each
    rank flattens its shard): the weights of per-tensor AdamW."""
    results, _ = uninterrupted
    for rank in (0, 1):
        plain = results[rank][1]["state"]
        for job in (4, 5):
            for name, value in plain.items():
                assert _relative(results[rank][job]["state"][name], value) < 1e-6, (job, name)


def test_batch_norm_ranks_agree_and_every_validation_example_counts_once(uninterrupted):
    results, out = uninterrupted
    rank0, rank1 = results[0][3], results[1][3]
    assert rank0["state"].keys() == rank1["state"].keys()
    assert any("running_mean" in name for name in rank0["state"])
    for name in rank0["state"]:
        np.testing.assert_array_equal(rank0["state"][name], rank1["state"][name], err_msg=name)
    # an independent evaluation of the final weights on the whole validation split
    cfg = load_config(BN)
    data = load_data("digits", val_fraction=0.12, seed=cfg.seed).train_subset(201, cfg.seed)
    model = build_model("mlp", data.input_shape, data.num_classes, hidden=[32, 16],
                        batch_norm=True, dropout=0.2)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in rank0["state"].items()})
    model.eval()
    with torch.no_grad():
        logits = model(data.x_val)
    assert len(data.x_val) == 173
    correct = int((logits.argmax(1) == data.y_val).sum())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["val_accuracy"] * 173 == pytest.approx(correct, abs=1e-9)
    assert summary["val_accuracy"] == correct / 173
    assert summary["val_loss"] == pytest.approx(float(F.cross_entropy(logits, data.y_val)),
                                                rel=1e-6)
    assert rank1["summary"]["val_accuracy"] == summary["val_accuracy"]
    assert summary["processes"] == 2
    assert (out / "report.html").is_file()
    # step and epoch records hold global numbers (the monitor's dead-ReLU fractions are
    # rank 0's own)

    def global_records(records: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if k != "elapsed_seconds"}
                for r in records if "monitor" not in r]

    assert global_records(rank0["records"]) == global_records(rank1["records"])


def test_killed_rank_ends_the_job_and_resume_equals_uninterrupted(uninterrupted, tmp_path):
    results, reference = uninterrupted
    out = tmp_path / "bn"
    with pytest.raises(gdist.RankFailed, match=r"rank 1 \(pid \d+\) was killed by SIGKILL") as exc:
        _launch([{"config": BN, "out": str(out), "kill": True}])
    assert exc.value.rank == 1
    assert not (out / "summary.json").exists()
    saved = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert saved["epoch"] == KILL_AFTER_EPOCH and saved["rng"]["world_size"] == 2
    resumed = _launch([{"config": BN, "out": str(out), "resume": True}])
    for rank in (0, 1):
        for name, value in results[rank][3]["state"].items():
            np.testing.assert_array_equal(resumed[rank][0]["state"][name], value, err_msg=name)
    want = json.loads((reference / "summary.json").read_text())
    got = json.loads((out / "summary.json").read_text())
    assert {k: v for k, v in got.items() if k not in WALL_CLOCK} == \
        {k: v for k, v in want.items() if k not in WALL_CLOCK}

    def metrics(path: Path) -> list[dict]:
        lines = (path / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k != "elapsed_seconds"}
                for line in lines]

    assert metrics(out) == metrics(reference)
    last = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    want_last = torch.load(reference / "checkpoints" / "last.pt", weights_only=True)
    for name, value in want_last["average"]["tensors"].items():
        assert torch.equal(last["average"]["tensors"][name], value), name


def test_cli_nproc_trains_with_rank_0_writing(tmp_path, capfd):
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({**PLAIN, "train": {**PLAIN["train"], "epochs": 1}}))
    out = tmp_path / "run"
    assert cli.main(["train", str(config), "--nproc", "2", "--out", str(out)]) == 0
    printed = capfd.readouterr().out
    assert printed.count("test accuracy") == 1  # rank 0 alone prints the summary
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 7
    assert (out / "checkpoints" / "last.pt").is_file() and (out / "report.html").is_file()


@pytest.mark.parametrize("args, message", [
    (["--nproc", "0"], "--nproc=0 is invalid; --nproc must be an integer in [1, 1024]"),
    (["--nproc", "2", "--set", "train.batch_size=33"],
     "train.batch_size=33 is the global batch, split evenly across the 2 processes, and 2 "
     "does not divide it; use a multiple of 2 (32 or 34)"),
    (["--set", "distributed.backend=nccl"], "distributed.backend: nccl needs CUDA"),
    (["--nproc", "2", "--set", "distributed.backend=nccl"], "distributed.backend: nccl needs"),
    (["--nproc", "2", "--set", "distributed.sync_bn=true"],
     "distributed.sync_bn: true needs CUDA"),
    (["--nproc", "2", "--set", "optimizer.name=lbfgs"], "full-batch training"),
    (["--nproc", "4", "--set", "train.batch_size=20"],
     "the last batch of each epoch holds 1 example (201 training examples, "
     "train.batch_size=20), fewer than the 4 processes"),
])
def test_bad_distributed_input_exits_2_and_writes_nothing(tmp_path, capsys, args, message):
    if torch.cuda.is_available() and ("nccl" in str(args) or "sync_bn" in str(args)):
        pytest.skip("CUDA is available here")
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps(PLAIN))
    out = tmp_path / "run"
    assert cli.main(["train", str(config), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gradwise: error: ") and message in err
    assert err.count("\n") == 1
    assert not out.exists()


def test_resume_change_says_what_changes():
    assert gdist.resume_change(2, 2, 64) is None
    text = gdist.resume_change(2, 4, 64)
    assert text is not None and "16 examples instead of 32" in text
    assert "train.batch_size=64" in text and "not bit-identical" in text


def test_a_job_restarted_by_torchrun_resumes_its_run(tmp_path, monkeypatch):
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps({**PLAIN, "train": {**PLAIN["train"], "epochs": 1}}))
    out = tmp_path / "run"
    Trainer(load_config(config), out, quiet=True).fit()

    def args(**given):
        fields = {"config": str(config), "overrides": [], "out": str(out), "resume": None,
                  "nproc": None, **given}
        return argparse.Namespace(**fields)

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("TORCHELASTIC_MAX_RESTARTS", "3")
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    first = args()
    gdist.restart_as_resume(first)  # the first attempt starts the run as given
    assert first.resume is None and first.out == str(out)
    with pytest.raises(UserError, match="needs a fixed run directory: give --out"):
        gdist.restart_as_resume(args(out=None))
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    restarted = args()
    gdist.restart_as_resume(restarted)  # a restart continues it
    assert (restarted.resume, restarted.config, restarted.out) == (str(out), None, None)
    other = args(overrides=["optimizer.lr=0.5"])
    gdist.restart_as_resume(other)  # not this config's run: left to refuse the folder
    assert other.resume is None
