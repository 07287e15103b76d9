"""The claims ledger on planted results: each verdict from the one rule."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from hiva_lib.data.au import au_keys, dataset_aus
from hiva_lib.study import claims as C
from hiva_lib.study.stats import CONTRADICTED, NOT_RESOLVED, SUPPORTED

DS = "synth-disfa"
AUS = au_keys(dataset_aus(DS))
KEYS = [(s, f) for s in range(3) for f in (1, 2, 3)]
BASE = np.array([0.40, 0.50, 0.60, 0.40, 0.50, 0.60, 0.80, 0.50])
SPREAD = [0.0, 0.05, -0.04, 0.08, -0.06, 0.03, -0.02, 0.06, -0.07]  # per run: F1 moves a lot
NOISE = [0.3, -0.2, 0.1, -0.3, 0.2, 0.0, -0.1, 0.25, -0.15]  # F1 points, per pair


def _write(root, variant, seed, fold, f1):
    d = root / DS / variant / f"seed{seed}" / f"fold{fold}"
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps(dict(
        dataset=DS, variant=variant, seed=seed, fold=fold, au_ids=list(dataset_aus(DS)),
        f1=dict(zip(AUS, map(float, f1), strict=True)), mean_f1=float(np.mean(f1)),
        n_test=10, config={}, checkpoint="missing.pt")))


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
    return C.ClaimInputs(DS, tmp_path, data_root=str(tmp_path / "no-data"))


def test_claims_are_data():
    assert C.CLAIM_IDS == tuple(f"C{i}" for i in range(1, 9))
    for c in C.CLAIMS:
        assert c.statement and c.where and c.test and c.statistic and callable(c.evaluate)


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
    res = C.eval_c1(C.ClaimInputs(DS, tmp_path))
    assert res.verdict == NOT_RESOLVED and res.low < 0 < res.high


def test_a_loss_is_contradicted_and_seeds_filter(tmp_path):
    _plant(tmp_path, {"full": -2.0})
    assert C.eval_c1(C.ClaimInputs(DS, tmp_path)).verdict == CONTRADICTED
    one_seed = C.eval_c1(C.ClaimInputs(DS, tmp_path, seeds=(0,)))
    assert one_seed.n == 3 and one_seed.verdict == CONTRADICTED


def test_missing_inputs_are_not_resolved_with_a_reason(tmp_path):
    table = C.evaluate_claims(C.ClaimInputs(DS, tmp_path, data_root=str(tmp_path / "d")))
    assert list(table["claim"]) == list(C.CLAIM_IDS)
    assert (table["verdict"] == NOT_RESOLVED).all()
    assert table["reason"].str.startswith("no results for").all()
    _plant(tmp_path, {"full": 3.0})  # only full and baseline: C2 lacks the removals
    c2 = C.eval_c2(C.ClaimInputs(DS, tmp_path))
    assert c2.verdict == NOT_RESOLVED and "wo_aug" in c2.reason


def test_c4_rarer_aus_gain_more(tmp_path):
    """Per run: Spearman over AUs of the relative gain with that fold's frequency; the mean
    over runs gets a t-interval (runs are the units, not AUs)."""
    freq = np.linspace(5.0, 40.0, len(AUS))
    per_au = BASE * 100 * (60.0 - freq) / 100.0 * 0.2  # relative gain falls with frequency
    _plant(tmp_path, {"full": 0.0}, per_au=per_au)
    res = C.eval_c4(C.ClaimInputs(DS, tmp_path))
    assert res.verdict == NOT_RESOLVED and res.reason.startswith("no results for")
    pd.DataFrame([dict(fold=f, au=a, frequency=q + f) for f in (1, 2, 3)
                  for a, q in zip(AUS, freq, strict=True)]).to_csv(
        tmp_path / DS / C.AU_FREQUENCY, index=False)
    res = C.eval_c4(C.ClaimInputs(DS, tmp_path))
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
    pd.DataFrame(rows).to_csv(root / DS / C.MECHANISM, index=False)


def test_c5_is_about_the_trained_epochs_and_the_contrast(tmp_path):
    _plant(tmp_path, {"full": 3.0})
    # HiVA falls over its trained epochs (0.6 -> 0.3) and ends below w/o L_diff (0.88)
    _mechanism(tmp_path, [0.9, 0.6, 0.3], [0.9, 0.9, 0.88])
    res = C.eval_c5(C.ClaimInputs(DS, tmp_path))
    assert res.verdict == SUPPORTED and res.n == 9
    assert "before stage 2 0.90" in res.reason and "Holm over 2 parts" in res.reason
    # both rise from the untrained state, HiVA less: a drop from epoch 0 would not show it,
    # the trained trend (up) contradicts the claim
    _mechanism(tmp_path, [0.5, 0.8, 0.9], [0.5, 0.85, 0.95])
    res = C.eval_c5(C.ClaimInputs(DS, tmp_path))
    assert res.verdict == CONTRADICTED and "HiVA last - first trained epoch: 0.10" in res.reason
    # the same tracks for both: the contrast is 0 and the trend within noise
    _mechanism(tmp_path, [0.5, 0.7, 0.7], [0.5, 0.7, 0.7], jitter=1.0)
    assert C.eval_c5(C.ClaimInputs(DS, tmp_path)).verdict == NOT_RESOLVED


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
    c6 = C.eval_c6(C.ClaimInputs(DS, tmp_path))
    assert c6.verdict == SUPPORTED and c6.n == 3  # runs, not (AU, run) pairs
    per_run = table[table.au != "mean"].assign(d=lambda t: t.pointing - t.chance)
    by_hand = per_run.groupby("seed")["d"].mean()
    assert "pointing - chance: " + f"{by_hand.mean():.2f}" in c6.reason
    # two runs: no interval however many AUs, so not resolved
    table[table.seed < 2].to_csv(tmp_path / DS / "attention_scores.csv", index=False)
    assert C.eval_c6(C.ClaimInputs(DS, tmp_path)).verdict == NOT_RESOLVED


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
    c7 = C.eval_c7(C.ClaimInputs(DS, tmp_path))
    assert c7.verdict == NOT_RESOLVED
    by_hand = full.assign(g=frames).groupby("seed")["g"].mean().mean()
    assert f"HiVA active - inactive in-degree: {by_hand:.2f} [" in c7.reason
    assert c7.reason.count("n=3") == 3
    assert "the Baseline's active - inactive in-degree" in c7.reason
    # denser in every run by about 1: resolved on three runs
    assert "HiVA - Baseline mean degree: 1.0" in c7.reason
    assert c7.reason.split(";")[0].endswith("supported")


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
    c2 = C.eval_c2(C.ClaimInputs(DS, tmp_path))
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
    paths = C.write_claims(table, tmp_path, DS)
    back = pd.read_csv(paths["csv"])
    assert list(back["verdict"].iloc[:3]) == [SUPPORTED] * 3
    md = paths["md"].read_text()
    assert "| C1: HiVA beats the vision-only Baseline." in md and "supported" in md
    png = C.verdict_figure(tmp_path, tmp_path / "figures")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_alternative_reading_beside_hiva(tmp_path):
    """Ambiguity 7's alternative through the ledger: paired gains and the Z cosine against
    HiVA per run, one Holm family; nothing when it was not run."""
    _plant(tmp_path, {"full": 3.0})
    assert C.alternative_checks(C.ClaimInputs(DS, tmp_path), "full_ldiff_z").empty
    for j, (s, f) in enumerate(KEYS):  # the same gain as HiVA, the same noise
        _write(tmp_path, "full_ldiff_z", s, f, BASE + SPREAD[j] + (3.0 + NOISE[j]) / 100.0)
    rows = []
    for j, (s, f) in enumerate(KEYS):
        for v, last in (("full", 0.99), ("full_ldiff_z", 0.2 + 0.01 * NOISE[j])):
            rows += [dict(variant=v, seed=s, fold=f, epoch=e, h_cosine=0.5, z_cosine=c)
                     for e, c in enumerate([0.77, last])]
    pd.DataFrame(rows).to_csv(tmp_path / DS / C.MECHANISM, index=False)
    checks = C.alternative_checks(C.ClaimInputs(DS, tmp_path), "full_ldiff_z").set_index(
        "check")
    gain = checks.loc["full_ldiff_z - baseline (AVE F1)"]
    d = 3.0 + np.array(NOISE)
    assert gain["value"] == pytest.approx(d.mean()) and gain["n"] == 9 and gain["resolved"]
    same = checks.loc["full_ldiff_z - full (AVE F1)"]
    assert same["value"] == pytest.approx(0.0, abs=1e-9) and not same["resolved"]
    z = checks.loc["full_ldiff_z - full (Z cosine, last epoch)"]
    assert z["value"] == pytest.approx(0.2 + 0.01 * np.mean(NOISE) - 0.99) and z["resolved"]
    assert (checks["p_holm"].dropna() <= 1).all()
