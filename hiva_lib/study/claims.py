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

from hiva_lib.data.prepared import DatasetError
from hiva_lib.study import stats
from hiva_lib.study.stats import NOT_RESOLVED, Estimate

MISSING = (FileNotFoundError, DatasetError)  # FigureError and ReportError are FileNotFoundErrors


@dataclass(frozen=True)
class Result:
    """A claim's statistic with its 95% interval, verdict and a one-line reason."""

    value: float
    low: float
    high: float
    n: int
    method: str
    verdict: str
    reason: str


def missing(what: str) -> Result:
    nan = float("nan")
    return Result(nan, nan, nan, 0, "", NOT_RESOLVED, f"no results for {what}")


@dataclass
class ClaimInputs:
    """Where one data set's saved results are, and lazy access to them."""

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
def _part(name: str, est: Estimate, threshold: float = 0.0, direction: str = "greater"
          ) -> tuple[str, Estimate, str]:
    return name, est, stats.verdict(est.low, est.high, threshold, direction)


def _decide(parts: list[tuple[str, Estimate, str]], what: str) -> Result:
    """One verdict from the parts (:func:`stats.combine`); the statistic shown is that of the
    weakest part (the lowest interval bound, or the one without an interval)."""
    if not parts:
        return missing(what)
    verdict = stats.combine([v for _, _, v in parts])
    weakest = min(parts, key=lambda p: p[1].low if np.isfinite(p[1].low) else -np.inf)
    est = weakest[1]
    reason = "; ".join(f"{name}: {e.text(2 if abs(e.value) < 1 else 1)} {v}"
                       for name, e, v in parts)
    if any(e.n < stats.MIN_PAIRS for _, e, _ in parts):
        reason += f" (fewer than {stats.MIN_PAIRS} pairs give no interval)"
    return Result(est.value, est.low, est.high, est.n, est.method, verdict, reason)


def _gains(inputs: ClaimInputs, pairs: list[tuple[str, str]]) -> Result:
    """Parts "a above b" on the AVE, paired per (seed, fold)."""
    runs = inputs.runs()
    need = sorted({v for p in pairs for v in p})
    have = set() if runs is None else set(runs["variant"])
    if runs is None or not set(need) <= have:
        lack = [v for v in need if v not in have]
        return missing(f"{', '.join(lack)} on {inputs.dataset} (notebook 04)")
    parts = [_part(f"{a} - {b}", stats.paired_gain(runs, a, b, "AVE", inputs.method))
             for a, b in pairs]
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
    """Spearman of the per-AU relative gain (Fig. 4) with the AU's training frequency; the
    claim (rarer AU, larger gain) is a negative correlation. Fig. 4's inputs average every
    (seed, fold) run HiVA and the Baseline share: ``seeds`` does not filter them."""
    from hiva_lib.study.fig4_gain import f1_gains

    try:
        gains = f1_gains(inputs.study(), "full", "baseline")
    except MISSING as e:
        return missing(f"Fig. 4 of {inputs.dataset} ({str(e).splitlines()[0][:160]})")
    est = stats.spearman(gains["frequency"], gains["relative_gain"])
    res = _decide([_part("Spearman(frequency, relative gain)", est, direction="less")],
                  inputs.dataset)
    return Result(**{**res.__dict__, "reason": res.reason + f"; {len(gains)} AUs, "
                     f"{int(gains['n_runs'].iat[0])} run(s) averaged per AU"})


# ----------------------------------------------------------------------------- C5
def _offdiag_h(emb: dict[int, dict[str, np.ndarray]]) -> tuple[float, float]:
    """Mean off-diagonal cosine of H at the first and the last saved epoch."""
    from hiva_lib.study.fig5_text import _pooled, cosine_matrix, mean_off_diagonal

    epochs = sorted(emb)
    first, last = (mean_off_diagonal(cosine_matrix(_pooled(emb[e]["H"])))
                   for e in (epochs[0], epochs[-1]))
    return first, last


def _text_embeddings(inputs: ClaimInputs, seed: int, fold: int) -> dict | None:
    """{variant: {epoch: {"H", "Z"}}} of full and wo_ldiff for one run, from runs/ or from
    the saved Fig. 5 inputs; None when neither has them."""
    from hiva_lib.study.fig5_text import load_fig5_inputs, read_text_embeddings

    study = inputs.study(seed, fold)
    try:
        embs = {v: read_text_embeddings(study.checkpoint(v).parent)[0]
                for v in ("full", "wo_ldiff")}
        if all(len(e) >= 2 for e in embs.values()):
            return embs
    except MISSING:
        pass
    try:
        return load_fig5_inputs(study, ("full", "wo_ldiff"))[0]
    except MISSING:
        return None


