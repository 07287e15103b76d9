"""The claims ledger on planted results: each verdict from the one rule."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from hiva_lib.data.au import au_keys, dataset_aus
from hiva_lib.study import claim_measures as M
from hiva_lib.study import claim_rule
from hiva_lib.study import claims as C
from hiva_lib.study import ledger as L
from hiva_lib.study.stats import (
    CONTRADICTED,
    NOT_APPLICABLE,
    NOT_RESOLVED,
    SUPPORTED,
    WITHIN_RUNS_ONLY,
)

DS = "synth-disfa"
AUS = au_keys(dataset_aus(DS))
KEYS = [(s, f) for s in range(3) for f in (1, 2, 3)]
BASE = np.array([0.40, 0.50, 0.60, 0.40, 0.50, 0.60, 0.80, 0.50])
SPREAD = [0.0, 0.05, -0.04, 0.08, -0.06, 0.03, -0.02, 0.06, -0.07]  # per run: F1 moves a lot
NOISE = [0.3, -0.2, 0.1, -0.3, 0.2, 0.0, -0.1, 0.25, -0.15]  # F1 points, per pair


def _write(root, variant, seed, fold, f1, config=None, replace=False):
    d = root / DS / variant / f"seed{seed}" / f"fold{fold}"
    d.mkdir(parents=True, exist_ok=replace)
    (d / "metrics.json").write_text(json.dumps(dict(
        dataset=DS, variant=variant, seed=seed, fold=fold, au_ids=list(dataset_aus(DS)),
        f1=dict(zip(AUS, map(float, f1), strict=True)), mean_f1=float(np.mean(f1)),
        n_test=10, config=config or {}, checkpoint="missing.pt")))


def _plant(root, gains: dict[str, float], per_au=None):
    """Runs of 3 seeds x 3 folds: the Baseline moves by SPREAD per run; a variant is the
    Baseline + its gain (F1 points) + NOISE; ``per_au``: full's gains per AU instead."""
    for j, (s, f) in enumerate(KEYS):
        base = BASE + SPREAD[j]
        _write(root, "baseline", s, f, base)
        for v, g in gains.items():
            shift = (per_au if v == "full" and per_au is not None else g) + NOISE[j]
            _write(root, v, s, f, base + np.asarray(shift) / 100.0)


GAINS = {"full": 3.0, "wo_aug": 2.0, "wo_ldiff": 2.0, "wo_ddca": 1.0, "wo_cdca": 1.0,
         "wo_cdca_wo_ddca": 0.5, "wo_aug_wo_ldiff": 1.0,
         "shuffled_text": 2.9, "no_language": 5.0}


@pytest.fixture
def planted(tmp_path):
    _plant(tmp_path, GAINS)
    return M.ClaimInputs(DS, tmp_path, data_root=str(tmp_path / "no-data"))


def test_claims_are_data():
    assert C.CLAIM_IDS == tuple(f"C{i}" for i in range(1, 10))
    for c in C.CLAIMS:
        assert c.statement and c.where and c.test and c.statistic and callable(c.evaluate)
        assert c.role in (C.CONFIRMATORY, C.EXPLORATORY)
    assert {c.id for c in C.CLAIMS if c.role == C.CONFIRMATORY} == {"C1", "C2", "C9"}


def test_gain_claims_on_planted_runs(planted):
    c1 = C.eval_c1(planted)
    # by hand: full - baseline per run = 3 + noise (the shared spread cancels)
    d = 3.0 + np.array(NOISE)
    half = sps.t.ppf(0.975, 8) * d.std(ddof=1) / 3
    assert (c1.value, c1.low, c1.high) == pytest.approx((d.mean(), d.mean() - half,
                                                        d.mean() + half), abs=1e-6)
    assert c1.verdict == SUPPORTED and c1.n == 9 and c1.method == "t"
    assert C.eval_c2(planted).verdict == SUPPORTED  # 3 - each removal >= 1 point, noise 0
    c3 = C.eval_c3(planted)
    assert c3.verdict == SUPPORTED and "wo_aug - wo_aug_wo_ldiff" in c3.reason
    c8 = C.eval_c8(planted)
    # 3.0 vs shuffled 2.9: 0.1 with zero pair noise -> resolved tiny gain; vs no_language -2
    assert c8.verdict == CONTRADICTED
    assert "full - no_language" in c8.reason and c8.high < 0


