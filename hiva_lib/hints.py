"""How to run a notebook, for the fixes that error messages give: what to set in the notebook's
parameters cell (a JupyterLab user) beside the same run as a papermill command (a terminal).

``run_hint("03_train_stage2", {"variant": "wo_ldiff"})`` reads: in JupyterLab, open
notebooks/03_train_stage2.ipynb, set variant = 'wo_ldiff' in its parameters cell and run all
cells; from a terminal: papermill notebooks/03_train_stage2.ipynb out.ipynb -p variant wo_ldiff
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping


def quote(value: object) -> str:
    """``value`` as one shell word of a ``-p`` option (dicts as JSON text)."""
    text = json.dumps(value) if isinstance(value, dict) else str(value)
    return text if re.fullmatch(r"[\w./:+-]+", text) else "'" + text.replace("'", "'\\''") + "'"


def papermill_command(notebook: str, params: Mapping[str, object]) -> str:
    """``papermill notebooks/<notebook>.ipynb out.ipynb -p k v ...``."""
    return " ".join([f"papermill notebooks/{notebook}.ipynb out.ipynb",
                     *(f"-p {k} {quote(v)}" for k, v in params.items())])


def parameters_cell(params: Mapping[str, object]) -> str:
    """The assignments to type into a parameters cell: ``dataset = 'synth-disfa', fold = 1``."""
    return ", ".join(f"{k} = {v!r}" for k, v in params.items())


def run_hint(notebook: str, params: Mapping[str, object]) -> str:
    """Both ways to run ``notebook`` with ``params``: the parameters cell, then papermill."""
    where = f"open notebooks/{notebook}.ipynb"
    cell = (f"{where}, set {parameters_cell(params)} in its parameters cell and run all cells"
            if params else f"{where} and run all cells")
    return f"in JupyterLab, {cell}; from a terminal: {papermill_command(notebook, params)}"