def eval_c5(inputs: ClaimInputs) -> Result:
    """Per (seed, fold) run: HiVA's drop of the mean off-diagonal cosine of H from the first
    to the last epoch (> 0), and w/o L_diff's last value minus HiVA's (> 0)."""
    runs = inputs.runs()
    if runs is None:
        return missing(f"{inputs.dataset} (no runs)")
    keys = sorted({(int(s), int(f)) for s, f in
                   runs.loc[runs["variant"] == "full", ["seed", "fold"]].to_numpy()})
    drops, gaps = [], []
    for seed, fold in keys:
        embs = _text_embeddings(inputs, seed, fold)
        if embs is None or any(len(embs[v]) < 2 for v in embs):
            continue
        (f_first, f_last), (_, w_last) = _offdiag_h(embs["full"]), _offdiag_h(embs["wo_ldiff"])
        drops.append(f_first - f_last)
        gaps.append(w_last - f_last)
    if not drops:
        return missing(f"Fig. 5 text embeddings of full and wo_ldiff on {inputs.dataset} "
                       "(runs/.../text_emb or results/<dataset>/fig5_text_embeddings_*.npz)")
    return _decide([_part("HiVA first - last epoch", stats.mean_interval(drops, inputs.method)),
                    _part("w/o L_diff - HiVA, last epoch",
                          stats.mean_interval(gaps, inputs.method))], inputs.dataset)


# ----------------------------------------------------------------------------- C6
def eval_c6(inputs: ClaimInputs) -> Result:
    """DDCA maps of HiVA against chance (the region's area): pointing game and energy inside,
    one value per (AU, run) of attention_scores.csv (Fig. 6 scored)."""
    table = inputs.csv("attention_scores.csv")
    if table is not None:
        table = table[(table["variant"] == "full") & (table["method"] == "ddca")
                      & (table["au"] != "mean") & (table["n_frames"] > 0)]
    if table is None or table.empty:
        return missing(f"DDCA scores of {inputs.dataset} (attention_scores.csv: notebook 06, "
                       "SynthFACS only)")
    parts = [_part(f"{score} - chance",
                   stats.mean_interval(table[score] - table["chance"], inputs.method))
             for score in ("pointing", "energy")]
    res = _decide(parts, inputs.dataset)
    return Result(**{**res.__dict__, "reason": res.reason + " (one value per AU and run)"})


# ----------------------------------------------------------------------------- C7
def graph_degrees(study, variants: tuple[str, ...] = ("full", "baseline"),
                  max_frames: int = 128, batch_size: int = 16) -> pd.DataFrame:
    """Per test frame (a fixed random subset) and model: the top-K AU graph's mean degree
    (an edge where either AU picked the other) and the mean in-degree of the active and of the
    inactive AUs. Written to ``results/<dataset>/graph_degrees.csv`` (rows of the study's seed
    and fold replaced)."""
    from hiva_lib.engine.checkpoint import atomic_write_text
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
    new = pd.DataFrame(records)
    path = Path(study.cfg.results_root) / study.dataset / "graph_degrees.csv"
    if path.exists():
        old = pd.read_csv(path)
        keep = ~((old["seed"] == study.cfg.seed) & (old["fold"] == study.cfg.fold)
                 & old["variant"].isin(variants))
        new = pd.concat([old[keep], new], ignore_index=True)
    atomic_write_text(new.to_csv(index=False), path)
    return new


def eval_c7(inputs: ClaimInputs) -> Result:
    """HiVA's graph minus the Baseline's mean degree per test frame (> 0), and in HiVA's graph
    the active AUs' mean in-degree minus the inactive ones' per frame (> 0)."""
    table = inputs.csv("graph_degrees.csv")
    if table is None or not {"full", "baseline"} <= set(table["variant"]):
        return missing(f"graph degrees of full and baseline on {inputs.dataset} "
                       "(graph_degrees.csv: notebook 09 with trained models)")
    wide = table.pivot_table(index=["seed", "fold", "row"], columns="variant",
                             values="mean_degree")
    denser = (wide["full"] - wide["baseline"]).dropna()
    full = table[table["variant"] == "full"]
    active = (full["active_indegree"] - full["inactive_indegree"]).dropna()
    res = _decide([_part("HiVA - Baseline mean degree", stats.mean_interval(denser,
                                                                              inputs.method)),
                   _part("HiVA active - inactive in-degree",
                         stats.mean_interval(active, inputs.method))], inputs.dataset)
    return Result(**{**res.__dict__, "reason": res.reason + " (frames as units)"})