def test_a_gain_within_noise_is_not_resolved(tmp_path):
    noisy = {"full": 0.0}
    _plant(tmp_path, noisy)
    # full vs baseline: the noise alone (mean 0.011, std 0.22)
    res = C.eval_c1(M.ClaimInputs(DS, tmp_path))
    assert res.verdict == NOT_RESOLVED and res.low < 0 < res.high


def test_a_loss_is_contradicted_and_seeds_filter(tmp_path):
    _plant(tmp_path, {"full": -2.0})
    assert C.eval_c1(M.ClaimInputs(DS, tmp_path)).verdict == CONTRADICTED
    one_seed = C.eval_c1(M.ClaimInputs(DS, tmp_path, seeds=(0,)))
    # one seed: resolved over its three folds, but the seed's variance is not estimable
    assert one_seed.n == 3 and one_seed.verdict_runs == CONTRADICTED
    assert one_seed.verdict == WITHIN_RUNS_ONLY and np.isnan(one_seed.low_clustered)
    assert "one seed (3 folds)" in one_seed.reason


def test_missing_inputs_are_not_resolved_with_a_reason(tmp_path):
    table = C.evaluate_claims(M.ClaimInputs(DS, tmp_path, data_root=str(tmp_path / "d")))
    assert list(table["claim"]) == list(C.CLAIM_IDS)
    assert (table["verdict"] == NOT_RESOLVED).all()
    assert table["reason"].str.startswith("no results for").all()
    _plant(tmp_path, {"full": 3.0})  # only full and baseline: C2 lacks the removals
    c2 = C.eval_c2(M.ClaimInputs(DS, tmp_path))
    assert c2.verdict == NOT_RESOLVED and "wo_aug" in c2.reason


def test_c4_rarer_aus_gain_more(tmp_path):
    """Per run: Spearman over AUs of the relative gain with that fold's frequency; the mean
    over runs gets a t-interval (runs are the units, not AUs)."""
    freq = np.linspace(5.0, 40.0, len(AUS))
    per_au = BASE * 100 * (60.0 - freq) / 100.0 * 0.2  # relative gain falls with frequency
    _plant(tmp_path, {"full": 0.0}, per_au=per_au)
    res = C.eval_c4(M.ClaimInputs(DS, tmp_path))
    assert res.verdict == NOT_RESOLVED and res.reason.startswith("no results for")
    pd.DataFrame([dict(fold=f, au=a, frequency=q + f) for f in (1, 2, 3)
                  for a, q in zip(AUS, freq, strict=True)]).to_csv(
        tmp_path / DS / M.AU_FREQUENCY, index=False)
    res = C.eval_c4(M.ClaimInputs(DS, tmp_path))
    # by hand, one run: relative gain (full - base) / base against the frequency
    base = BASE + SPREAD[0]
    rel = (per_au + NOISE[0]) / 100.0 / base
    rho0 = sps.spearmanr(freq + 1, rel).statistic
    assert rho0 < -0.8
    assert res.n == 9 and res.method == "t" and res.verdict == SUPPORTED
    assert -1.0 <= res.value < -0.8


def _mechanism(root, full: list[float], wo: list[float], jitter: float = 0.01):
    """mechanism.csv rows: h_cosine per epoch (0 = before stage 2) of full and wo_ldiff for
    every planted run, each run moved by a small run-specific amount."""
    rows = []
    for j, (s, f) in enumerate(KEYS):
        for v, track in (("full", full), ("wo_ldiff", wo)):
            rows += [dict(dataset=DS, variant=v, seed=s, fold=f, epoch=e,
                          h_cosine=c + jitter * NOISE[j] * (e > 0), z_cosine=c)
                     for e, c in enumerate(track)]
    pd.DataFrame(rows).to_csv(root / DS / M.MECHANISM, index=False)


