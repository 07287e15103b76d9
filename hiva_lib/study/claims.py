"""The paper's claims as data, each with the test that decides it.

:data:`CLAIMS` lists C1-C9: an id, its role (confirmatory or exploratory), the claim in our
words, where the paper makes it, the test and its statistic, and the function that evaluates
it from saved results (the per-run metrics, Fig. 4's per-AU gains, Fig. 5's text embeddings,
the attention scores of Fig. 6, the graph degrees of Fig. 7; read and reduced to one value
per run by :mod:`hiva_lib.study.claim_measures`). Every verdict comes from one rule
(:mod:`hiva_lib.study.claim_rule`: Holm over a claim's parts, over the runs and over seeds x
folds); a claim whose inputs are missing is "not resolved" with the reason "no results for
...". :func:`evaluate` gives the claims and their parts; :mod:`hiva_lib.study.ledger` writes,
draws and joins them into families over the presets.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

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
from hiva_lib.study.claim_rule import NOT_RUN, Part, Result, decide, missing, part
from hiva_lib.study.stats import NOT_RESOLVED

MATCHED = "baseline_s2"  # the vision-only model trained through stage 2 as HiVA is (C9)


# ----------------------------------------------------------------------------- gains
def _paper_gain(dataset: str, a: str, b: str) -> float:
    from hiva_lib.study import paper_tables as PT

    try:
        return float(PT.paper_row(dataset, a)["AVE"] - PT.paper_row(dataset, b)["AVE"])
    except PT.PaperTableError:
        return float("nan")


def train_command(dataset: str, variants: list[str]) -> str:
    """The command that trains ``variants`` on the seeds of C1 (every test fold)."""
    return (f"papermill notebooks/04_ablations.ipynb out.ipynb -p dataset {dataset} "
            f"-y '{{variants: [{', '.join(variants)}], seeds: [0, 1, 2]}}'")


def _gains(inputs: ClaimInputs, pairs: list[tuple[str, str]]) -> Result:
    """Parts "a above b" on the AVE, paired per (seed, fold) run. A pair whose variant has no
    runs is a part without runs ("not run", so the claim is not supported); no run of any
    pair: missing, with the command that trains them."""
    runs = inputs.runs()
    have = set() if runs is None else set(runs["variant"])
    lack = sorted({v for p in pairs for v in p} - have)
    ready = [p for p in pairs if set(p) <= have]
    if runs is None or not ready:
        return missing(f"{', '.join(lack)} on {inputs.dataset}: not run; train with "
                       f"`{train_command(inputs.dataset, lack)}`")
    parts = [part(f"{a} - {b}" + ("" if (a, b) in ready else NOT_RUN),
                  stats.paired_differences(runs, a, b, "AVE") if (a, b) in ready
                  else pd.Series(dtype=float), inputs.method,
                  paper=_paper_gain(inputs.dataset, a, b), f1_points=True) for a, b in pairs]
    note = (f"; not run: {', '.join(lack)} (`{train_command(inputs.dataset, lack)}`)"
            if lack else "")
    return decide(parts, inputs.dataset, note)


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


def eval_c9(inputs: ClaimInputs) -> Result:
    """HiVA minus the vision-only model trained through the same stage 2 (``baseline_s2``):
    what the language branch adds beyond the extra training that C1's Baseline lacks."""
    return _gains(inputs, [("full", MATCHED)])


# ----------------------------------------------------------------------------- C4
def eval_c4(inputs: ClaimInputs) -> Result:
    """Per run: Spearman of the per-AU relative gain (Fig. 4) with the AU's training
    frequency; the claim (rarer AU, larger gain) is a negative mean correlation over runs."""
    runs, frequency = inputs.runs(), inputs.csv(AU_FREQUENCY)
    if runs is None or frequency is None or not {"full", "baseline"} <= set(runs["variant"]):
        return missing(f"HiVA and Baseline runs and {AU_FREQUENCY} of {inputs.dataset} "
                       "(notebooks 04 and 10)")
    rho = c4_per_run(runs, frequency)
    return decide([part("mean over runs of Spearman(frequency, relative gain)", rho,
                        inputs.method, "less")], inputs.dataset,
                  f"; {frequency['au'].nunique()} AUs per run")


# ----------------------------------------------------------------------------- C5
def _c5_story(per_run: pd.DataFrame) -> str:
    """What happened to H over stage 2, in words, from the means over runs."""
    first, last, step = (per_run[c].mean() for c in ("full_first", "full_last", "last_step"))
    start = per_run["epoch0"].mean()
    merged = (f"stage 2 first merges the embeddings (H cosine {start:.2f} -> {first:.2f} after "
              "its first epoch)" if first > start else
              f"stage 2's first epoch moves H cosine {start:.2f} -> {first:.2f}")
    moved = "separates them a little" if step < 0 else "does not separate them"
    merged += f", then HiVA {moved} ({step:+.3f} over the last epoch, to {last:.2f})"
    wo = per_run["wo_last"].dropna()
    if len(wo):
        merged += f"; w/o L_diff ends at {wo.mean():.2f} ({len(wo)} runs)"
    return f"; what happened: {merged} (means over runs)"


