"""The training config: YAML on disk, pydantic models in memory.

A config names the data, the model, the optimizer, the schedule and the training loop::

    name: mnist1d-cnn
    seed: 0
    data: mnist1d                  # or {source: npz:PATH, val_fraction: 0.1}
    model: {name: cnn1d, channels: [64, 64, 128, 128, 256]}
    optimizer: {name: adamw, lr: 3.0e-3, weight_decay: 0.05}
    schedule: {name: onecycle}     # total_steps defaults to the length of training
    train: {epochs: 60, batch_size: 128}
    regularization: {l2: 0.0, l1: 0.0, label_smoothing: 0.0}
    augment: {translate: {max_shift: 3}, mixup: {alpha: 0.2}}
    evaluate: {samples: 1, tta_flip: false, tta_shift: 0}
    average: {ema: {decay: 0.999}}  # or {swa: {start_epoch: 40, lr: 0.01}}; null: none
    transfer: {freeze: backbone}   # with model.init: PATH; see TransferConfig
    distributed: {zero: false}     # several processes: backend, zero, sync_bn

Model, optimizer and schedule options beyond ``name`` pass through to
:func:`gradwise.nn.build_model`, the optimizer class and
:func:`gradwise.schedules.build_schedule`, which reject unknown ones by name.
"""

from __future__ import annotations

import math
import re
import reprlib
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
    field_validator,
    model_validator,
)

from ._io import reason
from .errors import UserError
from .optim import registry


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("expected a number, not true/false")
    return value


#: Strict value types: a bool is not an int, 5.0 is not an int, inf and NaN are not numbers.
Int = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]
Float = Annotated[float, BeforeValidator(_not_bool), Field(allow_inf_nan=False)]
#: Seeds feed torch's and numpy's generators, which take 32-bit seeds at most.
MAX_SEED = 2**32 - 1
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class _Open(BaseModel):
    """A section whose extra keys are options passed through to a builder."""

    model_config = ConfigDict(extra="allow")

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class DataConfig(_Strict):
    source: str = Field("digits", description="digits, mnist1d, npz:PATH, folder:PATH, csv:PATH")
    val_fraction: Float = Field(0.1, gt=0, lt=1)
    normalize: Bool = True
    label_column: str | None = None
    train_size: Int | None = Field(None, ge=1, description="train on a class-balanced subset")
    classes: list[Int] | None = Field(None, min_length=2, description="keep these classes, "
                                      "relabelled 0..K-1 in the order given")
    per_class: Int | None = Field(None, ge=1, description="train on a seeded subsample of N "
                                  "examples of each class")
    split_seed: Int | None = Field(None, ge=0, le=MAX_SEED, description="the seed of the "
                                   "carved validation split and the subsets (default: seed)")

    @field_validator("classes")
    @classmethod
    def _distinct(cls, classes: list[int] | None) -> list[int] | None:
        if classes is not None:
            repeated = sorted({c for c in classes if classes.count(c) > 1})
            if repeated:
                raise ValueError(f"classes {repeated} are given twice; give each class once")
            if min(classes) < 0:
                raise ValueError("class ids are integers >= 0")
        return classes

    @model_validator(mode="after")
    def _one_subsample(self):
        if self.per_class is not None and self.train_size is not None:
            raise ValueError("give per_class or train_size, not both")
        return self


#: Model names whose weights come from another library's cache (``model.weights``).
HUB_PREFIXES = ("torchvision:", "timm:")


class ModelConfig(_Open):
    name: str = "mlp"
    init: str | None = Field(None, description="start from weights: a gradwise run folder, a "
                             "checkpoint or a state dict file (see gradwise.transfer)")
    weights: str | None = Field(None, description="pretrained weights of a torchvision:NAME or "
                                "timm:NAME model from the local cache, e.g. DEFAULT")

    @model_validator(mode="after")
    def _one_source(self):
        if self.weights is not None and not self.name.startswith(HUB_PREFIXES):
            raise ValueError(f"weights={self.weights!r} needs a torchvision:NAME or timm:NAME "
                             f"model, not {self.name!r}; for a gradwise model give init: PATH")
        if self.weights is not None and self.init is not None:
            raise ValueError("give init or weights, not both")
        return self


class OptimizerConfig(_Open):
    name: str = "sgd"
    lr: Float = Field(0.01, ge=0)
    weight_decay: Float = Field(0.0, ge=0)
    decay_norm_and_bias: Bool = False

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        accepted = registry.names(trainable=True)
        if name.lower() not in accepted:
            raise ValueError(f"unknown optimizer {name!r}; accepted: {', '.join(accepted)}")
        return name.lower()


