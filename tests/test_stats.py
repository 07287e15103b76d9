"""hiva_lib.study.stats against independent computations on planted data."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from hiva_lib.study import stats as S


def _runs(gains: dict[str, list[float]], base: list[float]) -> pd.DataFrame:
    """Per-run AVE of a Baseline and of variants planted as base + gain, 3 seeds x 3 folds."""
    keys = [(s, f) for s in range(3) for f in (1, 2, 3)]
    rows = [dict(variant="baseline", seed=s, fold=f, AVE=b)
            for (s, f), b in zip(keys, base, strict=True)]
    for name, g in gains.items():
        rows += [dict(variant=name, seed=s, fold=f, AVE=b + d)
                 for (s, f), b, d in zip(keys, base, g, strict=True)]
    return pd.DataFrame(rows)


BASE = [60.0, 55.0, 70.0, 62.0, 58.0, 66.0, 61.0, 57.0, 69.0]  # large run-to-run spread


def test_t_interval_matches_hand_computation():
    d = np.array([1.2, 0.4, 2.5, -0.3, 1.9])
    est = S.mean_interval(d, "t")
    n, m = len(d), d.sum() / len(d)
    s = math.sqrt(((d - m) ** 2).sum() / (n - 1))
    half = sps.t.ppf(0.975, n - 1) * s / math.sqrt(n)
    assert est.value == pytest.approx(m)
    assert (est.low, est.high) == pytest.approx((m - half, m + half))
    assert est.method == "t" and est.n == 5
    # the quantile itself, not just the code's own call: t_{0.975, 4} = 2.7764
    assert sps.t.ppf(0.975, 4) == pytest.approx(2.7764, abs=1e-4)


def test_bootstrap_interval_brackets_mean_and_is_near_t():
    rng = np.random.default_rng(1)
    d = rng.normal(2.0, 1.0, 40)
    boot, t = S.mean_interval(d, "bootstrap"), S.mean_interval(d, "t")
    assert boot.method == "bootstrap"
    assert boot.low < d.mean() < boot.high
    # with 40 normal pairs the percentile bootstrap is close to the t-interval
    assert boot.low == pytest.approx(t.low, abs=0.15)
    assert boot.high == pytest.approx(t.high, abs=0.15)
    assert S.mean_interval(d, "bootstrap") == boot  # fixed seed: reproducible


def test_too_few_pairs_give_no_interval():
    est = S.mean_interval([5.0, 6.0], "t")
    assert math.isnan(est.low) and not est.resolved and est.n == 2
    assert S.verdict(est.low, est.high) == S.NOT_RESOLVED
    with pytest.raises(ValueError, match="interval method"):
        S.mean_interval([1.0, 2.0, 3.0], "wald")


def test_paired_differences_pair_by_seed_and_fold():
    runs = _runs({"full": [1.0] * 9}, BASE)
    runs = runs.drop(index=runs[(runs.variant == "full") & (runs.seed == 2)
                                & (runs.fold == 3)].index)
    d = S.paired_differences(runs, "full")
    assert len(d) == 8 and np.allclose(d, 1.0)  # the unpaired run is left out
    assert S.paired_differences(runs, "nope").empty


def test_verdicts_on_planted_gains():
    noise = [0.3, -0.2, 0.1, -0.3, 0.2, 0.0, -0.1, 0.25, -0.15]
    runs = _runs({"gain": [3.0 + e for e in noise],
                  "loss": [-3.0 + e for e in noise],
                  # a gain far smaller than its pair-to-pair spread
                  "noise": [0.2 + 4 * e for e in noise]}, BASE)
    out = {}
    for name in ("gain", "loss", "noise"):
        est = S.paired_gain(runs, name)
        out[name] = S.verdict(est.low, est.high)
        # the t-interval by hand on the planted differences
        d = np.array(runs[runs.variant == name].AVE) - np.array(BASE)
        half = sps.t.ppf(0.975, 8) * d.std(ddof=1) / 3.0
        assert (est.low, est.high) == pytest.approx((d.mean() - half, d.mean() + half))
    assert out == {"gain": S.SUPPORTED, "loss": S.CONTRADICTED, "noise": S.NOT_RESOLVED}
    # unpaired, the same gain of 3 points is within the Baseline's run-to-run spread (std 5):
    # pairing is what resolves it
    assert np.std(BASE, ddof=1) > 4


def test_verdict_threshold_and_direction():
    assert S.verdict(0.5, 2.0) == S.SUPPORTED
    assert S.verdict(0.5, 2.0, threshold=1.0) == S.NOT_RESOLVED
    assert S.verdict(0.2, 0.8, threshold=1.0) == S.CONTRADICTED
    assert S.verdict(-0.8, -0.2, direction="less") == S.SUPPORTED
    assert S.verdict(0.2, 0.8, direction="less") == S.CONTRADICTED
    assert S.verdict(-0.1, 0.8, direction="less") == S.NOT_RESOLVED
    assert S.verdict(float("nan"), float("nan")) == S.NOT_RESOLVED
    assert S.combine([S.SUPPORTED, S.SUPPORTED]) == S.SUPPORTED
    assert S.combine([S.SUPPORTED, S.NOT_RESOLVED]) == S.NOT_RESOLVED
    assert S.combine([S.SUPPORTED, S.CONTRADICTED, S.NOT_RESOLVED]) == S.CONTRADICTED
    assert S.combine([]) == S.NOT_RESOLVED


def test_spearman_against_scipy_and_the_rank_formula():
    rng = np.random.default_rng(0)
    x = rng.normal(size=12)
    y = -x + rng.normal(scale=0.3, size=12)
    est = S.spearman(x, y)
    assert est.value == pytest.approx(sps.spearmanr(x, y).statistic)
    # no ties: rho = 1 - 6 sum d^2 / (n (n^2 - 1))
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    n = len(x)
    assert est.value == pytest.approx(1 - 6 * ((rx - ry) ** 2).sum() / (n * (n * n - 1)))
    assert est.high < 0 and S.verdict(est.low, est.high, direction="less") == S.SUPPORTED
    # ties: average ranks, as scipy
    xt = np.array([1, 2, 2, 3, 4, 4, 5.0])
    yt = np.array([2, 1, 3, 3, 5, 4, 6.0])
    assert S.spearman(xt, yt).value == pytest.approx(sps.spearmanr(xt, yt).statistic)
    # unrelated data: the interval holds 0
    noise = S.spearman(rng.normal(size=10), rng.normal(size=10))
    assert noise.low < 0 < noise.high and not noise.resolved


def test_gain_table_columns_and_resolved():
    runs = _runs({"gain": [3.0, 3.1, 2.9, 3.2, 2.8, 3.0, 3.05, 2.95, 3.0]}, BASE)
    table = S.gain_table(runs, ["AVE"])
    row = table.iloc[0]
    assert (row.variant, row.column, row.n, row.method) == ("gain", "AVE", 9, "t")
    assert row.resolved and row.low > 2.8 and row.high < 3.2
    assert row.gain_std == pytest.approx(np.std(np.array(
        [3.0, 3.1, 2.9, 3.2, 2.8, 3.0, 3.05, 2.95, 3.0]), ddof=1))


def test_holm_against_a_hand_computation():
    # p sorted: 0.01 (x4 = 0.04), 0.02 (x3 = 0.06), 0.03 (x2 = 0.06, running max), 0.5 (x1)
    p = [0.03, 0.5, 0.01, 0.02, float("nan")]
    adj = S.holm(p)
    assert adj[:4] == pytest.approx([0.06, 0.5, 0.04, 0.06])
    assert math.isnan(adj[4])
    assert S.holm([0.2, 0.9]).tolist() == pytest.approx([0.4, 0.9])
    assert S.holm([0.6, 0.7]).tolist() == pytest.approx([1.0, 1.0])  # capped, monotone


def test_family_verdicts_direction_and_correction():
    def est(value, p):
        return S.Estimate(value, value - 1, value + 1, 9, "t", p)

    verdicts, adj = S.family_verdicts([est(2.0, 0.001), est(-1.0, 0.02), est(0.5, 0.04)],
                                      ["greater", "greater", "greater"])
    # adjusted: 0.003, 0.04, 0.04 -> supported, contradicted, supported
    assert adj == pytest.approx([0.003, 0.04, 0.04])
    assert verdicts == [S.SUPPORTED, S.CONTRADICTED, S.SUPPORTED]
    verdicts, _ = S.family_verdicts([est(-2.0, 0.001), est(0.1, 0.9)], ["less", "greater"])
    assert verdicts == [S.SUPPORTED, S.NOT_RESOLVED]


def test_t_p_value_agrees_with_scipy_and_the_interval():
    d = np.array([1.2, 0.4, 2.5, -0.3, 1.9])
    est = S.mean_interval(d, "t")
    assert est.p == pytest.approx(sps.ttest_1samp(d, 0.0).pvalue)
    assert est.sd == pytest.approx(d.std(ddof=1))
    boot = S.mean_interval(d, "bootstrap")
    assert (boot.p < 0.05) == boot.resolved


def test_power_against_simulation_and_closed_form():
    # n = 9 pairs, sd 1: the MDE at 80% power; a simulated paired t-test rejects ~80%
    mde = S.min_detectable_effect(1.0, 9)
    rng = np.random.default_rng(3)
    x = rng.normal(mde, 1.0, size=(40_000, 9))
    t = x.mean(1) / (x.std(1, ddof=1) / 3)
    assert np.mean(np.abs(t) > sps.t.ppf(0.975, 8)) == pytest.approx(0.8, abs=0.01)
    # large n: the normal approximation (z_{0.975} + z_{0.8}) sd / sqrt(n)
    z = (sps.norm.ppf(0.975) + sps.norm.ppf(0.8)) / math.sqrt(400)
    assert S.min_detectable_effect(1.0, 400) == pytest.approx(z, rel=0.01)
    assert math.isnan(S.min_detectable_effect(float("nan"), 9))
    assert math.isnan(S.min_detectable_effect(1.0, 2))


def test_pairs_for_an_effect_and_for_a_half_width():
    n = S.pairs_needed(2.0, 1.0)
    assert S.min_detectable_effect(2.0, n) <= 1.0 < S.min_detectable_effect(2.0, n - 1)
    h = S.pairs_for_half_width(2.45, 2.0)  # synth-disfa's sd: 9 pairs (t_{.975,8} = 2.306)
    assert h == 9 and 2.306 * 2.45 / 3 <= 2.0 < sps.t.ppf(0.975, 7) * 2.45 / math.sqrt(8)
    assert S.pairs_needed(float("nan"), 1.0) is None


def test_compare_to_paper():
    est = S.Estimate(0.3, -0.8, 1.4, 9, "t")
    assert S.compare_to_paper(est, 3.4) == "smaller than the paper's +3.4"
    assert S.compare_to_paper(est, 1.0) == "consistent with the paper's +1.0"
    assert S.compare_to_paper(est, -2.0) == "larger than the paper's -2.0"
    assert S.compare_to_paper(S.Estimate(2.1, math.nan, math.nan, 1, "t"), 5.8).startswith(
        "no interval")


# ----------------------------------------------------------------------------- seed x fold
def _grid(effect_seed, effect_fold, noise, mean=1.0) -> pd.Series:
    """One value per (seed, fold) run: mean + seed effect + fold effect + noise[s][f]."""
    return pd.Series({(s, f): mean + a + b + noise[s][f]
                      for s, a in enumerate(effect_seed) for f, b in enumerate(effect_fold)})


def _anova_by_hand(y: list[list[float]]) -> tuple[float, float, float]:
    """The two-way mean squares with loops (textbook sums of squares)."""
    S, F = len(y), len(y[0])
    grand = sum(sum(r) for r in y) / (S * F)
    rows = [sum(r) / F for r in y]
    cols = [sum(y[s][f] for s in range(S)) / S for f in range(F)]
    ss_s = F * sum((m - grand) ** 2 for m in rows)
    ss_f = S * sum((m - grand) ** 2 for m in cols)
    ss_e = sum((y[s][f] - rows[s] - cols[f] + grand) ** 2 for s in range(S) for f in range(F))
    return ss_s / (S - 1), ss_f / (F - 1), ss_e / ((S - 1) * (F - 1))


NOISE_3X4 = [[0.3, -0.1, 0.2, -0.4], [-0.2, 0.5, -0.3, 0.0], [0.1, -0.2, 0.4, -0.1]]


def test_crossed_interval_matches_hand_computation():
    y = _grid([0.8, -0.6, 0.1], [0.5, -0.2, 0.9, -0.7], NOISE_3X4)
    table = [[y[(s, f)] for f in range(4)] for s in range(3)]
    ms_s, ms_f, ms_e = _anova_by_hand(table)
    assert ms_s > ms_e and ms_f > ms_e  # both components enter
    var = (ms_s + ms_f - ms_e) / 12
    # Satterthwaite: the combination MS_s + MS_f - MS_e with df 2, 3, 6
    df = (ms_s + ms_f - ms_e) ** 2 / (ms_s ** 2 / 2 + ms_f ** 2 / 3 + ms_e ** 2 / 6)
    half = sps.t.ppf(0.975, df) * math.sqrt(var)
    est = S.crossed_interval(y)
    assert est.value == pytest.approx(y.mean())
    assert (est.low, est.high) == pytest.approx((y.mean() - half, y.mean() + half))
    assert est.p == pytest.approx(2 * sps.t.sf(abs(y.mean()) / math.sqrt(var), df))
    assert est.method == "seed x fold" and est.n == 12
    # no seed or fold effect beyond the residual: both truncated, V = MS_res / (S F) on
    # (S-1)(F-1) df
    flat = _grid([0.0] * 3, [0.0] * 4, NOISE_3X4)
    ms_s, ms_f, ms_e = _anova_by_hand([[flat[(s, f)] for f in range(4)] for s in range(3)])
    c = S.crossed_components(flat)
    assert (c.ms_seed, c.ms_fold, c.ms_residual) == pytest.approx((ms_s, ms_f, ms_e))
    if ms_s < ms_e and ms_f < ms_e:
        assert c.var_mean == pytest.approx(ms_e / 12) and c.df == pytest.approx(6)


def test_a_planted_seed_effect_the_t_interval_misses():
    """Three seeds that land far apart, the same in every fold: the nine runs look like nine
    independent draws around 1.0 to the t-interval; over seeds the mean rests on three."""
    small = [[0.05, -0.05, 0.0], [0.0, 0.05, -0.05], [-0.05, 0.0, 0.05]]
    y = _grid([2.0, 0.2, 0.9], [0.0, 0.0, 0.0], small, mean=0.0)
    plain, crossed = S.mean_interval(y.to_numpy()), S.crossed_interval(y)
    assert plain.resolved and plain.low > 0
    assert crossed.low < 0 < crossed.high and crossed.high - crossed.low > plain.high - plain.low
    # the seed means alone: a t-interval over three values, what the design says
    by_seed = S.mean_interval(y.groupby(level=0).mean().to_numpy())
    assert (crossed.low, crossed.high) == pytest.approx((by_seed.low, by_seed.high), rel=0.05)
    assert S.design_verdict(S.verdict(plain.low, plain.high),
                            S.verdict(crossed.low, crossed.high)) == S.WITHIN_RUNS_ONLY


def test_a_planted_fold_effect_the_t_interval_misses():
    small = [[0.05, -0.05, 0.0], [0.0, 0.05, -0.05], [-0.05, 0.0, 0.05]]
    y = _grid([0.0, 0.0, 0.0], [2.0, 0.2, 0.9], small, mean=0.0)
    plain, crossed = S.mean_interval(y.to_numpy()), S.crossed_interval(y)
    assert plain.low > 0 and crossed.low < 0 < crossed.high


def test_crossed_interval_covers_under_the_model():
    """Simulated 3 x 3 designs with seed, fold and residual variance 1 each: the crossed
    interval covers the true mean about 95% of the time, the t-interval over runs far less."""
    rng = np.random.default_rng(0)
    cover_plain = cover_crossed = 0
    draws = 400
    for _ in range(draws):
        a, b, e = rng.normal(size=3), rng.normal(size=3), rng.normal(size=(3, 3))
        y = _grid(a, b, e, mean=0.0)
        plain, crossed = S.mean_interval(y.to_numpy()), S.crossed_interval(y)
        cover_plain += plain.low < 0 < plain.high
        cover_crossed += crossed.low < 0 < crossed.high
    assert cover_plain / draws < 0.85
    assert cover_crossed / draws > 0.92


def test_one_fold_or_seed_gives_no_crossed_interval():
    nine_seeds = pd.Series({(s, 1): float(s) for s in range(9)})
    est = S.crossed_interval(nine_seeds)
    assert math.isnan(est.low) and est.n == 9 and est.value == pytest.approx(4.0)
    assert S.design_note(nine_seeds).startswith("one fold (9 seeds)")
    assert S.design_note(pd.Series({(0, f): float(f) for f in (1, 2, 3)})).startswith(
        "one seed (3 folds)")
    holes = pd.Series({(s, f): 1.0 for s in range(3) for f in range(3) if (s, f) != (2, 2)})
    assert math.isnan(S.crossed_interval(holes).low) and "do not fill" in S.design_note(holes)
    assert S.design_verdict(S.SUPPORTED, S.SUPPORTED) == S.SUPPORTED
    assert S.design_verdict(S.NOT_RESOLVED, S.SUPPORTED) == S.NOT_RESOLVED
