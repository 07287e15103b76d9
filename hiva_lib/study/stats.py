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
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

MIN_PAIRS = 3
LEVEL = 0.95
METHODS = ("t", "bootstrap")
SUPPORTED, CONTRADICTED, NOT_RESOLVED = "supported", "contradicted", "not resolved"
VERDICTS = (SUPPORTED, CONTRADICTED, NOT_RESOLVED)


@dataclass(frozen=True)
class Estimate:
    """A statistic with its 95% interval; ``method`` names how the interval was made."""

    value: float
    low: float
    high: float
    n: int
    method: str

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
    if n < MIN_PAIRS:
        return Estimate(mean, float("nan"), float("nan"), n, method)
    alpha = 1.0 - level
    if method == "t":
        half = float(sps.t.ppf(1 - alpha / 2, n - 1)) * float(x.std(ddof=1)) / np.sqrt(n)
        return Estimate(mean, mean - half, mean + half, n, method)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return Estimate(mean, float(low), float(high), n, method)


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
    return Estimate(rho, float(low), float(high), n, "bootstrap")


def gain_table(runs: pd.DataFrame, columns: list[str], reference: str = "baseline",
               method: str = "t", **kwargs) -> pd.DataFrame:
    """Per variant (other than ``reference``) and column: the paired gain over ``reference``
    with its interval: variant, column, gain, low, high, n, method, resolved (and gain_std,
    the sample std of the paired differences)."""
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
                                 resolved=est.resolved, gain_std=std))
    return pd.DataFrame(rows, columns=["variant", "column", "gain", "low", "high", "n",
                                       "method", "resolved", "gain_std"])
