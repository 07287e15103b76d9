"""Where the project lives: its root folder and the default figures folder (ground floor:
the data room draws figures too)."""
from __future__ import annotations

from pathlib import Path


def project_root() -> Path:
    """The repository root (holding pyproject.toml of hiva_lib), searched upwards from the cwd,
    so notebooks opened in notebooks/ and papermill runs from the root share one data folder."""
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        toml = folder / "pyproject.toml"
        if toml.exists() and 'name = "hiva_lib"' in toml.read_text():
            return folder
    return here


def default_figures_root(smoke: bool = False) -> Path:
    """figures/ of the project (smoke runs: figures/_smoke/, ignored by git)."""
    return project_root() / ("figures/_smoke" if smoke else "figures")
