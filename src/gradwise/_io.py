"""Files written atomically (a temporary file in the same folder, then a rename) and read safely."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from .errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp's own is 0o600


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes(path: Path, data: bytes) -> None:
    _atomic(Path(path), lambda f: f.write(data))


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def reason(exc: BaseException) -> str:
    """The first line of an OS or decoding error, for a message (``No such file or
    directory``)."""
    text = (getattr(exc, "strerror", None) or str(exc)).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__


def write_file(path: Path, data: bytes | str) -> Path:
    """Write a file into a folder gradwise owns (a claimed run, search or lab folder),
    atomically; a folder in its place or an OS error is a UserError naming the path."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"cannot write {str(path)!r}: a directory is in the way")
    try:
        write_bytes(path, data.encode() if isinstance(data, str) else data)
    except OSError as exc:
        raise UserError(f"cannot write {str(path)!r}: {reason(exc)}") from None
    return path


def generator_mark(kind: str) -> str:
    """The tag by which gradwise knows a page it wrote, and of what kind."""
    return f'<meta name="generator" content="gradwise {kind}">'


def write_output(path: Path, page: str, kind: str, example: str) -> Path:
    """Write an HTML page to a path the user named (``compare --out FILE``). A new path is
    fine; an existing file is replaced only if gradwise wrote it as a page of the same
    ``kind`` (it carries :func:`generator_mark`), so no file of the user's and no file of a
    run is ever overwritten. ``example`` is a file name that would do (``compare.html``)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"cannot write {str(path)!r}: it is a directory; expected a file path "
                        f"such as {example}")
    if path.exists() or path.is_symlink():
        try:
            with open(path, "rb") as f:
                head = f.read(4096)
        except OSError as exc:
            raise UserError(f"cannot read {str(path)!r}: {reason(exc)}") from None
        if generator_mark(kind).encode() not in head or path.is_symlink():
            raise UserError(f"{str(path)!r} exists and is not a {kind} page gradwise wrote; "
                            f"gradwise does not overwrite it: give a new path such as {example}")
    return write_file(path, page)


def write_json(path: Path, obj: object) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def read_json(path: Path, expected: str, limit: int = 1 << 20) -> object:
    """A small JSON file gradwise wrote (at most ``limit`` bytes); a missing, oversized or
    corrupt one is a UserError that names ``expected``, what the file should hold."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise UserError(f"cannot read {str(path)!r}: {reason(exc)}; expected {expected}") \
            from None
    if len(data) > limit:
        raise UserError(f"{str(path)!r} is larger than {limit} bytes; expected {expected}")
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{str(path)!r} is corrupt ({exc}); expected {expected}") from None


def save(path: Path, obj: object) -> None:
    """``torch.save`` atomically: a reader never sees a half-written checkpoint."""
    _atomic(Path(path), lambda f: torch.save(obj, f))


def load(path: Path, map_location: str | torch.device | None = None) -> dict:
    """``torch.load(weights_only=True)``; a missing or corrupt file is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise UserError(f"checkpoint {str(path)!r} is corrupt or not a gradwise checkpoint "
                        f"({type(exc).__name__}: {reason(exc)})") from None


def jsonl_line(record: dict) -> str:
    """One record of a JSON-lines file, newline included."""
    return json.dumps(record) + "\n"


def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file; a torn last line (a killed writer) is dropped."""
    records: list[dict] = []
    if not Path(path).is_file():
        return records
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return records
