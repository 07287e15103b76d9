"""Paired gains, their 95% intervals and the verdict rule: written once, used by the report
(:mod:`hiva_lib.study.report`) and by the claims (:mod:`hiva_lib.study.claims`).

A gain of variant A over variant B is estimated from the runs both have, paired by
(seed, fold): d_j = F1_A(j) - F1_B(j). Its mean gets a 95% interval over the pairs:

- ``"t"`` (default): mean ± t_{0.975, n-1} · s / sqrt(n), s the sample std (ddof=1);
- ``"bootstrap"``: the 2.5 and 97.5 percentiles of the means of ``n_boot`` resamples of the
  pairs with replacement (a fixed seed, so a report is reproducible).

Fewer than :data:`MIN_PAIRS` pairs give no interval (NaN) and never a resolved gain: with two
pairs the t quantile is 12.7 and a bootstrap has three distinct means.

The verdict rule (:func:`verdict`), for a claim "the quantity is above ``threshold``"
(``direction="greater"``; ``"less"`` for a claim that it is below): supported when the whole
interval lies on the claimed side of the threshold, contradicted when the whole interval lies
on the other side, not resolved otherwise (or without an interval). A two-sided 95% interval
checked on one side is a one-sided test at the 2.5% level. Correlations (:func:`spearman`, a
percentile bootstrap over the points) go through the same rule with ``threshold=0``. A claim of
several parts (:func:`combine`) is supported when every part is, contradicted when any part is.

Multiplicity (:func:`holm`, :func:`decide_family`): the parts of one claim, the table rows
compared with one reference, the controls: each is a *family*, and its parts are tested at a
family-wise 5% level by Holm's step-down method on the parts' two-sided p-values (the t-test's,
or the bootstrap's, :func:`mean_interval`). A part is resolved when its Holm-adjusted p is below
0.05; its direction is its estimate's sign. With one part this is exactly the interval rule.

Power (:func:`min_detectable_effect`, :func:`pairs_needed`, :func:`pairs_for_half_width`):
from the sample sd of the paired differences, the smallest true mean difference a two-sided
paired t-test at 5% detects with 80% power (noncentral t), and the pairs a target needs.

The design (:func:`crossed_interval`): runs are crossed seeds x folds, so the t-interval over
the runs holds the noise of these seeds and folds only. The crossed random-effects interval
treats both as draws: its derivation is in that function's docstring. A verdict must hold
under it as well (:func:`design_verdict`), else it is :data:`WITHIN_RUNS_ONLY`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

MIN_PAIRS = 3
LEVEL = 0.95
ALPHA = 1.0 - LEVEL  # the family-wise error rate of a family of tests (Holm)
POWER = 0.8
METHODS = ("t", "bootstrap")
SUPPORTED, CONTRADICTED, NOT_RESOLVED = "supported", "contradicted", "not resolved"
VERDICTS = (SUPPORTED, CONTRADICTED, NOT_RESOLVED)
# a verdict resolved over the runs that the seed x fold interval does not confirm
WITHIN_RUNS_ONLY = "not resolved (holds within runs only)"
# a claim about a part of the model that the evaluated model does not use (C7, ambiguity 2)
NOT_APPLICABLE = "not applicable under the default reading"


@dataclass(frozen=True)
class Estimate:
    """A statistic with its 95% interval; ``method`` names how the interval was made."""

    value: float
    low: float
    high: float
    n: int
    method: str
    p: float = float("nan")  # two-sided p-value of "the mean is 0" (NaN without an interval)
    sd: float = float("nan")  # sample sd of the values (ddof=1), for power

    @property
    def resolved(self) -> bool:
        """The interval exists and excludes 0."""
        return bool(np.isfinite(self.low) and np.isfinite(self.high)
                    and (self.low > 0 or self.high < 0))

    def as_dict(self) -> dict:
        return {**asdict(self), "resolved": self.resolved}

    def text(self, digits: int = 1) -> str:
        """'2.3 [0.4, 4.2] (t, n=9)', or '2.3 (no interval, n=2)'."""
        if not np.isfinite(self.low):
            return f"{self.value:.{digits}f} (no interval, n={self.n})"
        return (f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}] "
                f"({self.method}, n={self.n})")


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"interval method {method!r}: choose one of {METHODS}")


def mean_interval(values, method: str = "t", level: float = LEVEL, n_boot: int = 10_000,
                  seed: int = 0) -> Estimate:
    """The mean of ``values`` (e.g. paired differences) with its ``level`` interval."""
    _check_method(method)
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    mean = float(x.mean()) if n else float("nan")
    sd = float(x.std(ddof=1)) if n > 1 else float("nan")
    if n < MIN_PAIRS:
        return Estimate(mean, float("nan"), float("nan"), n, method, sd=sd)
    alpha = 1.0 - level
    if method == "t":
        se = sd / np.sqrt(n)
        half = float(sps.t.ppf(1 - alpha / 2, n - 1)) * se
        p = float(2 * sps.t.sf(abs(mean) / se, n - 1)) if se > 0 else float(mean == 0)
        return Estimate(mean, mean - half, mean + half, n, method, p, sd)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return Estimate(mean, float(low), float(high), n, method, _bootstrap_p(means), sd)


def _bootstrap_p(draws: np.ndarray) -> float:
    """Two-sided p of "the statistic is 0" by inverting the percentile interval: twice the
    share of bootstrap draws on the far side of 0 (so p < 1 - level iff the interval
    excludes 0)."""
    below, above = float(np.mean(draws <= 0)), float(np.mean(draws >= 0))
    return min(1.0, 2 * min(below, above))


def paired_differences(runs: pd.DataFrame, variant: str, reference: str = "baseline",
                       column: str = "AVE") -> pd.Series:
    """``column`` of ``variant`` minus that of ``reference``, one value per (seed, fold) run
    both have. ``runs``: one row per run with columns variant, seed, fold and ``column``."""
    for name in ("variant", "seed", "fold", column):
        if name not in runs.columns:
            raise KeyError(f"runs table has no column {name!r} (columns: {list(runs.columns)})")
    table = runs.set_index(["variant", "seed", "fold"])[column]
    if table.index.duplicated().any():
        dup = table.index[table.index.duplicated()][0]
        raise ValueError(f"two runs for (variant, seed, fold) = {dup}: keep one per run")
    have = set(runs["variant"])
    if variant not in have or reference not in have:
        return pd.Series(dtype=float, name=column)
    a, b = table.xs(variant, level="variant"), table.xs(reference, level="variant")
    pairs = a.index.intersection(b.index).sort_values()
    return (a.loc[pairs] - b.loc[pairs]).rename(column)


def paired_gain(runs: pd.DataFrame, variant: str, reference: str = "baseline",
                column: str = "AVE", method: str = "t", **kwargs) -> Estimate:
    """Mean gain of ``variant`` over ``reference`` paired per (seed, fold), with its interval."""
    return mean_interval(paired_differences(runs, variant, reference, column), method, **kwargs)


def verdict(low: float, high: float, threshold: float = 0.0, direction: str = "greater"
            ) -> str:
    """The verdict on "the quantity is above ``threshold``" (``direction="greater"``) or
    "below ``threshold``" (``"less"``) from its interval [low, high]."""
    if direction not in ("greater", "less"):
        raise ValueError(f"direction {direction!r}: choose 'greater' or 'less'")
    if not (np.isfinite(low) and np.isfinite(high)):
        return NOT_RESOLVED
    above, below = low > threshold, high < threshold
    if direction == "less":
        above, below = below, above
    return SUPPORTED if above else CONTRADICTED if below else NOT_RESOLVED


def combine(verdicts: list[str]) -> str:
    """A claim of several parts: supported if all parts are, contradicted if any part is."""
    if not verdicts:
        return NOT_RESOLVED
    if any(v == CONTRADICTED for v in verdicts):
        return CONTRADICTED
    return SUPPORTED if all(v == SUPPORTED for v in verdicts) else NOT_RESOLVED


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks along the last axis, ties given their average rank."""
    return sps.rankdata(x, method="average", axis=-1)


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(-1, keepdims=True)
    b = b - b.mean(-1, keepdims=True)
    den = np.sqrt((a * a).sum(-1) * (b * b).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(-1) / den, np.nan)


