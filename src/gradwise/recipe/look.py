"""Look at the data, and what it decides: the model family, the augmentation candidates, the
base config and the search space.

**The model family from the shape of one sample.**

* ``(C, H, W)``, images: the BN ``convnet`` (channels 32-64 up to 16 pixels, 32-64-128 above);
* ``(C, L)``, sequences: the BN ``cnn1d`` (64-64-128-128-256, full length up to 128 positions,
  max-pooled above);
* ``(F,)``, a vector that may be a signal or a row of features: the family is a searched
  choice between a BN ``mlp`` (256-256) and a ``cnn1d`` (32-64-128), unless BASE sets
  anything under ``model``.

**Augmentation candidates per modality** (a searched choice; ``{}`` is no augmentation):

* images: none, crop (padding ``H/8``), crop + cutout (``H/4``); flips only for colour
  images (3 channels), as a searched choice beside crop. Grayscale images are taken as
  digits, letters or other symbols whose mirror image is another thing, so flips are left to
  the user there (``augment: {flip: {}}`` in BASE);
* sequences: none, translate (up to ``L/10`` positions), mixup (alpha 0.2);
* vectors: none, mixup (alpha 0.2).

**The space** (every key that BASE sets is left out: BASE fixes it): ``optimizer.lr``
log-uniform over ``[c/10, 10c]`` around the LR range test's suggestion ``c`` (the search's
centre), ``optimizer.weight_decay`` log-uniform over ``[1e-4, 0.5]`` (AdamW's decoupled decay),
``model.dropout`` uniform over ``[0, 0.3]``, the augmentation choice and, for vectors, the
family.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from ..config import SHORTHANDS, flatten, read_yaml, section, set_key
from ..data import load_data
from ..errors import UserError
from ..search.space import Dimension, Space

#: The recipe's own defaults under whatever BASE gives.
OPTIMIZER = {"name": "adamw", "lr": 3e-3, "weight_decay": 0.05}
LR_FACTOR = 10.0          # the lr range: [c / LR_FACTOR, c * LR_FACTOR]
WEIGHT_DECAY = (1e-4, 0.5)
DROPOUT = (0.0, 0.3)


def look_at_data(source: str, data_options: dict | None = None) -> dict:
    """The facts of ``source`` that the recipe shows and decides from: ``source``,
    ``input_shape``, ``modality`` (images, sequences, vectors), ``num_classes``, ``sizes``
    (train, val, test), ``class_counts`` (train), ``balance`` (smallest / largest class),
    ``value_range`` (raw train values) and ``family`` (the model, or ``searched``).
    ``data_options``: BASE's ``data:`` section (val_fraction, label_column, ...)."""
    options = {k: v for k, v in (data_options or {}).items()
               if k in ("val_fraction", "label_column")}
    data = load_data(source, normalize=False, **options)
    counts = torch.bincount(data.y_train, minlength=data.num_classes).tolist()
    shape = tuple(data.input_shape)
    modality = {3: "images", 2: "sequences"}.get(len(shape), "vectors")
    x = data.x_train
    return {
        "source": source, "input_shape": list(shape), "modality": modality,
        "num_classes": data.num_classes,
        "sizes": {"train": len(data.y_train), "val": len(data.y_val), "test": len(data.y_test)},
        "class_counts": counts, "balance": min(counts) / max(counts),
        "value_range": [float(x.min()), float(x.max())],
        "family": {"images": "convnet", "sequences": "cnn1d"}.get(modality, "searched"),
    }


def model_choices(facts: dict) -> list[dict]:
    """The model section(s) for the data's family (several: the family is searched)."""
    shape = facts["input_shape"]
    if facts["modality"] == "images":
        channels = [32, 64] if max(shape[1:]) <= 16 else [32, 64, 128]
        return [{"name": "convnet", "channels": channels, "batch_norm": True}]
    if facts["modality"] == "sequences":
        return [{"name": "cnn1d", "channels": [64, 64, 128, 128, 256],
                 "pool": shape[-1] > 128}]
    return [{"name": "mlp", "hidden": [256, 256], "batch_norm": True},
            {"name": "cnn1d", "channels": [32, 64, 128]}]