def eval_c5(inputs: ClaimInputs) -> Result:
    """Per run of HiVA: the trend of H's mean off-diagonal cosine over every epoch, the state
    before stage 2 included (least-squares slope per epoch, claimed < 0: "progressively less
    similar"), and w/o L_diff - HiVA at the last epoch (> 0: "without it they stay similar")
    on the runs that have both. The reason says in words what happened."""
    table = inputs.csv(MECHANISM)
    if table is None or "full" not in set(table["variant"]):
        return missing(f"text-embedding tracks of full on {inputs.dataset} "
                       f"({MECHANISM}: notebook 09)")
    per_run = c5_per_run(table)
    if per_run.empty:
        return missing(f"two epochs of full in {MECHANISM}")
    parts = [part("HiVA's trend over every epoch (slope per epoch, epoch 0 included)",
                  per_run["slope"], inputs.method, "less"),
             part("w/o L_diff - HiVA, last epoch", per_run["gap"].dropna(), inputs.method)]
    return decide(parts, inputs.dataset, _c5_story(per_run))


# ----------------------------------------------------------------------------- C6
def eval_c6(inputs: ClaimInputs) -> Result:
    """HiVA's DDCA maps against chance (the region's area), one value per run (the mean over
    AUs): pointing game and energy inside; the Baseline's Grad-CAM is stated beside."""
    table = inputs.csv("attention_scores.csv")
    per_run = None if table is None else c6_per_run(table)
    if per_run is None or per_run.empty:
        return missing(f"DDCA scores of {inputs.dataset} (attention_scores.csv: notebook 10 "
                       "with trained models, SynthFACS only)")
    parts = [part(f"{score} - chance", per_run[score], inputs.method)
             for score in ("pointing", "energy")]
    base = c6_per_run(table, "baseline", "gradcam")
    note = (f"; Baseline Grad-CAM pointing - chance {base['pointing'].mean():+.2f} over "
            f"{len(base)} run(s)" if len(base) else "")
    return decide(parts, inputs.dataset, note + "; one value per run (mean over AUs)")


# ----------------------------------------------------------------------------- C7
def graph_variants() -> list[str]:
    """The variants that read ambiguity 2 the other way: HiVA with its graph in stage 2."""
    from hiva_lib.variants import VARIANTS

    return [v.slug for v in VARIANTS.values() if v.overrides.get("graph_in_stage2") is True]


def _c7_parts(table: pd.DataFrame, variant: str, method: str) -> list[Part]:
    per_run = c7_per_run(table, variant)
    return [part("HiVA - Baseline mean degree", per_run["denser"].dropna(), method),
            part("HiVA active - inactive in-degree", per_run["active"].dropna(), method),
            part("HiVA - Baseline on the active - inactive gap",
                 per_run["active_vs_baseline"].dropna(), method)]


def eval_c7(inputs: ClaimInputs) -> Result:
    """Per run (the mean over its test frames): HiVA's graph minus the Baseline's mean degree
    (> 0), in HiVA's graph the active AUs' mean in-degree minus the inactive ones' (> 0), and
    that gap minus the Baseline's (> 0: what HiVA adds). Under ambiguity 2's default reading
    HiVA's graph is stage 1's and does not act at evaluation: the verdict is then "not
    applicable under the default reading", with the stage-1 graph's test and, where a variant
    with the graph in stage 2 has graph degrees, that variant's verdict beside."""
    table = inputs.csv("graph_degrees.csv")
    if table is None or not {"full", "baseline"} <= set(table["variant"]):
        return missing(f"graph degrees of full and baseline on {inputs.dataset} "
                       "(graph_degrees.csv: notebook 10 with trained models)")
    per_run = c7_per_run(table)
    base = stats.mean_interval(per_run["active_baseline"].dropna().to_numpy(), inputs.method)
    note = (f"; the Baseline's active - inactive in-degree: {base.text(2)}; one value per run "
            "(the mean over its test frames)")
    res = decide(_c7_parts(table, "full", inputs.method), inputs.dataset, note)
    if inputs.graph_in_stage2("full") == {True}:
        return res
    alt = [v for v in graph_variants() if v in set(table["variant"])]
    beside = "; ".join(f"{v} (graph in stage 2): "
                       f"{decide(_c7_parts(table, v, inputs.method), v).verdict}" for v in alt)
    return dataclasses.replace(
        res, verdict=stats.NOT_APPLICABLE,
        reason=("HiVA's runs use the graph in stage 1 only (ambiguity 2, graph_in_stage2="
                "False): the graph tested is not the one that acts at evaluation; "
                + (beside or "no run with the graph in stage 2") + ". The stage-1 graph: "
                + res.reason))


