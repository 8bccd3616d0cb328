"""The Trainer: a config in, a run directory out.

The run directory (:class:`gradwise.rundir.RunDir`) holds ``config.yaml``, ``metrics.jsonl``
(step records {"step", "epoch", "loss", "lr", "grad_norm"} every `train.log_every` steps, with
the loss being the cross-entropy without penalties; epoch records {"epoch", "step",
"train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "elapsed_seconds"}; monitor
records {"step", "epoch", "monitor": {...}}, see gradwise.train.monitor), ``checkpoints/last.pt``
after every epoch (model, optimizer, schedule, RNG state, epoch) and ``best.pt`` (the best
validation accuracy), ``summary.json`` (final metrics, best epoch, wall time, why it stopped
early, the diagnosis and warnings) and ``report.html``.

A snapshot ensemble (``snapshots:``) runs cosine cycles, keeps the weights at the end of each
(``checkpoints/snapshot-K.pt``) and evaluates each snapshot and the mean softmax of the last
``keep`` at the end; it competes for ``test_accuracy`` with the live and averaged models.

Resuming from ``last.pt`` gives exactly the run an uninterrupted process would have produced:
batches and augmentations are drawn from generators seeded by (seed, epoch), and the global RNG
that drives dropout is saved with each checkpoint.

Weight averaging (``average:``, :mod:`gradwise.ensemble`): an EMA is updated after every
optimizer step, an SWA at the end of every epoch from ``average.swa.start_epoch`` on (with
``average.swa.lr`` the learning rate is that constant from the first step of that epoch on).
With ``buffers: recompute``, the batch-norm statistics of the average are recomputed at the end
of each epoch, before it is evaluated, on the *un-augmented* training set in batches of
``train.batch_size`` (in its stored order; dropout active, as in training; the global random
state is left as it was, so averaging never changes the live run). From its first update on,
the averaged model is evaluated on the validation set each epoch (epoch record keys
``val_loss_ema``/``val_accuracy_ema`` or ``_swa``), its state is in every checkpoint, and the
summary gives both models' val/test numbers; ``test_accuracy`` (and ``test_loss``) come from the
one with the better final validation accuracy (the live one on a tie), named by
``test_accuracy_from``.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _io
from .. import optim as gopt
from ..augment import Augment
from ..config import Config, dump, flatten, load_config
from ..data import Splits, load_data
from ..ensemble import EMA, SWA, disagreement, probability_scores, snapshot_steps
from ..errors import UserError
from ..nn import build_model, mc_predict, tta_predict, weight_penalty
from ..rundir import RunDir
from ..schedules import LRScheduler, SwitchTo, build_schedule
from .diagnosis import diagnose
from .finetune import Finetune
from .monitor import Monitor
from .progress import Progress

# schedules whose length defaults to the length of training
_SIZED = {"cosine": "total_steps", "onecycle": "total_steps"}
#: On CPU, evaluation runs in chunks of at most this many samples, whose activations stay in the
#: cache: examples/mnist.yaml's convnet, one thread, 192 us an image against 354 at 1024.
_CPU_EVAL_CHUNK = 256


class Trainer:
    """Trains ``config`` into ``out`` (a run directory; None keeps nothing on disk).

    ``callbacks`` are called as ``callback(trainer, epoch_record)`` after each epoch; ``sinks``
    receive every record written to ``metrics.jsonl`` (``tensorboard=True`` adds one that
    writes ``RUN/tensorboard/``).

    Example::

        summary = Trainer({"data": "digits", "train": {"epochs": 3}}, "runs/demo").fit()
    """

    def __init__(self, config: Config | dict | str | Path, out: str | Path | None = None, *,
                 progress: Progress | None = None, quiet: bool = False,
                 callbacks: Iterable[Callable[[Trainer, dict], None]] = (),
                 sinks: Iterable[Callable[[dict], None]] = (), tensorboard: bool = False):
        self.config = load_config(config)
        self.callbacks = list(callbacks)
        self.out = Path(out) if out is not None else None
        self.run_dir: RunDir | None = None
        self.device = _device(self.config.device)
        self.quiet = quiet
        torch.manual_seed(self.config.seed)
        cfg = self.config
        split = cfg.seed if cfg.data.split_seed is None else cfg.data.split_seed
        data = load_data(cfg.data.source, val_fraction=cfg.data.val_fraction, seed=split,
                         normalize=cfg.data.normalize, label_column=cfg.data.label_column,
                         classes=cfg.data.classes)
        if cfg.data.train_size is not None:
            data = data.train_subset(cfg.data.train_size, split)
        if cfg.data.per_class is not None:
            data = data.per_class_subset(cfg.data.per_class, split)
        self.data: Splits = data.to(self.device)
        self.model: nn.Module = build_model(cfg.model.name, self.data.input_shape,
                                            self.data.num_classes,
                                            **cfg.model.options()).to(self.device)
        self.finetune = Finetune.create(self.model, cfg, self.data)  # model.init, transfer:
        self.channels_last = cfg.train.channels_last and len(self.data.input_shape) == 3
        if self.channels_last:
            # Module.to takes memory_format (torch's docs); its stubs leave the keyword out
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.average = _build_average(self.model, cfg)
        self.optimizer = _build_optimizer(
            self.model, cfg, self.finetune.multipliers() if self.finetune else None)
        self.full_batch = bool(cfg.train.full_batch)
        if gopt.registry.get(cfg.optimizer.name).full_batch and not self.full_batch:
            raise UserError(f"optimizer {cfg.optimizer.name!r} steps on the whole training set "
                            "with a closure; set train.full_batch: true (its default) or choose "
                            "a minibatch optimizer")
        self.augment = _build_augment(cfg, self.data, self.full_batch)
        self._predict = self._averaged_predictor()
        self.monitor = Monitor(self.model, self.data.num_classes, cfg.train.monitor_every)
        n = len(self.data.x_train)
        self.steps_per_epoch = 1 if self.full_batch else math.ceil(n / cfg.train.batch_size)
        self.total_steps = cfg.train.epochs * self.steps_per_epoch
        if cfg.train.max_steps is not None:
            self.total_steps = min(self.total_steps, cfg.train.max_steps)
        self.snapshot_steps = _snapshot_steps(cfg, self.total_steps)
        self.snapshots: list[dict] = []  # {"snapshot", "step", "epoch", "model"} (CPU copies)
        self.scheduler = LRScheduler(self.optimizer, self._schedule())
        self.progress = progress or Progress(cfg.train.epochs, self.steps_per_epoch)
        self.step = 0
        self.epoch = 0
        self.elapsed = 0.0
        self.initial_loss: float | None = None
        self.best = {"val_accuracy": -1.0, "epoch": 0}
        self.stop_reason: str | None = None
        self.diverged = False  # stopped by the divergence rule (not by a callback's stop())
        self.records: list[dict] = []  # what metrics.jsonl holds, for the diagnosis
        self.diagnosis: dict | None = None
        self.sinks = list(sinks)
        self.tensorboard = tensorboard and self.out is not None  # opened with the run dir
        self._last_val: tuple[float, float] | None = None  # of the current weights
        #: What a training step calls (distributed training wraps the model in DDP).
        self.train_model: nn.Module = self.model

    # -- setup ------------------------------------------------------------------------------

    def _schedule(self):
        cfg = self.config.schedule
        if self.config.snapshots is not None:  # the cycles of gradwise.ensemble.snapshot_steps
            period = -(-self.total_steps // self.config.snapshots.cycles)
            return build_schedule("cosine_restarts", period=period)
        options = cfg.options()
        if cfg.name in _SIZED:
            options.setdefault(_SIZED[cfg.name], self.total_steps)
        warmup = round(cfg.warmup_epochs * self.steps_per_epoch)
        schedule = build_schedule(cfg.name, warmup_steps=warmup, **options)
        average = self.config.average
        swa = average.swa if average is not None else None
        if swa is not None and swa.lr is not None:
            at = (swa.start_epoch - 1) * self.steps_per_epoch
            schedule = SwitchTo(at, swa.lr / self.config.optimizer.lr, before=schedule)
        return schedule

    @property
    def average_kind(self) -> str | None:
        """``"ema"``, ``"swa"`` or None: the suffix of the averaged model's metrics."""
        return self.config.average.kind if self.config.average is not None else None

    # -- the loop ---------------------------------------------------------------------------

    def fit(self, resume: bool = False) -> dict:
        """Train for the configured epochs (continuing from ``last.pt`` if ``resume``)."""
        if self.out is not None:
            if resume and RunDir.open(self.out).checkpoint_path("last").is_file():
                self.run_dir = RunDir(self.out)
                self._restore(self.run_dir)
            elif resume and RunDir(self.out).summary_path.is_file():
                raise UserError(f"{str(self.out)!r} holds a finished run without checkpoints "
                                "(train.checkpoint: false); there is nothing to resume")
            else:
                if resume and not self.quiet:
                    self.progress.message(f"{self.out} has no checkpoint yet: starting the run "
                                          "from the beginning")
                self.run_dir = RunDir.create(self.out, dump(self.config))
            if self.tensorboard:
                from .tensorboard import TensorBoardSink
                self.sinks.append(TensorBoardSink(self.run_dir.path / "tensorboard"))
        if self.finetune is not None and not self.quiet:
            self.progress.message(self.finetune.text())
        start = time.perf_counter() - self.elapsed
        cfg = self.config.train
        while self.epoch < cfg.epochs and self.step < self.total_steps and not self.stop_reason:
            self._last_val = None
            train_loss, train_acc = (self._full_batch_epoch() if self.full_batch
                                     else self._minibatch_epoch())
            self.epoch += 1
            self.elapsed = time.perf_counter() - start
            if self.stop_reason:
                break
            if self.finetune is not None:  # LP-FT: unfreeze after the head's epochs
                self.finetune.at_epoch_end(self.epoch, self.optimizer, self.scheduler)
            val_loss, val_acc = self._last_val = self.evaluate(self.data.x_val, self.data.y_val)
            record = {"epoch": self.epoch, "step": self.step, "train_loss": train_loss,
                      "train_accuracy": train_acc, "val_loss": val_loss, "val_accuracy": val_acc,
                      "lr": self.scheduler.lr()[0], "elapsed_seconds": round(self.elapsed, 3)}
            record.update(self._average_epoch_end())
            self._log(record)
            if not self.quiet:
                self.progress.epoch(record)
            self._diagnose_so_far()
            improved = val_acc > self.best["val_accuracy"]
            if improved:
                self.best = {"val_accuracy": val_acc, "epoch": self.epoch}
            self._checkpoint(improved)
            for callback in self.callbacks:
                callback(self, record)
        self.elapsed = time.perf_counter() - start
        return self._finish()

    def _minibatch_epoch(self) -> tuple[float, float]:
        cfg = self.config.train
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        seen = 0
        batches = itertools.islice(self.epoch_batches(self.epoch), self.total_steps - self.step)
        for b, (x, y, target) in enumerate(batches):
            measuring = self.monitor.begin(self.step + 1)
            with self._autocast():
                logits = self.train_model(self._layout(x))
            loss = self._loss(logits, target)
            self.optimizer.zero_grad(set_to_none=True)
            self._with_penalty(loss).backward()
            logging = self.step + 1 == 1 or (self.step + 1) % cfg.log_every == 0
            grad_norm: Tensor | float | None = None
            if cfg.grad_clip is not None:
                grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
            elif logging:
                grad_norm = _grad_norm(self.model)
            self.monitor.before_update()
            lr_used = self.scheduler.lr()[0] if measuring else None
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            self._after_step()
            loss_sum += loss.detach() * len(y)
            hard = target if target.ndim == 1 else target.argmax(1)
            correct += (logits.detach().argmax(1) == hard).sum()
            seen += len(y)
            if logging:
                assert grad_norm is not None  # measured above on every logged step
                value = float(loss.detach())
                self._log({"step": self.step, "epoch": self.epoch + 1, "loss": value,
                           "lr": self.scheduler.lr()[0], "grad_norm": float(grad_norm)})
            self._log_monitor(lr_used)
            if logging:
                if self._diverged(value):
                    break
                if not self.quiet:
                    self.progress.step(self.epoch, b, value)
        return float(loss_sum) / max(seen, 1), int(correct) / max(seen, 1)

    def epoch_batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor, Tensor]]:
        """The minibatches of ``epoch`` as ``(x, y, target)``: the training set reshuffled by
        (seed, epoch), then augmented with that epoch's stream (``target`` is ``y``, or the
        soft labels of mixup/cutmix). The same epoch gives the same batches, so a resumed run
        and ``lr-find`` see what training sees."""
        data, size = self.data, self.config.train.batch_size
        order = torch.randperm(len(data.x_train),
                               generator=_epoch_generator(self.config.seed, epoch))
        order = order.to(self.device)
        augment_rng = (_epoch_generator(self.config.seed, epoch, self.device,
                                        stream=self.augment_stream)
                       if self.augment is not None else None)
        for b in range(self.steps_per_epoch):
            idx = self._shard(order[b * size:(b + 1) * size])
            x, y = data.x_train[idx], data.y_train[idx]
            if self.augment is not None and augment_rng is not None:
                x, target = self.augment(x, y, augment_rng)
                yield x, y, target
            else:
                yield x, y, y

    #: The augmentation stream of :func:`_epoch_generator` (in distributed training, one per rank).
    augment_stream = 1

    def _shard(self, idx: Tensor) -> Tensor:
        """This process's part of a batch's indices: all of them (distributed training keeps
        a slice)."""
        return idx

    def _full_batch_epoch(self) -> tuple[float, float]:
        """One optimizer step on the whole training set: no shuffling, no dropout (L-BFGS)."""
        data = self.data
        self.model.train()
        for module in self.model.modules():
            if isinstance(module, nn.modules.dropout._DropoutNd):
                module.eval()

        def closure():
            self.optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                logits = self.model(self._layout(data.x_train))
            loss = self._with_penalty(self._loss(logits, data.y_train))
            loss.backward()
            return loss

        self.monitor.begin(self.step + 1)
        self.monitor.before_update()
        lr_used = self.scheduler.lr()[0]
        self.optimizer.step(closure)
        self.scheduler.step()
        self.step += 1
        self._after_step()
        loss, acc = self.evaluate(data.x_train, data.y_train)
        self._log({"step": self.step, "epoch": self.epoch + 1, "loss": loss,
                   "lr": self.scheduler.lr()[0], "grad_norm": _grad_norm(self.model)})
        self._log_monitor(lr_used)
        self._diverged(loss)
        return loss, acc

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy (with label smoothing); ``target``: class ids or probabilities."""
        smoothing = self.config.regularization.label_smoothing
        return F.cross_entropy(logits.float(), target, label_smoothing=smoothing)

    def _with_penalty(self, loss: torch.Tensor) -> torch.Tensor:
        reg = self.config.regularization
        if reg.l1 or reg.l2:
            return loss + weight_penalty(self.model, l1=reg.l1, l2=reg.l2)
        return loss

    def _log_monitor(self, lr_used: float | None) -> None:
        """Log the monitor record of this step, if it was a monitor step (``lr_used``: the
        learning rate the step used, read only on monitor steps)."""
        if lr_used is None:
            return
        base = self.scheduler.base_lrs[0]
        record = self.monitor.end(lr_used / base if base > 0 else 1.0)
        if record is not None:
            self._log({"step": self.step, "epoch": self.epoch + 1, "monitor": record})

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """Mean cross-entropy and accuracy of the model (in eval mode) on ``x, y``."""
        if len(x) == 0:
            return float("nan"), float("nan")
        loss_sum, correct = 0.0, 0
        for part, logits in self._eval_logits(x):
            loss_sum += float(F.cross_entropy(logits, y[part], reduction="sum"))
            correct += int((logits.argmax(1) == y[part]).sum())
        return loss_sum / len(x), correct / len(x)

    def _eval_logits(self, x: Tensor) -> Iterator[tuple[slice, Tensor]]:
        """The model's float logits in eval mode on ``x``, batch by batch
        (``train.eval_batch_size``, at most 256 on CPU), each with the slice of ``x`` it covers;
        the model's training flag comes back afterwards."""
        was_training = self.model.training
        self.model.eval()
        bs = self.config.train.eval_batch_size
        if self.device.type == "cpu":  # eval-mode samples are independent: same results
            bs = min(bs, _CPU_EVAL_CHUNK)
        try:
            for i in range(0, len(x), bs):
                with self._autocast():
                    logits = self.model(self._layout(x[i:i + bs])).float()
                yield slice(i, i + bs), logits
        finally:
            self.model.train(was_training)

    # -- weight averaging and snapshots ------------------------------------------------------

    def _after_step(self) -> None:
        """The EMA update, and the snapshot where a cycle ends (step ``self.step - 1``)."""
        if isinstance(self.average, EMA):
            self.average.update()
        if self.step - 1 in self.snapshot_steps:
            index = self.snapshot_steps.index(self.step - 1) + 1
            snapshot = {"snapshot": index, "step": self.step,
                        "epoch": self.epoch + 1,
                        "model": {k: v.detach().to("cpu", copy=True)
                                  for k, v in self.model.state_dict().items()}}
            self.snapshots.append(snapshot)
            if self.run_dir is not None and self.config.train.checkpoint:
                self.run_dir.save_snapshot(index, snapshot)

    def _average_epoch_end(self) -> dict:
        """At the end of an epoch: the SWA update (from its start epoch on), the batch-norm
        recomputation (``buffers: recompute``), and the averaged model's validation metrics
        (``{}`` before its first update)."""
        if self.average is None:
            return {}
        if isinstance(self.average, SWA):
            self.average.update()
        if self.average.n_updates == 0:
            return {}
        loss, acc = self.evaluate_average(self.data.x_val, self.data.y_val)
        return {f"val_loss_{self.average_kind}": loss, f"val_accuracy_{self.average_kind}": acc}

    def _recompute_bn(self) -> None:
        """The averaged weights' batch-norm statistics, on the un-augmented training set in
        batches of ``train.batch_size`` (only where they are stale), with the global random
        state (dropout) left as it was."""
        average = self.average
        if average is None or not average.stale_bn:
            return
        x, size = self.data.x_train, self.config.train.batch_size
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            average.recompute_bn(self._layout(x[i:i + size]) for i in range(0, len(x), size))

    def evaluate_average(self, x: Tensor, y: Tensor) -> tuple[float, float]:
        """:meth:`evaluate` with the averaged weights swapped in (the live ones come back bit for
        bit afterwards)."""
        assert self.average is not None
        self._recompute_bn()
        with self.average.swapped():
            return self.evaluate(x, y)

    def _diverged(self, loss: float) -> bool:
        """The lecture's rule: stop once the loss is NaN or above factor x the initial loss."""
        factor = self.config.train.divergence_factor
        if self.initial_loss is None:
            self.initial_loss = loss
            self.monitor.check_initial_loss(loss)
        if not math.isfinite(loss):
            self.stop_reason = f"loss became {loss} at step {self.step}"
        elif loss > factor * self.initial_loss:
            self.stop_reason = (f"loss {loss:.4g} exceeded {factor:g} x the initial loss "
                                f"{self.initial_loss:.4g} at step {self.step}")
        self.diverged = self.stop_reason is not None
        return self.diverged

    def stop(self, reason: str) -> None:
        """Stop after the current epoch (for callbacks: early stopping, a pruned search
        trial); the reason lands in the summary's ``stop_reason``."""
        self.stop_reason = reason

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _autocast(self):
        if self.config.train.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    # -- the run directory ------------------------------------------------------------------

    def _log(self, record: dict) -> None:
        self.records.append(record)
        for sink in self.sinks:
            sink(record)
        if self.run_dir is not None:
            self.run_dir.append(record)

    def _diagnose_so_far(self) -> None:
        """Tell the user, once per change, when the curves start to look wrong. Mid-run,
        'underfitting' is left out: low accuracy is expected before training ends."""
        previous = self.diagnosis["label"] if self.diagnosis else "healthy"
        self.diagnosis = diagnose(self.records, stop_reason=self._divergence())
        label = self.diagnosis["label"]
        if (label not in (previous, "healthy", "underfitting") and self.epoch >= 2
                and not self.quiet):
            self.progress.message(f"  looks like {label}: {self.diagnosis['message']}")

    def _checkpoint(self, improved: bool) -> None:
        if self.run_dir is None or not self.config.train.checkpoint:
            return
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch, "step": self.step, "elapsed": self.elapsed,
            "initial_loss": self.initial_loss, "best": self.best,
            "config": self.config.model_dump(mode="json"),
            "warnings": self.monitor.state_dict(),
            **({"average": self.average.state_dict()} if self.average is not None else {}),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        }
        self.run_dir.save_checkpoint(state, best=improved)

    def _restore(self, run: RunDir) -> None:
        run.remove_temporary()
        ckpt = run.load_last(map_location=self.device)
        _check_same_config(ckpt.get("config"), self.config, run)
        try:
            self.model.load_state_dict(ckpt["model"])
            if self.finetune is not None:  # the optimizer's groups of that epoch
                self.finetune.at_epoch_end(ckpt["epoch"], self.optimizer, self.scheduler)
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            self.epoch, self.step, self.elapsed = ckpt["epoch"], ckpt["step"], ckpt["elapsed"]
            self.initial_loss, self.best = ckpt["initial_loss"], ckpt["best"]
            self.monitor.load_state_dict(ckpt["warnings"])
            if self.average is not None:
                self.average.load_state_dict(ckpt["average"])
            self.snapshots = [_load_snapshot(run, k, step + 1)
                              for k, step in enumerate(self.snapshot_steps, 1)
                              if step < self.step]
            torch.set_rng_state(ckpt["rng"]["torch"].cpu())
            if ckpt["rng"]["cuda"]:
                torch.cuda.set_rng_state_all([s.cpu() for s in ckpt["rng"]["cuda"]])
        except KeyError as exc:
            raise UserError(f"checkpoint {str(run.checkpoint_path('last'))!r} is not a gradwise "
                            f"training checkpoint (it lacks {exc})") from None
        except (RuntimeError, ValueError, TypeError, AttributeError, UserError) as exc:
            raise UserError(f"checkpoint {str(run.checkpoint_path('last'))!r} does not match "
                            f"this run's config ({_io.reason(exc)})") from None
        # drop what a killed process logged after its last checkpoint
        kept = [r for r in run.read_metrics() if r["step"] <= self.step]
        run.rewrite_metrics(kept)
        self.records = kept

    def _finish(self) -> dict:
        train_loss, train_acc = self.evaluate(self.data.x_train, self.data.y_train)
        val_loss, val_acc = self._last_val or self.evaluate(self.data.x_val, self.data.y_val)
        test_loss, test_acc = self._evaluate_test(self.evaluate)
        self.diagnosis = diagnose(self.records, stop_reason=self._divergence(),
                                  train_accuracy=train_acc, val_accuracy=val_acc)
        summary = {
            "train_loss": train_loss, "train_accuracy": train_acc,
            "val_loss": val_loss, "val_accuracy": val_acc,
            "test_loss": test_loss, "test_accuracy": test_acc,
            "best_epoch": self.best["epoch"], "best_val_accuracy": self.best["val_accuracy"],
            "epochs": self.epoch, "steps": self.step,
            "wall_seconds": round(self.elapsed, 3),
            "samples_per_second": round(self.step * self._batch() / max(self.elapsed, 1e-9), 1),
            "stopped_early": self.stop_reason is not None, "stop_reason": self.stop_reason,
            "device": str(self.device),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            **self._averaged_accuracy(),
            **self._alternatives(val_acc, test_loss, test_acc),
            **({"transfer": self.finetune.summary()} if self.finetune is not None else {}),
            "diagnosis": self.diagnosis,
            "warnings": self.monitor.warnings,
        }
        for sink in self.sinks:
            getattr(sink, "close", lambda: None)()
        if self.run_dir is not None:
            self.run_dir.write_summary(summary)
            self._write_report(self.run_dir)
        if self.stop_reason and not self.quiet:
            self.progress.message(f"stopped early: {self.stop_reason}")
        return summary

    def _divergence(self) -> str | None:
        return self.stop_reason if self.diverged else None

    def _write_report(self, run: RunDir) -> None:
        """report.html is derived from the files above; failing to write it loses nothing."""
        from ..report import build_report
        try:
            build_report(run.path)
        except UserError as exc:
            self.progress.message(f"report.html not written: {exc} "
                                  f"(retry with: gradwise report {self.out})")

    def _averaged_predictor(self) -> Callable[[Tensor], Tensor] | None:
        """The configured test-time averaging as ``x -> probabilities`` (None: none), tried on
        two training samples so that a bad setting fails before training, not after it."""
        cfg = self.config.evaluate
        if cfg.samples == 1 and not cfg.tta_flip and not cfg.tta_shift:
            return None
        batch = self.config.train.eval_batch_size
        if cfg.samples > 1:
            def predict(x):
                return mc_predict(self.model, self._layout(x), samples=cfg.samples,
                                  batch_size=batch)
        else:
            def predict(x):
                return tta_predict(self.model, self._layout(x), flip=cfg.tta_flip,
                                   shift=cfg.tta_shift, batch_size=batch)
        with torch.random.fork_rng(devices=[]):
            try:
                predict(self.data.x_train[:2])
            except UserError as exc:
                raise UserError(f"evaluate (samples={cfg.samples}, tta_flip={cfg.tta_flip}, "
                                f"tta_shift={cfg.tta_shift}): {exc}") from None
        return predict

    def _averaged_accuracy(self) -> dict:
        """Val and test accuracy with the configured test-time averaging, if any."""
        if self._predict is None:
            return {}
        result = {}
        for split in self._splits_to_score():
            x, y = getattr(self.data, f"x_{split}"), getattr(self.data, f"y_{split}")
            if len(x):
                accuracy = float((self._predict(x).argmax(1) == y).float().mean())
                result[f"{split}_accuracy_averaged"] = accuracy
        return result

    def _alternatives(self, val_acc: float, test_loss: float, test_acc: float) -> dict:
        """The averaged model's and the snapshot ensemble's val/test numbers beside the live
        ones, and which of them ``test_accuracy`` (and ``test_loss``) give: the one with the
        best validation accuracy (the test set chooses nothing); on a tie the first of live,
        average, snapshots."""
        if self.average is None and self.config.snapshots is None:
            return {}
        result: dict = {"test_loss_live": test_loss, "test_accuracy_live": test_acc}
        candidates = [("live", val_acc, test_loss, test_acc)]
        if self.average is not None:
            kind = self.average_kind
            result["average_updates"] = self.average.n_updates
            if self.average.n_updates:
                val_loss_avg, val_acc_avg = self.evaluate_average(self.data.x_val,
                                                                  self.data.y_val)
                test_loss_avg, test_acc_avg = self._evaluate_test(self.evaluate_average)
                result.update({f"val_loss_{kind}": val_loss_avg,
                               f"val_accuracy_{kind}": val_acc_avg,
                               f"test_loss_{kind}": test_loss_avg,
                               f"test_accuracy_{kind}": test_acc_avg})
                candidates.append((str(kind), val_acc_avg, test_loss_avg, test_acc_avg))
        if self.config.snapshots is not None:
            result.update(self._snapshot_summary())
            ensemble = result.get("snapshot_ensemble")
            if ensemble is not None:
                candidates.append(("snapshots", ensemble["val_accuracy"],
                                   ensemble.get("test_loss", math.nan),
                                   ensemble.get("test_accuracy", math.nan)))
        chosen = candidates[0]
        for candidate in candidates[1:]:
            if candidate[1] > chosen[1]:
                chosen = candidate
        result.update({"test_loss": chosen[2], "test_accuracy": chosen[3],
                       "test_accuracy_from": chosen[0]})
        return result

    def _snapshot_summary(self) -> dict:
        """Each snapshot's val/test accuracy (``snapshots``), and the ensemble of the last
        ``snapshots.keep`` (``snapshot_ensemble``): the mean of their softmax outputs,
        ``p(y | x) = (1 / m) sum_k softmax(f_k(x))``, with its loss ``-log p(y | x)``."""
        assert self.config.snapshots is not None
        members = [s["snapshot"] for s in self.snapshots[-self.config.snapshots.members:]]
        rows: list[dict] = []
        probabilities: dict[str, list[Tensor]] = {"val": [], "test": []}
        for snapshot in self.snapshots:
            row = {k: snapshot[k] for k in ("snapshot", "step", "epoch")}
            with self._weights(snapshot["model"]):
                for split in self._splits_to_score():
                    x, y = getattr(self.data, f"x_{split}"), getattr(self.data, f"y_{split}")
                    p = self.probabilities(x)
                    row[f"{split}_accuracy"] = probability_scores(p, y)[1]
                    if snapshot["snapshot"] in members:
                        probabilities[split].append(p)
            rows.append(row)
        result: dict = {"snapshots": rows}
        if members:
            ensemble: dict = {"members": members}
            for split in self._splits_to_score():
                mean = torch.stack(probabilities[split]).mean(dim=0)
                y = getattr(self.data, f"y_{split}")
                loss, accuracy = probability_scores(mean, y)
                ensemble[f"{split}_loss"], ensemble[f"{split}_accuracy"] = loss, accuracy
            if len(members) > 1 and len(self.data.y_test) and self.config.evaluate.test:
                ensemble["test_disagreement"] = disagreement(probabilities["test"])
            result["snapshot_ensemble"] = ensemble
        return result

    @contextlib.contextmanager
    def _weights(self, state: dict[str, Tensor]) -> Iterator[None]:
        """The model holds ``state`` inside the block, its own weights (bit for bit) after."""
        own = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(state)
        try:
            yield
        finally:
            self.model.load_state_dict(own)

    @torch.no_grad()
    def probabilities(self, x: Tensor) -> Tensor:
        """The model's softmax outputs (eval mode) on ``x``, an ``(N, classes)`` tensor."""
        parts = [torch.zeros(0, self.data.num_classes, device=x.device)]
        parts += [torch.softmax(logits, dim=1) for _, logits in self._eval_logits(x)]
        return torch.cat(parts)

    def _splits_to_score(self) -> tuple[str, ...]:
        """The splits the final evaluation scores: val, and test unless ``evaluate.test`` is
        false (a search trial's runs never touch the test set)."""
        return ("val", "test") if self.config.evaluate.test else ("val",)

    def _evaluate_test(self, evaluate: Callable[[Tensor, Tensor], tuple[float, float]]
                       ) -> tuple[float, float]:
        """``evaluate`` on the test split, or NaNs where ``evaluate.test`` is false."""
        if not self.config.evaluate.test:
            return math.nan, math.nan
        return evaluate(self.data.x_test, self.data.y_test)

    def _batch(self) -> int:
        return len(self.data.x_train) if self.full_batch else self.config.train.batch_size