def _slope(track: list[float]) -> float:
    """The least-squares slope of a track over epochs 0, 1, ..., by the textbook formula."""
    x, y = np.arange(len(track), dtype=float), np.asarray(track, dtype=float)
    return float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())


def test_c5_is_the_trend_over_every_epoch_and_says_what_happened(tmp_path):
    _plant(tmp_path, {"full": 3.0})
    # HiVA falls over every epoch (0.9 -> 0.6 -> 0.3) and ends below w/o L_diff (0.88)
    _mechanism(tmp_path, [0.9, 0.6, 0.3], [0.9, 0.9, 0.88])
    res = C.eval_c5(M.ClaimInputs(DS, tmp_path))
    assert res.verdict == SUPPORTED and res.n == 9 and "Holm over 2 parts" in res.reason
    slopes = [_slope([0.9, 0.6 + 0.01 * e, 0.3 + 0.01 * e]) for e in NOISE]
    assert res.value == pytest.approx(np.mean(slopes), abs=1e-9)
    # what the runs show: stage 2 first merges (0.57 -> 0.92), then L_diff separates a
    # little (-0.02 over the last epoch): "progressively less similar" is contradicted
    _mechanism(tmp_path, [0.57, 0.92, 0.90], [0.57, 0.94, 0.95])
    res = C.eval_c5(M.ClaimInputs(DS, tmp_path))
    assert res.verdict == CONTRADICTED and res.value == pytest.approx(_slope([0.57, 0.92, 0.90])
                                                                      + 0.005 * np.mean(NOISE))
    assert "stage 2 first merges the embeddings (H cosine 0.57 -> 0.92" in res.reason
    assert "separates them a little (-0.020 over the last epoch, to 0.90)" in res.reason
    # the same tracks for both: the contrast is 0 and the trend within noise
    _mechanism(tmp_path, [0.7, 0.7, 0.7], [0.7, 0.7, 0.7], jitter=1.0)
    res = C.eval_c5(M.ClaimInputs(DS, tmp_path))
    assert res.verdict == NOT_RESOLVED and "does not separate them" in res.reason


def test_c6_one_value_per_run(tmp_path):
    (tmp_path / DS).mkdir()
    rng = np.random.default_rng(0)
    rows = [dict(variant="full", method="ddca", au=a, seed=s, fold=1, n_frames=10,
                 pointing=0.6 + rng.normal(0, 0.05), energy=0.3 + rng.normal(0, 0.02),
                 chance=0.15) for a in AUS for s in range(3)]
    rows += [dict(variant="full", method="ddca", au="mean", seed=0, fold=1, n_frames=10,
                  pointing=0.0, energy=0.0, chance=0.9)]  # means are not counted again
    table = pd.DataFrame(rows)
    table.to_csv(tmp_path / DS / "attention_scores.csv", index=False)
    c6 = C.eval_c6(M.ClaimInputs(DS, tmp_path))
    assert c6.verdict_runs == SUPPORTED and c6.n == 3  # runs, not (AU, run) pairs
    # three seeds of one fold: the fold's variance is not estimable
    assert c6.verdict == WITHIN_RUNS_ONLY and "one fold (3 seeds)" in c6.reason
    per_run = table[table.au != "mean"].assign(d=lambda t: t.pointing - t.chance)
    by_hand = per_run.groupby("seed")["d"].mean()
    assert "pointing - chance: " + f"{by_hand.mean():.2f}" in c6.reason
    # two runs: no interval however many AUs, so not resolved
    table[table.seed < 2].to_csv(tmp_path / DS / "attention_scores.csv", index=False)
    assert C.eval_c6(M.ClaimInputs(DS, tmp_path)).verdict == NOT_RESOLVED