def spearman(x, y, level: float = LEVEL, n_boot: int = 5_000, seed: int = 0) -> Estimate:
    """Spearman's rank correlation of paired ``x``, ``y`` with a percentile-bootstrap interval
    over the points (resampled with replacement; resamples without spread in x or y are
    dropped). Fewer than 4 points: no interval."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"spearman: x and y must be 1-D of one length, got {x.shape}, {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    n = len(x)
    rho = float(_pearson_rows(_ranks(x), _ranks(y))) if n >= 2 else float("nan")
    if n < 4:
        return Estimate(rho, float("nan"), float("nan"), n, "bootstrap")
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    boot = _pearson_rows(_ranks(x[idx]), _ranks(y[idx]))
    boot = boot[np.isfinite(boot)]
    alpha = 1.0 - level
    low, high = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return Estimate(rho, float(low), float(high), n, "bootstrap", _bootstrap_p(boot))


def gain_table(runs: pd.DataFrame, columns: list[str], reference: str = "baseline",
               method: str = "t", **kwargs) -> pd.DataFrame:
    """Per variant (other than ``reference``) and column: the paired gain over ``reference``
    with its interval: variant, column, gain, low, high, n, method, resolved (the interval
    excludes 0, no correction), gain_std (the sample std of the paired differences) and p
    (two-sided, uncorrected)."""
    _check_method(method)
    rows = []
    if reference in set(runs["variant"]):
        for variant in dict.fromkeys(runs["variant"]):
            if variant == reference:
                continue
            for col in columns:
                diffs = paired_differences(runs, variant, reference, col)
                if not len(diffs):
                    continue
                est = mean_interval(diffs, method, **kwargs)
                std = float(diffs.std(ddof=1)) if len(diffs) > 1 else float("nan")
                rows.append(dict(variant=variant, column=col, gain=est.value, low=est.low,
                                 high=est.high, n=est.n, method=method,
                                 resolved=est.resolved, gain_std=std, p=est.p))
    return pd.DataFrame(rows, columns=["variant", "column", "gain", "low", "high", "n",
                                       "method", "resolved", "gain_std", "p"])


# ----------------------------------------------------------------------------- multiplicity
def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN stays NaN and does not count in the family):
    sort the m p-values, multiply the k-th smallest by (m - k + 1), carry the running maximum,
    cap at 1. Rejecting where the adjusted p < alpha controls the family-wise error at alpha."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    if not m:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adjusted = np.minimum(1.0, np.maximum.accumulate(p[order] * (m - np.arange(m))))
    out[order] = adjusted
    return out


def family_verdicts(estimates: list[Estimate], directions: list[str],
                    alpha: float = ALPHA) -> tuple[list[str], np.ndarray]:
    """The verdict of each part of one family and its Holm-adjusted p: resolved where the
    adjusted p < ``alpha``, then supported or contradicted by the estimate's sign against the
    claimed ``direction`` ("greater": above 0, "less": below 0)."""
    adjusted = holm([e.p for e in estimates])
    verdicts = []
    for est, direction, p in zip(estimates, directions, adjusted, strict=True):
        if direction not in ("greater", "less"):
            raise ValueError(f"direction {direction!r}: choose 'greater' or 'less'")
        if not (np.isfinite(p) and p < alpha):
            verdicts.append(NOT_RESOLVED)
            continue
        on_side = est.value > 0 if direction == "greater" else est.value < 0
        verdicts.append(SUPPORTED if on_side else CONTRADICTED)
    return verdicts, adjusted


# ----------------------------------------------------------------------------- power
def _power(effect: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Power of a two-sided one-sample (paired) t-test at ``alpha`` with ``n`` pairs when the
    true mean difference is ``effect`` and the differences' sd is ``sd`` (noncentral t)."""
    df = n - 1
    crit = sps.t.ppf(1 - alpha / 2, df)
    nc = effect / sd * np.sqrt(n)
    # the far tail is negligible for nc > 0 and scipy's nct.cdf can return NaN there
    far = float(np.nan_to_num(sps.nct.cdf(-crit, df, abs(nc))))
    return float(sps.nct.sf(crit, df, abs(nc))) + far


