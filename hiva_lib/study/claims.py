"""The paper's claims as data, each with the test that decides it.

:data:`CLAIMS` lists C1-C8: an id, the claim in our words, where the paper makes it, the test
and its statistic, and the function that evaluates it from saved results (the per-run
metrics, Fig. 4's per-AU gains, Fig. 5's text embeddings, the attention scores of Fig. 6,
the graph degrees of Fig. 7; read and reduced to one value per run by
:mod:`hiva_lib.study.claim_measures`). Every verdict comes from one rule,
:func:`hiva_lib.study.stats.verdict` on a 95% interval (multi-part claims:
:func:`~hiva_lib.study.stats.combine`); a claim whose inputs are missing is "not resolved"
with the reason "no results for ...". :func:`evaluate_claims` gives the table;
:mod:`hiva_lib.study.ledger` writes and draws it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hiva_lib.study import stats
from hiva_lib.study.claim_measures import (
    AU_FREQUENCY,
    MECHANISM,
    ClaimInputs,
    c4_per_run,
    c5_per_run,
    c6_per_run,
    c7_per_run,
    paired_runs,
)
from hiva_lib.study.stats import NOT_RESOLVED, Estimate


@dataclass(frozen=True)
class Result:
    """A claim's verdict and the part that decides it: that part's statistic with its 95%
    interval, its Holm-adjusted p, where the paper's effect lies against the interval, and
    the power of the runs (the smallest effect they detect with 80% power, and the pairs a
    1-point effect needs); ``reason`` lists every part."""

    value: float
    low: float
    high: float
    n: int
    method: str
    verdict: str
    reason: str
    p_holm: float = float("nan")
    vs_paper: str = ""
    mde_80: float = float("nan")
    pairs_for_1pt: float = float("nan")
    parts_resolved: str = ""  # "1 of 5": the parts resolved (either side) after Holm
    parts: tuple = field(default=(), repr=False, compare=False)  # the Parts tested

    def row(self) -> dict:
        """The columns of ``claims.csv`` (the parts are in ``reason``)."""
        return {k: v for k, v in self.__dict__.items() if k != "parts"}


def missing(what: str) -> Result:
    nan = float("nan")
    return Result(nan, nan, nan, 0, "", NOT_RESOLVED, f"no results for {what}")


@dataclass(frozen=True)
class Part:
    """One tested part of a claim: a mean over runs (one value per trained run) or a mean of
    per-run correlations, the claimed direction, and the paper's value of the same effect
    where the paper prints one (F1 points)."""

    name: str
    est: Estimate
    direction: str = "greater"
    paper: float = float("nan")
    f1_points: bool = False  # in F1 points: the pairs for a 1-point effect are stated


# ----------------------------------------------------------------------------- the rule
def _per_run(values: pd.Series, method: str) -> Estimate:
    """The mean of one value per run (a Series indexed by (seed, fold)) with its interval."""
    return stats.mean_interval(values.to_numpy(float), method)


def _shown(parts: list[Part], verdicts: list[str], adjusted: np.ndarray) -> int:
    """The part that decides the verdict: a contradicting part (the smallest adjusted p) if
    any, else the least resolved part (the largest adjusted p; no interval counts as 1)."""
    p = np.where(np.isfinite(adjusted), adjusted, 1.0)
    against = [i for i, v in enumerate(verdicts) if v == stats.CONTRADICTED]
    if against:
        return min(against, key=lambda i: p[i])
    return int(np.argmax(p))


def _part_text(part: Part, verdict: str, p_holm: float, family: int) -> str:
    e = part.est
    text = f"{part.name}: {e.text(2 if abs(e.value) < 1 else 1)}"
    if np.isfinite(p_holm) and family > 1:
        text += f", Holm p={p_holm:.2g}"
    elif np.isfinite(p_holm):
        text += f", p={p_holm:.2g}"
    text += f" {verdict}"
    versus = stats.compare_to_paper(e, part.paper)
    return text + (f", {versus}" if versus else "")


def _decide(parts: list[Part], what: str, note: str = "") -> Result:
    """One verdict from the parts of a claim, one family under Holm (:func:`stats.
    family_verdicts`, :func:`stats.combine`). Power is stated at the first Holm step's level
    (0.05 / number of parts: conservative for the later steps)."""
    if not parts:
        return missing(what)
    verdicts, adjusted = stats.family_verdicts([p.est for p in parts],
                                               [p.direction for p in parts])
    i = _shown(parts, verdicts, adjusted)
    part, est, alpha = parts[i], parts[i].est, stats.ALPHA / len(parts)
    reason = "; ".join(_part_text(p, v, a, len(parts))
                       for p, v, a in zip(parts, verdicts, adjusted, strict=True))
    if len(parts) > 1:
        reason += f" (Holm over {len(parts)} parts)"
    if any(p.est.n < stats.MIN_PAIRS for p in parts):
        units = "(seed, fold) pairs" if any(p.f1_points for p in parts) else "runs"
        reason += f" (fewer than {stats.MIN_PAIRS} {units} give no interval)"
    pairs = stats.pairs_needed(est.sd, 1.0, alpha=alpha) if part.f1_points else None
    return Result(est.value, est.low, est.high, est.n, est.method, stats.combine(verdicts),
                  reason + note, float(adjusted[i]),
                  stats.compare_to_paper(est, part.paper),
                  stats.min_detectable_effect(est.sd, est.n, alpha=alpha),
                  float(pairs) if pairs else float("nan"),
                  f"{sum(v != NOT_RESOLVED for v in verdicts)} of {len(parts)}", tuple(parts))


def _paper_gain(dataset: str, a: str, b: str) -> float:
    from hiva_lib.study import paper_tables as PT

    try:
        return float(PT.paper_row(dataset, a)["AVE"] - PT.paper_row(dataset, b)["AVE"])
    except PT.PaperTableError:
        return float("nan")


def _gains(inputs: ClaimInputs, pairs: list[tuple[str, str]]) -> Result:
    """Parts "a above b" on the AVE, paired per (seed, fold) run."""
    runs = inputs.runs()
    need = sorted({v for p in pairs for v in p})
    have = set() if runs is None else set(runs["variant"])
    if runs is None or not set(need) <= have:
        lack = [v for v in need if v not in have]
        return missing(f"{', '.join(lack)} on {inputs.dataset} (notebook 04)")
    parts = [Part(f"{a} - {b}", stats.paired_gain(runs, a, b, "AVE", inputs.method),
                  paper=_paper_gain(inputs.dataset, a, b), f1_points=True) for a, b in pairs]
    return _decide(parts, inputs.dataset)


# ----------------------------------------------------------------------------- C1-C3, C8
def eval_c1(inputs: ClaimInputs) -> Result:
    return _gains(inputs, [("full", "baseline")])


def eval_c2(inputs: ClaimInputs) -> Result:
    return _gains(inputs, [("full", v) for v in ("wo_aug", "wo_ldiff", "wo_ddca", "wo_cdca",
                                                 "wo_cdca_wo_ddca")])


def eval_c3(inputs: ClaimInputs) -> Result:
    return _gains(inputs, [("full", "wo_aug"), ("full", "wo_ldiff"),
                           ("wo_aug", "wo_aug_wo_ldiff"), ("wo_ldiff", "wo_aug_wo_ldiff")])


def eval_c8(inputs: ClaimInputs) -> Result:
    return _gains(inputs, [("full", "shuffled_text"), ("full", "no_language")])


# ----------------------------------------------------------------------------- C4
def eval_c4(inputs: ClaimInputs) -> Result:
    """Per run: Spearman of the per-AU relative gain (Fig. 4) with the AU's training
    frequency; the claim (rarer AU, larger gain) is a negative mean correlation over runs."""
    runs, frequency = inputs.runs(), inputs.csv(AU_FREQUENCY)
    if runs is None or frequency is None or not {"full", "baseline"} <= set(runs["variant"]):
        return missing(f"HiVA and Baseline runs and {AU_FREQUENCY} of {inputs.dataset} "
                       "(notebooks 04 and 09)")
    rho = c4_per_run(runs, frequency)
    return _decide([Part("mean over runs of Spearman(frequency, relative gain)",
                         _per_run(rho, inputs.method), "less")], inputs.dataset,
                   f"; {frequency['au'].nunique()} AUs per run")


# ----------------------------------------------------------------------------- C5
def eval_c5(inputs: ClaimInputs) -> Result:
    """Per run: HiVA's similarity of H falls over its trained epochs (last - first trained
    epoch < 0) and ends below w/o L_diff's (w/o L_diff - HiVA at the last epoch > 0). The state
    before stage 2 (epoch 0) is shared by both models and shown apart: a change from it is
    training's, not L_diff's."""
    table = inputs.csv(MECHANISM)
    if table is None or not {"full", "wo_ldiff"} <= set(table["variant"]):
        return missing(f"text-embedding tracks of full and wo_ldiff on {inputs.dataset} "
                       f"({MECHANISM}: notebook 09)")
    per_run = c5_per_run(table)
    if per_run.empty:
        return missing(f"two trained epochs of full and wo_ldiff in {MECHANISM}")
    note = (f"; before stage 2 {per_run['epoch0'].mean():.2f}, after the first epoch "
            f"{per_run['full_first'].mean():.2f}, last HiVA {per_run['full_last'].mean():.2f}, "
            f"w/o L_diff {per_run['wo_last'].mean():.2f} (means over runs)")
    return _decide([Part("HiVA last - first trained epoch",
                         _per_run(per_run["trend"], inputs.method), "less"),
                    Part("w/o L_diff - HiVA, last epoch",
                         _per_run(per_run["gap"], inputs.method))], inputs.dataset, note)


# ----------------------------------------------------------------------------- C6
def eval_c6(inputs: ClaimInputs) -> Result:
    """HiVA's DDCA maps against chance (the region's area), one value per run (the mean over
    AUs): pointing game and energy inside; the Baseline's Grad-CAM is stated beside."""
    table = inputs.csv("attention_scores.csv")
    per_run = None if table is None else c6_per_run(table)
    if per_run is None or per_run.empty:
        return missing(f"DDCA scores of {inputs.dataset} (attention_scores.csv: notebook 10 "
                       "with trained models, SynthFACS only)")
    parts = [Part(f"{score} - chance", _per_run(per_run[score], inputs.method))
             for score in ("pointing", "energy")]
    base = c6_per_run(table, "baseline", "gradcam")
    note = (f"; Baseline Grad-CAM pointing - chance {base['pointing'].mean():+.2f} over "
            f"{len(base)} run(s)" if len(base) else "")
    return _decide(parts, inputs.dataset, note + "; one value per run (mean over AUs)")