def _degrees(root, run_means: list[float], frames: int = 128, seed: int = 0):
    """graph_degrees.csv: per run ``frames`` frames whose active - inactive in-degree in
    HiVA scatters around that run's mean; HiVA denser than the Baseline by 1 in every run;
    the Baseline's active - inactive is the same as HiVA's (the pattern is shared)."""
    rng = np.random.default_rng(seed)
    rows = []
    for j, m in enumerate(run_means):
        for r in range(frames):
            gap = m + rng.normal(0, 0.5)
            for v, d in (("full", 4.0), ("baseline", 3.0)):
                rows.append(dict(variant=v, seed=j, fold=1, row=r,
                                 mean_degree=d + 0.05 * j + rng.normal(0, 0.1),
                                 active_indegree=2.0 + gap, inactive_indegree=2.0))
    table = pd.DataFrame(rows)
    table.to_csv(root / DS / "graph_degrees.csv", index=False)
    return table


def test_c7_frames_are_not_replicates(tmp_path):
    """Three runs disagree on the sign of the active - inactive gap: with the 384 frames as
    units the gap is 'resolved' (an independent t-interval over frames excludes 0), with
    the three runs as units it is not, and the ledger says the Baseline shares the pattern."""
    (tmp_path / DS).mkdir()
    table = _degrees(tmp_path, [0.5, -0.1, 0.4])
    full = table[table.variant == "full"]
    frames = (full.active_indegree - full.inactive_indegree).to_numpy()
    lo, hi = sps.t.interval(0.95, len(frames) - 1, frames.mean(), sps.sem(frames))
    assert lo > 0  # frames as units: "supported"
    c7 = C.eval_c7(M.ClaimInputs(DS, tmp_path))
    # HiVA's runs (no config: the default reading) use the graph in stage 1 only
    assert c7.verdict == NOT_APPLICABLE and c7.verdict_runs == NOT_RESOLVED
    assert "no run with the graph in stage 2" in c7.reason
    by_hand = full.assign(g=frames).groupby("seed")["g"].mean().mean()
    assert f"HiVA active - inactive in-degree: {by_hand:.2f} [" in c7.reason
    assert c7.reason.count("n=3") == 4
    assert "the Baseline's active - inactive in-degree" in c7.reason
    # denser in every run by about 1: resolved on three runs
    assert "HiVA - Baseline mean degree: 1.0" in c7.reason
    assert " supported, no seed x fold interval" in c7.reason.split("The stage-1 graph: ")[1]


def test_holm_within_a_claim(tmp_path):
    """C2's five parts are one family: a part resolved alone at 5% (p ~ 0.02) is not resolved
    after Holm when the others are not (adjusted p = 5 x 0.02 > 0.05)."""
    noise = np.array(NOISE)
    _plant(tmp_path, {"full": 0.0, "wo_aug": 0.0, "wo_ldiff": 0.0, "wo_cdca": 0.0,
                      "wo_cdca_wo_ddca": 0.0})
    # wo_ddca below full by 0.08 with half the noise of the pairs: p ~ 0.02 on 8 df
    for j, (s, f) in enumerate(KEYS):
        _write(tmp_path, "wo_ddca", s, f,
               BASE + SPREAD[j] + (NOISE[j] - 0.08 - 0.5 * noise[j]) / 100.0)
    diffs = 0.08 + 0.5 * noise
    p_alone = sps.ttest_1samp(diffs, 0.0).pvalue
    assert 0.01 < p_alone < 0.05
    c2 = C.eval_c2(M.ClaimInputs(DS, tmp_path))
    assert "full - wo_ddca" in c2.reason and c2.verdict == NOT_RESOLVED
    part = [x for x in c2.reason.split("; ") if x.startswith("full - wo_ddca")][0]
    assert f"Holm p={min(1.0, 5 * p_alone):.2g} not resolved" in part