def min_detectable_effect(sd: float, n: int, power: float = POWER, alpha: float = ALPHA
                          ) -> float:
    """The smallest |true mean difference| that ``n`` pairs with differences of sd ``sd``
    detect with probability ``power`` (two-sided paired t-test at ``alpha``); NaN when the sd
    is unknown (fewer than 2 pairs) or n < :data:`MIN_PAIRS`."""
    from scipy.optimize import brentq

    if not (np.isfinite(sd) and n >= MIN_PAIRS):
        return float("nan")
    if sd == 0:
        return 0.0
    high = sd  # bracket the root: power grows with the effect (noncentral t is stable here)
    while _power(high, sd, n, alpha) < power:
        high *= 2
    return float(brentq(lambda d: _power(d, sd, n, alpha) - power, 0.0, high))


def pairs_needed(sd: float, effect: float, power: float = POWER, alpha: float = ALPHA,
                 max_pairs: int = 10_000) -> int | None:
    """The fewest pairs (>= :data:`MIN_PAIRS`) that detect a true difference ``effect`` with
    probability ``power``; None when the sd is unknown or more than ``max_pairs`` are needed."""
    if not np.isfinite(sd) or effect == 0:
        return None
    n = MIN_PAIRS
    while n <= max_pairs:
        if sd == 0 or _power(abs(effect), sd, n, alpha) >= power:
            return n
        n += 1
    return None


