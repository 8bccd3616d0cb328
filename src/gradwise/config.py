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

Model, optimizer and schedule options beyond ``name`` pass through to
:func:`gradwise.nn.build_model`, the optimizer class and
:func:`gradwise.schedules.build_schedule`, which reject unknown ones by name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import UserError

OPTIMIZERS = ("sgd", "adagrad", "rmsprop", "adam", "adamw", "lbfgs")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class _Open(BaseModel):
    """A section whose extra keys are options passed through to a builder."""

    model_config = ConfigDict(extra="allow")

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class DataConfig(_Strict):
    source: str = Field("digits", description="digits, mnist1d, npz:PATH, folder:PATH, csv:PATH")
    val_fraction: float = Field(0.1, gt=0, lt=1)
    normalize: bool = True
    label_column: str | None = None
    train_size: int | None = Field(None, ge=1, description="train on a class-balanced subset")


class ModelConfig(_Open):
    name: str = "mlp"


class OptimizerConfig(_Open):
    name: str = "sgd"
    lr: float = Field(0.01, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    decay_norm_and_bias: bool = False

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name.lower() not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {name!r}; accepted: {', '.join(OPTIMIZERS)}")
        return name.lower()


class ScheduleConfig(_Open):
    name: str = "constant"
    warmup_epochs: float = Field(0.0, ge=0)


class TrainConfig(_Strict):
    epochs: int = Field(10, ge=1)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(128, ge=1)
    eval_batch_size: int = Field(1024, ge=1)
    grad_clip: float | None = Field(None, gt=0)
    precision: Literal["fp32", "bf16"] = "fp32"
    full_batch: bool | None = Field(None, description="default: true for lbfgs, else false")
    divergence_factor: float = Field(3.0, gt=1)
    log_every: int = Field(10, ge=1)
    monitor_every: int = Field(50, ge=0, description="update ratios etc. every N steps; 0: off")
    checkpoint: bool = True
    channels_last: bool = Field(True, description="NHWC layout for image models (faster convs)")


class RegularizationConfig(_Strict):
    """Loss terms: ``l1 * sum|w| + l2 / 2 * sum w^2`` over weights, and label smoothing."""

    l1: float = Field(0.0, ge=0)
    l2: float = Field(0.0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)


class EvaluateConfig(_Strict):
    """Test-time averaging of the final evaluation (reported beside the plain numbers)."""

    samples: int = Field(1, ge=1, description="stochastic passes averaged (MC dropout, "
                                              "fractional pooling draws)")
    tta_flip: bool = False
    tta_shift: int = Field(0, ge=0)


class Config(_Strict):
    name: str | None = None
    seed: int = 0
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
        if value not in ("auto", "cpu") and not value.startswith(("cuda", "mps")):
            raise ValueError(f"unknown device {value!r}; accepted: auto, cpu, cuda, cuda:N, mps")
        return value

    @model_validator(mode="after")
    def _full_batch_default(self):
        if self.train.full_batch is None:
            self.train.full_batch = self.optimizer.name == "lbfgs"
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
    for item in overrides:
        _apply_override(raw, item)
    return validate(raw)


def validate(raw: dict) -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise UserError(_explain(exc)) from None


def read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"config file {str(path)!r} not found")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UserError(f"config file {str(path)!r} must hold a mapping of keys, "
                        f"not a {type(raw).__name__}")
    return raw


def dump(config: Config) -> str:
    return yaml.safe_dump(config.model_dump(), sort_keys=False)


def _apply_override(raw: dict, item: str) -> None:
    if "=" not in item:
        raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. train.epochs=5")
    key, text = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise UserError(f"--set {item!r}: the key {key!r} is empty or has an empty part")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if isinstance(child, str) and part in ("data", "model", "optimizer", "schedule"):
            child = {"source" if part == "data" else "name": child}
        if child is None:
            child = {}
        if not isinstance(child, dict):
            raise UserError(f"--set {item!r}: {'.'.join(parts[:i + 1])} is not a section")
        node[part] = child
        node = child
    node[parts[-1]] = value


def _explain(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "config"
        if err["type"] == "extra_forbidden":
            section = _section_of(err["loc"][:-1])
            accepted = ", ".join(section.model_fields) if section else ""
            lines.append(f"unknown key {where!r}; accepted: {accepted}")
        else:
            message = err["msg"].removeprefix("Value error, ")
            lines.append(f"{where}: {message} (got {err.get('input')!r})")
    return "invalid config:\n  " + "\n  ".join(lines)


def _section_of(loc: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] = Config
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None or not isinstance(field.annotation, type):
            return None
        model = field.annotation
    return model
