"""The paper's claims as data, each with the test that decides it (issue 16).

:data:`CLAIMS` lists C1-C8: an id, the claim in our words, where the paper makes it, the test
and its statistic, and the function that evaluates it from saved results (the per-run
metrics, Fig. 4's per-AU gains, Fig. 5's text embeddings, the attention scores of Fig. 6,
the graph degrees of Fig. 7). Every verdict comes from one rule,
:func:`hiva_lib.study.stats.verdict` on a 95% interval (multi-part claims:
:func:`~hiva_lib.study.stats.combine`); a claim whose inputs are missing is "not resolved"
with the reason "no results for ...". :func:`evaluate_claims` gives the table,
:func:`write_claims` writes ``results/<dataset>/claims.csv`` and ``claims.md``,
:func:`plot_verdicts` the verdicts across data sets.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from hiva_lib.data.au import au_keys
from hiva_lib.data.prepared import DatasetError
from hiva_lib.study import stats
from hiva_lib.study.stats import NOT_RESOLVED, Estimate

MISSING = (FileNotFoundError, DatasetError)  # FigureError and ReportError are FileNotFoundErrors


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


@dataclass
class ClaimInputs:
    """Where one data set's saved results are, and lazy access to them. The claims read
    ``results/`` only (per-run metrics and the small per-run tables that
    :func:`measure_from_models` and notebook 09 write), so a fresh clone reproduces them."""

    dataset: str
    results_root: str | Path
    data_root: str | None = None
    runs_root: str | None = None
    seeds: tuple[int, ...] | None = None  # None: every seed with results
    method: str = "t"
    smoke: bool = False
    _runs: pd.DataFrame | None = field(default=None, repr=False)

    def runs(self) -> pd.DataFrame | None:
        """Per run: variant, seed, fold, each AU's F1 and AVE in %; None without results."""
        from hiva_lib.study.report import ReportError, collect_results, runs_in_points

        if self._runs is None:
            try:
                points = runs_in_points(collect_results(self.results_root, self.dataset))
            except ReportError:
                return None
            if self.seeds is not None:
                points = points[points["seed"].isin(list(self.seeds))]
            self._runs = points
        return self._runs

    def study(self, seed: int = 0, fold: int = 1):
        from hiva_lib.study.study import Study

        return Study.open(self.dataset, data_root=self.data_root, runs_root=self.runs_root,
                          results_root=str(self.results_root), smoke=self.smoke, seed=seed,
                          fold=fold)

    def csv(self, name: str) -> pd.DataFrame | None:
        path = Path(self.results_root) / self.dataset / name
        if not path.exists():
            return None
        table = pd.read_csv(path)
        if self.seeds is not None and "seed" in table:
            table = table[table["seed"].isin(list(self.seeds))]
        return table


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
AU_FREQUENCY = "au_frequency.csv"  # per fold and AU: the AU's base rate in the training rows


def au_frequency(study, folds: list[int]) -> pd.DataFrame:
    """fold, au, frequency (% of the fold's training rows where the AU is present)."""
    keys = au_keys(study.data.au_ids)
    rows = []
    for fold in folds:
        freq = study.data.labels(study.data.split(fold)[0]).mean(0) * 100
        rows += [dict(fold=fold, au=k, frequency=float(f))
                 for k, f in zip(keys, freq, strict=True)]
    return pd.DataFrame(rows)


