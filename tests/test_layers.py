"""The layers of gradwise hold: no module imports one of a higher layer, and no import circle
runs between modules (imports inside functions count too). A walk over the source's AST, so a
new module that breaks the rule fails here, naming the import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "gradwise"

#: Top-level parts of gradwise, lowest first; a part may import only parts of lower layers
#: (and itself). Parts of one layer do not import each other.
LAYERS: list[set[str]] = [
    {"gradwise", "errors"},                          # the package root holds __version__ only
    {"_checks", "_io", "_processes"},                 # value checks, atomic files, workers
    {"optim", "schedules", "augment", "data", "rundir", "ensemble"},
    {"nn", "config"},                                 # nn uses augment; config reads optim
    {"report", "transfer"},                           # pages read runs; weights, freezing
    {"train"},                                        # the Trainer writes runs and reports
    {"search", "lab"},                                # built on the Trainer / the optimizers
    {"recipe"},                                       # the whole procedure, on the search
    {"cli"},
    {"__main__"},                                     # python -m gradwise
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in SRC.rglob("*.py")}


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """The gradwise modules that module ``name`` (at ``path``) imports, anywhere in it."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from . import x` imports the module x when there is one
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module
                       for a in node.names]
        else:
            continue
        found.update(t for t in targets if t == "gradwise" or t.startswith("gradwise."))
    return found


def graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: {t for t in imports_of(path, name, known) if t != name}
            for name, path in modules.items()}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "gradwise"


def _layer(part: str) -> int:
    for i, layer in enumerate(LAYERS):
        if part in layer:
            return i
    raise AssertionError(f"gradwise.{part} is in no layer: add it to LAYERS in {__file__}")


def test_every_part_has_a_layer():
    for module in _modules():
        _layer(_part(module))


def test_no_module_imports_a_higher_or_sibling_layer():
    bad = []
    for module, targets in graph().items():
        for target in targets:
            a, b = _part(module), _part(target)
            if a != b and _layer(b) >= _layer(a):
                bad.append(f"{module} imports {target} (layer {_layer(a)} -> {_layer(b)})")
    assert not bad, "imports against the layers:\n  " + "\n  ".join(sorted(bad))


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules (first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_circle_between_modules():
    edges = graph()
    # a package's __init__ re-exports its modules; an edge from a module to its own package's
    # __init__ would be a circle through the re-export, and is what we look for too
    cycle = find_cycle(edges)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


@pytest.mark.parametrize("edges, circular", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, False),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
    ({"a": {"a"}}, True),
])
def test_the_cycle_finder_finds_circles(edges, circular):
    assert (find_cycle(edges) is not None) == circular


def test_the_walk_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from gradwise.train import Trainer\n")
    assert imports_of(module, "gradwise.report.m", {"gradwise.train"}) == {"gradwise.train"}
