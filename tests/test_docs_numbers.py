"""The measured numbers that the README (outside its generated block) and docs/ quote are those
of the committed files in results/: each check recomputes a number from its file with pandas
and looks for it, at the doc's rounding, in the passage that quotes it.

Settings, the paper's values and counts fixed by the code are not checked here; measurements
that no committed file holds are in docs/history.md under their date, which is not checked."""
from __future__ import annotations

import json
import math
import re
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pandas as pd
import pytest

from hiva_lib.data.synthfacs.labels import SYNTH_PRESETS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"


def text(doc: str) -> str:
    """The doc with its whitespace runs collapsed, so a passage may wrap anywhere."""
    return " ".join((ROOT / doc).read_text().split())


def line(doc: str, marker: str) -> str:
    """The one line of ``doc`` that holds ``marker`` (a table row)."""
    hits = [s for s in (ROOT / doc).read_text().splitlines() if marker in s]
    assert len(hits) == 1, f"{doc}: {len(hits)} lines hold {marker!r}"
    return hits[0]


def noise(name: str) -> pd.DataFrame:
    """Mean F1 and its sd (ddof=1) over the one-thread seeds of a bench_noise file, per preset."""
    runs = pd.read_csv(RESULTS / name)
    one = runs[runs.threads == 1]
    return one.groupby("dataset").mean_f1.agg(["mean", "std", "count"])


# --- README: the reproduction band ----------------------------------------------------------

def test_readme_band_is_three_sqrt2_sd_of_bench_noise_v2():
    sd = noise("bench_noise-v2.csv")["std"]
    band = 3 * math.sqrt(2) * sd
    assert (f"{band['synth-disfa']:.2f} F1 points for the mean on synth-disfa, "
            f"{band['synth-bp4d']:.2f} on synth-bp4d") in text("README.md")


def test_readme_seeds_and_threads_of_the_band_are_the_file_s():
    runs = pd.read_csv(RESULTS / "bench_noise-v2.csv")
    one = runs[runs.threads == 1]
    for _, seeds in one.groupby("dataset").seed:
        assert sorted(seeds) == [0, 1, 2, 3, 4]
    assert (runs.fold == 1).all() and set(runs.variant) == {"baseline"}
    assert "the fold-1 Baseline, seeds 0-4, one thread" in text("README.md")


def test_readme_two_thread_moves_are_the_file_s_and_inside_the_band():
    runs = pd.read_csv(RESULTS / "bench_noise-v2.csv").query("seed == 0")
    by = runs.pivot(index="dataset", columns="threads", values="mean_f1")
    move = (by[2] - by[1]).round(2)
    band = 3 * math.sqrt(2) * noise("bench_noise-v2.csv")["std"]
    assert (move.abs() <= band).all()
    assert (f"moved the mean by {move['synth-disfa']:+.2f} (synth-disfa) and "
            f"{move['synth-bp4d']:+.2f} (synth-bp4d) points, inside the band") in text("README.md")


# --- docs/training.md and docs/synthfacs.md: the seed noise ---------------------------------

@pytest.mark.parametrize("name, marker", [
    ("bench_noise.csv", "| SynthFACS 1.3, synth-disfa 9 x 480 (`results/bench_noise.csv`) |"),
    ("bench_noise-v2.csv", "| **SynthFACS 1.3, synth-disfa 12 x 360 (chosen; "
                           "`results/bench_noise-v2.csv`)** |"),
])
def test_training_noise_table_row_is_its_file(name, marker):
    table = noise(name)
    row = line("docs/training.md", marker)
    for dataset in ("synth-bp4d", "synth-disfa"):
        cell = f"{table.loc[dataset, 'mean']:.1f} ({table.loc[dataset, 'std']:.2f}"
        assert cell in row, f"docs/training.md, {name} row: {dataset} should read {cell})"


@pytest.mark.parametrize("name, quoted", [
    ("bench_noise.csv", "by {sd:.2f} F1 points (std, seeds 0-4, `results/bench_noise.csv`)"),
    ("bench_noise-v2.csv", "its std over seeds 0-4 is {sd:.2f} (`results/bench_noise-v2.csv`)"),
])
def test_synthfacs_disfa_noise_is_its_file(name, quoted):
    sd = noise(name).loc["synth-disfa", "std"]
    assert quoted.format(sd=sd) in text("docs/synthfacs.md")


# --- docs/training.md: data fingerprints, parameter counts ----------------------------------

