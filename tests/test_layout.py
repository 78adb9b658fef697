"""The house plan, checked: runtime/ has no import cycle, imports point from later layers to
earlier ones only, runtime never imports plugins, and functions and modules stay short.

Imports are read with ``ast`` from the source, all of them: at module level, inside functions
(lazy) and under ``TYPE_CHECKING``. A lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "runtime"
# imports may point only to the same layer or an earlier one
LAYERS = ("top", "define", "store", "engine", "scheduling", "service", "cli")
# the public faces import from any layer: what a flow file and a test import
FACES = {"runtime", "runtime.testing"}
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 400


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """Every module of runtime (or plugins) that *path* imports, anywhere in it."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                names.add(full if full in MODULES else node.module)
    return {n for n in names if n in MODULES or n.split(".")[0] == "plugins"}


GRAPH = {module: _imports(path) - {module} for module, path in MODULES.items()}


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS):
        return parts[1]
    return "top"


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in GRAPH:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in GRAPH:
        if module not in index:
            visit(module)
    return found


def test_the_checker_sees_the_tree() -> None:
    assert {"runtime.define.flow", "runtime.engine.execution", "runtime.cli.main"} <= set(GRAPH)
    assert "runtime.define.flow" in GRAPH["runtime.engine.execution"]


def test_no_import_cycle_in_runtime() -> None:
    assert _cycles() == []


def test_imports_point_to_earlier_layers_only() -> None:
    wrong = [
        f"{module} ({layer(module)}) imports {target} ({layer(target)})"
        for module, targets in GRAPH.items()
        if module not in FACES
        for target in sorted(targets)
        if target in MODULES and LAYERS.index(layer(target)) > LAYERS.index(layer(module))
    ]
    assert wrong == []


def test_runtime_never_imports_plugins() -> None:
    assert [
        m for m, targets in GRAPH.items() if any(t.startswith("plugins") for t in targets)
    ] == []


def _long_functions(path: Path) -> list[str]:
    return [
        f"{path.relative_to(ROOT.parent)}:{node.lineno} {node.name} "
        f"({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_functions_and_modules_stay_short(module: str) -> None:
    path = MODULES[module]
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_MODULE_LINES, f"{module}: {lines} lines"
    assert _long_functions(path) == []


def test_a_cycle_is_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cycle check can fail: a made-up edge back from the define layer is caught."""
    graph = {k: set(v) for k, v in GRAPH.items()}
    graph["runtime.define.flow"].add("runtime.engine.execution")
    monkeypatch.setattr(__import__(__name__, fromlist=["GRAPH"]), "GRAPH", graph)
    assert any("runtime.define.flow" in cycle for cycle in _cycles())
