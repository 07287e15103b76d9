"""The README's path as a user walks it: notebooks 01 -> 02 -> 03 -> 06 executed in that order in
a fresh copy of the repository, each at its defaults with only ``smoke = True``. Every figure of
06 is drawn (Fig. 5 with HiVA's row only: w/o L_diff is not trained on this path, and 06 says
how to get it), 01 shows its contact sheet, and no tracked file changes."""
from __future__ import annotations

import json
from pathlib import Path

import papermill as pm
import pytest
from conftest import git

from hiva_lib.study.study import FIGURES

pytestmark = pytest.mark.slow  # notebooks end to end

ROOT = Path(__file__).resolve().parents[1]
PATH = ["01_prepare_data", "02_train_stage1", "03_train_stage2", "06_figures"]


def _cells_text(nb_path: Path) -> tuple[str, set[str]]:
    """The executed notebook's text outputs, and the MIME types of its outputs."""
    nb = json.loads(nb_path.read_text())
    texts, kinds = [], set()
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            kinds |= set(out.get("data", {}))
            texts.append("".join(out.get("text", "")) + "".join(
                out.get("data", {}).get("text/plain", "")))
    return "\n".join(texts), kinds


@pytest.mark.slow
def test_01_02_03_06_as_a_user(clone, tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(clone))  # the kernels import the clone's hiva_lib
    assert git(clone, "status", "--porcelain") == ""
    for name in PATH:
        pm.execute_notebook(clone / "notebooks" / f"{name}.ipynb", tmp_path / f"{name}.ipynb",
                            parameters={"smoke": True}, cwd=str(clone), progress_bar=False,
                            kernel_name="python3")
    _, kinds = _cells_text(tmp_path / "01_prepare_data.ipynb")
    assert "image/png" in kinds  # the contact sheet, inline
    figures = clone / "study_out" / "_smoke" / "figures" / "synth-disfa"
    for name in FIGURES.values():
        assert (figures / f"{name}.png").stat().st_size > 5_000, name
    text, _ = _cells_text(tmp_path / "06_figures.ipynb")
    assert "drawn in part" in text and "HiVA (w/o L_diff)" in text
    assert "variant = 'wo_ldiff'" in text and "parameters cell" in text  # the fix, both ways
    assert "-p variant wo_ldiff" in text
    assert git(clone, "status", "--porcelain") == ""  # nothing tracked changed


@pytest.mark.parametrize("name", ["08_inference", "11_reproduce"])
def test_a_full_size_notebook_after_the_smoke_walkthrough_says_set_smoke(clone, tmp_path, name,
                                                                        monkeypatch):
    """After 01 -> 02 -> 03 at smoke size, 08 and 11 at their defaults find nothing of full
    size: the first line they show is the fix in the parameters cell's terms, not a traceback."""
    monkeypatch.setenv("PYTHONPATH", str(clone))
    if not (clone / "study_out" / "_smoke" / "results" / "synth-disfa").exists():
        pytest.skip("needs the smoke walkthrough of test_01_02_03_06_as_a_user first")
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(clone / "notebooks" / f"{name}.ipynb", tmp_path / f"{name}.ipynb",
                            cwd=str(clone), progress_bar=False, kernel_name="python3")
    shown = [line for line in err.value.traceback if line.strip()]
    assert "set smoke = True in the parameters cell" in shown[0], shown
    assert "%tb" in shown[-1] and len(shown) <= 4, shown  # no traceback, one red message
