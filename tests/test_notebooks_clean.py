"""Committed notebooks carry no outputs, execution counts or run metadata (what JupyterLab's
autosave or a papermill run puts into them): each equals its ``nbconvert --clear-output``
form byte for byte, and the git filter that scripts/install.sh sets strips a dirty one."""
from __future__ import annotations

import copy
import shlex
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbconvert.preprocessors import ClearOutputPreprocessor

from hiva_lib import jupyter_guard

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
FIX = ("clear it: python -m nbconvert --clear-output --inplace {path} (or Kernel > Restart "
       "Kernel and Clear Outputs of All Cells, then save), and run `bash scripts/install.sh` "
       "once so that git strips outputs when notebooks are staged")


def committed_text(path: Path) -> str:
    """What a commit would hold: the staged version of a tracked notebook (after git's clean
    filter), else the file."""
    rel = path.relative_to(ROOT).as_posix()
    out = subprocess.run(["git", "show", f":{rel}"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout if out.returncode == 0 else path.read_text()


def cleared(text: str) -> str:
    nb = nbformat.reads(text, as_version=4)
    nb, _ = ClearOutputPreprocessor().preprocess(copy.deepcopy(nb), {})
    return nbformat.writes(nb) + "\n"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_is_clean(path: Path):
    text = committed_text(path)
    nb = nbformat.reads(text, as_version=4)
    fix = FIX.format(path=path.relative_to(ROOT))
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
             and (c.outputs or c.execution_count is not None)]
    assert not dirty, f"{path.name}: cells {dirty} hold outputs or execution counts; {fix}"
    extra = sorted({k for c in nb.cells for k in c.metadata if k != "tags"}
                   | ({"widgets", "papermill"} & set(nb.metadata)))
    assert not extra, f"{path.name}: run metadata {extra} saved; {fix}"
    assert text == cleared(text), f"{path.name}: not in its cleared form; {fix}"


def _filter_command(python: str | None = None) -> str:
    install = (ROOT / "scripts" / "install.sh").read_text()
    assert "python -m hiva_lib.jupyter_guard" in install, "install.sh sets no nbclean filter"
    return jupyter_guard.filter_command(python)


def test_git_filter_strips_what_jupyterlab_saves():
    assert "filter=nbclean" in (ROOT / ".gitattributes").read_text()
    clean = cleared(committed_text(NOTEBOOKS[0]))
    nb = nbformat.reads(clean, as_version=4)
    code = next(c for c in nb.cells if c.cell_type == "code")
    code.execution_count = 3
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="trained\n")]
    dirty = nbformat.writes(nb) + "\n"
    assert dirty != clean
    out = subprocess.run(shlex.split(_filter_command()), input=dirty, capture_output=True,
                         text=True, cwd=ROOT, check=True)
    assert out.stdout == clean


def test_git_filter_is_silent_where_its_interpreter_is_gone(tmp_path):
    """From a shell without the environment (or after it is deleted) the filter passes the
    notebook through unchanged and prints nothing: git status stays quiet."""
    text = committed_text(NOTEBOOKS[0]).replace('"cells"', '"cells" ', 1)
    gone = str(tmp_path / "no env" / "bin" / "python")
    out = subprocess.run(shlex.split(_filter_command(gone)), input=text, capture_output=True,
                         text=True, cwd=ROOT)
    assert (out.returncode, out.stdout, out.stderr) == (0, text, "")
    assert shlex.quote(sys.executable) in _filter_command()  # the installing interpreter
