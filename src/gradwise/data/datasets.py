"""In-memory classification datasets split into train, validation and test tensors."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from gradwise import _checks
from gradwise._io import reason
from gradwise.data import _readers
from gradwise.errors import UserError


@dataclass(frozen=True)
class Source:
    """A kind of data source: ``read(source, path, label_column)`` returns the raw arrays by
    split (see :mod:`gradwise.data._readers`); ``takes_path``: written ``KIND:PATH``;
    ``label_column``: whether the kind takes that option."""

    read: Callable[[str, Path | None, str | None], _readers.Parts]
    takes_path: bool
    label_column: bool = False


def _given(path: Path | None) -> Path:
    """The PATH of a ``KIND:PATH`` source, which every reader with ``takes_path`` is given."""
    if path is None:
        raise TypeError("a reader of KIND:PATH sources was called without a path")
    return path


#: Data source kinds, written ``KIND`` or ``KIND:PATH``. A new source is its reader plus one
#: entry here.
READERS: dict[str, Source] = {
    "digits": Source(lambda source, path, label_column: _readers.read_digits(), False),
    "mnist1d": Source(lambda source, path, label_column: _readers.read_mnist1d(), False),
    "npz": Source(lambda source, path, label_column: _readers.read_npz(source, _given(path)),
                  True),
    "folder": Source(
        lambda source, path, label_column: _readers.read_folder(source, _given(path)), True),
    "csv": Source(
        lambda source, path, label_column: _readers.read_csv(source, _given(path), label_column),
        True, label_column=True),
}


def sources() -> tuple[str, ...]:
    """The accepted ``data`` values: ``('digits', 'mnist1d', 'npz:PATH', ...)``."""
    return tuple(f"{k}:PATH" if r.takes_path else k for k, r in READERS.items())


TEST_FRACTION = 0.2  # carved, with seed 0, from sources without their own test split
_TENSORS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "mean", "std")


@dataclass(repr=False)
class Splits:
    """Train, validation and test tensors: x float32, y int64 class ids ``0..num_classes-1``.

    ``mean`` and ``std`` broadcast against one sample (``(C, 1, 1)`` for images, ``(C, 1)`` for
    sequences, ``(F,)`` for tabular data) and record what was applied:
    ``x = (x_raw - mean) / std``; they are zeros and ones when nothing was.
    """

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    name: str
    mean: Tensor
    std: Tensor
    #: The source's label of each class 0..K-1 where ``classes`` selected them, else None.
    class_ids: tuple[int, ...] | None = None

    def to(self, device: torch.device | str) -> Splits:
        """A copy with every tensor on ``device``."""
        return dataclasses.replace(self, **{f: getattr(self, f).to(device) for f in _TENSORS})

    def train_subset(self, size: int, seed: int = 0) -> Splits:
        """A copy whose train split keeps ``size`` samples, as class-balanced as possible,
        drawn with ``seed`` (val, test and normalisation unchanged).

        >>> load_data("digits").train_subset(20).y_train.bincount().tolist()
        [2, 2, 2, 2, 2, 2, 2, 2, 2, 2]
        """
        if isinstance(size, bool) or not isinstance(size, int) or size < self.num_classes:
            raise UserError(f"train_size={size!r} is invalid; a class-balanced subset of "
                            f"{self.name} needs at least one sample of each of its "
                            f"{self.num_classes} classes (train_size >= {self.num_classes})")
        if size >= len(self.y_train):
            return self
        order = torch.randperm(len(self.y_train), generator=torch.Generator().manual_seed(seed))
        labels = self.y_train.cpu()[order]
        # rank of each sample among the drawn samples of its class: take rank 0s, then 1s ...
        rank = torch.empty_like(labels)
        for c in labels.unique():
            members = labels == c
            rank[members] = torch.arange(int(members.sum()))
        keep = order[torch.sort(rank, stable=True).indices[:size]].sort().values
        keep = keep.to(self.y_train.device)
        return dataclasses.replace(self, x_train=self.x_train[keep], y_train=self.y_train[keep])

    def per_class_subset(self, per_class: int, seed: int = 0) -> Splits:
        """A copy whose train split keeps ``per_class`` samples of each class, drawn with
        ``seed`` (val, test and normalisation unchanged; samples keep their order). A class
        with fewer training samples is a UserError naming it and its count.

        >>> load_data("digits").per_class_subset(3).y_train.bincount().tolist()
        [3, 3, 3, 3, 3, 3, 3, 3, 3, 3]
        """
        per_class = _checks.integer("per_class", per_class, 1)
        labels = self.y_train.cpu()
        counts = labels.bincount(minlength=self.num_classes)
        short = [c for c in range(self.num_classes) if counts[c] < per_class]
        if short:
            c = short[0]
            name = self.class_ids[c] if self.class_ids is not None else c
            raise UserError(f"per_class={per_class} is more than class {name} of {self.name} "
                            f"has: {int(counts[c])} training samples (after the validation "
                            f"split); give per_class <= {int(counts.min())}")
        generator = torch.Generator().manual_seed(seed)
        keep = torch.cat([torch.nonzero(labels == c).flatten()[
            torch.randperm(int(counts[c]), generator=generator)[:per_class]]
            for c in range(self.num_classes)]).sort().values.to(self.y_train.device)
        return dataclasses.replace(self, x_train=self.x_train[keep], y_train=self.y_train[keep])

    def __repr__(self) -> str:
        return (f"Splits(name={self.name!r}, train={len(self.y_train)}, val={len(self.y_val)}, "
                f"test={len(self.y_test)}, input_shape={self.input_shape}, "
                f"num_classes={self.num_classes}, device={self.x_train.device})")


def load_data(source: str, *, val_fraction: float = 0.1, seed: int = 0, normalize: bool = True,
              label_column: str | None = None,
              classes: list[int] | tuple[int, ...] | None = None) -> Splits:
    """Load ``source`` (one of :func:`sources`) into memory as :class:`Splits`.

    - ``digits``: scikit-learn's 8x8 digits as (1, 8, 8) images in [0, 1].
    - ``mnist1d``: the MNIST-1D paper's 4000/1000 set, regenerated offline, as (1, 40) sequences.
    - ``npz:PATH``: arrays ``x_train, y_train, x_test, y_test`` and optionally ``x_val, y_val``.
      x is (N, F) tabular, (N, H, W) grayscale, (N, H, W, C) with C in {1, 3, 4} or
      (N, C, H, W); uint8 values are scaled to [0, 1].
    - ``folder:PATH``: ``PATH/<class>/<image>`` PNG/JPEG files, or the same layout under
      ``PATH/train``, ``PATH/test`` (optional) and ``PATH/val`` (optional); class names sorted
      give the labels. All images need one size; 1 channel if all are grayscale, else 3 (RGB).
    - ``csv:PATH``: a header row, float features and one label column: ``label_column``, else
      one named label, class, target or y (any case), else the last; labels are ints or names.

    ``classes``: keep only the samples of these class ids (the source's labels), relabelled
    ``0..K-1`` in the order given, before anything is split or normalised (``class_ids``
    records them).

    Sources without a test split (digits, csv, a folder without ``test/``) lose a stratified 20%
    to it, always with seed 0. Without a validation split, a stratified ``val_fraction`` of the
    train split (0 < val_fraction < 1), drawn with ``seed``, becomes one. Samples keep their
    source order. With ``normalize``, every split is standardised with the per-channel (images,
    sequences) or per-feature (tabular) mean and std of the train split; constant ones get std 1.

    >>> d = load_data("digits")
    >>> d.input_shape, d.num_classes, len(d.y_train), len(d.y_val), len(d.y_test)
    ((1, 8, 8), 10, 1294, 144, 359)
    """
    if not isinstance(val_fraction, int | float) or not 0 < val_fraction < 1:
        raise UserError(f"val_fraction={val_fraction!r} is invalid; it must lie in (0, 1)")
    seed = _checks.integer("seed", seed, 0)
    parts = _read(source, label_column)
    x_shape = None
    for split, (x, y) in parts.items():
        parts[split] = _checked(source, split, x, y)
        if x_shape is None:
            x_shape, first = x.shape[1:], split
        elif x.shape[1:] != x_shape:
            raise UserError(f"{source}: {_arr('x', split)} samples have shape {x.shape[1:]} but "
                            f"{_arr('x', first)} samples {x_shape}; every split needs one shape")
    if classes is not None:
        parts = _select(source, parts, classes)
    if "data" in parts:
        parts["train"], parts["test"] = _carve(source, parts.pop("data"), "test", TEST_FRACTION, 0)
    if "val" not in parts:
        parts["train"], parts["val"] = _carve(source, parts["train"], "val", val_fraction, seed)
    num_classes = _check_classes(source, parts)

    tensors = {}
    for split, (x, y) in parts.items():
        tensors[f"x_{split}"] = torch.from_numpy(np.ascontiguousarray(x))
        tensors[f"y_{split}"] = torch.from_numpy(y)
    x_train = tensors["x_train"]
    if normalize:
        mean, std = _statistics(x_train)
        for split in parts:
            tensors[f"x_{split}"].sub_(mean).div_(std)
    else:
        stat_shape = (x_train.shape[1],) + (1,) * (x_train.ndim - 2)
        mean, std = torch.zeros(stat_shape), torch.ones(stat_shape)
    return Splits(**tensors, num_classes=num_classes, input_shape=tuple(x_train.shape[1:]),
                  name=source, mean=mean, std=std,
                  class_ids=tuple(int(c) for c in classes) if classes is not None else None)


def _select(source: str, parts: dict[str, tuple[np.ndarray, np.ndarray]],
            classes: list[int] | tuple[int, ...]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The samples of ``classes`` in every split, labelled by their position in ``classes``."""
    wanted = [int(_checks.integer("classes entry", c, 0)) for c in classes]
    if len(set(wanted)) != len(wanted) or len(wanted) < 2:
        raise UserError(f"classes={list(classes)!r} is invalid; give at least 2 distinct class "
                        "ids")
    first = "train" if "train" in parts else "data"
    present = np.unique(parts[first][1])
    missing = [c for c in wanted if c not in present]
    if missing:
        raise UserError(f"{source}: classes {missing} are not among the labels of its "
                        f"{first} split ({_few(present)}); give ids of those")
    relabel = np.full(int(max(present.max(), max(wanted))) + 1, -1, dtype=np.int64)
    relabel[wanted] = np.arange(len(wanted))
    selected = {}
    for split, (x, y) in parts.items():
        new = np.where(y < len(relabel), relabel[np.minimum(y, len(relabel) - 1)], -1)
        keep = new >= 0
        if not keep.any():
            raise UserError(f"{source}: the {split} split holds none of classes {wanted}")
        selected[split] = (x[keep], new[keep])
    return selected


def _read(source: str, label_column: str | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Raw arrays by split: train, test and val, or one pool named data still to be split."""
    kind, colon, arg = source.partition(":") if isinstance(source, str) else ("", "", "")
    reader = READERS.get(kind)
    if reader is None or bool(colon) != reader.takes_path or (reader.takes_path and not arg):
        raise UserError(f"unknown data source {source!r}; accepted: {', '.join(sources())}")
    if label_column is not None and not reader.label_column:
        raise UserError(f"label_column={label_column!r} applies only to "
                        f"{', '.join(f'{k}:PATH' for k, r in READERS.items() if r.label_column)}"
                        f" sources, not {source!r}")
    if not reader.takes_path:
        return reader.read(source, None, label_column)
    path = Path(arg).expanduser()
    try:
        if not path.exists():
            raise UserError(f"{source}: {path} does not exist")
        return reader.read(source, path, label_column)
    except OSError as exc:
        raise UserError(f"{source}: cannot read {str(path)[:200]!r}: {reason(exc)}") from None


def _arr(kind: str, split: str) -> str:
    """How messages name an array: ``x_train``, or plain ``x`` for a pool not yet split."""
    return kind if split == "data" else f"{kind}_{split}"


def _checked(source: str, split: str, x: np.ndarray,
             y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` after checking lengths, emptiness, finite x and labels; y becomes int64."""
    xs, ys = _arr("x", split), _arr("y", split)
    if y.ndim != 1:
        raise UserError(f"{source}: {ys} has shape {y.shape}; labels must be 1-D, shape (N,)")
    if len(x) != len(y):
        raise UserError(f"{source}: {xs} has {len(x)} samples but {ys} has {len(y)}; "
                        f"they must match")
    if len(y) == 0:
        raise UserError(f"{source}: the {split} split is empty; every split needs samples")
    if x.dtype.kind not in "biuf":
        raise UserError(f"{source}: {xs} has dtype {x.dtype}; x must be numeric")
    x = x.astype(np.float32, copy=False)
    bad = int(np.count_nonzero(~np.isfinite(x)))
    if bad:
        raise UserError(f"{source}: {xs} holds {bad} NaN or inf values; x must be finite")
    if y.dtype.kind == "f":
        whole = np.isfinite(y) & (y == np.round(y))
        if not whole.all():
            raise UserError(f"{source}: {ys} holds non-integer labels such as {y[~whole][0]}; "
                            f"labels must be integers 0..K-1")
    elif y.dtype.kind not in "biu":
        raise UserError(f"{source}: {ys} has dtype {y.dtype}; labels must be integers 0..K-1")
    y = y.astype(np.int64)
    if (y < 0).any():
        raise UserError(f"{source}: {ys} holds negative labels {_few(y[y < 0])}; "
                        f"labels must be integers 0..K-1")
    return x, y


def _few(values: np.ndarray, limit: int = 10) -> str:
    """The distinct values as a short list for a message."""
    values = np.unique(values)
    shown = ", ".join(str(v) for v in values[:limit])
    return f"[{shown}{', ...' if len(values) > limit else ''}]"


def _carve(source: str, part: tuple[np.ndarray, np.ndarray], split: str, fraction: float,
           seed: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Move a seeded, stratified ``round(fraction * n)`` samples of ``part`` into a new ``split``.

    Each class gives ``floor(fraction * its size)``; the samples left over go to the classes
    with the largest remainders (ties drawn at random); every class keeps at least one.
    """
    x, y = part
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    quota = fraction * counts
    sizes = np.floor(quota).astype(np.int64)
    ties = rng.permutation(len(classes))
    by_remainder = ties[np.argsort(sizes[ties] - quota[ties], kind="stable")]
    sizes[by_remainder[:round(fraction * len(y)) - sizes.sum()]] += 1
    sizes = np.minimum(sizes, counts - 1)
    if sizes.sum() == 0:
        raise UserError(f"{source}: the {split} split is empty: {fraction:g} of {len(y)} samples "
                        f"rounds to 0 (or every class has one sample); use more data or a "
                        f"larger fraction")
    take = np.zeros(len(y), dtype=bool)
    for c, k in zip(classes, sizes, strict=True):
        take[rng.permutation(np.flatnonzero(y == c))[:k]] = True
    return (x[~take], y[~take]), (x[take], y[take])


def _check_classes(source: str, parts: dict[str, tuple[np.ndarray, np.ndarray]]) -> int:
    """Number of classes, after checking train holds every id 0..K-1 and all others' labels."""
    train = np.unique(parts["train"][1])
    if len(train) < 2:
        raise UserError(f"{source}: the train split holds {len(train)} class; a classifier "
                        "needs at least 2 (labels 0..K-1 with K >= 2)")
    missing = np.setdiff1d(np.arange(train[-1] + 1), train)
    if len(missing):
        raise UserError(f"{source}: y_train lacks class ids {_few(missing)} of 0..{train[-1]}; "
                        f"labels must be 0..K-1 with every class in the train split")
    for split in ("val", "test"):
        unseen = np.setdiff1d(parts[split][1], train)
        if len(unseen):
            raise UserError(f"{source}: y_{split} holds labels {_few(unseen)} that y_train "
                            f"lacks; every class needs training samples")
    return int(train[-1]) + 1


def _statistics(x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and std over samples and positions, per channel (dim 1) or per feature if 2-D."""
    dims = (0, *range(2, x.ndim))
    std, mean = torch.std_mean(x, dim=dims, correction=0, keepdim=True)
    constant = torch.amin(x, dim=dims, keepdim=True) == torch.amax(x, dim=dims, keepdim=True)
    return mean[0], torch.where(constant, 1.0, std)[0]
