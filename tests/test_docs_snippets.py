"""Docs that cannot drift: every ```python block of README.md and docs/*.md runs, and every
command they quote names what exists.

* Python blocks run in document order in one namespace and one fresh working folder per
  document (a later block may use what an earlier one made, as in a reader's session).
  Paths a reader replaces by their own (``/path/to/BP4D``, ``ME-GraphAU/data/DISFA/list``)
  are built there as tiny trees in the data set's distributed layout
  (tests/real_fixtures.py); any other ``/path/to`` is an error.
* ``python scripts/<name>.py`` commands: the script exists, its ``--help`` exits 0 and names
  every ``--option`` the docs give it.
* ``papermill notebooks/<name>.ipynb`` commands: the notebook exists and every ``-p``/``-y``
  name is in its parameters cell; ``python -m <module>`` names an importable module.
"""
from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from real_fixtures import make_bp4d, make_megraphau

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md"] + sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))
# docs/history.md keeps the commands of its dates (old notebook numbers, old options): its
# commands are not checked; its python blocks would be
CURRENT = [doc for doc in DOCS if doc != "docs/history.md"]
BLOCK = re.compile(r"^([ \t]*)```python\n(.*?)^\1```", re.MULTILINE | re.DOTALL)


def _bp4d_raw(folder: Path) -> Path:
    make_bp4d(folder / "BP4D", n_frames=3, tasks=("T1",))
    return folder / "BP4D"


def _disfa_lists(folder: Path) -> Path:
    make_megraphau(folder / "ME-GraphAU" / "data", "disfa")
    return folder / "ME-GraphAU" / "data" / "DISFA" / "list"


# what a block may name in place of the reader's own copy: text -> builder(working folder) of a
# tiny stand-in; an absolute placeholder is replaced by the stand-in's path in the block
STAND_INS: dict[str, Callable[[Path], Path]] = {
    "/path/to/BP4D": _bp4d_raw,
    "ME-GraphAU/data/DISFA/list": _disfa_lists,
}


def python_blocks(doc: str) -> list[tuple[int, str]]:
    """(first line, code) of each ```python block of ``doc`` (one inside a list item too)."""
    text = (ROOT / doc).read_text()
    return [(text[:m.start()].count("\n") + 2, textwrap.dedent(m.group(2)))
            for m in BLOCK.finditer(text)]


def with_stand_ins(code: str, folder: Path, built: dict[str, Path]) -> str:
    """``code`` with each placeholder it names built (once per document) and replaced."""
    for text, build in STAND_INS.items():
        if text in code:
            if text not in built:
                built[text] = build(folder)
            if text.startswith("/"):
                code = code.replace(text, built[text].as_posix())
    return code


DOCS_WITH_CODE = [doc for doc in DOCS if python_blocks(doc)]


def test_the_docs_hold_python_blocks():
    """The scan finds the blocks (a changed fence would otherwise pass every doc silently)."""
    assert {"README.md", "docs/model.md", "docs/data.md"} <= set(DOCS_WITH_CODE)


@pytest.mark.parametrize("doc", DOCS_WITH_CODE)
def test_python_blocks_run(doc, tmp_path, monkeypatch):
    namespace: dict = {"__name__": "__doc_snippet__"}
    built: dict[str, Path] = {}
    monkeypatch.chdir(tmp_path)
    for line, code in python_blocks(doc):
        code = with_stand_ins(code, tmp_path, built)
        assert "/path/to" not in code, (
            f"{doc}:{line}: a placeholder path with no stand-in; add one to STAND_INS in "
            f"tests/test_docs_snippets.py or use a path the block makes itself")
        exec(compile(code, f"{doc}:{line}", "exec"), namespace)  # noqa: S102 - the docs' code


# --- commands -----------------------------------------------------------------------------

def doc_text(doc: str) -> str:
    """The doc with backslash line continuations joined, so a command reads as one line."""
    return re.sub(r"\\\n\s*", " ", (ROOT / doc).read_text())


SCRIPT = re.compile(r"python scripts/(\w+)\.py((?:[ \t]+(?:--[\w-]+|[^\s`|#-][^\s`|]*))*)")
QUOTED_OR_WORD = r"(?:'[^']*'|\"[^\"]*\"|[^\s`|-]\S*)"
PAPERMILL = re.compile(r"papermill notebooks/(\w+)\.ipynb \S+((?:[ \t]+-[py] "
                       + QUOTED_OR_WORD + r"(?:[ \t]+" + QUOTED_OR_WORD + r")?)*)")
MODULE = re.compile(r"python -m ([\w.]+)")


def script_options() -> dict[str, set[str]]:
    """Every script the docs run, with the options they give it."""
    found: dict[str, set[str]] = {}
    for doc in CURRENT:
        for m in SCRIPT.finditer(doc_text(doc)):
            found.setdefault(m.group(1), set()).update(re.findall(r"--[\w-]+", m.group(2)))
    return found


