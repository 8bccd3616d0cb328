"""Data-parallel training on torch.distributed: one process per CPU share or GPU, gradients
averaged by DistributedDataParallel (DDP).

Launch (see docs/distributed.md)::

    gradwise train CONFIG.yaml --nproc 2                          # one machine
    torchrun --nproc-per-node 2 -m gradwise train CONFIG.yaml --out runs/NAME

What rank ``r`` of ``W`` processes does:

* **Batches.** ``train.batch_size`` is the *global* batch and must be divisible by ``W``
  (refused otherwise: a config means the same thing at any world size). Every rank draws the
  same (seed, epoch) permutation and keeps the ``r``-th of ``W`` slices of each batch,
  ``batch[r*g//W:(r+1)*g//W]`` for a batch of ``g``; only the last, short batch of an epoch can
  split unevenly, and its gradient is weighted (``n_r * W / g``) so that the average DDP
  takes is the mean over the whole batch. A step on ``W`` ranks is one step on the global
  batch: without batch norm or dropout it equals the one-process step up to rounding.
* **Randomness.** Rank 0 keeps the dropout and augmentation streams of a one-process run;
  rank ``r > 0`` has its own (global RNG seeded by (seed, r), augmentation stream ``1 + 2r``).
* **Batch norm.** Batch statistics per rank; the running buffers (and those of a weight
  average) are averaged across ranks before every evaluation and checkpoint.
  ``distributed.sync_bn: true`` (CUDA only) uses torch's SyncBatchNorm instead.
* **Evaluation.** Each rank evaluates a contiguous ``1/W`` of the split and the loss sums and
  correct counts are added up: every example is counted exactly once (no padding).
* **Files.** Rank 0 alone writes metrics, checkpoints, the summary and the report; the others
  wait at a barrier after each checkpoint and at the end. A checkpoint holds every rank's
  random state and the world size; ``--resume`` at the same world size continues bit for bit,
  at another one it says what changes and goes on.
* **Optimizer.** Any gradwise optimizer; ``distributed.zero: true`` wraps it in torch's
  ZeroRedundancyOptimizer (each rank keeps the state of its share of the parameters).
"""

from __future__ import annotations

import argparse
import inspect
import logging
import os
import signal
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..config import Config, DistributedConfig, load_config
from ..errors import UserError
from ..rundir import RunDir, claim
from ..schedules import LRScheduler
from .progress import Progress
from .trainer import Trainer

#: The most processes ``--nproc`` starts on one machine.
MAX_NPROC = 1024


# -- the job ------------------------------------------------------------------------------------

def world_size() -> int:
    """The processes of this job: ``WORLD_SIZE`` as torchrun sets it (1 outside a job)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return _env_int("WORLD_SIZE", 1)


def rank() -> int:
    """This process's rank: ``RANK`` as torchrun sets it (0 outside a job)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return _env_int("RANK", 0)


def backend(config: Config) -> str:
    """``distributed.backend``, ``auto`` resolved: nccl where the model runs on CUDA, else
    gloo."""
    chosen = (config.distributed or DistributedConfig()).backend
    if chosen != "auto":
        return chosen
    return "nccl" if _on_cuda(config.device) else "gloo"