# ----------------------------------------------------------------------------- C7
def eval_c7(inputs: ClaimInputs) -> Result:
    """Per run (the mean over its test frames): HiVA's graph minus the Baseline's mean degree
    (> 0), and in HiVA's graph the active AUs' mean in-degree minus the inactive ones' (> 0);
    the Baseline's active - inactive is stated beside."""
    table = inputs.csv("graph_degrees.csv")
    if table is None or not {"full", "baseline"} <= set(table["variant"]):
        return missing(f"graph degrees of full and baseline on {inputs.dataset} "
                       "(graph_degrees.csv: notebook 10 with trained models)")
    per_run = c7_per_run(table)
    base = _per_run(per_run["active_baseline"].dropna(), inputs.method)
    note = (f"; the Baseline's active - inactive in-degree: {base.text(2)}; one value per run "
            "(the mean over its test frames)")
    return _decide([Part("HiVA - Baseline mean degree",
                         _per_run(per_run["denser"].dropna(), inputs.method)),
                    Part("HiVA active - inactive in-degree",
                         _per_run(per_run["active"].dropna(), inputs.method))],
                   inputs.dataset, note)


# ----------------------------------------------------------------------------- the claims
@dataclass(frozen=True)
class Claim:
    id: str
    statement: str
    where: str
    test: str
    statistic: str
    evaluate: Callable[[ClaimInputs], Result]


