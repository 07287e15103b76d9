"""Notebook 06's list of what was drawn and skipped (figure_status), and the fix a missing
model's error names: the parameters cell beside the papermill command."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from hiva_lib.study.study import FigureError, Study, figure_status, run_figure  # noqa: E402


def _study(tmp_path: Path) -> Study:
    return Study.open("synth-disfa", smoke=True, runs_root=str(tmp_path / "runs"),
                      results_root=str(tmp_path / "res"), figures_root=str(tmp_path / "fig"))


def fig4(study: Study) -> None:  # named as the figure function it stands for
    study.save(plt.figure(), "fig4_f1_gain")


def fig7(study: Study) -> None:
    raise FigureError("no model. " + study._train_hint("wo_ldiff"))


def test_status_lists_drawn_and_skipped_with_the_fix(tmp_path):
    study = _study(tmp_path)
    run_figure(fig4, study, skip_missing=True)
    assert run_figure(fig7, study, skip_missing=True) is None
    status = figure_status(study).set_index("figure")
    assert status.loc["fig4_f1_gain", "status"] == "drawn"
    assert status.loc["fig7_au_graphs", "status"] == "skipped"
    how = status.loc["fig7_au_graphs", "how"]
    assert "set dataset = 'synth-disfa', fold = 1, seed = 0, variant = 'wo_ldiff'" in how
    assert "smoke = True in its parameters cell" in how and "device" not in how
    assert ("papermill notebooks/03_train_stage2.ipynb out.ipynb -p dataset synth-disfa -p fold 1 "
            "-p seed 0 -p variant wo_ldiff" in how)
    with pytest.raises(FigureError):  # without skip_missing the notebook stops there
        run_figure(fig7, study)
    assert "Study(synth-disfa, seed 0, fold 1, smoke;" in repr(study)  # one line


def test_a_figure_drawn_later_is_no_longer_listed_as_skipped(tmp_path):
    study = _study(tmp_path)
    study.skipped["fig4_f1_gain"] = "missing before"
    run_figure(fig4, study, skip_missing=True)
    assert figure_status(study).set_index("figure").loc["fig4_f1_gain", "status"] == "drawn"