@pytest.mark.parametrize("dataset", ["synth-bp4d", "synth-disfa"])
def test_training_fingerprints_are_the_committed_results(dataset):
    prints = {json.loads(p.read_text()).get("data_fingerprint")
              for p in (RESULTS / dataset).glob("*/seed*/fold*/metrics.json")}
    assert len(prints) == 1, f"{dataset}: results of several data versions: {prints}"
    quoted = f"`{prints.pop()[:8]}...`"
    assert quoted in text("docs/training.md")


def test_training_parameter_counts_are_efficiency_csv():
    paper = pd.read_csv(RESULTS / "efficiency.csv").set_index("preset").loc["paper"]
    built, trained = paper.params_total / 1e6, paper.params_trainable_stage2 / 1e6
    assert (f"{built:.1f} M parameters, {trained:.1f} M of them trained in stage 2 "
            f"(`results/efficiency.csv`)") in text("docs/training.md")
    assert f"4 B x ({built:.1f} + 3 x {trained:.1f}) M" in text("docs/training.md")


# --- docs/figures.md: the efficiency table --------------------------------------------------

def _r(x: float, digits: int) -> str:
    """``x`` rounded half up, as the docs write it (170.5 ms is 171)."""
    return str(Decimal(repr(float(x))).quantize(Decimal(1).scaleb(-digits), ROUND_HALF_UP))


def _m(x):
    return f"{_r(x / 1e6, 2)}M"


def _efficiency_rows():
    eff = pd.read_csv(RESULTS / "efficiency.csv").set_index("preset")
    p, c = eff.loc["paper"], eff.loc["cpu-lite0"]
    return {
        "| parameters | model object as built |": [
            f"{_m(p.params_total)} (Swin-B {_m(p.params_backbone)}, 2 BERT-large layers "
            f"{_m(p.params_text_trainable_bert)}, graph {_m(p.params_graph)})",
            f"{_m(c.params_total)} ({_m(c.params_trainable_stage1)} trained in stage 1)"],
        "| parameters | evaluated model + BERT-large's word embeddings |": [
            f"**{_m(p.params_paper_counting)}** ({_m(p.params_evaluated)} + "
            f"{_m(p.params_word_embeddings)})", f"| {_m(c.params_paper_counting)} |"],
        "| parameters | model object + the whole frozen BERT |": [
            _m(p.params_total + p.params_frozen_bert), _m(c.params_total + c.params_frozen_bert)],
        "| G multiply-adds per image | image path (text cached) |": [
            f"**{p.GMACs_image_path:.2f}**", f"| {c.GMACs_image_path:.2f} |"],
        "| G multiply-adds per image | text path (cacheable) |": [
            f"| {p.GMACs_text:.2f} |", f"| {c.GMACs_text:.2f} |"],
        "| GFLOPs per image | image path / total": [
            f"{p.GFLOPs_image_path:.2f} / {p.GFLOPs_total:.2f}",
            f"{c.GFLOPs_image_path:.2f} / {c.GFLOPs_total:.2f}"],
        "| ms per image, CPU, batch 1 |": [
            f"{p.cpu_ms_per_image_b1:.0f} ({p.cpu_ms_per_image_b1_text_cached:.0f}), 1 thread",
            f"{c.cpu_ms_per_image_b1:.0f} ({c.cpu_ms_per_image_b1_text_cached:.0f})"],
        "| ms per batch of 32 |": [
            f"{_r(p.ms_per_batch, 0)} (CPU, 1 thread)", f"{_r(c.ms_per_batch, 0)} (CPU)"],
        "| ms per image in the batch |": [
            f"{_r(p.ms_per_image_in_batch, 0)} (CPU)", f"{_r(c.ms_per_image_in_batch, 1)} (CPU)"],
    }


@pytest.mark.parametrize("marker", list(_efficiency_rows()))
def test_figures_efficiency_row_is_efficiency_csv(marker):
    row = line("docs/figures.md", marker)
    for cell in _efficiency_rows()[marker]:
        assert cell in row, f"docs/figures.md {marker!r}: {cell!r} not in {row!r}"


def test_figures_efficiency_against_the_paper_is_efficiency_csv():
    paper = pd.read_csv(RESULTS / "efficiency.csv").set_index("preset").loc["paper"]
    params_gap = 156.08 - paper.params_paper_counting / 1e6     # the paper's 156.08M
    macs_gap = 19.09 - paper.GMACs_image_path                   # the paper's 19.09 G
    assert (f"our parameters match its 156.08M to {params_gap:.2f}M; its 19.09 G lies "
            f"{macs_gap:.1f} G above our image path's multiply-adds "
            f"({paper.GMACs_image_path:.2f} G") in text("docs/figures.md")


