"""The library's shape: its modules import one another without cycles and none is too long.

The import graph is read from the source with :mod:`ast`, not by importing. Every import is an
edge: one inside a function (a lazy import hides a cycle, it does not break it) and one under
``if TYPE_CHECKING:`` (the types of two modules that need each other are one concept split in
two; the shared type belongs in a lower module).
"""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "hiva_lib"
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


def _reexported(tree: ast.Module) -> list[str]:
    """hiva_lib names a module imports at its top and never uses: it only passes them on."""
    imported = [a.asname or a.name for n in tree.body
                if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("hiva_lib")
                for a in n.names]
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    return [name for name in imported if name not in used]


def _declares_all(tree: ast.Module) -> bool:
    return any(isinstance(n, ast.Assign) and any(getattr(t, "id", "") == "__all__"
                                                  for t in n.targets) for n in tree.body)


def test_reexport_finder_on_planted_modules():
    tree = ast.parse("from hiva_lib.a import used, passed\nfrom os import path\n"
                     "def f():\n    return used\n")
    assert _reexported(tree) == ["passed"]


def test_one_import_path_per_name():
    """A name is imported from the module that defines it: no module passes on names it
    imports (a compatibility re-export) or serves old names through a module __getattr__.
    A package's __init__ and a module that declares __all__ are the public faces that
    gather names on purpose (``hiva_lib.data.synthfacs``, ``hiva_lib.study.figures``)."""
    problems = []
    for path in MODULES.values():
        tree = ast.parse(path.read_text())
        if any(isinstance(n, ast.FunctionDef) and n.name == "__getattr__" for n in tree.body):
            problems.append(f"{path}: a module __getattr__ serves names defined elsewhere")
        if path.name != "__init__.py" and not _declares_all(tree) and _reexported(tree):
            problems.append(f"{path}: re-exports {_reexported(tree)}; import them from "
                            "their own module where they are used")
    assert not problems, "\n".join(problems)


def _defined(tree: ast.Module) -> set[str]:
    """The names a module defines at its top level (functions, classes, assignments, also
    under a top-level if / try)."""
    names: set[str] = set()
    nodes = list(tree.body)
    while nodes:
        node = nodes.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        elif isinstance(node, (ast.If, ast.Try)):
            nodes += [*node.body, *node.orelse, *getattr(node, "finalbody", []),
                      *[s for h in getattr(node, "handlers", []) for s in h.body]]
    return names


def _code_files() -> list[tuple[Path, str]]:
    """The library, tests and scripts, and the code cells of the notebooks."""
    files = [(p, p.read_text()) for d in ("hiva_lib", "tests", "scripts")
             for p in sorted((ROOT / d).rglob("*.py"))]
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        files.append((nb, "\n".join("" if line.lstrip().startswith(("%", "!")) else line
                                     for line in code.splitlines())))
    return files


def _module_aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> hiva_lib module, for ``import hiva_lib.a.b as x`` and
    ``from hiva_lib.a import b [as x]`` where b is a module."""
    aliases = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases |= {a.asname: a.name for a in node.names if a.asname and a.name in MODULES}
        elif isinstance(node, ast.ImportFrom) and node.module in MODULES:
            aliases |= {a.asname or a.name: f"{node.module}.{a.name}" for a in node.names
                        if f"{node.module}.{a.name}" in MODULES}
    return aliases


def _borrowed(source: str, homes: dict[str, set[str]], attributes: bool = True
              ) -> list[tuple[int, str, str]]:
    """(line, name, module) of each ``from module import name`` and (``attributes``) each
    ``module.name`` where ``module`` does not define ``name``. A name the source assigns
    through the module (``module.name = ...``: a stand-in where it is looked up) is not
    counted."""
    tree = ast.parse(source)
    found = [(n.lineno, a.name, n.module) for n in ast.walk(tree)
             if isinstance(n, ast.ImportFrom) and n.module in homes for a in n.names]
    aliases = {k: v for k, v in _module_aliases(tree).items() if v in homes}
    uses = [n for n in ast.walk(tree) if attributes and isinstance(n, ast.Attribute)
            and isinstance(n.value, ast.Name) and n.value.id in aliases]
    patched = {(n.value.id, n.attr) for n in uses if isinstance(n.ctx, ast.Store)}
    found += [(n.lineno, n.attr, aliases[n.value.id]) for n in uses
              if (n.value.id, n.attr) not in patched]
    return [(line, name, module) for line, name, module in found
            if name not in homes[module] and f"{module}.{name}" not in MODULES]


def test_borrowed_names_are_found():
    homes = {"hiva_lib.engine.runs": {"stage1_dir"}}
    source = ("from hiva_lib.engine import runs as layout\n"
              "from hiva_lib.engine.runs import stage1_dir, first_free\n"
              "layout.stage1_dir(cfg), layout.first_free(base)\n"
              "real = layout.load\nlayout.load = None\n")
    assert sorted(_borrowed(source, homes)) == [(2, "first_free", "hiva_lib.engine.runs"),
                                                (3, "first_free", "hiva_lib.engine.runs")]
    assert _borrowed(source, homes, attributes=False) == [(2, "first_free",
                                                           "hiva_lib.engine.runs")]


def test_names_are_imported_from_their_home():
    """``from hiva_lib.a import name`` and ``a.name`` name the module that defines ``name``
    (or a module that gathers names on purpose: a package __init__, a module with __all__)."""
    trees = {m: ast.parse(p.read_text()) for m, p in MODULES.items()}
    homes = {m: _defined(t) for m, t in trees.items()
             if MODULES[m].name != "__init__.py" and not _declares_all(t)}
    # tests read and replace names where the code under test looks them up (monkeypatch):
    # only their imports are checked
    wrong = [f"{path.relative_to(ROOT)}:{line}: {name} through {module}"
             for path, source in _code_files()
             for line, name, module in _borrowed(source, homes, path.parent.name != "tests")]
    assert not wrong, "names used through a module that only passes them on (import them " \
        "from the module that defines them):\n" + "\n".join(wrong)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_length(module: str):
    n = len(MODULES[module].read_text().splitlines())
    assert n <= MAX_LINES, f"{MODULES[module]}: {n} lines, over {MAX_LINES}; split it by concern"
