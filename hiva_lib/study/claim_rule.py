"""The verdict rule of the claims ledger, applied to a claim's parts on one preset
(:func:`decide`) and to a claim's family over every preset (:func:`family_columns`).

A *part* is one tested quantity of a claim: one value per trained (seed, fold) run, its mean
with two 95% intervals, the t-interval over the runs (:func:`hiva_lib.study.stats.
mean_interval`) and the seed x fold interval (:func:`hiva_lib.study.stats.crossed_interval`).

On one preset, the parts of a claim are one family under Holm, once with the runs' p-values
and once with the seed x fold ones; the claim is supported when every part is resolved on the
claimed side, contradicted when any part is resolved on the other side, and a resolved verdict
stands only when the seed x fold rule gives the same (:func:`hiva_lib.study.stats.
design_verdict`), else it reads "not resolved (holds within runs only)".

Across presets, a claim's family is every (preset, part) cell: Holm over all of them
(``p_family``; ``p_family_clustered`` with the seed x fold p-values) and the same rule per
preset (``verdict_family``). The README's and ``results/SUMMARY.md``'s verdicts are these.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hiva_lib.study import stats
from hiva_lib.study.stats import NOT_APPLICABLE, NOT_RESOLVED, Estimate

NAN = float("nan")
NOT_RUN = " (not run)"  # ends the name of a part whose variant has no runs


@dataclass(frozen=True)
class Part:
    """One tested part of a claim: the mean of one value per run with its interval over the
    runs (``est``) and over seeds x folds (``design``, with ``design_note`` saying why it is
    missing), the claimed direction, and the paper's value of the same effect where the paper
    prints one (F1 points)."""

    name: str
    est: Estimate
    direction: str = "greater"
    paper: float = NAN
    f1_points: bool = False  # in F1 points: the pairs for a 1-point effect are stated
    design: Estimate = field(default_factory=lambda: Estimate(NAN, NAN, NAN, 0, "seed x fold"))
    design_note: str = ""


def part(name: str, values: pd.Series, method: str = "t", direction: str = "greater",
         **kwargs) -> Part:
    """A :class:`Part` from one value per run (a Series indexed by seed, fold)."""
    values = values.astype(float)
    return Part(name, stats.mean_interval(values.to_numpy(), method), direction,
                design=stats.crossed_interval(values), design_note=stats.design_note(values),
                **kwargs)


@dataclass(frozen=True)
class Result:
    """A claim's verdict on one preset and the part that decides it (``part``): that part's
    statistic with its 95% interval over the runs and over seeds x folds (``low_clustered``,
    ``high_clustered``), its Holm-adjusted p-values, where the paper's effect lies against the
    interval, and the power of the runs; ``reason`` lists every part, ``verdict_runs`` is the
    verdict over the runs alone."""

    value: float
    low: float
    high: float
    n: int
    method: str
    verdict: str
    reason: str
    p_holm: float = NAN
    vs_paper: str = ""
    mde_80: float = NAN
    pairs_for_1pt: float = NAN
    parts_resolved: str = ""  # "1 of 5": the parts resolved (either side) after Holm
    part: str = ""
    low_clustered: float = NAN
    high_clustered: float = NAN
    p_clustered: float = NAN  # the seed x fold p of the part shown, Holm over the parts
    verdict_runs: str = ""
    parts: tuple = field(default=(), repr=False, compare=False)  # the Parts tested
    part_rows: tuple = field(default=(), repr=False, compare=False)  # claims_parts.csv rows

    def row(self) -> dict:
        """The columns of ``claims.csv`` (the parts are in ``reason`` and ``part_rows``)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("parts", "part_rows")}


def missing(what: str) -> Result:
    return Result(NAN, NAN, NAN, 0, "", NOT_RESOLVED, f"no results for {what}")


def _shown(verdicts: list[str], adjusted: np.ndarray) -> int:
    """The part that decides the verdict: a contradicting part (the smallest adjusted p) if
    any, else the least resolved part (the largest adjusted p; no interval counts as 1)."""
    p = np.where(np.isfinite(adjusted), adjusted, 1.0)
    against = [i for i, v in enumerate(verdicts) if v == stats.CONTRADICTED]
    if against:
        return min(against, key=lambda i: p[i])
    return int(np.argmax(p))


def _part_text(p: Part, verdict: str, p_holm: float, family: int, p_design: float) -> str:
    e, digits = p.est, 2 if abs(p.est.value) < 1 else 1
    text = f"{p.name}: {e.text(digits)}"
    if np.isfinite(p_holm):
        text += f", {'Holm ' if family > 1 else ''}p={p_holm:.2g}"
    text += f" {verdict}"
    d = p.design
    if np.isfinite(d.low):
        text += (f", seed x fold [{d.low:.{digits}f}, {d.high:.{digits}f}] "
                 f"{'Holm ' if family > 1 else ''}p={p_design:.2g}")
    elif p.design_note:
        text += f", no seed x fold interval ({p.design_note})"
    versus = stats.compare_to_paper(e, p.paper)
    return text + (f", {versus}" if versus else "")


