"""Where the project lives: its root folder and the default folders of every run, full size
and smoke size (base layer: the data subpackage draws figures too)."""
from __future__ import annotations

from pathlib import Path

# Where a run writes unless told otherwise: an output root that git ignores, so that no run,
# interrupted or interactive, rewrites the committed reference (results/, figures/). The
# committed reference is regenerated deliberately, with COMMITTED_ROOTS
# (``python scripts/run_study.py --into-committed``, or these values in a parameters cell).
OUTPUT_ROOT = "study_out"
# Smoke size keeps everything, its prepared data included, under its own folder: a smoke
# walkthrough and a full-size one never meet (no "prepared with other settings", no overwrite).
SMOKE_ROOT = f"{OUTPUT_ROOT}/_smoke"
COMMITTED_ROOTS = {"runs_root": "runs", "results_root": "results", "figures_root": "figures"}
ROOT_NAMES = ("data_root", "runs_root", "results_root", "figures_root")


def project_root() -> Path:
    """The repository root (holding pyproject.toml of hiva_lib), searched upwards from the cwd,
    so notebooks opened in notebooks/ and papermill runs from the root share one data folder."""
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        toml = folder / "pyproject.toml"
        if toml.exists() and 'name = "hiva_lib"' in toml.read_text():
            return folder
    return here


def default_roots(smoke: bool = False) -> dict[str, str]:
    """The data, runs, results and figures folders of a run that names none, relative to the
    project root: full size data/prepared/ and study_out/{runs,results,figures}/; smoke size
    all four under study_out/_smoke/ (data/, runs/, results/, figures/), as the study command's
    ``--smoke``. The one place that decides it: configs, notebooks and scripts ask here."""
    if smoke is True:
        return {k: f"{SMOKE_ROOT}/{k.removesuffix('_root')}" for k in ROOT_NAMES}
    return {"data_root": "data/prepared",
            **{k: f"{OUTPUT_ROOT}/{k.removesuffix('_root')}" for k in ROOT_NAMES[1:]}}


def resolve_roots(smoke: bool = False, **given: str | Path | None) -> dict[str, Path]:
    """A notebook's four roots from its parameters: each given one as is (relative ones under
    the project root), each ``None`` its :func:`default_roots` folder."""
    unknown = sorted(set(given) - set(ROOT_NAMES))
    if unknown:
        raise TypeError(f"not a root: {', '.join(unknown)}; the roots: {', '.join(ROOT_NAMES)}")
    root = project_root()
    defaults = default_roots(smoke)
    return {k: root / Path(given.get(k) or defaults[k]) for k in ROOT_NAMES}


def default_figures_root(smoke: bool = False) -> Path:
    """study_out/figures/ of the project (smoke runs: study_out/_smoke/figures/); both ignored
    by git, the committed figures/ is written only when asked for (:data:`COMMITTED_ROOTS`)."""
    return resolve_roots(smoke)["figures_root"]