def check(config: Config, world: int) -> None:
    """What distributed training needs of ``config`` on ``world`` processes, checked before
    anything starts or is written (a UserError naming the key otherwise)."""
    settings = config.distributed or DistributedConfig()
    if settings.backend == "nccl" and not torch.cuda.is_available():
        raise UserError("distributed.backend: nccl needs CUDA, which is not available here; use "
                        "backend: auto (gloo on CPU) or gloo")
    if settings.backend == "nccl" and not _on_cuda(config.device):
        raise UserError(f"distributed.backend: nccl runs on CUDA, but device is "
                        f"{config.device!r}; use device: auto or cuda, or backend: gloo")
    if settings.sync_bn and not _on_cuda(config.device):
        raise UserError("distributed.sync_bn: true needs CUDA (torch's SyncBatchNorm has no CPU "
                        "kernel); on CPU every process keeps its own batch statistics and the "
                        "running statistics are averaged across processes before each "
                        "evaluation and checkpoint: set sync_bn: false")
    if world == 1:
        return
    if not dist.is_available():
        raise UserError("this torch build has no torch.distributed; train in one process")
    if config.train.full_batch:
        raise UserError("full-batch training (train.full_batch, the default for lbfgs) runs in "
                        "one process; use a minibatch optimizer to train on several")
    if config.device == "mps":
        raise UserError("device 'mps' cannot train on several processes (gloo and nccl do not "
                        "run on it); use device: cpu")
    if config.device.startswith("cuda:"):
        raise UserError(f"device {config.device!r} names one GPU, but each process takes the "
                        "GPU of its local rank; use device: auto or cuda")
    size = config.train.batch_size
    if size % world:
        lower = size // world * world
        choices = f"{lower} or {lower + world}" if lower else f"{world}"
        raise UserError(f"train.batch_size={size} is the global batch, split evenly across the "
                        f"{world} processes, and {world} does not divide it; use a multiple of "
                        f"{world} ({choices}) or another number of processes")


def init(config: Config, timeout: timedelta | None = None) -> None:
    """Join the job's process group (``env://``: the variables torchrun sets) with the backend
    of ``config``; nothing if this process already belongs to one."""
    if dist.is_initialized():
        return
    if backend(config) == "nccl":
        torch.cuda.set_device(_env_int("LOCAL_RANK", 0))
    options: dict[str, Any] = {"timeout": timeout} if timeout is not None else {}
    dist.init_process_group(backend(config), **options)


