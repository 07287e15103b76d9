"""What the notebooks share through hiva_lib.notebook: folders resolved from their parameters
(smoke size apart from full size), the one training config of notebooks 02 and 03, tables and
Markdown for people, and the one-line fix a failure shows first."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from hiva_lib import notebook as N
from hiva_lib.engine.config import make_config
from hiva_lib.engine.validate import ParameterError
from hiva_lib.progress import heartbeat
from hiva_lib.project import default_roots, resolve_roots

ROOT = Path(__file__).resolve().parents[1]


def _parameters(name: str) -> dict:
    """The committed defaults of a notebook's parameters cell."""
    nb = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    namespace: dict = {}
    exec(compile(ast.parse(cell.source), name, "exec"), namespace)
    return {k: v for k, v in namespace.items() if not k.startswith("__")}


@pytest.fixture()
def project(tmp_path, monkeypatch) -> Path:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "hiva_lib"\n')
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_smoke_and_full_size_never_share_a_folder(project):
    full, smoke = resolve_roots(False), resolve_roots(True)
    assert set(full) == set(smoke) == {"data_root", "runs_root", "results_root", "figures_root"}
    for a in full.values():  # no folder of one size inside or above one of the other
        for b in smoke.values():
            assert not (a == b or a in b.parents or b in a.parents), (a, b)
    assert smoke["data_root"] == project / "study_out" / "_smoke" / "data"
    assert full["data_root"] == project / "data" / "prepared"
    assert resolve_roots(True, runs_root="mine")["runs_root"] == project / "mine"
    for smoke_size in (False, True):  # make_config takes its folders from the same place
        cfg = make_config("synth-disfa", smoke=smoke_size)
        for key in ("data_root", "runs_root", "results_root"):
            assert cfg.__dict__[key] == str(project / default_roots(smoke_size)[key])


def test_run_study_smoke_writes_where_the_notebooks_do(project):
    import importlib.util

    spec = importlib.util.spec_from_file_location("run_study", ROOT / "scripts" / "run_study.py")
    run_study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_study)
    for smoke in (False, True):
        roots, _ = run_study.output_roots(run_study.parse(["--smoke"] if smoke else []))
        expected = {k: str(v).replace(str(project), str(ROOT))
                    for k, v in resolve_roots(smoke).items()}
        assert roots == expected


@pytest.mark.parametrize("name, stage", [("02_train_stage1", 1), ("03_train_stage2", 2)])
def test_training_config_is_the_notebooks_make_config_call(name, stage):
    params = {**_parameters(name), "epochs": 3, "lr": 0.01, "smoke": True, "seed": 4}
    cfg = N.training_config(name, params)
    roots = resolve_roots(True)
    expected = make_config("synth-disfa", smoke=True, fold=1, seed=4, variant="full",
                           batch_size=None, data_root=str(roots["data_root"]),
                           runs_root=str(roots["runs_root"]),
                           results_root=str(roots["results_root"]), device="auto",
                           **{f"epochs_stage{stage}": 3, f"lr_stage{stage}": 0.01})
    assert cfg == expected
    other = 3 - stage  # the other stage keeps the preset's epochs
    assert getattr(cfg, f"epochs_stage{other}") == make_config(
        "synth-disfa", smoke=True).__dict__[f"epochs_stage{other}"]


def test_training_config_refuses_an_unknown_parameter():
    params = {**_parameters("02_train_stage1"), "variant": "full"}
    with pytest.raises(ParameterError, match="variant='full': not a parameter of 02"):
        N.training_config("02_train_stage1", params)


def test_every_parameter_a_helper_reads_is_one_the_notebooks_declare():
    declared = set().union(*(_parameters(p.stem) for p in (ROOT / "notebooks").glob("*.ipynb")))
    for helper, names in N.READS.items():
        assert set(names) <= declared, (helper, set(names) - declared)


def test_tables_for_people():
    status = pd.DataFrame({"seed": [0.0, 1.0], "fold": [1.0, float("nan")],
                           "job_id": [float("nan")] * 2, "f1": [0.5, 0.25]})
    table = N.for_people(status)
    assert list(table.columns) == ["seed", "fold", "f1"]  # the empty cluster column is gone
    assert str(table["seed"].dtype) == "Int64" and table["fold"].isna().iloc[1]
    assert table["f1"].tolist() == [0.5, 0.25]
    runs = pd.DataFrame({"seed": [0, 0, 1], "fold": [1, 2, 1], "variant": ["full"] * 3,
                         "status": ["measured", "skipped: /x/final.pt: no trained 'full'",
                                    "skipped: /y/final.pt: no trained 'full'"]})
    measured, missing = N.run_status(runs)
    assert measured.to_dict("records") == [{"seed": 0, "fold": 1, "variant": "full"}]
    assert missing.to_dict("records") == [{"variant": "full", "runs": "seed 0 fold 2, seed 1 "
                                           "fold 1", "why": "no trained 'full'"}]


def test_show_markdown_shows_its_images_from_their_folder(tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", shown.append)
    (tmp_path / "deltas.png").write_bytes(
        bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                      "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"))
    (tmp_path / "report.md").write_text("# Report\n\n![deltas](deltas.png)\n\nafter\n")
    N.show_markdown(tmp_path / "report.md")
    kinds = [type(x).__name__ for x in shown]
    assert kinds == ["Markdown", "Image", "Markdown"]
    assert "deltas.png" not in shown[0].data + shown[2].data


def test_a_new_version_of_a_file_says_so(tmp_path, capsys):
    N.say_written(tmp_path / "efficiency-v2.csv")
    N.say_written(tmp_path / "efficiency.csv")
    first, second = capsys.readouterr().out.splitlines()
    assert first.endswith("(efficiency.csv was already there and is kept)")
    assert second == f"written to {tmp_path / 'efficiency.csv'}"


def test_after_a_smoke_walkthrough_a_full_size_failure_says_set_smoke(project):
    from hiva_lib.study.study import FigureError

    error = FigureError("/x/final.pt: no trained 'full' model for synth-disfa. Train it: ...")
    params = {"dataset": "synth-disfa", "smoke": False}
    assert N.first_fix(error, params) is None  # nothing of smoke size either: the message
    (project / "study_out" / "_smoke" / "results" / "synth-disfa").mkdir(parents=True)
    lines = [re.sub(r"\x1b\[\d+m", "", s) for s in N.error_lines(error, params)]
    assert lines[0].startswith("nothing at full size yet") and "set smoke = True in the " \
        "parameters cell" in lines[0]
    assert lines[1] == f"FigureError: {error}" and "%tb" in lines[2]
    assert N.first_fix(error, {**params, "smoke": True}) is None
    assert N.first_fix(ValueError("bad"), params) is None  # not a missing input


def test_heartbeat_says_what_runs_every_interval(capsys):
    import time

    with heartbeat("counting", every=0.05):
        time.sleep(0.2)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "counting ..." and out[-1].startswith("counting: done in")
    assert sum(line.startswith("still counting (") for line in out) >= 2


def test_figures_and_claims_score_the_same_frames():
    """Notebooks 06 and 10 both write attention_scores.csv rows of seed 0, fold 1: with the
    same number of frames they write the same rows, whichever runs last."""
    from hiva_lib.study.fig6_attention import SCORED_FRAMES

    frames = {name: _parameters(name)["max_frames"] for name in ("06_figures", "10_claims")}
    assert frames == {"06_figures": SCORED_FRAMES, "10_claims": SCORED_FRAMES}
