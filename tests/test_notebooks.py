"""Every numbered notebook executed through papermill at smoke size."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import papermill as pm
import pytest
from conftest import run_notebook as run

pytestmark = pytest.mark.slow  # notebooks end to end


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("study")
    return {"data_root": str(base / "data"), "runs_root": str(base / "runs"),
            "results_root": str(base / "results")}, base


@pytest.mark.slow
def test_01_02_03_smoke(roots):
    r, base = roots
    run("01_prepare_data", base, dataset="synth-disfa", smoke=True, data_root=r["data_root"],
        figures_root=str(base / "figures"))
    assert (Path(r["data_root"]) / "synth-disfa" / "index.csv").exists()
    sheet = base / "figures" / "synth-disfa" / "synthfacs_contact_sheet.png"
    assert sheet.stat().st_size > 20_000  # a grid of faces, not an empty canvas
    run("02_train_stage1", base, dataset="synth-disfa", smoke=True, **r)
    run("03_train_stage2", base, dataset="synth-disfa", smoke=True, variant="full", **r)
    m = json.loads((Path(r["results_root"]) / "synth-disfa" / "full" / "seed0" / "fold1"
                    / "metrics.json").read_text())
    assert m["row_name"] == "HiVA (Ours)" and len(m["f1"]) == 8
    assert (Path(r["results_root"]) / "synth-disfa" / "baseline" / "seed0" / "fold1"
            / "metrics.json").exists()


def test_03_on_unprepared_real_data_says_how_to_prepare(roots):
    r, base = roots
    with pytest.raises(pm.PapermillExecutionError) as err:
        run("03_train_stage2", base, dataset="disfa", smoke=True, **r)
    assert "01_prepare_data.ipynb" in str(err.value) and "raw_root" in str(err.value)
    assert not (Path(r["runs_root"]) / "disfa").exists()


def _ensure_smoke_data(r, base):
    """synth-disfa at smoke size in the shared data root (rendered once)."""
    data_root = r["data_root"]
    if not (Path(data_root) / "synth-disfa" / "index.csv").exists():
        run("01_prepare_data", base, dataset="synth-disfa", smoke=True, data_root=data_root,
            figures_root=str(base / "figures"))


@pytest.mark.slow
def test_04_05_smoke_two_variants_one_fold(roots):
    r, base = roots
    _ensure_smoke_data(r, base)
    run("04_ablations", base, dataset="synth-disfa", smoke=True, variants=["baseline", "wo_ddca"],
        folds=[1], **r)
    status = (Path(r["results_root"]) / "synth-disfa" / "ablation_status.csv").read_text()
    assert "HiVA (w/o DDCA)" in status and "failed" not in status
    out = run("05_report", base, dataset="synth-disfa", smoke=True,
              results_root=r["results_root"])
    report = Path(r["results_root"]) / "synth-disfa" / "report"
    mds = list(report.glob("*.md"))
    assert mds and any("HiVA (w/o DDCA)" in p.read_text() for p in mds)
    assert out.exists()


@pytest.mark.slow
def test_10_claims_smoke(roots):
    r, base = roots
    _ensure_smoke_data(r, base)
    run("04_ablations", base, dataset="synth-disfa", smoke=True,
        variants=["baseline", "full", "lambda_0.1"], folds=[1], **r)
    run("10_claims", base, dataset="synth-disfa", smoke=True, seeds=[0], max_frames=8,
        figures_root=str(base / "figures"), **r)
    res = Path(r["results_root"]) / "synth-disfa"
    claims = pd.read_csv(res / "claims.csv")
    assert list(claims["claim"]) == [f"C{i}" for i in range(1, 10)]
    assert set(claims["verdict"]) <= {"supported", "contradicted", "not resolved",
                                      "not resolved (holds within runs only)",
                                      "not applicable under the default reading"}
    assert (res / "claims_parts.csv").exists() and "verdict_family" in claims
    # one (seed, fold) pair: no interval, so C1 is not resolved, and says so
    c1 = claims.set_index("claim").loc["C1"]
    assert c1["n"] == 1 and c1["verdict"] == "not resolved" and "pairs" in c1["reason"]
    assert (res / "claims.md").read_text().startswith("# The paper's claims on synth-disfa")
    degrees = pd.read_csv(res / "graph_degrees.csv")
    assert set(degrees["variant"]) == {"full", "baseline"} and len(degrees) == 16
    balance = pd.read_csv(res / "ldiff_balance.csv").set_index("variant")
    assert balance.loc["lambda_0.1", "lambda_diff"] == pytest.approx(0.1)
    assert balance.loc["lambda_0.1", "ratio"] > 0
    assert (base / "figures" / "claims_verdicts.png").read_bytes()[:4] == b"\x89PNG"
