"""Readers: each source's raw arrays by split (train, val, test, or one pool named data)."""

from __future__ import annotations

import csv
import functools
import os
import random
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from gradwise.errors import UserError

Parts = dict[str, tuple[np.ndarray, np.ndarray]]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
LABEL_NAMES = ("label", "class", "target", "y")


def read_digits() -> Parts:
    """scikit-learn's 8x8 digits, values 0..16, as (N, 1, 8, 8) images in [0, 1]."""
    x, y = _digits()
    return {"data": (x.reshape(-1, 1, 8, 8) / 16.0, y)}


def read_mnist1d() -> Parts:
    """The MNIST-1D paper's frozen 4000/1000 split as (N, 1, 40) sequences."""
    d = _mnist1d()
    return {"train": (d["x"][:, None, :], d["y"]), "test": (d["x_test"][:, None, :], d["y_test"])}


@functools.cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return _frozen(x), _frozen(y)


@functools.cache
def _mnist1d() -> dict[str, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    # make_dataset reseeds the global RNGs; leave the caller's streams as they were.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        d = make_dataset(get_dataset_args())
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {k: _frozen(d[k]) for k in ("x", "y", "x_test", "y_test")}


def _frozen(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


def read_npz(source: str, path: Path) -> Parts:
    """Arrays x_train, y_train, x_test, y_test and optionally x_val, y_val from an .npz file."""
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        raise UserError(f"{source}: cannot read {path} as an .npz archive ({e})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise UserError(f"{source}: {path} holds a single array, not an .npz archive of "
                        f"x_train, y_train, x_test, y_test")
    with archive:
        found = set(archive.files)
        splits = ["train", "test"] + (["val"] if found & {"x_val", "y_val"} else [])
        missing = [f"{k}_{s}" for s in splits for k in "xy" if f"{k}_{s}" not in found]
        if missing:
            raise UserError(f"{source}: missing arrays {', '.join(missing)}; found "
                            f"{', '.join(sorted(found)) or 'none'}; needed x_train, y_train, "
                            f"x_test, y_test and optionally x_val, y_val")
        try:
            return {s: (_npz_samples(source, f"x_{s}", archive[f"x_{s}"]), archive[f"y_{s}"])
                    for s in splits}
        except ValueError as e:  # object arrays need pickle, which stays off
            raise UserError(f"{source}: cannot read {path} ({e})") from None


def _npz_samples(source: str, key: str, x: np.ndarray) -> np.ndarray:
    """x as (N, F) or (N, C, H, W); uint8 scaled to [0, 1]."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[3] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        x = x.transpose(0, 3, 1, 2)
    elif x.ndim not in (2, 4):
        raise UserError(f"{source}: {key} has shape {x.shape}; accepted: (N, F) tabular, "
                        f"(N, H, W) grayscale, (N, H, W, C) with C in 1, 3, 4, or (N, C, H, W)")
    return x / np.float32(255) if x.dtype == np.uint8 else x


def read_folder(source: str, root: Path) -> Parts:
    """Images in ``root/<class>/``, or in ``root/train/<class>/`` plus optional test/ and val/."""
    if not root.is_dir():
        raise UserError(f"{source}: {root} is not a folder")
    split_dirs = {s: root / s for s in ("train", "val", "test") if (root / s).is_dir()}
    if "train" not in split_dirs:
        split_dirs = {"data": root}
    first = next(iter(split_dirs.values()))
    classes = sorted(d.name for d in first.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise UserError(f"{source}: {first} has no class sub-folders; expected "
                        f"PATH/<class>/<image>.png or PATH/train/<class>/<image>.png")
    files: dict[str, list[tuple[Path, int]]] = {}
    for split, folder in split_dirs.items():
        files[split] = []
        for d in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if d.name not in classes:
                raise UserError(f"{source}: class folder {d} is not among the classes of "
                                f"{first}: {', '.join(classes)}")
            images = [(f, classes.index(d.name)) for f in sorted(d.iterdir())
                      if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith(".")]
            if not images:
                raise UserError(f"{source}: class folder {d} holds no PNG or JPEG images")
            files[split] += images
    x = _read_images(source, [f for split in files.values() for f, _ in split])
    parts, start = {}, 0
    for split, items in files.items():
        labels = np.array([label for _, label in items], dtype=np.int64)
        parts[split] = (x[start:start + len(items)], labels)
        start += len(items)
    return parts


def free_memory_bytes() -> int:
    """Memory the OS can hand out now (Linux and macOS), or a large number where unknown."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 62


def _check_fits(source: str, paths: list[Path]) -> None:
    """Datasets are held in memory as float32: refuse, with the numbers, one that cannot be."""
    try:
        with Image.open(paths[0]) as im:
            width, height = im.size
    except Exception:
        return  # the reading loop names the unreadable file
    need = len(paths) * width * height * 3 * 4
    free = free_memory_bytes()
    if need > free // 2:
        raise UserError(f"{source}: {len(paths):,} images of {width}x{height} need up to "
                        f"{need / 2**30:.1f} GiB as float32 tensors, more than half of the "
                        f"{free / 2**30:.1f} GiB of free memory; gradwise holds a dataset in "
                        f"memory: use smaller images or fewer of them")


def _read_images(source: str, paths: list[Path]) -> np.ndarray:
    """(N, C, H, W) in [0, 1]: C is 3 if any image has colour, else 1; all sizes must agree."""
    _check_fits(source, paths)
    arrays, size = [], None
    for path in paths:
        try:
            with Image.open(path) as im:
                if im.mode.startswith(("I", "F")):
                    raise UserError(f"{source}: {path} has mode {im.mode}; accepted: 8-bit "
                                    f"grayscale, RGB, RGBA or palette images")
                arrays.append(np.asarray(im.convert("L" if im.mode in ("1", "L", "LA") else "RGB")))
        except UserError:
            raise
        except Exception as e:  # Pillow raises many kinds on broken files
            raise UserError(f"{source}: cannot read image {path} ({e})") from None
        if size is None:
            size, first = arrays[-1].shape[:2], path
        elif arrays[-1].shape[:2] != size:
            raise UserError(f"{source}: images differ in size: {first} is {_wxh(size)} but "
                            f"{path} is {_wxh(arrays[-1].shape)}; all images need one size")
    if any(a.ndim == 3 for a in arrays):
        arrays = [np.repeat(a[..., None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
    x = np.stack(arrays)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    return x / np.float32(255)


def _wxh(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]}"


def read_csv(source: str, path: Path, label_column: str | None) -> Parts:
    """Float feature columns and one label column (ints, or names mapped to sorted ids)."""
    if not path.is_file():
        raise UserError(f"{source}: {path} is not a file")
    rows, lines = [], []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        try:
            header = [name.strip() for name in next(reader, [])]
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise UserError(f"{source}: line {reader.line_num} has {len(row)} fields "
                                    f"but the header has {len(header)}")
                rows.append(row)
                lines.append(reader.line_num)
        except (UnicodeDecodeError, csv.Error) as e:
            raise UserError(f"{source}: cannot read {path} as UTF-8 CSV ({e})") from None
    if not rows:
        raise UserError(f"{source}: {path} has no data rows; expected a header row, then one "
                        f"row per sample")
    target = _label_index(source, header, label_column)
    names = [name for i, name in enumerate(header) if i != target]
    if not names:
        raise UserError(f"{source}: {path} has no feature columns besides {header[target]!r}")
    x = np.array([[_number(source, line, name, cell)
                   for name, cell in zip(names, row[:target] + row[target + 1:], strict=True)]
                  for line, row in zip(lines, rows, strict=True)])
    labels = []
    for line, row in zip(lines, rows, strict=True):
        labels.append(row[target].strip())
        if not labels[-1]:
            raise UserError(f"{source}: line {line} has an empty label in column "
                            f"{header[target]!r}")
    return {"data": (x, _csv_labels(labels))}


def _number(source: str, line: int, column: str, cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        raise UserError(f"{source}: line {line}, column {column!r} holds {cell!r}; features "
                        f"must be numbers") from None


def _label_index(source: str, header: list[str], label_column: str | None) -> int:
    """Column index of the labels: ``label_column``, else a conventional name, else the last."""
    if label_column is not None:
        if label_column not in header:
            raise UserError(f"{source}: no column {label_column!r} for label_column; "
                            f"columns: {', '.join(header)}")
        return header.index(label_column)
    lowered = [name.lower() for name in header]
    for name in LABEL_NAMES:
        if name in lowered:
            return lowered.index(name)
    return len(header) - 1


def _csv_labels(cells: list[str]) -> np.ndarray:
    """Numbers as they are (checked later for being whole); else names numbered in sorted order."""
    try:
        return np.array(cells, dtype=np.float64)
    except ValueError:
        ids = {name: i for i, name in enumerate(sorted(set(cells)))}
        return np.array([ids[cell] for cell in cells], dtype=np.int64)