HELP_DRIVER = """
import contextlib, io, json, runpy, sys
out = {}
for name in sys.argv[1:]:
    sys.argv = [f"scripts/{name}.py", "--help"]
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            runpy.run_path(f"scripts/{name}.py", run_name="__main__")
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out[name] = [code, buf.getvalue()]
print(json.dumps(out))
"""


def test_the_scan_finds_the_commands():
    assert {"run_study", "check_gpu"} <= set(script_options())
    assert any(PAPERMILL.search(doc_text(doc)) for doc in CURRENT)


def test_scripts_in_the_docs_exist_and_take_their_options():
    scripts = script_options()
    missing = [f"scripts/{s}.py" for s in scripts if not (ROOT / "scripts" / f"{s}.py").is_file()]
    assert not missing, f"the docs run scripts that do not exist: {missing}"
    # one process for all (torch is imported once); a script that ignores --help and starts
    # working runs into the timeout
    run = subprocess.run([sys.executable, "-c", HELP_DRIVER, *sorted(scripts)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    helps = json.loads(run.stdout.strip().splitlines()[-1])
    problems = []
    for name, options in sorted(scripts.items()):
        code, text = helps[name]
        if code != 0:
            problems.append(f"scripts/{name}.py --help exits {code}")
        problems += [f"scripts/{name}.py: the docs give {o}, its --help does not name it"
                     for o in sorted(options) if o not in text]
    assert not problems, "\n".join(problems)


def notebook_parameters(name: str) -> set[str]:
    """The names assigned in the cell tagged ``parameters`` of notebooks/<name>.ipynb."""
    nb = json.loads((ROOT / "notebooks" / f"{name}.ipynb").read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    tree = ast.parse("".join(cell["source"]))
    return {t.id for node in ast.walk(tree) if isinstance(node, (ast.Assign, ast.AnnAssign))
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(t, ast.Name)}


def _given(args: str) -> set[str]:
    """The parameter names that papermill arguments ``-p name value`` / ``-y 'yaml'`` set."""
    names = set(re.findall(r"-p (\w+)", args))
    for text in re.findall(r"-y (?:'([^']*)'|\"([^\"]*)\")", args):
        names |= set(yaml.safe_load(text[0] or text[1]))
    return names


def test_papermill_commands_name_real_notebooks_and_parameters():
    problems = []
    for doc in CURRENT:
        for m in PAPERMILL.finditer(doc_text(doc)):
            name = m.group(1)
            if not (ROOT / "notebooks" / f"{name}.ipynb").is_file():
                problems.append(f"{doc}: notebooks/{name}.ipynb does not exist")
                continue
            unknown = _given(m.group(2)) - notebook_parameters(name)
            problems += [f"{doc}: {name} has no parameter {u!r}" for u in sorted(unknown)]
    assert not problems, "\n".join(problems)


def test_modules_run_with_python_m_exist():
    names = {m.group(1) for doc in CURRENT for m in MODULE.finditer(doc_text(doc))}
    missing = sorted(n for n in names if importlib.util.find_spec(n) is None)
    assert not missing, f"the docs run modules that do not exist: {missing}"


def test_notebooks_the_docs_name_exist():
    names = {n for doc in CURRENT for n in re.findall(r"\b(\d\d_\w+)\.ipynb", doc_text(doc))}
    names |= {n for n in re.findall(r"`(\d\d_[a-z0-9_]+)`", (ROOT / "README.md").read_text())}
    have = {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert names and not names - have, f"the docs name notebooks that do not exist: " \
                                        f"{sorted(names - have)}"


# --- paths ----------------------------------------------------------------------------------

PROJECT_PATH = re.compile(r"`((?:docs|hiva_lib|scripts|tests|results|figures|notebooks|\.ci)"
                          r"/[\w./-]*)`")
# paths the docs name as what a command will write (not in a fresh clone)
WRITTEN = {"results/gpu_check.csv"}
LINK = re.compile(r"\]\((?!https?:|#)([^)\s]+)\)")


def test_project_paths_the_docs_name_exist():
    """Every file or folder of the project a doc names in backticks or links to is there,
    except patterns (``<dataset>``, ``*``), smoke outputs and the outputs listed in WRITTEN."""
    missing = []
    for doc in CURRENT:
        for m in PROJECT_PATH.finditer((ROOT / doc).read_text()):
            path = m.group(1)
            if any(c in path for c in "<*{") or "_smoke" in path or path in WRITTEN:
                continue
            if not (ROOT / path.rstrip("/")).exists():
                missing.append(f"{doc}: {path}")
        for m in LINK.finditer((ROOT / doc).read_text()):  # images and relative links
            if not ((ROOT / doc).parent / m.group(1).split("#")[0]).exists():
                missing.append(f"{doc}: link {m.group(1)}")
    assert not missing, "the docs name project paths that do not exist:\n" + "\n".join(missing)
