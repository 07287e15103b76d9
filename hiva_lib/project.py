"""Where the project lives: its root folder, the default output root and figures folder
(base layer: the data subpackage draws figures too)."""
from __future__ import annotations

from pathlib import Path

# Where a run writes unless told otherwise: an output root that git ignores, so that no run,
# interrupted or interactive, rewrites the committed reference (results/, figures/). The
# committed reference is regenerated deliberately, with COMMITTED_ROOTS
# (``python scripts/run_study.py --into-committed``, or these values in a parameters cell).
OUTPUT_ROOT = "study_out"
COMMITTED_ROOTS = {"runs_root": "runs", "results_root": "results", "figures_root": "figures"}


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
    """study_out/figures/ of the project (smoke runs: figures/_smoke/); both ignored by git,
    the committed figures/ is written only when asked for (:data:`COMMITTED_ROOTS`)."""
    return project_root() / ("figures/_smoke" if smoke else f"{OUTPUT_ROOT}/figures")