class ScheduleConfig(_Open):
    name: str = "constant"
    warmup_epochs: Float = Field(0.0, ge=0)


class TrainConfig(_Strict):
    epochs: Int = Field(10, ge=1)
    max_steps: Int | None = Field(None, ge=1)
    batch_size: Int = Field(128, ge=1)
    eval_batch_size: Int = Field(1024, ge=1)
    grad_clip: Float | None = Field(None, gt=0)
    precision: Literal["fp32", "bf16"] = "fp32"
    full_batch: Bool | None = Field(None, description="default: true for lbfgs, else false")
    divergence_factor: Float = Field(3.0, gt=1)
    log_every: Int = Field(10, ge=1)
    monitor_every: Int = Field(50, ge=0, description="update ratios etc. every N steps; 0: off")
    checkpoint: Bool = True
    channels_last: Bool = Field(True, description="NHWC layout for image models (faster convs)")


class RegularizationConfig(_Strict):
    """Loss terms: ``l1 * sum|w| + l2 / 2 * sum w^2`` over weights, and label smoothing."""

    l1: Float = Field(0.0, ge=0)
    l2: Float = Field(0.0, ge=0)
    label_smoothing: Float = Field(0.0, ge=0, lt=1)


class EvaluateConfig(_Strict):
    """Test-time averaging of the final evaluation (reported beside the plain numbers)."""

    samples: Int = Field(1, ge=1, le=1000, description="stochastic passes averaged (MC dropout, "
                                              "fractional pooling draws)")
    tta_flip: Bool = False
    tta_shift: Int = Field(0, ge=0)
    test: Bool = Field(True, description="evaluate the test split at the end; false leaves "
                                         "the test numbers NaN (a search trial, which must "
                                         "not look at it)")


class EMAConfig(_Strict):
    """An exponential moving average of the weights, updated after each optimizer step
    (:class:`gradwise.ensemble.EMA`)."""

    decay: Float = Field(0.999, ge=0, lt=1)
    warmup: Bool = Field(False, description="decay warmup min(decay, 1 - (1 + t/gamma)^-power)")
    gamma: Float = Field(1.0, gt=0)
    power: Float = Field(0.75, gt=0)


class SWAConfig(_Strict):
    """The uniform average of the weights at the end of epochs ``start_epoch`` .. the last
    (:class:`gradwise.ensemble.SWA`), with the constant learning rate ``lr`` from the first step
    of epoch ``start_epoch`` on when given."""

    start_epoch: Int = Field(ge=1)
    lr: Float | None = Field(None, gt=0)


class AverageConfig(_Strict):
    """Weight averaging: ``ema`` or ``swa`` (at most one), and what happens to the buffers
    (batch-norm statistics): ``average``, ``copy`` or ``recompute`` (default: ``average`` for
    EMA, ``recompute`` for SWA)."""

    ema: EMAConfig | None = None
    swa: SWAConfig | None = None
    buffers: Literal["average", "copy", "recompute"] | None = None

    @model_validator(mode="after")
    def _one_kind(self):
        if self.ema is not None and self.swa is not None:
            raise ValueError("give either ema or swa, not both")
        if self.buffers is not None and self.ema is None and self.swa is None:
            raise ValueError("buffers is set but neither ema nor swa is given")
        return self

    @property
    def kind(self) -> Literal["ema", "swa"] | None:
        """``"ema"``, ``"swa"`` or None (no averaging)."""
        return "ema" if self.ema is not None else "swa" if self.swa is not None else None

    @property
    def buffer_mode(self) -> str:
        """The buffers choice, its default filled in."""
        return self.buffers or ("recompute" if self.swa is not None else "average")


class SnapshotConfig(_Strict):
    """A snapshot ensemble (Huang et al. 2017): the learning rate follows ``cycles`` cosine
    cycles of ``P = ceil(total_steps / cycles)`` steps from ``optimizer.lr`` down to 0
    (``cosine_restarts`` with ``period=P``), the weights are saved at the end of each cycle
    (:func:`gradwise.ensemble.snapshot_steps`), and the softmax outputs of the last ``keep``
    snapshots are averaged (default: all of them)."""

    cycles: Int = Field(ge=2)
    keep: Int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _keep_within_cycles(self):
        if self.keep is not None and self.keep > self.cycles:
            raise ValueError(f"keep={self.keep} is more snapshots than there are cycles "
                             f"(cycles={self.cycles}); give keep <= cycles")
        return self

    @property
    def members(self) -> int:
        """How many snapshots the ensemble averages (``keep``, default all)."""
        return self.keep if self.keep is not None else self.cycles