def augment_choices(facts: dict) -> list[dict]:
    """The augmentation candidates of the data's modality (see the module doc)."""
    shape = facts["input_shape"]
    if facts["modality"] == "images":
        size = max(shape[1:])
        crop = {"crop": {"padding": max(1, round(size / 8))}}
        choices = [{}, crop, {**crop, "cutout": {"size": max(2, round(size / 4))}}]
        if shape[0] == 3:
            choices.append({"flip": {}, **crop})
        return choices
    if facts["modality"] == "sequences":
        return [{}, {"translate": {"max_shift": max(1, round(shape[-1] / 10))}},
                {"mixup": {"alpha": 0.2}}]
    return [{}, {"mixup": {"alpha": 0.2}}]


def read_base(path: str | Path | None, source: str) -> dict:
    """BASE as a raw mapping (``{}`` without one); a BASE that names other data than DATA is
    a UserError."""
    if path is None:
        return {}
    base = read_yaml(Path(path))
    named = section(base, "data").get("source")
    if named is not None and named != source:
        raise UserError(f"--config {str(path)!r} names data {named!r} but the recipe runs on "
                        f"{source!r}; drop data.source from it or give the same data")
    if "space" in base or "search" in base:
        raise UserError(f"--config {str(path)!r} is a search config (space:, search:); the "
                        "recipe plans its own search: give a plain training config")
    return base


def fixed_keys(base: dict) -> set[str]:
    """The dotted keys BASE sets (they are fixed: never searched)."""
    return set(_flat(base))


def _flat(base: dict) -> dict[str, object]:
    """BASE's leaves by dotted key, shorthands (``optimizer: sgd``) expanded."""
    return flatten({name: section(base, name) if name in SHORTHANDS else value
                    for name, value in base.items()})


def base_config(facts: dict, base: dict, name: str) -> dict:
    """The recipe's training config under BASE: adamw, one-cycle, batch 64 below 2,000
    training samples (else 128), the family's first model; BASE's keys win (a BASE model or
    optimizer of another name replaces the recipe's whole section)."""
    raw: dict[str, Any] = {
        "name": name, "seed": 0, "data": {"source": facts["source"]},
        "model": model_choices(facts)[0], "optimizer": dict(OPTIMIZER),
        "schedule": {"name": "onecycle"},
        "train": {"epochs": 1, "batch_size": 64 if facts["sizes"]["train"] < 2000 else 128},
    }
    for name_ in ("model", "optimizer", "schedule"):
        given = section(base, name_)
        if "name" in given and given["name"] != raw[name_]["name"]:
            raw[name_] = {}
    for key, value in _flat(base).items():
        if key == "train.epochs":
            continue   # the budget decides the epochs
        set_key(raw, key, copy.deepcopy(value), where="--config")
    return raw


def search_space(facts: dict, fixed: set[str], lr_centre: float) -> Space:
    """The space of the search: every dimension whose key BASE does not fix (module doc)."""
    def free(key: str) -> bool:
        return not any(f == key or f.startswith(key + ".") or key.startswith(f + ".")
                       for f in fixed)

    low = max(1e-6, lr_centre / LR_FACTOR)
    dims = [Dimension("optimizer.lr", "loguniform", low, max(low * 1.01, lr_centre * LR_FACTOR)),
            Dimension("optimizer.weight_decay", "loguniform", *WEIGHT_DECAY)]
    models = model_choices(facts)
    if len(models) > 1:
        dims.append(Dimension("model", "choice", choices=tuple(models)))
    dims.append(Dimension("model.dropout", "uniform", *DROPOUT))
    if "augment" not in fixed and not any(f.startswith("augment.") for f in fixed):
        dims.append(Dimension("augment", "choice", choices=tuple(augment_choices(facts))))
    return Space(tuple(d for d in dims if free(d.key)))