def shutdown() -> None:
    """Leave the process group (after the last collective)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def make_trainer(config: Config | dict | str | Path, out: str | Path | None = None, *,
                 resume: bool = False, **options: Any) -> Trainer:
    """The Trainer of this process: a :class:`DistributedTrainer` inside a job of several
    processes, a plain :class:`~gradwise.train.Trainer` otherwise (which, to ``resume`` a run
    trained on several processes, says what changes)."""
    config = load_config(config)
    world = world_size()
    check(config, world)
    if world > 1:
        return DistributedTrainer(config, out, **options)
    trainer = Trainer(config, out, **options)
    if resume and out is not None and RunDir(out).checkpoint_path("last").is_file():
        change = resume_change(saved_world_size(RunDir(out)), 1, config.train.batch_size)
        if change and not trainer.quiet:
            trainer.progress.message(change)
    return trainer


def resume_change(saved: int, now: int, batch_size: int) -> str | None:
    """What changes when a run trained on ``saved`` processes continues on ``now`` (None:
    nothing, same world size)."""
    if saved == now:
        return None
    return (f"this run was trained on {saved} process{'es' * (saved > 1)} and continues on "
            f"{now}: the global batch (train.batch_size={batch_size}), the learning rate, the "
            f"batch order and the model and optimizer state stay; each process now computes "
            f"its gradient and batch-norm statistics on {batch_size // now} examples instead of "
            f"{batch_size // saved}, and the dropout and augmentation streams differ, so the "
            f"result is not bit-identical to continuing on {saved}")


def saved_world_size(run: RunDir) -> int:
    """The number of processes that wrote ``run``'s last checkpoint (1 for a one-process
    run)."""
    ckpt = run.load_checkpoint("last", map_location="cpu")
    rng = ckpt.get("rng")
    return int(rng.get("world_size", 1)) if isinstance(rng, dict) else 1


# -- the distributed Trainer --------------------------------------------------------------------

class DistributedTrainer(Trainer):
    """A :class:`~gradwise.train.Trainer` that is rank ``r`` of a torch.distributed job (see the
    module docstring); every rank constructs one with the same config and ``out`` and calls
    :meth:`fit`. The process group is joined from the environment torchrun sets, unless the
    caller joined one already.

    Example (``torchrun --nproc-per-node 2 train.py``)::

        summary = DistributedTrainer("config.yaml", "runs/ddp").fit()
    """

    def __init__(self, config: Config | dict | str | Path, out: str | Path | None = None, *,
                 progress: Progress | None = None, quiet: bool = False,
                 callbacks: Iterable[Callable[[Trainer, dict], None]] = (),
                 sinks: Iterable[Callable[[dict], None]] = (), tensorboard: bool = False):
        config = load_config(config)
        check(config, world_size())
        init(config)
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        self.is_main = self.rank == 0
        self.run_path = Path(out) if out is not None else None
        main = self.is_main
        super().__init__(config, out if main else None, progress=progress,
                         quiet=quiet or not main, callbacks=callbacks,
                         sinks=sinks if main else (), tensorboard=tensorboard and main)
        cfg, world = self.config, self.world_size
        self.settings = cfg.distributed or DistributedConfig()
        _check_last_batch(len(self.data.x_train), cfg.train.batch_size, world)
        self._comm = self.device if backend(cfg) == "nccl" else torch.device("cpu")
        if self.settings.sync_bn:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        cuda = self.device.type == "cuda"
        self.train_model = nn.parallel.DistributedDataParallel(
            self.model, device_ids=[torch.cuda.current_device()] if cuda else None,
            forward_sync_buffers=False)
        self.train_model.register_comm_hook(self, _weighted_allreduce)
        if self.settings.zero:
            self.optimizer = _zero(self.optimizer)
            self.scheduler = LRScheduler(self.optimizer, self._schedule())
        self.augment_stream = 1 + 2 * self.rank
        if self.rank:
            torch.manual_seed(_rank_seed(cfg.seed, self.rank))
        self.weight = 1.0  # this rank's share of the current batch x W (1: an even split)
        self._local = 0  # examples of the current batch on this rank
        self._seen = 0  # examples of this epoch on this rank
        self._step_loss: tuple[int, float] | None = None  # (step, loss of the global batch)

    # -- batches and metrics ----------------------------------------------------------------

    def _shard(self, idx: Tensor) -> Tensor:
        g, world = len(idx), self.world_size
        lo, hi = self.rank * g // world, (self.rank + 1) * g // world
        self._local, self._seen = hi - lo, self._seen + hi - lo
        self.weight = (hi - lo) * world / g
        return idx[lo:hi]

    def _minibatch_epoch(self) -> tuple[float, float]:
        self._seen = 0
        loss, accuracy = super()._minibatch_epoch()
        seen = self._seen
        loss_sum, correct, total = self._sum([loss * seen, round(accuracy * seen), seen])
        return loss_sum / max(total, 1), correct / max(total, 1)

    def _log(self, record: dict) -> None:
        if "loss" in record and "grad_norm" in record:  # a step record: the global batch's loss
            record = {**record, "loss": self._batch_loss(record["loss"])}
        super()._log(record)

    def _diverged(self, loss: float) -> bool:
        return super()._diverged(self._batch_loss(loss))

    def _batch_loss(self, loss: float) -> float:
        """The mean loss over the global batch of this step, from each rank's mean (every rank
        asks at the same steps; the answer is kept for the step's second question)."""
        if self._step_loss is None or self._step_loss[0] != self.step:
            loss_sum, count = self._sum([loss * self._local, self._local])
            self._step_loss = (self.step, loss_sum / max(count, 1))
        return self._step_loss[1]

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor) -> tuple[float, float]:
        """Mean loss and accuracy on ``x, y``, each rank evaluating a contiguous ``1/W`` of it
        (the batch-norm buffers averaged across ranks first); every example counts once."""
        self.sync_buffers()
        n = len(x)
        if n == 0:
            return float("nan"), float("nan")
        lo, hi = self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size
        loss, accuracy = super().evaluate(x[lo:hi], y[lo:hi]) if hi > lo else (0.0, 0.0)
        loss_sum, correct = self._sum([loss * (hi - lo), round(accuracy * (hi - lo))])
        return loss_sum / n, correct / n

    def sync_buffers(self) -> None:
        """Average the model's floating buffers (batch-norm running statistics) across ranks."""
        self._average_tensors([b for b in self.model.buffers() if b.is_floating_point()])

    def _sync_average(self) -> None:
        if self.average is None:
            return
        names = {name for name, _ in self.model.named_buffers()}
        tensors = self.average.state_dict()["tensors"]  # the average's own tensors
        self._average_tensors([t for name, t in tensors.items()
                               if name in names and t.is_floating_point()])

    def _average_tensors(self, tensors: list[Tensor]) -> None:
        for tensor in tensors:
            data = tensor.detach()
            moved = data.to(self._comm)
            dist.all_reduce(moved)
            data.copy_(moved / self.world_size)

    def _sum(self, values: list[float]) -> list[float]:
        """Each value summed over the ranks."""
        total = torch.tensor(values, dtype=torch.float64, device=self._comm)
        dist.all_reduce(total)
        return total.tolist()

    # -- checkpoints, resuming, the end ------------------------------------------------------

    def fit(self, resume: bool = False) -> dict:
        if not self.is_main and resume and self.run_path is not None:
            run = RunDir.open(self.run_path)
            if run.checkpoint_path("last").is_file():  # rank 0 restores the same file
                self._restore(run)
        return super().fit(resume)

    def _checkpoint(self, improved: bool) -> None:
        if not self.config.train.checkpoint:
            return
        self.sync_buffers()
        self._sync_average()
        if self.settings.zero:
            self.optimizer.consolidate_state_dict(to=0)  # type: ignore[attr-defined]
        states: list[Any] = [None] * self.world_size
        dist.all_gather_object(states, _rng_state())
        if self.run_dir is not None:
            run = self.run_dir
            self.run_dir = _RankRun(run.path, rng={"ranks": states,
                                                   "world_size": self.world_size})
            try:
                super()._checkpoint(improved)
            finally:
                self.run_dir = run
        dist.barrier()

    def _restore(self, run: RunDir) -> None:
        view = _RankRun(run.path, writes=self.is_main)
        super()._restore(view)
        rng = view.loaded["rng"]
        saved, ranks = int(rng.get("world_size", 1)), rng.get("ranks") or []
        if self.rank < len(ranks):
            _set_rng_state(ranks[self.rank])
        elif self.rank:
            torch.manual_seed(_rank_seed(self.config.seed, self.rank) + self.step)
        change = resume_change(saved, self.world_size, self.config.train.batch_size)
        if change and not self.quiet:
            self.progress.message(change)

    def _finish(self) -> dict:
        extra = {"processes": self.world_size, "backend": backend(self.config),
                 "zero": self.settings.zero}
        if self.run_dir is not None:
            self.run_dir = _RankRun(self.run_dir.path, summary=extra)
        summary = super()._finish()
        summary.update(extra)
        dist.barrier()  # the others wait while rank 0 writes the summary and the report
        return summary