def _part_row(p: Part, verdict: str, p_holm: float, verdict_c: str, p_holm_c: float) -> dict:
    e, d = p.est, p.design
    return dict(part=p.name, direction=p.direction, value=e.value, low=e.low, high=e.high,
                n=e.n, method=e.method, p=e.p, p_holm=p_holm, verdict=verdict,
                low_clustered=d.low, high_clustered=d.high, p_clustered=d.p,
                p_holm_clustered=p_holm_c, verdict_clustered=verdict_c)


def decide(parts: list[Part], what: str, note: str = "") -> Result:
    """One verdict from the parts of a claim on one preset, one family under Holm over the
    runs (:func:`stats.family_verdicts`, :func:`stats.combine`), kept only where the seed x
    fold intervals give the same (:func:`stats.design_verdict`). Power is stated at the first
    Holm step's level (0.05 / number of parts: conservative for the later steps)."""
    if not parts:
        return missing(what)
    directions = [p.direction for p in parts]
    verdicts, adjusted = stats.family_verdicts([p.est for p in parts], directions)
    verdicts_c, adjusted_c = stats.family_verdicts([p.design for p in parts], directions)
    i = _shown(verdicts, adjusted)
    shown, est, alpha = parts[i], parts[i].est, stats.ALPHA / len(parts)
    reason = "; ".join(_part_text(p, v, a, len(parts), ac)
                       for p, v, a, ac in zip(parts, verdicts, adjusted, adjusted_c, strict=True))
    if len(parts) > 1:
        reason += f" (Holm over {len(parts)} parts)"
    if any(p.est.n < stats.MIN_PAIRS for p in parts):
        units = "(seed, fold) pairs" if any(p.f1_points for p in parts) else "runs"
        reason += f" (fewer than {stats.MIN_PAIRS} {units} give no interval)"
    runs_verdict = stats.combine(verdicts)
    pairs = stats.pairs_needed(est.sd, 1.0, alpha=alpha) if shown.f1_points else None
    rows = tuple(_part_row(*r) for r in zip(parts, verdicts, adjusted, verdicts_c, adjusted_c,
                                            strict=True))
    return Result(est.value, est.low, est.high, est.n, est.method,
                  stats.design_verdict(runs_verdict, stats.combine(verdicts_c)),
                  reason + note, float(adjusted[i]), stats.compare_to_paper(est, shown.paper),
                  stats.min_detectable_effect(est.sd, est.n, alpha=alpha),
                  float(pairs) if pairs else NAN,
                  f"{sum(v != NOT_RESOLVED for v in verdicts)} of {len(parts)}", shown.name,
                  shown.design.low, shown.design.high, float(adjusted_c[i]), runs_verdict,
                  tuple(parts), rows)


# ----------------------------------------------------------------------------- families
def _side(value: float, direction: str, p: float) -> str:
    """A part's verdict from its family-adjusted p and its sign."""
    if not (np.isfinite(p) and p < stats.ALPHA):
        return NOT_RESOLVED
    on_side = value > 0 if direction == "greater" else value < 0
    return stats.SUPPORTED if on_side else stats.CONTRADICTED


def family_columns(claims: pd.DataFrame, parts: pd.DataFrame
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every preset's claims (``claims.csv`` rows) and parts (``claims_parts.csv`` rows) with
    the family columns: per part, ``p_family`` and ``p_family_clustered`` (Holm over every
    (preset, part) of its claim, the runs' and the seed x fold p-values); per claim and
    preset, ``p_family`` of the part shown and ``verdict_family`` (the rule on the family's
    adjusted p-values, kept where the seed x fold family gives the same). A claim that does
    not apply on a preset (:data:`~hiva_lib.study.stats.NOT_APPLICABLE`) or has no results
    there keeps that verdict, and its parts stay out of the family."""
    parts, claims = parts.reset_index(drop=True), claims.reset_index(drop=True)
    parts["p_family"], parts["p_family_clustered"] = NAN, NAN
    verdict = claims.set_index(["dataset", "claim"])["verdict"]
    tested = [verdict.get((d, c)) != NOT_APPLICABLE
              for d, c in zip(parts["dataset"], parts["claim"], strict=True)]
    for _, idx in parts[tested].groupby("claim").groups.items():
        parts.loc[idx, "p_family"] = stats.holm(parts.loc[idx, "p"])
        parts.loc[idx, "p_family_clustered"] = stats.holm(parts.loc[idx, "p_clustered"])
    by_cell = {key: g for key, g in parts.groupby(["dataset", "claim"])}
    p_family, verdicts = [], []
    for r in claims.itertuples():
        g = by_cell.get((r.dataset, r.claim))
        if g is None or r.verdict == NOT_APPLICABLE:
            p_family.append(NAN)
            verdicts.append(r.verdict)
            continue
        shown = g[g["part"] == r.part]
        p_family.append(float(shown["p_family"].iat[0]) if len(shown) else NAN)
        runs = stats.combine([_side(x.value, x.direction, x.p_family) for x in g.itertuples()])
        design = stats.combine([_side(x.value, x.direction, x.p_family_clustered)
                                for x in g.itertuples()])
        verdicts.append(stats.design_verdict(runs, design))
    claims["p_family"], claims["verdict_family"] = p_family, verdicts
    return claims, parts
