"""Type hints: every public function and method of gradwise is annotated, and mypy finds no
error in src/gradwise (with the settings of ``[tool.mypy]`` in pyproject.toml)."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "gradwise"


def _public(name: str) -> bool:
    return not name.startswith("_")


def _missing(func: ast.FunctionDef | ast.AsyncFunctionDef, method: bool) -> list[str]:
    """The parameters of ``func`` without an annotation (self and cls of a method need none),
    and ``return`` where the return is not annotated."""
    args = func.args
    params = [*args.posonlyargs, *args.args]
    if method and params and params[0].arg in ("self", "cls") and not any(
            isinstance(d, ast.Name) and d.id == "staticmethod" for d in func.decorator_list):
        params = params[1:]
    params += args.kwonlyargs
    params += [a for a in (args.vararg, args.kwarg) if a is not None]
    missing = [("*" if a is args.vararg else "**" if a is args.kwarg else "") + a.arg
               for a in params if a.annotation is None]
    return missing + (["return"] if func.returns is None else [])


def _unannotated(tree: ast.Module, path: str) -> list[str]:
    """``path:line qualified.name: what is missing`` for each public function and method (of
    a public class, at any depth of public classes) that lacks an annotation."""
    found = []

    def walk(node: ast.AST, prefix: str, in_class: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef) and _public(child.name):
                walk(child, f"{prefix}{child.name}.", True)
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) and _public(
                    child.name):
                missing = _missing(child, in_class)
                if missing:
                    found.append(f"{path}:{child.lineno} {prefix}{child.name}: "
                                 f"{', '.join(missing)}")
            elif isinstance(child, ast.If | ast.Try | ast.With):  # e.g. if TYPE_CHECKING:
                walk(child, prefix, in_class)

    walk(tree, "", False)
    return found


def test_the_checker_sees_what_is_missing():
    tree = ast.parse(
        "def f(a, b: int, *args, c: int = 1, **kw) -> int: ...\n"
        "def g(a: int): ...\n"
        "def _private(a): ...\n"
        "class C:\n"
        "    def m(self, x) -> None: ...\n"
        "    @classmethod\n"
        "    def k(cls) -> None: ...\n"
        "    @staticmethod\n"
        "    def s(self) -> None: ...\n"
        "    def _hidden(self, x): ...\n"
        "    class Inner:\n"
        "        def n(self): ...\n"
        "class _Private:\n"
        "    def m(self, x): ...\n"
    )
    assert _unannotated(tree, "m.py") == [
        "m.py:1 f: a, *args, **kw",
        "m.py:2 g: return",
        "m.py:5 C.m: x",
        "m.py:9 C.s: self",
        "m.py:12 C.Inner.n: return",
    ]


def test_every_public_function_is_annotated():
    missing = []
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        missing += _unannotated(tree, str(path.relative_to(ROOT)))
    assert not missing, ("public functions without type hints (every parameter but self/cls, "
                         "and the return):\n  " + "\n  ".join(missing))


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed")
def test_mypy_finds_no_error():
    # `make lint` runs mypy first, so its cache (.mypy_cache) is usually warm: a few seconds.
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
         "--cache-dir", str(ROOT / ".mypy_cache"), str(SRC)],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