def check(config: Config | dict | str | Path) -> Config:
    """Everything the Trainer checks before training (data, model, optimizer, schedule,
    augmentation, evaluation), without training or writing anything and leaving the global
    random state as it was; returns the validated Config."""
    with torch.random.fork_rng(devices=[]):
        return Trainer(config, out=None, quiet=True).config


def fit(config: Config | dict | str | Path, out: str | Path | None = None, *,
        resume: bool = False, quiet: bool = False) -> dict:
    """Train ``config`` (a Config, a dict or a YAML path) into the run directory ``out``;
    return the summary. The Python equivalent of ``gradwise train``."""
    return Trainer(config, out, quiet=quiet).fit(resume=resume)


def _build_optimizer(model: nn.Module, cfg: Config,
                     multipliers: Callable[[str], float] | None = None) -> torch.optim.Optimizer:
    ocfg = cfg.optimizer
    cls = gopt.registry.get(ocfg.name, trainable=True).cls
    options = ocfg.options()
    accepted = [p for p in inspect.signature(cls.__init__).parameters
                if p not in ("self", "params", "lr", "weight_decay")]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise UserError(f"optimizer {ocfg.name!r} has no option {unknown[0]!r}; accepted: "
                        f"lr, weight_decay, decay_norm_and_bias, {', '.join(accepted)}")
    groups = gopt.param_groups(model, weight_decay=ocfg.weight_decay,
                               decay_norm_and_bias=ocfg.decay_norm_and_bias,
                               lr=ocfg.lr if multipliers else None, lr_multipliers=multipliers)
    for group in groups:
        group.pop("name")
    if isinstance(options.get("betas"), list):
        options["betas"] = tuple(options["betas"])
    options["lr"] = ocfg.lr  # not an option (refused above): the config's own field
    try:
        return cls(groups, **options)
    except (TypeError, ValueError) as exc:
        raise UserError(f"optimizer {ocfg.name!r}: {exc}") from None