def c4_per_run(runs: pd.DataFrame, frequency: pd.DataFrame) -> pd.Series:
    """Per (seed, fold) run that HiVA and the Baseline share: Spearman's rho over AUs of the
    relative gain (% of the Baseline's F1, Fig. 4) with the AU's training frequency in that
    fold. AUs where the Baseline scores 0 have no relative gain and are left out."""
    aus = list(dict.fromkeys(frequency["au"]))
    full = runs[runs.variant == "full"].set_index(["seed", "fold"])
    base = runs[runs.variant == "baseline"].set_index(["seed", "fold"])
    freq = frequency.pivot(index="fold", columns="au", values="frequency")
    out = {}
    for key in full.index.intersection(base.index).sort_values():
        a, b = full.loc[key, aus].to_numpy(float), base.loc[key, aus].to_numpy(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(b > 0, (a - b) / b * 100, np.nan)
        f = freq.loc[key[1], aus].to_numpy(float)
        ok = np.isfinite(rel)
        out[key] = (sps.spearmanr(f[ok], rel[ok]).statistic if ok.sum() >= 3 else np.nan)
    return pd.Series(out, dtype=float).dropna()


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
MECHANISM = "mechanism.csv"  # per run, variant and stage-2 epoch (notebook 09); epoch 0: before


def c5_per_run(table: pd.DataFrame) -> pd.DataFrame:
    """Per (seed, fold) run with HiVA and w/o L_diff tracks: the mean off-diagonal cosine of H
    before stage 2 (epoch 0, shared), after the first trained epoch and at the last, for both;
    ``trend`` = HiVA's last - first trained epoch, ``gap`` = w/o L_diff - HiVA at the last."""
    wide = table.pivot_table(index=["seed", "fold", "epoch"], columns="variant",
                             values="h_cosine")
    rows = {}
    for (seed, fold), run in wide.groupby(level=["seed", "fold"]):
        run = run.droplevel([0, 1])[["full", "wo_ldiff"]].dropna()
        trained = run[run.index >= 1]
        if len(trained) < 2:
            continue
        first, last = trained.iloc[0], trained.iloc[-1]
        start = run.loc[0, "full"] if 0 in run.index else np.nan
        rows[(seed, fold)] = dict(epoch0=start, full_first=first["full"],
                                  full_last=last["full"], wo_last=last["wo_ldiff"],
                                  trend=last["full"] - first["full"],
                                  gap=last["wo_ldiff"] - last["full"])
    return pd.DataFrame.from_dict(rows, orient="index")


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
def c6_per_run(table: pd.DataFrame, variant: str = "full", method: str = "ddca"
               ) -> pd.DataFrame:
    """Per (seed, fold) run: the mean over AUs (with scored frames) of pointing - chance and
    energy - chance for one model's maps (attention_scores.csv)."""
    t = table[(table["variant"] == variant) & (table["method"] == method)
              & (table["au"] != "mean") & (table["n_frames"] > 0)]
    t = t.assign(pointing=t["pointing"] - t["chance"], energy=t["energy"] - t["chance"])
    return t.groupby(["seed", "fold"])[["pointing", "energy"]].mean()


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
def graph_degrees(study, variants: tuple[str, ...] = ("full", "baseline"),
                  max_frames: int = 128, batch_size: int = 16) -> pd.DataFrame:
    """Per test frame (a fixed random subset) and model: the top-K AU graph's mean degree
    (an edge where either AU picked the other) and the mean in-degree of the active and of the
    inactive AUs. Written to ``results/<dataset>/graph_degrees.csv`` (the rows of other runs
    kept)."""
    from hiva_lib.study.faces import load_views
    from hiva_lib.study.maps import model_maps

    _, test = study.data.split(study.cfg.fold)
    rows = np.sort(np.random.default_rng(study.cfg.seed).permutation(test)[:max_frames])
    labels = study.data.labels(rows) > 0.5
    records = []
    for v in variants:
        model = study.model(v)
        adj = np.concatenate([model_maps(model, load_views(
            study, rows[i:i + batch_size], model.cfg.img_size)[0])["graph"]
            for i in range(0, len(rows), batch_size)]) > 0
        n = adj.shape[-1]
        adj[:, np.arange(n), np.arange(n)] = False
        degree = (adj | adj.transpose(0, 2, 1)).sum(-1).mean(-1)
        indeg = adj.sum(1)
        with np.errstate(invalid="ignore"):
            act = np.where(labels.any(1), (indeg * labels).sum(1) / labels.sum(1), np.nan)
            ina = np.where((~labels).any(1), (indeg * ~labels).sum(1) / (~labels).sum(1),
                           np.nan)
        records += [dict(variant=v, seed=study.cfg.seed, fold=study.cfg.fold, row=int(r),
                         mean_degree=float(d), active_indegree=a, inactive_indegree=i)
                    for r, d, a, i in zip(rows, degree, act, ina, strict=True)]
    from hiva_lib.study.study import write_run_rows

    path = Path(study.cfg.results_root) / study.dataset / "graph_degrees.csv"
    return write_run_rows(pd.DataFrame(records), path)


def c7_per_run(table: pd.DataFrame) -> pd.DataFrame:
    """Per (seed, fold) run, the means over its test frames of: HiVA's mean degree minus the
    Baseline's (``denser``), and the active AUs' mean in-degree minus the inactive ones' in
    HiVA's graph (``active``) and in the Baseline's (``active_baseline``)."""
    wide = table.pivot_table(index=["seed", "fold", "row"], columns="variant",
                             values="mean_degree")
    gap = table.assign(d=table["active_indegree"] - table["inactive_indegree"])
    gap = gap.pivot_table(index=["seed", "fold", "row"], columns="variant", values="d")
    per_frame = pd.DataFrame({"denser": wide["full"] - wide["baseline"],
                              "active": gap.get("full"), "active_baseline": gap.get("baseline")})
    return per_frame.groupby(level=["seed", "fold"]).mean()


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


def _attempt(what: str, seed: int | None, fold: int | None, fn, *args, **kwargs) -> dict:
    """Run one measurement; a missing model or data set is a listed skip, not an error."""
    from hiva_lib.study.study import FigureError

    try:
        fn(*args, **kwargs)
        status = "done"
    except (FigureError, DatasetError) as e:
        status = f"skipped: {str(e).splitlines()[0][:200]}"
    return dict(seed=seed, fold=fold, what=what, status=status)


def _write_frequency(inputs: ClaimInputs, folds: list[int]) -> None:
    from hiva_lib.integrity import atomic_write_text

    table = au_frequency(inputs.study(fold=folds[0]), folds)
    path = Path(inputs.results_root) / inputs.dataset / AU_FREQUENCY
    atomic_write_text(table.to_csv(index=False, float_format="%.6f"), path)


def measure_from_models(inputs: ClaimInputs, max_frames: int = 128) -> pd.DataFrame:
    """What the claims need from the data and the trained models, written to small per-run
    tables in ``results/<dataset>/`` so that the claims can be evaluated from ``results/``
    alone: the AUs' training frequency per fold (C4, ``au_frequency.csv``); for every
    (seed, fold) with results of HiVA and the Baseline their AU graph degrees (C7,
    ``graph_degrees.csv``) and attention maps scored against the SynthFACS regions (C6,
    ``attention_scores.csv``); the gradient ratio of lambda·L_diff to L_au of HiVA and of each
    lambda-sweep run (``ldiff_balance.csv``, shown by the report). What is missing is skipped
    and listed (a table's rows of other runs are kept). Returns what was done."""
    from hiva_lib.study import ldiff_balance
    from hiva_lib.study.fig6_attention import score_attention
    from hiva_lib.variants import CONTROLS

    runs = inputs.runs()
    if runs is None:
        return pd.DataFrame(columns=["seed", "fold", "what", "status"])
    folds = sorted({int(f) for f in runs["fold"]})
    done, ratios = [_attempt("AU frequency", None, None, _write_frequency, inputs, folds)], []
    sweep = ["full", *(v for v in CONTROLS if v.startswith("lambda_"))]
    for seed, fold in sorted({(int(s), int(f)) for s, f in runs[["seed", "fold"]].to_numpy()}):
        study = inputs.study(seed, fold)
        have = set(runs.loc[(runs["seed"] == seed) & (runs["fold"] == fold), "variant"])
        if {"full", "baseline"} <= have:
            done.append(_attempt("graph degrees", seed, fold, graph_degrees, study,
                                 max_frames=max_frames))
            scored = ["full", "baseline", *(v for v in ALTERNATIVES if v in have)]
            done.append(_attempt("attention scores", seed, fold, score_attention, study,
                                 scored, max_frames=max_frames))
        for v in [v for v in sweep if v in have]:
            done.append(_attempt(f"gradient ratio {v}", seed, fold,
                                 lambda st, var: ratios.append(ldiff_balance.measure_run(st, var)),
                                 study, v))
    if ratios:
        ldiff_balance.write_balance(ratios, inputs.results_root, inputs.dataset)
    return pd.DataFrame(done)


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


CAVEAT = ("The comparison with the paper's effect is about this setting (SynthFACS, a small "
          "pretrained model, short training), not about the paper's data.")


def claims_markdown(table: pd.DataFrame) -> str:
    from hiva_lib.study import paper_tables as PT

    def ours(r) -> str:
        if not np.isfinite(r.value):
            return ""
        ci = f" [{r.low:.2f}, {r.high:.2f}]" if np.isfinite(r.low) else " (no interval)"
        return f"{r.statistic}: {r.value:.2f}{ci}, n={r.n} run(s)"

    def power(r) -> str:
        if not np.isfinite(r.mde_80):
            return "no sd (fewer than 3 runs)" if np.isfinite(r.value) else ""
        need = f"; {int(r.pairs_for_1pt)} pairs for 1 point" if np.isfinite(r.pairs_for_1pt) \
            else ""
        return f"{r.mde_80:.2g}{need}"

    dataset = table["dataset"].iat[0]
    view = pd.DataFrame({"claim": [f"{c}: {s}" for c, s in zip(table["claim"],
                                                               table["statement"],
                                                               strict=True)],
                         "paper's evidence": [f"{w}; {p}" for w, p in zip(
                             table["where"], table["paper"], strict=True)],
                         "ours (95% CI)": [ours(r) for r in table.itertuples()],
                         "verdict": table["verdict"],
                         "vs the paper's effect": table["vs_paper"].fillna(""),
                         "80% power at": [power(r) for r in table.itertuples()],
                         "reason": table["reason"]})
    return "\n".join([
        f"# The paper's claims on {dataset}", "",
        "Rules (docs/claims.md): one value per trained (seed, fold) run, a 95% interval over "
        "the runs; the parts of a claim are one family, tested at a family-wise 5% level by "
        "Holm's method: supported when every part is resolved on the claimed side, "
        "contradicted when any part is resolved on the other side, not resolved otherwise. "
        "'80% power at': the smallest true effect these runs detect with 80% power (at the "
        "first Holm step's level) and, for F1 gains, the pairs a 1-point effect needs. "
        + CAVEAT, "",
        PT.markdown_table(view), ""])


# ----------------------------------------------------------------------------- ambiguity 7
ALTERNATIVES = ("full_ldiff_z", "full_au_id")  # ambiguity 7's readings beside HiVA


def _paired_runs(a: pd.DataFrame, b: pd.DataFrame) -> pd.Series:
    """a - b per (seed, fold) run both have (Series indexed by seed, fold, a single column)."""
    both = a.index.intersection(b.index)
    return (a.loc[both] - b.loc[both]).iloc[:, 0]


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
                          _per_run(_paired_runs(z[slug], z["full"]), inputs.method)))
    scores = inputs.csv("attention_scores.csv")
    if scores is not None and slug in set(scores["variant"]):
        point = {v: c6_per_run(scores, v)[["pointing"]] for v in (slug, "full")}
        parts.append(Part(f"{slug} - full (DDCA pointing game)",
                          _per_run(_paired_runs(point[slug], point["full"]), inputs.method)))
    verdicts, adjusted = stats.family_verdicts([p.est for p in parts],
                                               ["greater"] * len(parts))
    return pd.DataFrame([dict(dataset=inputs.dataset, variant=slug, check=p.name,
                              value=p.est.value, low=p.est.low, high=p.est.high, n=p.est.n,
                              p_holm=a, resolved=v != NOT_RESOLVED)
                         for p, v, a in zip(parts, verdicts, adjusted, strict=True)])