def test_effect_size_and_power_columns(planted, tmp_path):
    c1 = C.eval_c1(planted)
    # the paper's Table V gain (HiVA - Baseline) lies inside or outside our interval
    assert "the paper's +" in c1.vs_paper
    d = 3.0 + np.array(NOISE)
    sd = d.std(ddof=1)
    # the power statement: 80% power at the MDE, by an independent simulation
    rng = np.random.default_rng(0)
    sims = rng.normal(c1.mde_80, sd, size=(20_000, 9))
    t = sims.mean(1) / (sims.std(1, ddof=1) / 3)
    assert np.mean(np.abs(t) > sps.t.ppf(0.975, 8)) == pytest.approx(0.8, abs=0.015)
    assert c1.pairs_for_1pt >= 3


def test_write_claims_and_the_verdict_figure(planted, tmp_path):
    table = C.evaluate_claims(planted)
    assert table.set_index("claim").loc["C1", "paper"].startswith("Table V: HiVA - Baseline")
    paths = L.write_ledger(planted, tmp_path)
    back = pd.read_csv(paths["csv"])
    assert list(back["verdict"].iloc[:3]) == [SUPPORTED] * 3
    assert list(back["verdict_family"].iloc[:3]) == [SUPPORTED] * 3  # one preset: same family
    assert set(pd.read_csv(paths["parts"])["claim"]) == {"C1", "C2", "C3", "C8"}
    md = paths["md"].read_text()
    assert "| C1 (confirmatory): HiVA beats the vision-only Baseline." in md
    assert "supported" in md
    png = L.verdict_figure(tmp_path, tmp_path / "figures")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_alternative_reading_beside_hiva(tmp_path):
    """Ambiguity 7's alternative through the ledger: paired gains and the Z cosine against
    HiVA per run, one Holm family; nothing when it was not run."""
    _plant(tmp_path, {"full": 3.0})
    assert C.alternative_checks(M.ClaimInputs(DS, tmp_path), "full_ldiff_z").empty
    for j, (s, f) in enumerate(KEYS):  # the same gain as HiVA, the same noise
        _write(tmp_path, "full_ldiff_z", s, f, BASE + SPREAD[j] + (3.0 + NOISE[j]) / 100.0)
    rows = []
    for j, (s, f) in enumerate(KEYS):
        for v, last in (("full", 0.99), ("full_ldiff_z", 0.2 + 0.01 * NOISE[j])):
            rows += [dict(variant=v, seed=s, fold=f, epoch=e, h_cosine=0.5, z_cosine=c)
                     for e, c in enumerate([0.77, last])]
    pd.DataFrame(rows).to_csv(tmp_path / DS / M.MECHANISM, index=False)
    checks = C.alternative_checks(M.ClaimInputs(DS, tmp_path), "full_ldiff_z").set_index(
        "check")
    gain = checks.loc["full_ldiff_z - baseline (AVE F1)"]
    d = 3.0 + np.array(NOISE)
    assert gain["value"] == pytest.approx(d.mean()) and gain["n"] == 9 and gain["resolved"]
    same = checks.loc["full_ldiff_z - full (AVE F1)"]
    assert same["value"] == pytest.approx(0.0, abs=1e-9) and not same["resolved"]
    z = checks.loc["full_ldiff_z - full (Z cosine, last epoch)"]
    assert z["value"] == pytest.approx(0.2 + 0.01 * np.mean(NOISE) - 0.99) and z["resolved"]
    assert (checks["p_holm"].dropna() <= 1).all()