CLAIMS: tuple[Claim, ...] = (
    Claim("C1", "HiVA beats the vision-only Baseline.", "Tables IV-VI, Sec. IV-B",
          "paired gain HiVA - Baseline per (seed, fold) run, 95% interval above 0",
          "AVE gain (F1 points)", eval_c1),
    Claim("C2", "Each component helps: HiVA is above w/o AUG, w/o L_diff, w/o DDCA, w/o CDCA "
          "and w/o both attentions.", "Tables IV-VI, Sec. IV-B",
          "paired gain of HiVA over each removal, each above 0 (Holm over 5)",
          "AVE gain of the deciding part (F1 points)", eval_c2),
    Claim("C3", "AUG and L_diff are complementary: HiVA is above each single removal, each "
          "single removal above both removed.", "Tables IV-VI, Sec. IV-B (3)",
          "the four paired gains, each above 0 (Holm over 4)", "AVE gain of the deciding part "
          "(F1 points)", eval_c3),
    Claim("C4", "The rarer the AU, the larger HiVA's relative gain over the Baseline.",
          "Fig. 4, Sec. IV-A", "per run: Spearman correlation over AUs of the relative gain "
          "with the AU's training frequency; the mean over runs below 0", "mean Spearman rho",
          eval_c4),
    Claim("C5", "L_diff makes the text AU embeddings progressively less similar; without it "
          "they stay similar.", "Fig. 5, Sec. IV-B (2)",
          "per run, mean off-diagonal cosine of H: HiVA's last minus first trained epoch "
          "below 0, and w/o L_diff minus HiVA at the last epoch above 0 (Holm over 2; the state "
          "before stage 2 is shared and shown apart)", "cosine difference", eval_c5),
    Claim("C6", "DDCA attends to the AU's own facial region.", "Fig. 6, Sec. IV-B",
          "per run, the mean over AUs of the pointing game and of the energy inside the "
          "SynthFACS region minus chance (area), each above 0 (Holm over 2)", "score - chance",
          eval_c6),
    Claim("C7", "HiVA's AU graphs are denser than the Baseline's, and active AUs have more "
          "connections.", "Fig. 7, Sec. IV-B",
          "per run (the mean over its test frames): mean degree HiVA - Baseline, and active - "
          "inactive in-degree in HiVA, each above 0 (Holm over 2)", "degree difference",
          eval_c7),
    Claim("C8", "The meaning of the descriptions matters: HiVA beats the same model with "
          "shuffled descriptions and with learned tokens and no language model.",
          "the paper's premise (Sec. I, III-B); controls of issue 16",
          "paired gains HiVA - shuffled_text and HiVA - no_language, each above 0 (Holm over "
          "2)", "AVE gain of the deciding part (F1 points)", eval_c8),
)
CLAIM_IDS = tuple(c.id for c in CLAIMS)


