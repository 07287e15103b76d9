"""The committed ledger and summary reproduce from ``results/`` alone (a fresh clone has no
``runs/``), and the README's results block is the generated summary."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hiva_lib.study import claim_measures as M
from hiva_lib.study import ledger as L
from hiva_lib.study import summary as S

ROOT = Path(__file__).resolve().parents[1]
PRESETS = [p.parent.name for p in sorted((ROOT / "results").glob("synth-*/claims.csv"))]


@pytest.fixture(scope="module")
def copied(tmp_path_factory):
    """results/ copied to a temporary folder: nothing of the project's is read or written."""
    dest = tmp_path_factory.mktemp("fresh") / "results"
    shutil.copytree(ROOT / "results", dest, ignore=shutil.ignore_patterns("notebooks"))
    return dest


@pytest.fixture(scope="module")
def ledger(copied, tmp_path_factory):
    """Every preset's ledger written anew from the copied results/ (the families span the
    presets), into a folder of its own."""
    out = tmp_path_factory.mktemp("ledger")
    for dataset in PRESETS:
        L.write_ledger(M.ClaimInputs(dataset, copied, data_root=str(out / "no-data"),
                                     runs_root=str(out / "no-runs")), out)
    return out


@pytest.mark.parametrize("dataset", PRESETS)
@pytest.mark.parametrize("name", ["claims.csv", "claims_parts.csv", "claims.md"])
def test_committed_claims_reproduce_from_results_alone(ledger, dataset, name):
    committed = ROOT / "results" / dataset / name
    assert (ledger / dataset / name).read_text() == committed.read_text(), (
        f"{committed} does not follow from results/ by the current rules: run notebook 10 "
        f"for every preset (or scripts/regenerate_results.sh with ONLY=derive)")


def test_summary_and_readme_block_are_generated(copied):
    text = S.summary_markdown(copied)
    assert (ROOT / "results" / "SUMMARY.md").read_text() == text, (
        "results/SUMMARY.md is stale: python -m hiva_lib.study.summary --readme")
    readme = (ROOT / "README.md").read_text()
    assert S.readme_block(readme) == text, (
        "README.md's results block differs from results/SUMMARY.md: "
        "python -m hiva_lib.study.summary --readme")


def test_the_diagnosis_tables_in_docs_are_generated(copied):
    doc = (ROOT / S.MECHANISM_DOC).read_text()
    assert S.readme_block(doc, *S.MECHANISM_MARKS) == S.mechanism_markdown(copied), (
        f"{S.MECHANISM_DOC}'s diagnosis tables differ from results/: "
        "python -m hiva_lib.study.summary --readme")


def test_mechanism_tables_read_the_files(tmp_path):
    """Planted per-run rows: the means, ranges and before -> after of the tables, by hand."""
    rows = []
    for seed, (z0, z2, shared) in enumerate([(0.8, 0.99, 0.5), (0.6, 0.97, 0.7)]):
        for epoch, z in ((0, z0), (1, 0.95), (2, z2)):
            rows.append(dict(dataset="synth-gft", variant="full", seed=seed, fold=1, epoch=epoch,
                             h_cosine=0.5, z_cosine=z, h_specific=1.0, z_specific=1 - z,
                             z_grad_shared=0.1 if epoch == 0 else np.nan,
                             tokens=25 if epoch == 2 else np.nan,
                             ddca_argmax_pairs=shared if epoch == 2 else np.nan))
    (tmp_path / "synth-gft").mkdir()
    frame = pd.DataFrame(rows).reindex(columns=[*rows[0], "ddca_entropy_norm",
                                                "ddca_peak_at_largest", "cdca_entropy_norm",
                                                "cdca_argmax_all", "cdca_peak_at_largest",
                                                "h_grad_shared"])
    frame.to_csv(tmp_path / "synth-gft" / "mechanism.csv", index=False)
    text = S.mechanism_markdown(tmp_path)
    # Z cosine 0.7 -> 0.98 (means of 0.8, 0.6 and 0.99, 0.97), range 0.970-0.990; pairs 60%
    assert "| synth-gft | full | 2 | 0.50 -> 0.50 | 0.700 -> 0.980 | 0.980 (0.970-0.990) |" in text
    assert "| 60% (50%-70%) |" in text and "| 4% |" in text