def _alternatives_markdown(checks: pd.DataFrame) -> str:
    from hiva_lib.study import paper_tables as PT

    if checks.empty:
        return ""
    view = checks.assign(ci=[f"[{lo:.2f}, {hi:.2f}]" if np.isfinite(lo) else "no interval"
                             for lo, hi in zip(checks["low"], checks["high"], strict=True)])
    view = view[["check", "value", "ci", "n", "p_holm", "resolved"]].round(3)
    return "\n".join([
        "## Ambiguity 7 beside HiVA (docs/model.md)", "",
        "Each alternative reading of how the AUs' text embeddings are kept apart, paired per "
        "(seed, fold) run with HiVA and the Baseline; one family per alternative under Holm.",
        "", PT.markdown_table(view), ""])


def write_claims(table: pd.DataFrame, results_root: str | Path, dataset: str,
                 checks: pd.DataFrame | None = None) -> dict[str, Path]:
    """``results/<dataset>/claims.csv`` and ``claims.md`` (derived from the results; a previous
    pair is replaced and the replacement announced), with ``checks``
    (:func:`alternative_checks`) in ``ambiguity7.csv`` and in the markdown when given."""
    from hiva_lib.integrity import atomic_write_text

    out = Path(results_root) / dataset
    paths = {"csv": out / "claims.csv", "md": out / "claims.md"}
    if paths["csv"].exists():
        print(f"{paths['csv']}: replacing the previous claims table")
    atomic_write_text(table.to_csv(index=False), paths["csv"])
    md = claims_markdown(table)
    if checks is not None and not checks.empty:
        paths["ambiguity7"] = out / "ambiguity7.csv"
        atomic_write_text(checks.to_csv(index=False), paths["ambiguity7"])
        md += "\n" + _alternatives_markdown(checks)
    atomic_write_text(md, paths["md"])
    return paths