# ----------------------------------------------------------------------------- the claims
CONFIRMATORY, EXPLORATORY = "confirmatory", "exploratory"


@dataclass(frozen=True)
class Claim:
    id: str
    statement: str
    where: str
    test: str
    statistic: str
    evaluate: Callable[[ClaimInputs], Result]
    role: str = EXPLORATORY  # confirmatory: the paper's headline claims, tests fixed in advance


CLAIMS: tuple[Claim, ...] = (
    Claim("C1", "HiVA beats the vision-only Baseline.", "Tables IV-VI, Sec. IV-B",
          "paired gain HiVA - Baseline per (seed, fold) run, 95% interval above 0",
          "AVE gain (F1 points)", eval_c1, CONFIRMATORY),
    Claim("C2", "Each component helps: HiVA is above w/o AUG, w/o L_diff, w/o DDCA, w/o CDCA "
          "and w/o both attentions.", "Tables IV-VI, Sec. IV-B",
          "paired gain of HiVA over each removal, each above 0 (Holm over 5)",
          "AVE gain of the deciding part (F1 points)", eval_c2, CONFIRMATORY),
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
          "per run, mean off-diagonal cosine of H: HiVA's least-squares trend over every "
          "epoch, the state before stage 2 included, below 0, and w/o L_diff minus HiVA at the "
          "last epoch above 0 (Holm over 2)", "cosine slope per epoch, or difference", eval_c5),
    Claim("C6", "DDCA attends to the AU's own facial region.", "Fig. 6, Sec. IV-B",
          "per run, the mean over AUs of the pointing game and of the energy inside the "
          "SynthFACS region minus chance (area), each above 0 (Holm over 2)", "score - chance",
          eval_c6),
    Claim("C7", "HiVA's AU graphs are denser than the Baseline's, and active AUs have more "
          "connections.", "Fig. 7, Sec. IV-B",
          "per run (the mean over its test frames): mean degree HiVA - Baseline, active - "
          "inactive in-degree in HiVA, and that gap minus the Baseline's, each above 0 (Holm "
          "over 3); applies where HiVA's graph acts at evaluation (ambiguity 2)",
          "degree difference", eval_c7),
    Claim("C8", "The meaning of the descriptions matters: HiVA beats the same model with "
          "shuffled descriptions and with learned tokens and no language model.",
          "the paper's premise (Sec. I, III-B); the controls shuffled_text and no_language",
          "paired gains HiVA - shuffled_text and HiVA - no_language, each above 0 (Holm over "
          "2)", "AVE gain of the deciding part (F1 points)", eval_c8),
    Claim("C9", "The language branch adds F1 beyond matched training: HiVA beats the "
          "vision-only model trained through the same stage 2.",
          "the paper's premise (Sec. I, III-B); C1 compares with the stage-1 model",
          "paired gain HiVA - baseline_s2 per (seed, fold) run, 95% interval above 0",
          "AVE gain (F1 points)", eval_c9, CONFIRMATORY),
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
            "C8": "not tested in the paper",
            "C9": "not tested in the paper (its Baseline is the stage-1 model)"}[claim_id]