def measure_from_models(inputs: ClaimInputs, max_frames: int = 128) -> pd.DataFrame:
    """What needs the trained models, for every (seed, fold) with results: the graph degrees
    of HiVA and the Baseline (C7, ``graph_degrees.csv``) and the gradient ratio of
    lambda·L_diff to L_au of HiVA and of each lambda-sweep run (``ldiff_balance.csv``, shown by
    the report). Models that are not there are skipped and listed. Returns what was done."""
    from hiva_lib.study import ldiff_balance
    from hiva_lib.study.study import FigureError
    from hiva_lib.variants import CONTROLS

    runs = inputs.runs()
    if runs is None:
        return pd.DataFrame(columns=["seed", "fold", "what", "status"])
    done, ratios = [], []
    sweep = ["full", *(v for v in CONTROLS if v.startswith("lambda_"))]
    for seed, fold in sorted({(int(s), int(f)) for s, f in runs[["seed", "fold"]].to_numpy()}):
        study = inputs.study(seed, fold)
        have = set(runs.loc[(runs["seed"] == seed) & (runs["fold"] == fold), "variant"])
        status = "skipped: no results of full and baseline"
        if {"full", "baseline"} <= have:
            try:
                graph_degrees(study, max_frames=max_frames)
                status = "done"
            except FigureError as e:
                status = f"skipped: {e}"
        done.append(dict(seed=seed, fold=fold, what="graph degrees", status=status))
        for v in [v for v in sweep if v in have]:
            try:
                ratios.append(ldiff_balance.measure_run(study, v))
                status = "done"
            except FigureError as e:
                status = f"skipped: {e}"
            done.append(dict(seed=seed, fold=fold, what=f"gradient ratio {v}", status=status))
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
          "paired gain HiVA - Baseline per (seed, fold), 95% interval above 0",
          "AVE gain (F1 points)", eval_c1),
    Claim("C2", "Each component helps: HiVA is above w/o AUG, w/o L_diff, w/o DDCA, w/o CDCA "
          "and w/o both attentions.", "Tables IV-VI, Sec. IV-B",
          "paired gain of HiVA over each removal, every interval above 0",
          "smallest AVE gain (F1 points)", eval_c2),
    Claim("C3", "AUG and L_diff are complementary: HiVA is above each single removal, each "
          "single removal above both removed.", "Tables IV-VI, Sec. IV-B (3)",
          "the four paired gains, every interval above 0", "smallest AVE gain (F1 points)",
          eval_c3),
    Claim("C4", "The rarer the AU, the larger HiVA's relative gain over the Baseline.",
          "Fig. 4, Sec. IV-A", "Spearman correlation of relative gain with training "
          "frequency over AUs, bootstrap interval below 0", "Spearman rho", eval_c4),
    Claim("C5", "L_diff makes the text AU embeddings progressively less similar; without it "
          "they stay similar.", "Fig. 5, Sec. IV-B (2)",
          "mean off-diagonal cosine of H: HiVA's drop first-last epoch and w/o L_diff minus "
          "HiVA at the last epoch, per run, intervals above 0",
          "cosine difference", eval_c5),
    Claim("C6", "DDCA attends to the AU's own facial region.", "Fig. 6, Sec. IV-B",
          "pointing game and energy inside the SynthFACS region minus chance (area), "
          "intervals above 0", "score - chance", eval_c6),
    Claim("C7", "HiVA's AU graphs are denser than the Baseline's, and active AUs have more "
          "connections.", "Fig. 7, Sec. IV-B",
          "per test frame: mean degree HiVA - Baseline; active - inactive in-degree in HiVA; "
          "intervals above 0", "degree difference", eval_c7),
    Claim("C8", "The meaning of the descriptions matters: HiVA beats the same model with "
          "shuffled descriptions and with learned tokens and no language model.",
          "the paper's premise (Sec. I, III-B); controls of issue 16",
          "paired gains HiVA - shuffled_text and HiVA - no_language, intervals above 0",
          "smallest AVE gain (F1 points)", eval_c8),
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
                         test=c.test, statistic=c.statistic, **res.__dict__))
    return pd.DataFrame(rows)


def claims_markdown(table: pd.DataFrame) -> str:
    from hiva_lib.study import paper_tables as PT

    def ours(r) -> str:
        if not np.isfinite(r.value):
            return ""
        ci = f" [{r.low:.2f}, {r.high:.2f}]" if np.isfinite(r.low) else " (no interval)"
        return f"{r.statistic}: {r.value:.2f}{ci}"

    dataset = table["dataset"].iat[0]
    view = pd.DataFrame({"claim": [f"{c}: {s}" for c, s in zip(table["claim"],
                                                               table["statement"],
                                                               strict=True)],
                         "paper's evidence": [f"{w}; {p}" for w, p in zip(
                             table["where"], table["paper"], strict=True)],
                         "ours (95% CI)": [ours(r) for r in table.itertuples()],
                         "verdict": table["verdict"], "reason": table["reason"]})
    return "\n".join([
        f"# The paper's claims on {dataset}", "",
        "Verdict rule (hiva_lib.study.stats): supported when the 95% interval lies on the "
        "claimed side of 0, contradicted when it lies on the other side, not resolved "
        "otherwise or without results. Gains are paired per (seed, fold) run.", "",
        PT.markdown_table(view), ""])


def write_claims(table: pd.DataFrame, results_root: str | Path, dataset: str
                 ) -> dict[str, Path]:
    """``results/<dataset>/claims.csv`` and ``claims.md`` (derived from the results; a previous
    pair is replaced and the replacement announced)."""
    from hiva_lib.engine.checkpoint import atomic_write_text

    out = Path(results_root) / dataset
    paths = {"csv": out / "claims.csv", "md": out / "claims.md"}
    if paths["csv"].exists():
        print(f"{paths['csv']}: replacing the previous claims table")
    atomic_write_text(table.to_csv(index=False), paths["csv"])
    atomic_write_text(claims_markdown(table), paths["md"])
    return paths


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
