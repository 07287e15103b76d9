"""Committed notebooks stay as committed, whatever JupyterLab saves.

JupyterLab saves a notebook (autosave every 2 minutes, Ctrl+S) with the user's parameter
edits and outputs. :func:`pre_save`, the Jupyter server's pre-save hook, sends what the user
made to ``study_out/notebooks/<name>.ipynb`` (git-ignored) and keeps a tracked notebook of
``notebooks/`` as it is on disk: no ``git status`` entry after a walkthrough, and a notebook
opened again has the committed defaults. Jupyter reads no configuration from the working
directory (jupyter_core dropped it for safety), so ``python -m hiva_lib.jupyter_guard`` (run by
scripts/install.sh) enables this module as a server extension, which registers the hook, in the
environment's Jupyter configuration (``<sys.prefix>/etc/jupyter/jupyter_server_config.d/``),
and sets git's nbclean filter to the interpreter it runs with, silent where that interpreter is
gone.
"""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import nbformat

from hiva_lib.project import OUTPUT_ROOT

CONFIG_NAME = "hiva_lib.json"
USER_COPIES = f"{OUTPUT_ROOT}/notebooks"


def _project(folder: Path) -> Path | None:
    """The project root when ``folder`` is its ``notebooks/`` folder."""
    toml = folder.parent / "pyproject.toml"
    ours = folder.name == "notebooks" and toml.exists() and 'name = "hiva_lib"' in toml.read_text()
    return folder.parent if ours else None


def _tracked(path: Path, root: Path) -> bool:
    """Whether git tracks ``path`` (a notebook the user made in notebooks/ is theirs)."""
    try:
        out = subprocess.run(["git", "ls-files", "--error-unmatch", path.name], cwd=path.parent,
                             capture_output=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):  # no git: the numbered notebooks are ours
        return path.name[:2].isdigit()
    return out.returncode == 0


def committed_notebook(os_path: str | Path) -> Path | None:
    """The project root when ``os_path`` is one of its committed notebooks, else None."""
    path = Path(os_path).resolve()
    root = _project(path.parent)
    return root if root and path.exists() and _tracked(path, root) else None


def user_copy(os_path: str | Path, root: Path) -> Path:
    """Where the user's version of a committed notebook is saved."""
    return root / USER_COPIES / Path(os_path).name


def pre_save(model: dict, path: str, contents_manager, **kwargs) -> None:
    """The Jupyter server's pre-save hook: a committed notebook's new content goes to
    :func:`user_copy`; the file itself is written back as it is on disk."""
    if model.get("type") != "notebook" or not model.get("content"):
        return
    os_path = contents_manager._get_os_path(path)
    root = committed_notebook(os_path)
    if root is None:
        return
    copy = user_copy(os_path, root)
    copy.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nbformat.from_dict(model["content"]), copy)
    model["content"] = nbformat.read(os_path, as_version=nbformat.NO_CONVERT)
    contents_manager.log.info("%s keeps its committed defaults; your version: %s", path, copy)


# ----------------------------------------------------------------------------- installing
def filter_command(python: str | None = None) -> str:
    """git's clean filter: nbconvert's --clear-output through ``python`` (this interpreter),
    or the file unchanged where that interpreter or nbconvert is gone (another shell's
    environment, a deleted one): git status stays silent there."""
    python = shlex.quote(python or sys.executable)
    clear = '"$0" -m nbconvert --clear-output --to notebook --stdin --stdout --log-level=ERROR'
    script = f'if "$0" -c "import nbconvert" 2>/dev/null; then exec {clear}; else exec cat; fi'
    return f"sh -c {shlex.quote(script)} {python}"


# A Jupyter server extension (what a JSON file of jupyter_server_config.d/ can enable; plain
# settings such as FileContentsManager.pre_save_hook are not read from there).
def _jupyter_server_extension_points() -> list[dict]:
    return [{"module": __name__}]


def _load_jupyter_server_extension(serverapp) -> None:
    serverapp.contents_manager.register_pre_save_hook(pre_save)
    serverapp.log.info("hiva_lib: edits of the committed notebooks are saved to %s/",
                       USER_COPIES)


def server_config() -> dict:
    return {"ServerApp": {"jpserver_extensions": {__name__: True}}}


def install(prefix: str | Path | None = None, repo: Path | None = None) -> list[str]:
    """Write the server configuration under ``prefix`` (the environment's) and set the git
    filter in ``repo`` (the project, when it is a git work tree); returns what was done."""
    done = []
    folder = Path(prefix or sys.prefix) / "etc" / "jupyter" / "jupyter_server_config.d"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_NAME).write_text(json.dumps(server_config(), indent=2) + "\n")
    done.append(f"JupyterLab saves edits of the committed notebooks to {USER_COPIES}/ "
                f"({folder / CONFIG_NAME})")
    repo = repo or Path(__file__).resolve().parents[1]
    inside = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=repo,
                            capture_output=True)
    if inside.returncode == 0:
        subprocess.run(["git", "config", "filter.nbclean.clean", filter_command()], cwd=repo,
                       check=True)
        done.append(f"git strips notebook outputs when staging (through {sys.executable})")
    return done


if __name__ == "__main__":
    print("\n".join(install()))