def test_sync_readme_replaces_only_the_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{S.START}\nold\n{S.END}\n\nrest 1.0\n")
    summary = tmp_path / "SUMMARY.md"
    summary.write_text("| a | b |\n|---|---|\n| 1 | 2 |\n")
    S.sync_readme(readme, summary)
    assert readme.read_text() == (f"# title\n\n{S.START}\n| a | b |\n|---|---|\n| 1 | 2 |\n"
                                  f"{S.END}\n\nrest 1.0\n")
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="summary:start"):
        S.sync_readme(readme, summary)


def test_summary_reads_the_files(tmp_path):
    """A planted claims table shows up in the summary with its numbers, not others."""
    (tmp_path / "synth-gft").mkdir()
    row = dict(dataset="synth-gft", claim="C1", statement="HiVA beats the Baseline.",
               where="", paper="", test="", statistic="", value=1.234, low=0.5, high=2.0, n=9,
               method="t", verdict="supported", reason="", p_holm=0.01,
               vs_paper="smaller than the paper's +5.8", mde_80=0.9, pairs_for_1pt=12.0,
               parts_resolved="1 of 1")
    pd.DataFrame([row]).to_csv(tmp_path / "synth-gft" / "claims.csv", index=False)
    text = S.summary_markdown(tmp_path)
    assert "**supported**: +1.23 [0.50, 2.00], 9 run(s); smaller than the paper's +5.8" in text


def test_a_claim_decided_by_a_part_not_run_names_it(tmp_path):
    """C8 on a preset with no_language but no shuffled_text: the cell says which is missing."""
    (tmp_path / "synth-gft").mkdir()
    row = dict(dataset="synth-gft", claim="C8", statement="The meaning matters.", value=np.nan,
               low=np.nan, high=np.nan, n=0, verdict="not resolved", reason="x",
               part="full - shuffled_text (not run)", parts_resolved="0 of 2")
    pd.DataFrame([row]).to_csv(tmp_path / "synth-gft" / "claims.csv", index=False)
    assert ("| not resolved: full - shuffled_text not run, 0 of 2 parts resolved over the runs |"
            in S.summary_markdown(tmp_path))


def test_the_causal_tests_are_a_table_of_paired_differences(tmp_path):
    """causal.csv in docs/model.md's block: one row per test, each check's interval."""
    (tmp_path / "synth-bp4d").mkdir()
    rows = [dict(dataset="synth-bp4d", variant="text_frozen_s2", check=c, value=v, low=lo,
                 high=hi, n=3, p_holm=p, resolved=p < 0.05)
            for c, v, lo, hi, p in [("text_frozen_s2 - full (AVE F1)", -0.11, -1.2, 0.98, 0.6),
                                    ("text_frozen_s2 - full (Z cosine, last epoch)", -0.2,
                                     -0.25, -0.15, 0.01)]]
    pd.DataFrame(rows).to_csv(tmp_path / "synth-bp4d" / "causal.csv", index=False)
    shutil.copy(ROOT / "results" / "synth-bp4d" / "mechanism.csv", tmp_path / "synth-bp4d")
    text = S.mechanism_markdown(tmp_path)
    assert ("| synth-bp4d | text_frozen_s2 | Causal: text branch frozen in stage 2 | 3 | "
            "-0.11 [-1.2, +0.98] | -0.2 [-0.25, -0.15]* |") in text


def test_only_the_table_rows_count_as_rows_resolved_over_the_baseline(tmp_path):
    """A control's gain (outside the rows' Holm family, resolved uncorrected) is not listed
    among the table rows resolved under Holm."""
    out = tmp_path / "synth-gft" / "report"
    out.mkdir(parents=True)
    pd.DataFrame([dict(variant=v, column="AVE", mean=m, std=1.0, n=9) for v, m in
                  (("baseline", 60.0), ("full", 61.7), ("baseline_s2", 58.4))]).to_csv(
        out / "summary.csv", index=False)
    pd.DataFrame([dict(variant=v, column="AVE", gain=g, gain_low=g - 1, gain_high=g + 1,
                       gain_n=9, resolved=True) for v, g in (("full", 1.7), ("baseline_s2", -1.6))]
                 ).to_csv(out / "gains.csv", index=False)
    row = S._table_row(tmp_path, "synth-gft")
    assert row["rows resolved vs Baseline (Holm)"] == "HiVA (Ours) +1.70"