def test_causal_test_beside_hiva_on_the_runs_they_share(tmp_path):
    """A causal test (stop_grad_cdca_z) on 3 of HiVA's 9 runs: its F1 and each Z measure of
    its last epoch minus HiVA's on those 3 runs, checked by hand; written to causal.csv."""
    _plant(tmp_path, {"full": 3.0})
    shared = KEYS[:3]
    for j, (s, f) in enumerate(shared):  # 1 point below HiVA on every shared run
        _write(tmp_path, "stop_grad_cdca_z", s, f, BASE + SPREAD[j] + (2.0 + NOISE[j]) / 100.0)
    z = {"full": dict(z_cosine=0.99, z_specific=0.05, z_spread=0.4, z_specific_rank=0.6),
         "stop_grad_cdca_z": dict(z_cosine=0.5, z_specific=0.8, z_spread=0.4,
                                  z_specific_rank=0.3)}
    rows = [dict(variant=v, seed=s, fold=f, epoch=e, h_cosine=0.5,
                 **{k: x + 0.001 * j for k, x in z[v].items()})
            for v in z for j, (s, f) in enumerate(KEYS if v == "full" else shared)
            for e in (0, 2)]
    pd.DataFrame(rows).to_csv(tmp_path / DS / M.MECHANISM, index=False)
    inputs = M.ClaimInputs(DS, tmp_path)
    checks = C.causal_checks(inputs, "stop_grad_cdca_z").set_index("check")
    f1 = checks.loc["stop_grad_cdca_z - full (AVE F1)"]
    assert f1["n"] == 3 and f1["value"] == pytest.approx(-1.0)
    for m, name in C.Z_MEASURES.items():
        d = checks.loc[f"stop_grad_cdca_z - full ({name}, last epoch)"]
        assert d["n"] == 3 and d["value"] == pytest.approx(z["stop_grad_cdca_z"][m] - z["full"][m])
    assert C.causal_checks(inputs, "text_frozen_s2").empty  # not run
    paths = L.write_ledger(inputs, tmp_path)
    assert set(pd.read_csv(paths["causal"])["variant"]) == {"stop_grad_cdca_z"}


def test_c7_applies_where_the_graph_acts_at_evaluation(tmp_path, monkeypatch):
    """Runs saved with graph_in_stage2=True are tested as C7 says; under the default reading
    a variant with the graph in stage 2 is reported beside "not applicable"."""
    (tmp_path / DS).mkdir()
    table = _degrees(tmp_path, [0.5, -0.1, 0.4])
    config = {"model_preset": "cpu-lite0", "model_overrides": {"graph_in_stage2": True}}
    for s in range(3):
        for v in ("full", "baseline"):
            _write(tmp_path, v, s, 1, BASE, config=config)
    c7 = C.eval_c7(M.ClaimInputs(DS, tmp_path))
    assert c7.verdict == NOT_RESOLVED and "stage 1 only" not in c7.reason
    # the default reading, with a graph-in-stage-2 variant measured beside it
    for s in range(3):
        _write(tmp_path, "full", s, 1, BASE, config={}, replace=True)
    graph = table[table.variant == "full"].assign(variant="full_graph_s2")
    pd.concat([table, graph]).to_csv(tmp_path / DS / "graph_degrees.csv", index=False)
    monkeypatch.setattr(C, "graph_variants", lambda: ["full_graph_s2"])
    c7 = C.eval_c7(M.ClaimInputs(DS, tmp_path))
    assert c7.verdict == NOT_APPLICABLE
    assert "full_graph_s2 (graph in stage 2): not resolved" in c7.reason


def test_c9_not_run_names_the_command_and_c8_counts_what_was_run(tmp_path):
    _plant(tmp_path, {"full": 3.0, "shuffled_text": 1.0})
    inputs = M.ClaimInputs(DS, tmp_path)
    c9 = C.eval_c9(inputs)
    assert c9.verdict == NOT_RESOLVED and c9.reason.startswith("no results for baseline_s2")
    assert f"-p dataset {DS} -y '{{variants: [baseline_s2]" in c9.reason
    # C8 with one control run: its part is resolved, the other is "not run", so the claim
    # is not supported
    c8 = C.eval_c8(inputs)
    assert c8.verdict_runs == NOT_RESOLVED and "full - no_language (not run)" in c8.reason
    assert "full - shuffled_text: 2.0" in c8.reason and "not run: no_language" in c8.reason
    _plant_more = {"full": 3.0, "baseline_s2": 1.0}
    for j, (s, f) in enumerate(KEYS):
        base = BASE + SPREAD[j]
        _write(tmp_path, "baseline_s2", s, f, base + (_plant_more["baseline_s2"] + 0.5
                                                     * NOISE[j]) / 100.0)
    c9 = C.eval_c9(M.ClaimInputs(DS, tmp_path))
    d = 3.0 + np.array(NOISE) - (1.0 + 0.5 * np.array(NOISE))
    assert c9.value == pytest.approx(d.mean()) and c9.verdict == SUPPORTED