def _build_average(model: nn.Module, cfg: Config) -> EMA | SWA | None:
    """The configured weight average of ``model`` (None: none)."""
    average = cfg.average
    if average is None or average.kind is None:
        return None
    if average.ema is not None:
        ema = average.ema
        return EMA(model, ema.decay, warmup=ema.warmup, gamma=ema.gamma, power=ema.power,
                   buffers=average.buffer_mode)
    assert average.swa is not None
    # one update() call per epoch; the first start_epoch - 1 are counted, not averaged
    return SWA(model, start=average.swa.start_epoch - 1, buffers=average.buffer_mode)


def _build_augment(cfg: Config, data: Splits, full_batch: bool) -> Augment | None:
    if not cfg.augment:
        return None
    if full_batch:
        raise UserError("augment needs minibatch training; full-batch training (train.full_batch,"
                        " the default for lbfgs) sees the same data at every step")
    raw = data.x_train * data.std + data.mean
    low, high = (float(raw.min()), float(raw.max())) if len(raw) else (0.0, 0.0)
    return Augment(cfg.augment, input_shape=data.input_shape, num_classes=data.num_classes,
                   mean=data.mean, std=data.std, value_range=(low, high) if low < high else None)


def _check_same_config(saved: dict | None, config: Config, run: RunDir) -> None:
    """A resumed run must go on with the config it started with (a new seed would re-split
    the data under the trained model); checkpoints older than this check hold none."""
    if saved is None:
        return
    if not isinstance(saved, dict):
        raise UserError(f"checkpoint {str(run.checkpoint_path('last'))!r} is not a gradwise "
                        f"training checkpoint (its config is a {type(saved).__name__})")
    now, then = flatten(config.model_dump(mode="json")), flatten(saved)
    changed = sorted(k for k in now.keys() | then.keys() if now.get(k) != then.get(k))
    if changed:
        shown = ", ".join(f"{k}: {then.get(k)!r} -> {now.get(k)!r}" for k in changed[:5])
        raise UserError(f"{str(run.config_path)!r} was changed after the run started ({shown});"
                        " --resume continues a run with the config it started with: restore "
                        "it, or start a new run with --out")


