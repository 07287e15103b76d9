"""The claims ledger (issue 16) on planted results: each verdict from the one rule."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from hiva_lib.data.au import au_keys, dataset_aus
from hiva_lib.data.prepared import load_prepared
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


def test_c4_rarer_aus_gain_more(tmp_path, smoke_data_root):
    data = load_prepared(smoke_data_root / DS)
    freq = np.mean([data.labels(data.split(f)[0]).mean(0) for f in (1, 2, 3)], axis=0) * 100
    # full's per-AU gain shrinks with frequency: relative gain falls monotonically
    per_au = BASE * 100 * (60.0 - freq) / 100.0 * 0.2
    _plant(tmp_path, {"full": 0.0}, per_au=per_au)
    res = C.eval_c4(C.ClaimInputs(DS, tmp_path, data_root=str(smoke_data_root)))
    assert res.method == "bootstrap" and res.n == len(AUS)
    assert res.value < -0.8 and res.verdict == SUPPORTED
    # without the data (no training frequencies): not resolved, saying why
    res = C.eval_c4(C.ClaimInputs(DS, tmp_path, data_root=str(tmp_path / "none")))
    assert res.verdict == NOT_RESOLVED and res.reason.startswith("no results for Fig. 4")


def _fig5_npz(root, seed, fold, full_sims, wo_sims, n=8, d=16):
    """Planted H per epoch whose rows have pairwise cosine ``c`` (an equicorrelated set)."""
    rng = np.random.default_rng(seed * 10 + fold)

    def rows(c):
        shared, own = rng.normal(size=d), rng.normal(size=(n, d))
        shared /= np.linalg.norm(shared)
        own = own - own @ shared[:, None] * shared  # orthogonal to the shared direction
        q, _ = np.linalg.qr(own.T)
        own = q.T[:n]
        return np.sqrt(c) * shared + np.sqrt(1 - c) * own

    arrays = dict(dataset=np.array(DS), seed=np.array(seed), fold=np.array(fold),
                  au_ids=np.array(dataset_aus(DS)))
    for v, sims in (("full", full_sims), ("wo_ldiff", wo_sims)):
        arrays[f"{v}.epochs"] = np.arange(len(sims))
        h = np.stack([rows(c) for c in sims])
        arrays[f"{v}.H"] = h
        arrays[f"{v}.Z"] = h
    np.savez(root / DS / f"fig5_text_embeddings_seed{seed}_fold{fold}.npz", **arrays)


def test_c5_ldiff_spreads_the_embeddings(tmp_path):
    _plant(tmp_path, {"full": 3.0})
    for s, f in KEYS:
        _fig5_npz(tmp_path, s, f, [0.9, 0.6, 0.3 + 0.01 * s], [0.9, 0.9, 0.88 - 0.01 * f])
    res = C.eval_c5(C.ClaimInputs(DS, tmp_path, data_root=str(tmp_path / "d"),
                                  runs_root=str(tmp_path / "runs")))
    assert res.verdict == SUPPORTED and res.n == 9
    # the weakest part by hand: HiVA's drop 0.9 - (0.3 + 0.01 s), mean 0.59
    assert "HiVA first - last epoch: 0.59" in res.reason
    # the same embeddings for both: w/o L_diff does not stay above HiVA
    for s, f in KEYS:
        (tmp_path / DS / f"fig5_text_embeddings_seed{s}_fold{f}.npz").unlink()
        _fig5_npz(tmp_path, s, f, [0.9, 0.6, 0.3], [0.9, 0.6, 0.3 + 0.02 * (s - 1)])
    res = C.eval_c5(C.ClaimInputs(DS, tmp_path, runs_root=str(tmp_path / "runs")))
    assert res.verdict == NOT_RESOLVED


def test_c6_and_c7_from_saved_tables(tmp_path):
    (tmp_path / DS).mkdir()
    rng = np.random.default_rng(0)
    rows = [dict(variant="full", method="ddca", au=a, seed=s, fold=1, n_frames=10,
                 pointing=0.6 + rng.normal(0, 0.05), energy=0.3 + rng.normal(0, 0.02),
                 chance=0.15) for a in AUS for s in range(2)]
    rows += [dict(variant="full", method="ddca", au="mean", seed=0, fold=1, n_frames=10,
                  pointing=0.0, energy=0.0, chance=0.9)]  # means are not counted again
    pd.DataFrame(rows).to_csv(tmp_path / DS / "attention_scores.csv", index=False)
    inputs = C.ClaimInputs(DS, tmp_path)
    c6 = C.eval_c6(inputs)
    assert c6.verdict == SUPPORTED and c6.n == 2 * len(AUS)
    deg = [dict(variant=v, seed=0, fold=1, row=r, mean_degree=d + rng.normal(0, 0.1),
                active_indegree=a, inactive_indegree=2.0)
           for r in range(20) for v, d, a in (("full", 4.0, 2.0 + 0.1 * (r % 3 - 1)),
                                              ("baseline", 3.0, 2.5))]
    pd.DataFrame(deg).to_csv(tmp_path / DS / "graph_degrees.csv", index=False)
    c7 = C.eval_c7(inputs)
    # denser: supported; active - inactive in-degree: mean 0 -> not resolved overall
    assert "HiVA - Baseline mean degree" in c7.reason and c7.verdict == NOT_RESOLVED
    assert "supported" in c7.reason.split(";")[0]


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