class _RankRun(RunDir):
    """A run directory as one rank sees it: only rank 0 (``writes``) changes files; a
    checkpoint saved through it carries ``rng`` beside the trainer's random state and the
    summary ``summary``; the last checkpoint it loaded is kept in ``loaded``."""

    def __init__(self, path: str | Path, *, writes: bool = True, rng: dict | None = None,
                 summary: dict | None = None):
        super().__init__(path)
        self.writes, self.rng, self.summary = writes, rng or {}, summary or {}
        self.loaded: dict = {}

    def remove_temporary(self) -> None:
        if self.writes:
            super().remove_temporary()

    def rewrite_metrics(self, records: list[dict]) -> None:
        if self.writes:
            super().rewrite_metrics(records)

    def load_last(self, map_location: Any = None) -> dict:
        self.loaded = (super().load_last(map_location) if self.writes
                       else self.load_checkpoint("last", map_location))
        return self.loaded

    def save_checkpoint(self, state: dict, best: bool = False) -> None:
        super().save_checkpoint({**state, "rng": {**state["rng"], **self.rng}}, best)

    def write_summary(self, summary: dict) -> None:
        summary.update(self.summary)
        super().write_summary(summary)


def _weighted_allreduce(trainer, bucket):
    """DDP's gradient average with each rank weighted by its share of the batch:
    ``g = sum_r (n_r W / g_total) g_r / W`` (an even split: the plain mean). Unannotated: DDP
    checks that ``bucket`` is annotated as the class ``dist.GradBucket``, and this module's
    annotations are strings."""
    buffer = bucket.buffer()
    buffer.mul_(trainer.weight / trainer.world_size)
    future = dist.all_reduce(buffer, async_op=True).get_future()
    return future.then(lambda done: done.value()[0])


