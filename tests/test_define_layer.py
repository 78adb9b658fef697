"""The bottom two layers import only downwards: the shared top-level modules (errors, codec,
durations, ...) import nothing of the layers, and ``runtime/define`` nothing of the store,
engine, scheduling, service or CLI. Every import counts, also one inside a function or under
``TYPE_CHECKING``: a lazy import is still an arrow a reader has to follow."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import runtime

ROOT = Path(runtime.__file__).resolve().parent
LATER = ("store", "engine", "scheduling", "service", "cli")
FACES = ("__init__.py", "testing.py")  # the public faces may import anything


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every module *path* names in an import statement, at any depth."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("runtime.")}


TOP = sorted(p for p in ROOT.glob("*.py") if p.name not in FACES)
DEFINE = sorted((ROOT / "define").glob("*.py"))


@pytest.mark.parametrize("path", TOP, ids=[p.stem for p in TOP])
def test_a_top_level_module_imports_no_layer(path: Path) -> None:
    layers = ("define", *LATER)
    assert sorted(n for n in imports(path) if n.split(".")[1] in layers) == []


@pytest.mark.parametrize("path", DEFINE, ids=[p.stem for p in DEFINE])
def test_the_definition_layer_imports_no_later_layer(path: Path) -> None:
    assert sorted(n for n in imports(path) if n.split(".")[1] in LATER) == []


def test_the_definition_layer_and_the_top_level_have_no_import_cycle() -> None:
    graph = {module_name(p): imports(p) for p in [*TOP, *DEFINE]}
    graph = {m: {n for n in names if n in graph} for m, names in graph.items()}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        if module in path:
            cycle = (*path[path.index(module) :], module)
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if module in done:
            return
        for name in sorted(graph[module]):
            visit(name, (*path, module))
        done.add(module)

    for module in sorted(graph):
        visit(module, ())