FREEZE_WORDS = ("backbone", "none")


class LPFTConfig(_Strict):
    """LP-FT (Kumar et al. 2022): train only the head for ``epochs`` epochs, then unfreeze."""

    epochs: Int = Field(ge=1)


class TransferConfig(_Strict):
    """How to train from pretrained weights (``model.init`` or ``model.weights``); see
    :mod:`gradwise.transfer` and docs/transfer.md::

        transfer: {freeze: backbone, head: reinit, bn: frozen}        # a linear probe
        transfer: {freeze: {all-but-last: 2}, lr_mult: 0.1}            # fine-tune the top
        transfer: {freeze: none, lr_mult: 0.1, lp_ft: {epochs: 5}}     # LP-FT
        transfer: {strategy: auto}                                     # the 2x2 table decides

    ``freeze``: ``backbone`` (all but the head), ``none``, ``{all-but-last: K}`` (the head and
    the last K blocks train) or a list of module names to freeze. ``lr_mult``: the pretrained
    part's learning rate over ``optimizer.lr`` (default 0.1, the lecture's 1/10);
    ``discriminative``: F, the blocks' rates decay geometrically from ``lr * lr_mult`` (the block
    next to the head) to ``lr * lr_mult / F`` (the first block)."""

    strategy: Literal["manual", "auto"] = "manual"
    freeze: str | dict[str, int] | list[str] | None = None
    head: Literal["reinit", "keep"] = "reinit"
    bn: Literal["frozen", "train"] = "frozen"
    lr_mult: Float | None = Field(None, gt=0)
    discriminative: Float | None = Field(None, ge=1)
    lp_ft: LPFTConfig | None = None
    min_fraction: Float = Field(0.5, ge=0, le=1, description="loading a smaller share of the "
                                "model's parameters is an error")

    @field_validator("freeze", mode="before")
    @classmethod
    def _freeze(cls, value: Any) -> Any:
        accepted = ("accepted: backbone, none, {all-but-last: K} with K >= 0, or a list of "
                    "module names to freeze")
        if value is None or value in FREEZE_WORDS:
            return value
        if isinstance(value, dict):
            k = value.get("all-but-last")
            if (list(value) != ["all-but-last"] or not isinstance(k, int) or isinstance(k, bool)
                    or k < 0):
                raise ValueError(f"freeze {value!r} is invalid; {accepted}")
            return value
        if (isinstance(value, list) and value
                and all(isinstance(v, str) and v for v in value)):
            return value
        raise ValueError(f"freeze {value!r} is invalid; {accepted}")

    @model_validator(mode="after")
    def _auto_decides(self):
        if self.strategy == "auto":
            given = [k for k in ("freeze", "lr_mult", "discriminative", "lp_ft")
                     if getattr(self, k) is not None]
            if given:
                raise ValueError(f"strategy: auto chooses {', '.join(given)} from the data; "
                                 "drop them or set strategy: manual")
        if self.lp_ft is not None and self.freeze in (None, "backbone"):
            raise ValueError("lp_ft trains the head, then unfreezes what freeze leaves "
                             "trainable; with freeze: backbone nothing would be unfrozen: give "
                             "freeze: none or {all-but-last: K}")
        return self


class DistributedConfig(_Strict):
    """Data-parallel training on several processes (``torchrun`` or ``gradwise train --nproc``;
    see :mod:`gradwise.train.distributed`); no effect in one process."""

    backend: Literal["auto", "gloo", "nccl"] = Field("auto", description="auto: nccl on CUDA, "
                                                     "gloo on CPU")
    zero: Bool = Field(False, description="shard the optimizer state across processes "
                                          "(torch's ZeroRedundancyOptimizer)")
    sync_bn: Bool = Field(False, description="batch norm over the global batch (CUDA only)")