def _zero(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """``optimizer`` (not stepped yet) rebuilt inside torch's ZeroRedundancyOptimizer, with the
    same class, param groups and options."""
    from torch.distributed.optim import ZeroRedundancyOptimizer

    groups = [{**{k: v for k, v in group.items() if k != "initial_lr"},
               "lr": group.get("initial_lr", group["lr"])} for group in optimizer.param_groups]
    accepted = inspect.signature(type(optimizer).__init__).parameters  # defaults may hold more
    defaults = {k: v for k, v in optimizer.defaults.items() if k in accepted}
    return ZeroRedundancyOptimizer(groups, optimizer_class=type(optimizer), **defaults)


def _check_last_batch(n: int, size: int, world: int) -> None:
    """Every process needs at least one example of the last, short batch of an epoch."""
    last = n % size
    if 0 < last < world:
        raise UserError(f"the last batch of each epoch holds {last} example{'s' * (last > 1)} "
                        f"({n} training examples, train.batch_size={size}), fewer than the "
                        f"{world} processes; change train.batch_size or data.train_size")


def _rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s global random stream (rank 0 keeps ``seed``)."""
    return seed * 2**20 + rank


def _rng_state() -> dict:
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state() if cuda else None}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())


def _on_cuda(device: str) -> bool:
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip().isdigit() else default


# -- launching ----------------------------------------------------------------------------------

class RankFailed(RuntimeError):
    """A process of a job died or failed; the message names its rank. ``exitcode`` is its exit
    status (negative: the signal that killed it)."""

    def __init__(self, message: str, rank: int, exitcode: int):
        super().__init__(message)
        self.rank, self.exitcode = rank, exitcode


def launch(entrypoint: Callable[..., Any] | str, nproc: int, *args: Any,
           timeout: float = 120.0) -> dict[int, Any]:
    """Run ``entrypoint(*args)`` (a picklable function, or a program given its arguments) in
    ``nproc`` local processes forming one job, the environment torchrun gives (``RANK``,
    ``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT`` on a free loopback port); return each
    rank's result. A process that fails or dies ends the job: the others are stopped and
    :class:`RankFailed` names it. ``timeout``: how long the processes may take to meet.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc,
                          run_id=uuid.uuid4().hex, rdzv_backend="c10d",
                          rdzv_endpoint="127.0.0.1:0", rdzv_configs={"timeout": int(timeout)},
                          max_restarts=0, monitor_interval=0.1, start_method="spawn")
    if callable(entrypoint):  # its error, if any, goes into the message
        entrypoint, args = _recorded, (entrypoint, *args)
    with _quiet_launcher():
        try:
            return elastic_launch(config, entrypoint)(*args)
        except SignalException as exc:  # the launcher stopped the processes on its way out
            if exc.sigval == signal.SIGINT:
                raise KeyboardInterrupt from None
            raise
        except ChildFailedError as exc:
            failed, failure = exc.get_first_failure()
            code = failure.exitcode
            how = (f"was killed by {failure.signal_name()}" if code < 0
                   else f"exited with status {code}")
            if code > 0 and failure.error_file_data:  # a Python exception in a function
                message = failure.message
                how += f" ({message.get('message') if isinstance(message, dict) else message})"
            raise RankFailed(f"rank {failed} (pid {failure.pid}) {how}; the other processes "
                             "were stopped and the job ended", failed, code) from None