def evaluate(inputs: ClaimInputs) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The claims (one row per claim: dataset, claim, role, statement, where, paper evidence,
    test, statistic and :class:`~hiva_lib.study.claim_rule.Result`'s columns) and their parts
    (one row per claim part: ``claims_parts.csv``)."""
    rows, parts = [], []
    for c in CLAIMS:
        res = c.evaluate(inputs)
        rows.append(dict(dataset=inputs.dataset, claim=c.id, role=c.role,
                         statement=c.statement, where=c.where,
                         paper=paper_evidence(c.id, inputs.dataset), test=c.test,
                         statistic=c.statistic, **res.row()))
        parts += [dict(dataset=inputs.dataset, claim=c.id, **r) for r in res.part_rows]
    return pd.DataFrame(rows), pd.DataFrame(parts, columns=PART_COLUMNS)


PART_COLUMNS = ["dataset", "claim", "part", "direction", "value", "low", "high", "n", "method",
                "p", "p_holm", "verdict", "low_clustered", "high_clustered", "p_clustered",
                "p_holm_clustered", "verdict_clustered"]


def evaluate_claims(inputs: ClaimInputs) -> pd.DataFrame:
    """The claims of :func:`evaluate`, one row per claim."""
    return evaluate(inputs)[0]


def power_table(inputs: ClaimInputs, half_widths: tuple[float, ...] = (1.0, 2.0)
                ) -> pd.DataFrame:
    """Per claim part: runs, mean, sd of the per-run values, the 95% half-width now, the
    smallest effect detected with 80% power (5% two-sided, and at the first Holm step's
    level 0.05/parts), the pairs that 80% power at 1 F1 point needs (gains only), and the
    pairs for a 95% half-width of each of ``half_widths`` (in the part's units)."""
    rows = []
    for c in CLAIMS:
        parts = c.evaluate(inputs).parts
        for tested in parts:
            e, k = tested.est, len(parts)
            row = dict(claim=c.id, part=tested.name, runs=e.n, mean=e.value, sd=e.sd,
                       half_width=(e.high - e.low) / 2,
                       mde_80=stats.min_detectable_effect(e.sd, e.n),
                       mde_80_holm=stats.min_detectable_effect(e.sd, e.n,
                                                               alpha=stats.ALPHA / k),
                       pairs_80_at_1pt=(stats.pairs_needed(e.sd, 1.0, alpha=stats.ALPHA / k)
                                        if tested.f1_points else None))
            for h in half_widths:
                row[f"pairs_half_width_{h:g}"] = stats.pairs_for_half_width(e.sd, h)
            rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------- ambiguity 7 and the causal tests
Z_MEASURES = {"z_cosine": "Z cosine", "z_specific": "Z AU-specific part",
              "z_spread": "Z spread", "z_specific_rank": "Z specific rank"}  # mechanism.csv


def alternative_checks(inputs: ClaimInputs, slug: str) -> pd.DataFrame:
    """An alternative reading of ambiguity 7 (``slug``) through the ledger beside HiVA, one
    family under Holm: its gain over the Baseline (C1 with it) and over HiVA, its Z cosine at
    the last epoch minus HiVA's (does Z stay AU-specific), and its DDCA pointing game minus
    HiVA's (do the maps move to the AU's region, C6); each paired per (seed, fold) run. Empty
    when the alternative has no runs."""
    return beside_hiva(inputs, slug, ("baseline", "full"), ("z_cosine",), pointing=True)


def causal_checks(inputs: ClaimInputs, slug: str) -> pd.DataFrame:
    """A causal test of the collapse (``slug``, one of ``CAUSAL_TESTS``) beside HiVA, one
    family under Holm: its F1 minus HiVA's, and at the last epoch its Z cosine, Z's
    AU-specific part, spread and specific rank minus HiVA's (mechanism.csv), each paired per
    (seed, fold) run. Empty when the test has no runs."""
    return beside_hiva(inputs, slug, ("full",), tuple(Z_MEASURES), pointing=False)


def beside_hiva(inputs: ClaimInputs, slug: str, refs: tuple[str, ...],
                measures: tuple[str, ...], pointing: bool) -> pd.DataFrame:
    """``slug`` minus each of ``refs`` on the AVE F1, minus HiVA on ``measures`` of its last
    epoch and (``pointing``) on the DDCA pointing game, paired per run; Holm over the checks."""
    runs = inputs.runs()
    if runs is None or slug not in set(runs["variant"]):
        return pd.DataFrame()
    parts = [part(f"{slug} - {ref} (AVE F1)", stats.paired_differences(runs, slug, ref, "AVE"),
                  inputs.method) for ref in refs]
    mech = inputs.csv(MECHANISM)
    if mech is not None and slug in set(mech["variant"]):
        last = mech[mech["epoch"] == mech.groupby(["variant", "seed", "fold"])["epoch"]
                    .transform("max")].set_index(["seed", "fold"])
        for m in (m for m in measures if m in last):  # files written before a column lack it
            z = {v: last[last["variant"] == v][[m]] for v in (slug, "full")}
            parts.append(part(f"{slug} - full ({Z_MEASURES[m]}, last epoch)",
                              paired_runs(z[slug], z["full"]), inputs.method))
    scores = inputs.csv("attention_scores.csv")
    if pointing and scores is not None and slug in set(scores["variant"]):
        point = {v: c6_per_run(scores, v)[["pointing"]] for v in (slug, "full")}
        parts.append(part(f"{slug} - full (DDCA pointing game)",
                          paired_runs(point[slug], point["full"]), inputs.method))
    verdicts, adjusted = stats.family_verdicts([p.est for p in parts],
                                               ["greater"] * len(parts))
    return pd.DataFrame([dict(dataset=inputs.dataset, variant=slug, check=p.name,
                              value=p.est.value, low=p.est.low, high=p.est.high, n=p.est.n,
                              p_holm=a, resolved=v != NOT_RESOLVED)
                         for p, v, a in zip(parts, verdicts, adjusted, strict=True)])