def paper_evidence(claim_id: str, dataset: str) -> str:
    """What the paper shows for a claim on ``dataset`` (its numbers where a table has them)."""
    from hiva_lib.study import paper_tables as PT

    def gain(a: str, b: str) -> str:
        return f"{PT.paper_row(dataset, a)['AVE'] - PT.paper_row(dataset, b)['AVE']:+.1f}"

    _, abl = PT.table_for(dataset)
    table = f"Table {PT.ROMAN[abl]}"
    if claim_id == "C1":
        return f"{table}: HiVA - Baseline AVE {gain('full', 'baseline')}"
    if claim_id == "C2":
        return f"{table}: HiVA minus each removal " + ", ".join(
            gain("full", v) for v in ("wo_aug", "wo_ldiff", "wo_ddca", "wo_cdca",
                                      "wo_cdca_wo_ddca"))
    if claim_id == "C3":
        return f"{table}: " + ", ".join(gain(a, b) for a, b in (
            ("full", "wo_aug"), ("full", "wo_ldiff"), ("wo_aug", "wo_aug_wo_ldiff"),
            ("wo_ldiff", "wo_aug_wo_ldiff")))
    return {"C4": "Fig. 4: a falling trend of relative gain with frequency, by eye",
            "C5": "Fig. 5: similarity matrices of a few epochs, by eye",
            "C6": "Fig. 6: maps of a few faces, by eye",
            "C7": "Fig. 7: graphs of a few faces, by eye",
            "C8": "not tested in the paper"}[claim_id]