def _recorded(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` in a launched process, its exception recorded for the launcher."""
    from torch.distributed.elastic.multiprocessing.errors import record

    return record(function)(*args)


@contextmanager
def _quiet_launcher() -> Iterator[None]:
    """torch's launcher logs every failure at length; :func:`launch` says it in one line."""
    loggers = [logging.getLogger(name) for name in ("torch.distributed.elastic",
                                                    "torch.multiprocessing.spawn")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def launch_cli(args: argparse.Namespace, config: Config, out: Path) -> int:
    """``gradwise train ... --nproc N``: check everything in this process (nothing is started
    or written on bad input), then run ``gradwise train`` on N local processes with ``out``
    fixed; the exit status of the job (a dead rank: 1, with a message naming it)."""
    from .. import _checks

    nproc = _checks.integer("--nproc", args.nproc, 1, maximum=MAX_NPROC)
    check(config, nproc)
    if args.resume:
        run = RunDir.open(out)
        if not run.checkpoint_path("last").is_file() and run.summary_path.is_file():
            raise UserError(f"{str(out)!r} holds a finished run without checkpoints "
                            "(train.checkpoint: false); there is nothing to resume")
        argv = ["train", "--resume", str(out)]
    else:
        with torch.random.fork_rng(devices=[]):  # what the Trainer checks, and the data size
            probe = Trainer(config, out=None, quiet=True)
        _check_last_batch(len(probe.data.x_train), config.train.batch_size, nproc)
        del probe
        claim(out, "run", create=False)
        if RunDir(out).started():
            raise UserError(f"run directory {str(out)!r} already holds a run; continue it with "
                            f"--resume {out}, or choose another --out")
        argv = ["train", args.config, *[f"--set={item}" for item in args.overrides],
                "--out", str(out)]
    argv += ["--quiet"] * args.quiet + ["--tensorboard"] * args.tensorboard
    args.interrupted = (f"interrupted; continue with: gradwise train --resume {out} --nproc "
                        f"{nproc} (a run stopped before its first checkpoint starts again from "
                        "the beginning)")
    # each process gets an equal share of the cores unless the user chose
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    try:
        launch(sys.executable, nproc, "-m", "gradwise", *argv)
    except RankFailed as exc:
        if exc.exitcode == 2:  # a user error, which that rank printed
            return 2
        print(f"gradwise: error: {exc}; continue from the last checkpoint with: gradwise train "
              f"--resume {out} --nproc {nproc}", file=sys.stderr)
        return 1
    return 0


def restart_as_resume(args: argparse.Namespace) -> None:
    """Under ``torchrun --max-restarts``, a restarted job continues its run: ``gradwise train
    CONFIG --out DIR`` becomes ``--resume DIR`` when DIR holds a run with that config."""
    if world_size() <= 1 or args.resume or args.nproc is not None:
        return
    if _env_int("TORCHELASTIC_MAX_RESTARTS", 0) > 0 and not args.out:
        raise UserError("torchrun --max-restarts restarts the job from its last checkpoint, "
                        "which needs a fixed run directory: give --out")
    if _env_int("TORCHELASTIC_RESTART_COUNT", 0) == 0 or not args.config:
        return
    run = RunDir(args.out)
    if (run.checkpoint_path("last").is_file()
            and load_config(run.config_path) == load_config(args.config, args.overrides)):
        args.resume, args.config, args.overrides, args.out = str(run.path), None, [], None
