"""The notebooks are the source (edited in JupyterLab): each is checked for the shape the
study relies on, parameters papermill can set, no logic of its own, no stale outputs."""
from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest

from hiva_lib.notebook import READS

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _code(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def _parse(cell) -> ast.Module:
    # IPython magics and shell escapes are not Python: blank them before parsing
    lines = ["" if line.lstrip().startswith(("%", "!")) else line
             for line in cell.source.splitlines()]
    return ast.parse("\n".join(lines))


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 8


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_shape(path: Path):
    nb = nbformat.read(path, as_version=4)
    params = [c for c in _code(nb) if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, f"{path.name}: {len(params)} cells tagged 'parameters', want 1"
    for cell in _code(nb):
        assert not cell.outputs and cell.execution_count is None, \
            f"{path.name}: outputs not cleared (Kernel > Restart and Clear Outputs, then save)"
        for node in ast.walk(_parse(cell)):
            assert not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef,
                                         ast.Lambda)), \
                f"{path.name}: defines {type(node).__name__}; logic belongs in hiva_lib"
    declared = [t.id for node in _parse(params[0]).body if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)]
    assert declared, f"{path.name}: the parameters cell declares nothing"
    after = _code(nb)[_code(nb).index(params[0]) + 1:]
    used = {n.id for c in after for n in ast.walk(_parse(c))
            if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    # a helper of hiva_lib.notebook given globals() reads the parameters it names in READS
    used |= {p for name in used & set(READS) for p in READS[name]}
    unused = [p for p in declared if p not in used]
    assert not unused, f"{path.name}: parameters declared but never used: {unused}"