class Config(_Strict):
    name: str | None = None
    seed: Int = Field(0, ge=0, le=MAX_SEED)
    device: str = "auto"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    train: TrainConfig = TrainConfig()
    regularization: RegularizationConfig = RegularizationConfig()
    augment: dict[str, dict[str, Any] | None] = Field(
        default_factory=dict, description="op name -> options; see gradwise.augment")
    evaluate: EvaluateConfig = EvaluateConfig()
    average: AverageConfig | None = Field(None, description="weight averaging (EMA or SWA)")
    snapshots: SnapshotConfig | None = Field(None, description="a snapshot ensemble")
    transfer: TransferConfig | None = Field(None, description="freezing, learning-rate "
                                            "multipliers, LP-FT or strategy: auto for "
                                            "pretrained weights")
    distributed: DistributedConfig | None = Field(None, description="data-parallel settings")

    @field_validator("data", mode="before")
    @classmethod
    def _data_shorthand(cls, value):
        return {"source": value} if isinstance(value, str) else value

    @field_validator("model", "optimizer", "schedule", mode="before")
    @classmethod
    def _name_shorthand(cls, value):
        return {"name": value} if isinstance(value, str) else value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError(f"unknown device {value!r}; accepted: auto, cpu, cuda, cuda:N, mps")
        return value

    @model_validator(mode="after")
    def _warmup_within_training(self):
        if self.schedule.warmup_epochs > self.train.epochs:
            raise ValueError(f"schedule.warmup_epochs={self.schedule.warmup_epochs:g} is longer "
                             f"than training (train.epochs={self.train.epochs}); give at most "
                             f"train.epochs")
        return self

    @model_validator(mode="after")
    def _swa_within_training(self):
        swa = self.average.swa if self.average is not None else None
        if swa is None:
            return self
        if swa.start_epoch > self.train.epochs:
            raise ValueError(f"average.swa.start_epoch={swa.start_epoch} is after the last epoch "
                             f"(train.epochs={self.train.epochs}); give at most train.epochs")
        if swa.lr is not None and self.optimizer.lr == 0:
            raise ValueError("average.swa.lr is a factor of optimizer.lr, which is 0; give "
                             "optimizer.lr > 0 or leave average.swa.lr null")
        return self

    @model_validator(mode="after")
    def _snapshots_own_schedule(self):
        snapshots = self.snapshots
        if snapshots is None:
            return self
        if snapshots.cycles > self.train.epochs:
            raise ValueError(f"snapshots.cycles={snapshots.cycles} is more cycles than epochs "
                             f"(train.epochs={self.train.epochs}); give at most train.epochs")
        schedule = self.schedule
        if schedule.name != "constant" or schedule.options() or schedule.warmup_epochs:
            raise ValueError(f"snapshots runs its own cosine cycles from the first step, so "
                             f"schedule {schedule.name!r} (warmup_epochs="
                             f"{schedule.warmup_epochs:g}) has no place beside it; leave "
                             f"schedule out")
        if self.average is not None and self.average.swa is not None \
                and self.average.swa.lr is not None:
            raise ValueError("snapshots and average.swa.lr both set the learning rate; drop "
                             "one (SWA without lr averages along the snapshot cycles)")
        return self

    @model_validator(mode="after")
    def _transfer_needs_weights(self):
        transfer = self.transfer
        if transfer is None:
            return self
        if self.model.init is None and self.model.weights is None:
            raise ValueError("transfer: needs pretrained weights: give model.init (a run "
                             "folder, checkpoint or state dict) or model.weights")
        if transfer.lp_ft is not None and transfer.lp_ft.epochs >= self.train.epochs:
            raise ValueError(f"transfer.lp_ft.epochs={transfer.lp_ft.epochs} leaves no epoch "
                             f"to fine-tune in (train.epochs={self.train.epochs}); give fewer")
        return self

    @model_validator(mode="after")
    def _full_batch_default(self):
        if self.train.full_batch is None:
            self.train.full_batch = registry.get(self.optimizer.name).full_batch
        return self


def load_config(source: str | Path | dict | Config | None = None,
                overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """A validated Config from a YAML path, a dict or a Config, with ``key.path=value``
    overrides applied (values parsed as YAML: ``train.epochs=5``, ``data=npz:x.npz``)."""
    if isinstance(source, Config):
        raw = source.model_dump()
    elif isinstance(source, dict):
        raw = dict(source)
    elif source is None:
        raw = {}
    else:
        raw = read_yaml(Path(source))
    return validate(apply_overrides(raw, overrides))


def validate(raw: dict) -> Config:
    """The Config of a raw mapping; every problem is named in one UserError."""
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise UserError(_explain(exc)) from None
    except RecursionError:
        raise UserError("invalid config: a value is nested too deeply") from None


def read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"config file {str(path)!r} not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read config file {str(path)!r}: {reason(exc)}; expected a "
                        "UTF-8 YAML file") from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise UserError(f"config file {str(path)!r} is not valid YAML: "
                        f"{reason(exc)}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserError(f"config file {str(path)!r} must hold a mapping of keys, "
                        f"not a {type(raw).__name__}")
    return raw


def dump(config: Config) -> str:
    return yaml.safe_dump(config.model_dump(), sort_keys=False)


# -- dotted keys: the one parser and writer ------------------------------------------------

