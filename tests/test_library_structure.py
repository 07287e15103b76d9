"""The library's shape: its modules import one another without cycles and none is too long.

The import graph is read from the source with :mod:`ast`, not by importing. Every import is an
edge: one inside a function (a lazy import hides a cycle, it does not break it) and one under
``if TYPE_CHECKING:`` (the types of two modules that need each other are one concept split in
two; the shared type belongs in a lower module).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hiva_lib"
MAX_LINES = 500


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of a module, at any depth."""
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[:len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(module: str, path: Path) -> set[str]:
    """The hiva_lib modules ``module`` imports: ``from a import b`` is module a.b where that
    exists, else module a."""
    out: set[str] = set()
    for node in _imports(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
            continue
        source = _resolve(module, path.name == "__init__.py", node)
        for alias in node.names:
            sub = f"{source}.{alias.name}"
            out.add(sub if sub in MODULES else source)
    return {t for t in out if t in MODULES and t != module}


def import_graph() -> dict[str, set[str]]:
    return {m: _targets(m, p) for m, p in MODULES.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def test_the_graph_sees_the_library():
    graph = import_graph()
    assert len(graph) > 50
    # known edges: one at module level, one only inside a function body (create_model's)
    assert "hiva_lib.engine.loop" in graph["hiva_lib.engine.train"]
    assert "hiva_lib.model.hiva" in graph["hiva_lib"]


def test_cycle_finder_on_planted_graphs():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}) == \
        [["a", "b"], ["c", "d"]]


def test_imports_at_any_depth_are_edges():
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x\n"
                     "def f():\n    import y\n")
    names = {a.name for n in _imports(tree) if isinstance(n, ast.Import) for a in n.names}
    assert names == {"x", "y"}


def test_no_import_cycles():
    cycles = find_cycles(import_graph())
    assert not cycles, "hiva_lib modules that import one another (move the shared piece to " \
        "the lower module):\n" + "\n".join(" <-> ".join(c) for c in cycles)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_length(module: str):
    n = len(MODULES[module].read_text().splitlines())
    assert n <= MAX_LINES, f"{MODULES[module]}: {n} lines, over {MAX_LINES}; split it by concern"