def write_ledger(inputs: ClaimInputs, results_root: str | Path | None = None
                 ) -> dict[str, Path]:
    """Evaluate every claim and ambiguity 7's alternatives from ``inputs`` and write the
    ledger (:func:`write_claims`) under ``results_root`` (default: the inputs' own)."""
    checks = pd.concat([alternative_checks(inputs, v) for v in ALTERNATIVES])
    return write_claims(evaluate_claims(inputs), results_root or inputs.results_root,
                        inputs.dataset, checks)


VERDICT_COLOURS = {stats.SUPPORTED: "tab:green", stats.CONTRADICTED: "tab:red",
                   stats.NOT_RESOLVED: "lightgrey"}


def plot_verdicts(tables: dict[str, pd.DataFrame]):
    """The verdict of every claim (rows) on every data set (columns), coloured by verdict."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    datasets = list(tables)
    fig, ax = plt.subplots(figsize=(1.6 + 1.8 * len(datasets), 0.6 + 0.45 * len(CLAIMS)))
    for j, ds in enumerate(datasets):
        table = tables[ds].set_index("claim")
        for i, cid in enumerate(CLAIM_IDS):
            v = table["verdict"].get(cid, NOT_RESOLVED)
            # inputs missing: hatched, so "no results" is not read as "within noise"
            absent = str(table["reason"].get(cid, "no results")).startswith("no results")
            ax.add_patch(plt.Rectangle((j - 0.45, i - 0.4), 0.9, 0.8, facecolor=VERDICT_COLOURS[v],
                                       hatch="//" if absent else None, edgecolor="white"))
            ax.text(j, i, "no results" if absent else v, ha="center", va="center", fontsize=7)
    ax.set_xlim(-0.5, len(datasets) - 0.5)
    ax.set_ylim(len(CLAIMS) - 0.5, -0.5)
    ax.set_xticks(range(len(datasets)), datasets, fontsize=8)
    ax.set_yticks(range(len(CLAIMS)), CLAIM_IDS, fontsize=8)
    ax.set_title("The paper's claims: verdicts per data set", fontsize=10)
    ax.legend(handles=[Patch(color=c, label=v) for v, c in VERDICT_COLOURS.items()],
              fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=3,
              frameon=False)
    fig.tight_layout()
    return fig


def verdict_figure(results_root: str | Path, figures_root: str | Path,
                   datasets: list[str] | None = None) -> Path | None:
    """:func:`plot_verdicts` of every ``results/<dataset>/claims.csv`` found (or of
    ``datasets``), saved as ``figures_root/claims_verdicts.png``; None when none is found."""
    import matplotlib.pyplot as plt

    root = Path(results_root)
    found = sorted(p.parent.name for p in root.glob("*/claims.csv"))
    names = [d for d in (datasets or found) if (root / d / "claims.csv").exists()]
    if not names:
        return None
    fig = plot_verdicts({d: pd.read_csv(root / d / "claims.csv") for d in names})
    path = Path(figures_root) / "claims_verdicts.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return path