def evaluate_claims(inputs: ClaimInputs) -> pd.DataFrame:
    """One row per claim: id, statement, where, paper evidence, test, statistic, value, low,
    high, n, method, verdict, reason."""
    rows = []
    for c in CLAIMS:
        res = c.evaluate(inputs)
        rows.append(dict(dataset=inputs.dataset, claim=c.id, statement=c.statement,
                         where=c.where, paper=paper_evidence(c.id, inputs.dataset),
                         test=c.test, statistic=c.statistic, **res.row()))
    return pd.DataFrame(rows)


def power_table(inputs: ClaimInputs, half_widths: tuple[float, ...] = (1.0, 2.0)
                ) -> pd.DataFrame:
    """Per claim part: runs, mean, sd of the per-run values, the 95% half-width now, the
    smallest effect detected with 80% power (5% two-sided, and at the first Holm step's
    level 0.05/parts), the pairs that 80% power at 1 F1 point needs (gains only), and the
    pairs for a 95% half-width of each of ``half_widths`` (in the part's units)."""
    rows = []
    for c in CLAIMS:
        parts = c.evaluate(inputs).parts
        for part in parts:
            e, k = part.est, len(parts)
            row = dict(claim=c.id, part=part.name, runs=e.n, mean=e.value, sd=e.sd,
                       half_width=(e.high - e.low) / 2,
                       mde_80=stats.min_detectable_effect(e.sd, e.n),
                       mde_80_holm=stats.min_detectable_effect(e.sd, e.n,
                                                               alpha=stats.ALPHA / k),
                       pairs_80_at_1pt=(stats.pairs_needed(e.sd, 1.0, alpha=stats.ALPHA / k)
                                        if part.f1_points else None))
            for h in half_widths:
                row[f"pairs_half_width_{h:g}"] = stats.pairs_for_half_width(e.sd, h)
            rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- ambiguity 7
def alternative_checks(inputs: ClaimInputs, slug: str) -> pd.DataFrame:
    """An alternative reading of ambiguity 7 (``slug``) through the ledger beside HiVA, one
    family under Holm: its gain over the Baseline (C1 with it) and over HiVA, its Z cosine at
    the last epoch minus HiVA's (does Z stay AU-specific), and its DDCA pointing game minus
    HiVA's (do the maps move to the AU's region, C6); each paired per (seed, fold) run. Empty
    when the alternative has no runs."""
    runs = inputs.runs()
    if runs is None or slug not in set(runs["variant"]):
        return pd.DataFrame()
    parts = [Part(f"{slug} - baseline (AVE F1)",
                  stats.paired_gain(runs, slug, "baseline", "AVE", inputs.method)),
             Part(f"{slug} - full (AVE F1)",
                  stats.paired_gain(runs, slug, "full", "AVE", inputs.method))]
    mech = inputs.csv(MECHANISM)
    if mech is not None and slug in set(mech["variant"]):
        last = mech[mech["epoch"] == mech.groupby(["variant", "seed", "fold"])["epoch"]
                    .transform("max")].set_index(["seed", "fold"])
        z = {v: last[last["variant"] == v][["z_cosine"]] for v in (slug, "full")}
        parts.append(Part(f"{slug} - full (Z cosine, last epoch)",
                          _per_run(paired_runs(z[slug], z["full"]), inputs.method)))
    scores = inputs.csv("attention_scores.csv")
    if scores is not None and slug in set(scores["variant"]):
        point = {v: c6_per_run(scores, v)[["pointing"]] for v in (slug, "full")}
        parts.append(Part(f"{slug} - full (DDCA pointing game)",
                          _per_run(paired_runs(point[slug], point["full"]), inputs.method)))
    verdicts, adjusted = stats.family_verdicts([p.est for p in parts],
                                               ["greater"] * len(parts))
    return pd.DataFrame([dict(dataset=inputs.dataset, variant=slug, check=p.name,
                              value=p.est.value, low=p.est.low, high=p.est.high, n=p.est.n,
                              p_holm=a, resolved=v != NOT_RESOLVED)
                         for p, v, a in zip(parts, verdicts, adjusted, strict=True)])