def _snapshot_steps(cfg: Config, total_steps: int) -> list[int]:
    """The steps after which the snapshots are taken (none without ``snapshots:``)."""
    if cfg.snapshots is None:
        return []
    try:
        return snapshot_steps(total_steps, cfg.snapshots.cycles)
    except UserError as exc:
        raise UserError(f"snapshots.cycles={cfg.snapshots.cycles}: {exc}") from None


def _load_snapshot(run: RunDir, index: int, step: int) -> dict:
    """Snapshot ``index`` of a run being resumed, checked to be the one taken at ``step``."""
    path = run.checkpoint_path(f"snapshot-{index}")
    if not path.is_file():
        raise UserError(f"{str(path)!r} is missing: the run took snapshot {index} before its "
                        "last checkpoint, and --resume needs it for the snapshot ensemble")
    state = run.load_checkpoint(f"snapshot-{index}", map_location="cpu")
    if state.get("step") != step or not isinstance(state.get("model"), dict):
        raise UserError(f"{str(path)!r} is not snapshot {index} of this run (expected the "
                        f"weights after step {step})")
    return state


def _grad_norm(model: nn.Module) -> float:
    """The L2 norm of all gradients together."""
    norms = [p.grad.detach().norm() for p in model.parameters() if p.grad is not None]
    return float(torch.stack(norms).norm()) if norms else 0.0


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested, but CUDA is not available here; "
                        "use device: auto or cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device {name!r} requested, but this torch has no MPS (Apple GPU) "
                        "support here; use device: auto or cpu")
    return device


def _epoch_generator(seed: int, epoch: int, device="cpu", stream: int = 0) -> torch.Generator:
    """The generator of one epoch's random stream (0: batch order, 1: augmentation)."""
    return torch.Generator(device).manual_seed(seed * 1_000_003 + epoch + stream * 2**48)