# --- docs/synthfacs.md: the generated base rates --------------------------------------------

def _generated(dataset: str) -> pd.Series:
    freq = pd.read_csv(RESULTS / dataset / "au_frequency.csv")
    return freq.groupby("au", sort=False).frequency.mean() / 100


@pytest.mark.parametrize("dataset", ["synth-bp4d", "synth-disfa", "synth-gft"])
def test_synthfacs_generated_rates_are_au_frequency_csv(dataset):
    doc = (ROOT / "docs/synthfacs.md").read_text()
    section = doc[doc.index(f"\n{dataset}\n\n|"):]
    header = next(s for s in section.splitlines() if s.startswith("| |"))
    row = next(s for s in section.splitlines() if s.startswith("| generated (default size"))
    aus = [c.strip() for c in header.strip("|").split("|")][1:]
    quoted = [float(c) for c in row.strip("|").split("|")[1:]]
    rates = _generated(dataset)
    assert aus == list(rates.index)
    assert quoted == [round(r, 2) for r in rates], f"docs/synthfacs.md {dataset}: {quoted}"


def test_synthfacs_largest_deviation_from_target_is_au_frequency_csv():
    off = {}
    for dataset in ("synth-bp4d", "synth-disfa"):     # three equal folds: the whole set
        targets = SYNTH_PRESETS[dataset].base_rates
        for au, rate in _generated(dataset).items():
            target = targets[int(au[2:])]
            off[(dataset, au)] = (abs(rate - target) / target, rate, target)
    (dataset, au), (share, rate, target) = max(off.items(), key=lambda kv: kv[1][0])
    assert (f"at most {100 * share:.0f} % off, {dataset} {au} {rate:.3f} against "
            f"{target:g}") in text("docs/synthfacs.md")


# --- docs/report.md: the audit of the paper's tables ----------------------------------------

def _doc_audit() -> pd.DataFrame:
    doc = (ROOT / "docs/report.md").read_text()
    rows, check = [], None
    for s in doc[doc.index("### Findings"):].splitlines():
        if s.startswith("#### "):
            check = s[5:].strip()
        elif check and s.startswith("| ") and not s.startswith("| table"):
            cells = [c.strip() for c in s.strip("|").split("|")]
            rows.append(dict(check=check, table=cells[0], method=cells[1], column=cells[2],
                             value=float(cells[3]), reference=float(cells[4]),
                             difference=float(cells[5])))
    return pd.DataFrame(rows)


def test_report_audit_tables_are_audit_csv():
    audit = pd.read_csv(RESULTS / "synth-bp4d" / "report" / "audit.csv")
    doc = _doc_audit()
    key = ["check", "table", "method"]
    merged = audit.merge(doc, on=key, how="outer", suffixes=("", "_doc"), indicator=True)
    assert (merged._merge == "both").all(), merged[merged._merge != "both"][key]
    for col in ("value", "reference", "difference"):
        assert ((merged[col] - merged[f"{col}_doc"]).abs() <= 0.005 + 1e-9).all(), col


@pytest.mark.parametrize("table, method, quoted", [
    ("IV", "HiVA (w/o L_diff)", "({value:.1f} printed, {reference:.2f} computed)"),
    ("V", "HiVA (w/o L_diff)", "({value:.1f} vs {reference:.2f})"),
    ("VI", "HiVA (w/o CDCA)", "({value:.1f} vs {reference:.2f})"),
])
def test_report_audit_prose_is_audit_csv(table, method, quoted):
    audit = pd.read_csv(RESULTS / "synth-bp4d" / "report" / "audit.csv")
    hit = audit[(audit.check == "ave_mismatch") & (audit.table == table)
                & (audit.method == method)].iloc[0]
    assert quoted.format(value=hit.value, reference=hit.reference) in text("docs/report.md")


# --- docs/cluster.md: the miniature's time per data set -------------------------------------

def test_cluster_miniature_per_data_set_is_within_an_hour():
    rows = pd.concat([pd.read_csv(RESULTS / n) for n in
                      ("bench_ablation.csv", "bench_ablation-v2.csv")])
    per_set = rows[rows.dataset != "total"]
    assert (per_set.minutes < 60).all()
    assert re.search(r"miniature on 2 CPU cores within an hour: `results/bench_ablation.csv`",
                     text("docs/cluster.md"))