def pairs_for_half_width(sd: float, half_width: float, level: float = LEVEL,
                         max_pairs: int = 10_000) -> int | None:
    """The fewest pairs whose t-interval (at the measured ``sd``) is at most ``half_width``
    from its centre: t_{(1+level)/2, n-1} * sd / sqrt(n) <= half_width."""
    if not np.isfinite(sd):
        return None
    q = 1 - (1 - level) / 2
    for n in range(MIN_PAIRS, max_pairs + 1):
        if sps.t.ppf(q, n - 1) * sd / np.sqrt(n) <= half_width:
            return n
    return None


def compare_to_paper(est: Estimate, paper: float) -> str:
    """Where the paper's effect lies against our interval: "smaller than the paper's +3.4"
    (the whole interval below it), "larger than the paper's ..." (above), "consistent with the
    paper's ..." (inside), or "no interval"."""
    if not np.isfinite(paper):
        return ""
    if not (np.isfinite(est.low) and np.isfinite(est.high)):
        return f"no interval to compare with the paper's {paper:+.1f}"
    if est.high < paper:
        return f"smaller than the paper's {paper:+.1f}"
    if est.low > paper:
        return f"larger than the paper's {paper:+.1f}"
    return f"consistent with the paper's {paper:+.1f}"


# ----------------------------------------------------------------------------- seed x fold
@dataclass(frozen=True)
class Crossed:
    """The mean squares of a complete seeds x folds table and the variance of its mean."""

    seeds: int
    folds: int
    ms_seed: float
    ms_fold: float
    ms_residual: float
    var_mean: float
    df: float


def crossed_components(values: pd.Series) -> Crossed | None:
    """The two-way ANOVA of one value per (seed, fold) run (``values`` indexed by seed, fold:
    the first two index levels); None unless the runs fill a complete grid of at least 2
    seeds x 2 folds (see :func:`crossed_interval`)."""
    v = values[np.isfinite(values.to_numpy(float))]
    grid = v.groupby(level=[0, 1]).mean().unstack()
    s, f = grid.shape
    if s < 2 or f < 2 or grid.isna().any().any() or len(v) != s * f:
        return None
    y = grid.to_numpy(float)
    mean, seed_means, fold_means = y.mean(), y.mean(1), y.mean(0)
    ms_seed = f * ((seed_means - mean) ** 2).sum() / (s - 1)
    ms_fold = s * ((fold_means - mean) ** 2).sum() / (f - 1)
    resid = y - seed_means[:, None] - fold_means[None, :] + mean
    ms_res = (resid ** 2).sum() / ((s - 1) * (f - 1))
    # each variance component truncated at 0: the mean squares that enter, with their net
    # coefficients (MS_res enters once, less once per component kept)
    kept = [(ms, dfk) for ms, dfk in ((ms_seed, s - 1), (ms_fold, f - 1)) if ms > ms_res]
    terms = [(ms, 1.0, dfk) for ms, dfk in kept] + [(ms_res, 1.0 - len(kept),
                                                     (s - 1) * (f - 1))]
    total = sum(c * ms for ms, c, _ in terms)
    # Satterthwaite: the df of a linear combination of independent mean squares
    spread = sum((c * ms) ** 2 / dfk for ms, c, dfk in terms)
    df = total ** 2 / spread if spread > 0 else float("inf")
    return Crossed(s, f, float(ms_seed), float(ms_fold), float(ms_res), float(total / (s * f)),
                   float(df))