def test_family_is_holm_over_presets_and_parts(tmp_path):
    """One claim over three presets: Holm over its (preset, part) cells, by hand; a preset
    where the claim does not apply stays out of the family."""
    p = {"a": [0.004, 0.03], "b": [0.01, 0.2], "c": [0.02, 0.04]}
    pc = {"a": [0.01, 0.02], "b": [0.2, 0.3], "c": [np.nan, np.nan]}
    parts = pd.DataFrame([dict(dataset=d, claim="C6", part=f"part{k}", direction="greater",
                               value=1.0, p=p[d][k], p_clustered=pc[d][k])
                          for d in p for k in (0, 1)])
    claims = pd.DataFrame([dict(dataset=d, claim="C6", part="part1", verdict=SUPPORTED)
                           for d in p])
    out, fam = claim_rule.family_columns(claims, parts)
    # by hand: six p-values sorted 0.004 0.01 0.02 0.03 0.04 0.2, times 6 5 4 3 2 1,
    # running maximum: 0.024 0.05 0.08 0.09 0.09 0.2
    by_hand = {0.004: 0.024, 0.01: 0.05, 0.02: 0.08, 0.03: 0.09, 0.04: 0.09, 0.2: 0.2}
    assert fam["p_family"].tolist() == pytest.approx([by_hand[x] for x in fam["p"]])
    # the seed x fold p-values: four finite, 0.01 0.02 0.2 0.3 times 4 3 2 1 = 0.04 0.06
    # 0.4 0.3, running maximum 0.04 0.06 0.4 0.4
    assert fam["p_family_clustered"].tolist()[:4] == pytest.approx([0.04, 0.06, 0.4, 0.4])
    assert out.set_index("dataset")["p_family"].to_dict() == pytest.approx(
        {"a": 0.09, "b": 0.2, "c": 0.09})
    # a's parts: only part0 resolved (0.024), part1 not (0.09): not resolved
    assert set(out["verdict_family"]) == {NOT_RESOLVED}
    # preset c not applicable: out of the family; four cells 0.004 0.01 0.03 0.2 times
    # 4 3 2 1 = 0.016 0.03 0.06 0.2 (in the order a0, a1, b0, b1: 0.016 0.06 0.03 0.2)
    claims.loc[2, "verdict"] = NOT_APPLICABLE
    out, fam = claim_rule.family_columns(claims, parts)
    assert fam["p_family"].tolist()[:4] == pytest.approx([0.016, 0.06, 0.03, 0.2])
    assert np.isnan(fam["p_family"].iat[4]) and out["verdict_family"].iat[2] == NOT_APPLICABLE


def test_family_verdict_holds_under_the_seed_x_fold_family():
    parts = pd.DataFrame([dict(dataset=d, claim="C1", part="x", direction="greater",
                               value=2.0, p=0.001, p_clustered=pc)
                          for d, pc in (("a", 0.001), ("b", np.nan))])
    claims = pd.DataFrame([dict(dataset=d, claim="C1", part="x", verdict=SUPPORTED)
                           for d in ("a", "b")])
    out, _ = claim_rule.family_columns(claims, parts)
    assert out["verdict_family"].tolist() == [SUPPORTED, WITHIN_RUNS_ONLY]


def test_no_runs_no_ledger(tmp_path):
    """Where there are no runs the ledger says where it looked and how to read the committed
    results, and writes nothing."""
    with pytest.raises(M.ClaimsError) as err:
        L.write_ledger(M.ClaimInputs(DS, tmp_path))
    assert str(tmp_path / DS) in str(err.value) and "-p results_root results" in str(err.value)
    assert not any(tmp_path.rglob("*"))
