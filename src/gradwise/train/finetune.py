"""Transfer learning in the Trainer: ``model.init`` / ``model.weights`` and ``transfer:``.

:class:`Finetune` loads the weights into the freshly built model (:func:`load_weights`), runs
``strategy: auto`` (:func:`gradwise.transfer.measure`, then the 2x2 table), freezes, gives the
optimizer's learning-rate multipliers, and for LP-FT unfreezes at the end of epoch
``lp_ft.epochs``: the newly trainable parameters join the optimizer as new param groups at
``lr * lr_mult`` (scheduled like the others). The switch is a function of the epoch alone, so
``--resume`` repeats it before loading a checkpoint written after it, and a resumed run is the
uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .. import optim as gopt
from .. import transfer as tl
from ..config import Config, TransferConfig
from ..data import Splits
from ..errors import UserError
from ..nn import build_model
from ..nn.hub import hub_weights
from ..schedules import LRScheduler

#: lr_mult when none is given: the lecture's "about 1/10 of the original learning rate".
DEFAULT_LR_MULT = 0.1


class Finetune:
    """The transfer set-up of one run (see the module docstring); :meth:`create` gives None
    for a run that starts from scratch."""

    def __init__(self, model: nn.Module, config: Config, data: Splits):
        self.model = model
        self.config = config
        cfg = config.transfer
        head = cfg.head if cfg is not None else "keep"
        if config.model.weights is not None:
            source: Any
            source, self.source = hub_weights(config.model.name, config.model.weights)
        else:
            assert config.model.init is not None
            source = self.source = config.model.init
        try:
            self.report = tl.load_weights(model, source, head=head, min_fraction=(
                cfg.min_fraction if cfg is not None else TransferConfig().min_fraction))
        except UserError as exc:
            raise UserError(f"model.{'weights' if config.model.weights else 'init'}: "
                            f"{exc}") from None
        self.settings: TransferConfig | None = cfg
        self.choice: dict[str, Any] | None = None
        if cfg is not None and cfg.strategy == "auto":
            self.choice, self.settings = self._auto(cfg, data)
        self.switched = False
        self.lp_ft_epochs = (self.settings.lp_ft.epochs
                             if self.settings is not None and self.settings.lp_ft else None)
        self.frozen: dict[str, list[str]] = {"trainable": [], "frozen": [], "frozen_bn": []}
        self._trainable = self._final_trainable()  # checks the layer names before training
        if self.settings is not None:
            self._freeze(tl.head_name(model) if self.lp_ft_epochs else self._trainable)

    @classmethod
    def create(cls, model: nn.Module, config: Config, data: Splits) -> Finetune | None:
        """The set-up of ``config``, or None where it names no weights to start from."""
        if config.model.init is None and config.model.weights is None:
            return None
        return cls(model, config, data)

    # -- settings ---------------------------------------------------------------------------

    def _auto(self, cfg: TransferConfig, data: Splits) -> tuple[dict[str, Any], TransferConfig]:
        """Measure the data and the similarity, pick the table's cell, and its settings."""
        config = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            random_init = build_model(config.model.name, data.input_shape, data.num_classes,
                                      **config.model.options()).to(data.x_train.device)
        measured = tl.measure(self.model, random_init, data.x_train, data.y_train,
                              seed=config.seed)
        choice = {**tl.strategy(measured["examples_per_class"], measured["similar"]),
                  **measured}
        n_blocks = len(tl.blocks(self.model)) - 1
        trainable = choice["trainable"]
        freeze: Any = ("backbone" if trainable == ("head",) else "none" if trainable is None
                       else {"all-but-last": min(int(trainable), n_blocks)})
        epochs = config.train.epochs
        lp_ft = ({"epochs": max(1, epochs // 2)} if choice["lp_ft"] and epochs >= 2 else None)
        factor = choice["lr_factor"]
        settings = TransferConfig(
            freeze=freeze, head=cfg.head, bn=cfg.bn, lp_ft=lp_ft, min_fraction=cfg.min_fraction,
            lr_mult=DEFAULT_LR_MULT if freeze != "backbone" else None,
            discriminative=(factor * DEFAULT_LR_MULT if factor and factor * DEFAULT_LR_MULT > 1
                            else None))
        choice["settings"] = settings.model_dump(exclude={"strategy", "min_fraction"})
        choice["table"] = tl.table_text(choice)
        return choice, settings

    def _final_trainable(self) -> str | int | Callable[[str], bool] | tuple[str, ...]:
        """:func:`gradwise.transfer.freeze`'s ``trainable`` for the fine-tuning phase."""
        freeze = self.settings.freeze if self.settings is not None else "none"
        head = tl.head_name(self.model)
        if freeze in (None, "backbone"):
            if head is None:
                raise UserError(f"transfer.freeze: backbone needs a head; "
                                f"{type(self.model).__name__} has no child named head and no "
                                "Linear layer")
            return (head,)
        if freeze == "none":
            return lambda name: True
        if isinstance(freeze, dict):
            k = freeze["all-but-last"]
            n = len([b for b in tl.blocks(self.model) if b != head])
            if k > n:
                raise UserError(f"transfer.freeze: all-but-last: {k} is more than the model's "
                                f"{n} blocks before its head ({', '.join(tl.blocks(self.model))})"
                                f"; give 0 to {n}, or freeze: none")
            return k
        assert isinstance(freeze, list)
        names = [n for n, _ in self.model.named_parameters()]
        unknown = [f for f in freeze if not any(n == f or n.startswith(f + ".") for n in names)]
        if unknown:
            raise UserError(f"transfer.freeze: {', '.join(map(repr, unknown))} names no layer of "
                            f"the model; its blocks are {', '.join(tl.blocks(self.model))}")
        return lambda name: not any(name == f or name.startswith(f + ".") for f in freeze)

    def _freeze(self, trainable: Any) -> None:
        assert self.settings is not None
        bn = "eval" if self.settings.bn == "frozen" else "train"
        self.frozen = tl.freeze(self.model, trainable, bn=bn)

    def multipliers(self) -> Callable[[str], float] | None:
        """The learning-rate multiplier of each parameter name (None: all 1)."""
        if self.settings is None:
            return None
        lr_mult = self.settings.lr_mult or DEFAULT_LR_MULT
        return tl.lr_multipliers(self.model, lr_mult, self.settings.discriminative or 1.0)

    # -- LP-FT ------------------------------------------------------------------------------

    def at_epoch_end(self, epoch: int, optimizer: torch.optim.Optimizer,
                     scheduler: LRScheduler) -> bool:
        """LP-FT's switch, once ``epoch`` reaches ``lp_ft.epochs``: unfreeze to the fine-tuning
        phase and add the newly trainable parameters to ``optimizer`` at their multipliers;
        True when it happened now."""
        if self.lp_ft_epochs is None or self.switched or epoch < self.lp_ft_epochs:
            return False
        self.switched = True
        self._freeze(self._trainable)
        held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        ocfg = self.config.optimizer
        groups = gopt.param_groups(self.model, weight_decay=ocfg.weight_decay, lr=ocfg.lr,
                                   lr_multipliers=self.multipliers(),
                                   decay_norm_and_bias=ocfg.decay_norm_and_bias)
        base_lrs = list(scheduler.base_lrs)
        for group in groups:
            params = [p for p in group["params"] if id(p) not in held]
            if params:
                group.pop("name")
                optimizer.add_param_group({**group, "params": params,
                                           "initial_lr": group["lr"]})
                base_lrs.append(group["lr"])
        scheduler.load_state_dict({"step_count": scheduler.step_count, "base_lrs": base_lrs})
        return True

    # -- what the run reports ---------------------------------------------------------------

    def text(self) -> str:
        """The load report (and the strategy table) as printed at the start of training."""
        r = self.report
        lines = [f"weights from {self.source}: loaded {len(r['loaded'])} tensors "
                 f"({r['fraction']:.1%} of the parameters)"]
        for key in ("adapted", "reinitialised"):
            if r[key]:
                lines.append(f"  {key}: {_names(r[key])}")
        if r["skipped"]:
            shown = "; ".join(f"{k} ({v})" for k, v in list(r["skipped"].items())[:4])
            more = f"; ... {len(r['skipped']) - 4} more" if len(r["skipped"]) > 4 else ""
            lines.append(f"  skipped {len(r['skipped'])}: {shown}{more}")
        if self.choice is not None:
            lines.append("strategy: auto")
            lines += ["  " + line for line in self.choice["table"].splitlines()]
        if self.settings is not None:
            frozen = len(self.frozen["frozen"])
            lines.append(f"  {frozen} of {frozen + len(self.frozen['trainable'])} parameter "
                         f"tensors frozen" + (f" for the first {self.lp_ft_epochs} epochs "
                                               "(LP-FT)" if self.lp_ft_epochs else ""))
        return "\n".join(lines)

    def summary(self) -> dict[str, Any]:
        """summary.json's ``transfer`` entry."""
        s = self.settings
        return {"source": self.source, "loaded": self.report["loaded"],
                "adapted": self.report["adapted"], "skipped": self.report["skipped"],
                "reinitialised": self.report["reinitialised"],
                "fraction_loaded": self.report["fraction"],
                "settings": s.model_dump() if s is not None else None,
                "strategy": self.choice,
                "frozen": self.frozen["frozen"], "frozen_bn": self.frozen["frozen_bn"]}


def _names(names: list[str], limit: int = 6) -> str:
    return ", ".join(names[:limit]) + (f", ... ({len(names)} in all)" if len(names) > limit
                                       else "")
