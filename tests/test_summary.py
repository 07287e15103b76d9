"""The committed ledger and summary reproduce from ``results/`` alone (a fresh clone has no
``runs/``), and the README's results block is the generated summary."""
from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from hiva_lib.study import claims as C
from hiva_lib.study import summary as S

ROOT = Path(__file__).resolve().parents[1]
PRESETS = [p.parent.name for p in sorted((ROOT / "results").glob("synth-*/claims.csv"))]


@pytest.fixture(scope="module")
def copied(tmp_path_factory):
    """results/ copied to a temporary folder: nothing of the project's is read or written."""
    dest = tmp_path_factory.mktemp("fresh") / "results"
    shutil.copytree(ROOT / "results", dest, ignore=shutil.ignore_patterns("notebooks"))
    return dest


@pytest.mark.parametrize("dataset", PRESETS)
def test_committed_claims_reproduce_from_results_alone(copied, dataset, tmp_path):
    inputs = C.ClaimInputs(dataset, copied, data_root=str(tmp_path / "no-data"),
                           runs_root=str(tmp_path / "no-runs"))
    table = C.evaluate_claims(inputs)
    paths = C.write_claims(table, tmp_path, dataset)
    committed = ROOT / "results" / dataset / "claims.csv"
    assert paths["csv"].read_text() == committed.read_text(), (
        f"{committed} does not follow from results/ by the current rules: run notebook 09 "
        f"for {dataset}")


def test_summary_and_readme_block_are_generated(copied):
    text = S.summary_markdown(copied)
    assert (ROOT / "results" / "SUMMARY.md").read_text() == text, (
        "results/SUMMARY.md is stale: python -m hiva_lib.study.summary --readme")
    readme = (ROOT / "README.md").read_text()
    assert S.readme_block(readme) == text, (
        "README.md's results block differs from results/SUMMARY.md: "
        "python -m hiva_lib.study.summary --readme")


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