def crossed_interval(values: pd.Series, level: float = LEVEL) -> Estimate:
    """The mean of one value per (seed, fold) run with a 95% interval that treats seed and
    fold as crossed random effects (method ``"seed x fold"``).

    Model: y_sf = mu + a_s + b_f + e_sf, with a_s ~ N(0, s_a^2) (seed), b_f ~ N(0, s_b^2)
    (fold: its subjects) and e_sf ~ N(0, s_e^2) independent, one run per cell of a complete
    S x F grid. The grand mean ybar estimates mu with

        Var(ybar) = s_a^2 / S + s_b^2 / F + s_e^2 / (S F).

    From the two-way ANOVA without interaction, MS_seed = F sum_s (ybar_s. - ybar)^2 / (S-1),
    MS_fold = S sum_f (ybar_.f - ybar)^2 / (F-1), MS_res = sum (y_sf - ybar_s. - ybar_.f +
    ybar)^2 / ((S-1)(F-1)), with E[MS_seed] = s_e^2 + F s_a^2, E[MS_fold] = s_e^2 + S s_b^2,
    E[MS_res] = s_e^2. The moment estimates s_a^2 = max(0, (MS_seed - MS_res) / F) and
    s_b^2 = max(0, (MS_fold - MS_res) / S) give

        V = [MS_res + (MS_seed - MS_res)^+ + (MS_fold - MS_res)^+] / (S F)

    (without truncation: (MS_seed + MS_fold - MS_res) / (S F)). The small-sample correction is
    Satterthwaite's: V is a linear combination sum_k c_k MS_k / (S F) of independent mean
    squares with df_k, and nu = (sum_k c_k MS_k)^2 / sum_k (c_k MS_k)^2 / df_k; the interval
    is ybar +- t_{0.975, nu} sqrt(V), and p = 2 P(T_nu > |ybar| / sqrt(V)).

    With one seed or one fold (or a grid with holes) that factor's variance is not estimable
    from the runs: no interval (NaN), so no verdict can rest on it."""
    x = values.to_numpy(float)
    ok = np.isfinite(x)
    mean, n = (float(x[ok].mean()) if ok.any() else float("nan")), int(ok.sum())
    sd = float(x[ok].std(ddof=1)) if n > 1 else float("nan")
    c = crossed_components(values) if n >= MIN_PAIRS else None
    if c is None:
        return Estimate(mean, float("nan"), float("nan"), n, "seed x fold", sd=sd)
    se = np.sqrt(c.var_mean)
    if se == 0:
        return Estimate(mean, mean, mean, n, "seed x fold", float(mean == 0), sd)
    half = float(sps.t.ppf(1 - (1 - level) / 2, c.df)) * se
    p = float(2 * sps.t.sf(abs(mean) / se, c.df))
    return Estimate(mean, mean - half, mean + half, n, "seed x fold", p, sd)


def design_note(values: pd.Series) -> str:
    """Why a seed x fold interval is missing: '' when :func:`crossed_components` has one."""
    v = values[np.isfinite(values.to_numpy(float))]
    if len(v) < MIN_PAIRS or crossed_components(v) is not None:
        return ""
    seeds, folds = (v.index.get_level_values(i).nunique() for i in (0, 1))
    if folds < 2:
        return f"one fold ({seeds} seeds): the fold's variance is not estimable"
    if seeds < 2:
        return f"one seed ({folds} folds): the seed's variance is not estimable"
    return f"{len(v)} runs do not fill the {seeds} x {folds} grid of seeds and folds"


def design_verdict(within_runs: str, design: str) -> str:
    """A claim's verdict over the runs, kept when the seed x fold rule gives the same;
    :data:`WITHIN_RUNS_ONLY` when a resolved verdict does not hold under the design (a verdict
    the design resolves and the runs do not is not promoted)."""
    if within_runs in (SUPPORTED, CONTRADICTED) and design != within_runs:
        return WITHIN_RUNS_ONLY
    return within_runs
