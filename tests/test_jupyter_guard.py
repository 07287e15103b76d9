"""JupyterLab's saves never change a committed notebook: a real Jupyter server with the hook
that scripts/install.sh installs saves the user's edited, executed notebook to
study_out/notebooks/ and leaves the tracked file and ``git status`` as they were."""
from __future__ import annotations

import shutil

import nbformat
import pytest
from conftest import git
from jupyter_server import api, jupyter

from hiva_lib import jupyter_guard

ROOT = jupyter_guard.Path(__file__).resolve().parents[1]
NB = "01_prepare_data.ipynb"


@pytest.fixture()
def project(tmp_path):
    """A small git repository shaped as the project: pyproject.toml, .gitignore, a notebook."""
    repo = tmp_path / "project"
    (repo / "notebooks").mkdir(parents=True)
    for rel in ("pyproject.toml", ".gitignore", ".gitattributes", f"notebooks/{NB}"):
        shutil.copy(ROOT / rel, repo / rel)
    shutil.copytree(ROOT / "hiva_lib", repo / "hiva_lib",
                    ignore=shutil.ignore_patterns("__pycache__", "assets"))
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "clone")
    return repo


@pytest.mark.slow  # a Jupyter server: about 30 s
def test_saving_a_committed_notebook_keeps_it_and_keeps_the_users_version(project, tmp_path):
    committed = (project / "notebooks" / NB).read_bytes()
    with jupyter(project, tmp_path) as url:
        model = api(f"{url}/api/contents/notebooks/{NB}")
        nb = model["content"]
        params = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
        params["source"] = params["source"].replace("smoke = False", "smoke = True")
        params["execution_count"] = 1
        params["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "ran\n"}]
        api(f"{url}/api/contents/notebooks/{NB}", "PUT", {"type": "notebook", "content": nb})
        mine = {"type": "notebook", "content": nbformat.v4.new_notebook()}
        api(f"{url}/api/contents/notebooks/mine.ipynb", "PUT", mine)  # the user's own file
        reopened = api(f"{url}/api/contents/notebooks/{NB}")["content"]
    assert (project / "notebooks" / NB).read_bytes() == committed
    assert "smoke = False" in "".join(c["source"] for c in reopened["cells"])
    copy = nbformat.read(project / "study_out" / "notebooks" / NB, as_version=4)
    assert any("smoke = True" in c.source and c.get("outputs") for c in copy.cells)
    assert (project / "notebooks" / "mine.ipynb").exists()  # an untracked notebook saves as usual
    assert git(project, "status", "--porcelain") == "?? notebooks/mine.ipynb\n"