#: Sections a config may give as a plain string, and the key that string stands for
#: (``optimizer: adamw`` means ``optimizer: {name: adamw}``).
SHORTHANDS = {"data": "source", "model": "name", "optimizer": "name", "schedule": "name"}


def split_key(key: str, where: str = "config") -> tuple[str, ...]:
    """The parts of a dotted key; an empty key or part is a UserError.

    >>> split_key("optimizer.lr")
    ('optimizer', 'lr')
    """
    parts = tuple(str(key).strip().split("."))
    if not all(parts):
        raise UserError(f"{where}: the key {key!r} is empty or has an empty part")
    return parts


def parse_value(text: str) -> object:
    """A value as written after ``=`` on the command line, read as YAML (``5`` -> 5,
    ``[1, 2]`` -> a list, ``1e-3`` -> 0.001, ``adamw`` -> a string)."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    except RecursionError:
        raise UserError(f"the value {text[:40]!r}... is nested too deeply") from None
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string; "inf" and "nan" stay text
        try:
            number = float(value)
        except ValueError:
            return value
        return number if math.isfinite(number) else value
    return value


def parse_assignment(item: str, example: str = "train.epochs=5") -> tuple[str, object]:
    """``"KEY=VALUE"`` as ``(key, value)``, the value read by :func:`parse_value`.

    >>> parse_assignment("optimizer.lr=3e-4")
    ('optimizer.lr', 0.0003)
    """
    key, sep, text = str(item).partition("=")
    if not sep:
        raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. {example}")
    split_key(key, f"--set {item!r}")
    try:
        return key.strip(), parse_value(text)
    except UserError as exc:
        raise UserError(f"--set {key.strip()}: {exc}") from None


def section(raw: dict, name: str) -> dict:
    """Section ``name`` of a config dict as a mapping, its shorthand expanded (``{}`` where
    it is missing or not a mapping).

    >>> section({"optimizer": "adamw"}, "optimizer")
    {'name': 'adamw'}
    """
    value = raw.get(name)
    if isinstance(value, str) and name in SHORTHANDS:
        return {SHORTHANDS[name]: value}
    return value if isinstance(value, dict) else {}


def set_key(raw: dict, key: str, value: object, where: str = "--set") -> None:
    """Write ``value`` at the dotted ``key`` of a config dict, creating sections on the way
    and expanding shorthands; the sections on the path are copied, so a dict shared with
    another config is never changed.

    >>> raw = {"optimizer": "adamw"}; set_key(raw, "optimizer.lr", 0.01); raw
    {'optimizer': {'name': 'adamw', 'lr': 0.01}}
    """
    parts = split_key(key, f"{where} {key}")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if isinstance(child, str) and i == 0 and part in SHORTHANDS:
            child = {SHORTHANDS[part]: child}
        if child is None:
            child = {}
        if not isinstance(child, dict):
            raise UserError(f"{where} {key}: {'.'.join(parts[:i + 1])} is not a config "
                            f"section (it holds {_SHORT.repr(child)})")
        node[part] = child = dict(child)
        node = child
    node[parts[-1]] = value


def flatten(raw: dict, prefix: str = "") -> dict[str, object]:
    """Dotted key -> value for every leaf of a config dict (the inverse of :func:`set_key`).

    >>> flatten({"train": {"epochs": 5}, "seed": 0})
    {'train.epochs': 5, 'seed': 0}
    """
    flat: dict[str, object] = {}
    for key, value in raw.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def apply_overrides(raw: dict, items: Iterable[str]) -> dict:
    """``raw`` with each ``KEY=VALUE`` of ``items`` written in (``raw`` itself is not
    changed)."""
    raw = dict(raw)
    for item in items:
        key, value = parse_assignment(item)
        set_key(raw, key, value, where=f"--set {item!r}:")
    return raw


#: Shows a value in a message: nested and long values cut short.
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 3, 80, 80


def _explain(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "config"
        if err["type"] == "extra_forbidden":
            section = _model_of(err["loc"][:-1])
            accepted = ", ".join(section.model_fields) if section else ""
            lines.append(f"unknown key {where!r}; accepted: {accepted}")
        else:
            message = err["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {message} (got {_SHORT.repr(err.get('input'))})")
    return "invalid config:\n  " + "\n  ".join(lines)


def _model_of(loc: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] = Config
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        annotation = field.annotation
        if not isinstance(annotation, type):  # an optional section: X | None
            models = [a for a in getattr(annotation, "__args__", ())
                      if isinstance(a, type) and issubclass(a, BaseModel)]
            if len(models) != 1:
                return None
            annotation = models[0]
        if not issubclass(annotation, BaseModel):
            return None
        model = annotation
    return model
