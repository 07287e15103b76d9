"""What the claims measure: a data set's saved results, the per-run tables taken from the data
and the trained models, and their reduction to one value per (seed, fold) run.

:class:`ClaimInputs` gives lazy access to ``results/<dataset>/`` (the per-run metrics and the
small per-run tables). :func:`measure_from_models` writes the tables no other notebook saves:
the AUs' training frequency per fold (:func:`au_frequency`, C4), the AU graph degrees of HiVA
and the Baseline (:func:`graph_degrees`, C7), the attention maps scored against the SynthFACS
regions (C6) and the gradient ratio of lambda·L_diff to L_au. The ``c*_per_run`` functions
reduce those tables to one value per run, which :mod:`hiva_lib.study.claims` tests.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from hiva_lib.data.au import au_keys
from hiva_lib.data.prepared import DatasetError
from hiva_lib.presets import TRAIN_PRESETS
from hiva_lib.variants import causal_tests

AU_FREQUENCY = "au_frequency.csv"  # per fold and AU: the AU's base rate in the training rows
MECHANISM = "mechanism.csv"  # per run, variant and stage-2 epoch (notebook 09); epoch 0: before
ALTERNATIVES = ("full_ldiff_z", "full_au_id")  # ambiguity 7's readings beside HiVA
# the causal tests of the collapse beside HiVA (docs/model.md), at the embedded study's lambda
CAUSAL_TESTS = tuple(v for v in causal_tests(TRAIN_PRESETS["synth-cpu"]["lambda_diff"])
                     if v != "full")


class ClaimsError(FileNotFoundError):
    """No runs where the ledger looks: nothing is written."""


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
    _found: pd.DataFrame | None = field(default=None, repr=False)

    def _collected(self) -> pd.DataFrame | None:
        """The finished runs' metrics files (one row per run), of ``seeds`` only."""
        from hiva_lib.study.report import ReportError, collect_results

        if self._found is None:
            try:
                found = collect_results(self.results_root, self.dataset)
            except ReportError:
                return None
            if self.seeds is not None:
                found = found[found["seed"].isin(list(self.seeds))]
            self._found = found
        return self._found

    def runs(self) -> pd.DataFrame | None:
        """Per run: variant, seed, fold, each AU's F1 and AVE in %; None without results."""
        from hiva_lib.study.report import runs_in_points

        found = self._collected()
        return None if found is None else runs_in_points(found)

    def require_runs(self) -> pd.DataFrame:
        """:meth:`runs`, or one error that says where it looked and how to read the committed
        results (so that no ledger of "no results" is written)."""
        runs = self.runs()
        if runs is None or runs.empty:
            where = Path(self.results_root) / self.dataset
            raise ClaimsError(
                f"{where}: no finished runs (no <variant>/seed<s>/fold<k>/metrics.json"
                f"{'' if self.seeds is None else f' of seeds {list(self.seeds)}'}); nothing "
                "written. Train first (notebooks 02-04), or read the committed results: "
                "papermill notebooks/10_claims.ipynb out.ipynb -p dataset "
                f"{self.dataset} -p results_root results -p figures_root figures "
                "-p measure False")
        return runs

    def graph_in_stage2(self, variant: str) -> set[bool]:
        """Ambiguity 2's reading of ``variant``'s runs: whether its AU graph feeds the
        classifier in stage 2, from each run's saved config (its model preset and overrides,
        then the variant); a run that saved no model preset reads as the library's default."""
        from hiva_lib.model.config import ModelConfig
        from hiva_lib.presets import MODEL_PRESETS
        from hiva_lib.variants import VARIANTS, apply_variant

        found = self._collected()
        if found is None or variant not in VARIANTS:
            return set()
        readings = set()
        for path in found.loc[found["variant"] == variant, "path"]:
            config = json.loads(Path(path).read_text()).get("config") or {}
            base = MODEL_PRESETS.get(config.get("model_preset"), ModelConfig())
            base = dataclasses.replace(base, **(config.get("model_overrides") or {}))
            readings.add(bool(apply_variant(base, variant).graph_in_stage2))
        return readings

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


# ----------------------------------------------------------------------------- C4
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


# ----------------------------------------------------------------------------- C5
def c5_per_run(table: pd.DataFrame) -> pd.DataFrame:
    """Per (seed, fold) run of HiVA, the mean off-diagonal cosine of H over every epoch:
    ``epoch0`` (before stage 2, where saved), ``full_first`` (after the first trained epoch),
    ``full_last``; ``slope``, the least-squares slope of the cosine on the epoch over every
    epoch, epoch 0 included (the trend the paper calls "progressively"); ``last_step``, the
    change over the last epoch; where w/o L_diff has the run too, ``wo_last`` and ``gap`` =
    w/o L_diff - HiVA at the last epoch (NaN otherwise)."""
    wide = table.pivot_table(index=["seed", "fold", "epoch"], columns="variant",
                             values="h_cosine")
    rows = {}
    for (seed, fold), run in wide.groupby(level=["seed", "fold"]):
        run = run.droplevel([0, 1])
        full = run["full"].dropna() if "full" in run else pd.Series(dtype=float)
        if len(full) < 2 or full.index.max() < 1:
            continue
        epochs = full.index.to_numpy(float)
        wo = run["wo_ldiff"].dropna() if "wo_ldiff" in run else pd.Series(dtype=float)
        wo_last = wo.iloc[-1] if len(wo) and wo.index[-1] == full.index[-1] else np.nan
        rows[(seed, fold)] = dict(
            epoch0=full.get(0, np.nan), full_first=full[full.index >= 1].iloc[0],
            full_last=full.iloc[-1], last_step=full.iloc[-1] - full.iloc[-2],
            slope=float(np.polyfit(epochs, full.to_numpy(float), 1)[0]),
            wo_last=wo_last, gap=wo_last - full.iloc[-1])
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.names = ["seed", "fold"]
    return out


# ----------------------------------------------------------------------------- C6
def c6_per_run(table: pd.DataFrame, variant: str = "full", method: str = "ddca"
               ) -> pd.DataFrame:
    """Per (seed, fold) run: the mean over AUs (with scored frames) of pointing - chance and
    energy - chance for one model's maps (attention_scores.csv)."""
    t = table[(table["variant"] == variant) & (table["method"] == method)
              & (table["au"] != "mean") & (table["n_frames"] > 0)]
    t = t.assign(pointing=t["pointing"] - t["chance"], energy=t["energy"] - t["chance"])
    return t.groupby(["seed", "fold"])[["pointing", "energy"]].mean()


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


def c7_per_run(table: pd.DataFrame, variant: str = "full") -> pd.DataFrame:
    """Per (seed, fold) run, the means over its test frames of: ``variant``'s mean degree
    minus the Baseline's (``denser``), the active AUs' mean in-degree minus the inactive ones'
    in ``variant``'s graph (``active``) and in the Baseline's (``active_baseline``), and the
    difference of the two gaps, frame by frame (``active_vs_baseline``)."""
    wide = table.pivot_table(index=["seed", "fold", "row"], columns="variant",
                             values="mean_degree")
    gap = table.assign(d=table["active_indegree"] - table["inactive_indegree"])
    gap = gap.pivot_table(index=["seed", "fold", "row"], columns="variant", values="d")
    mine, base = gap.get(variant), gap.get("baseline")
    per_frame = pd.DataFrame({"denser": wide[variant] - wide["baseline"], "active": mine,
                              "active_baseline": base,
                              "active_vs_baseline": None if mine is None or base is None
                              else mine - base})
    return per_frame.groupby(level=["seed", "fold"]).mean()


# ----------------------------------------------------------------------------- ambiguity 7
def paired_runs(a: pd.DataFrame, b: pd.DataFrame) -> pd.Series:
    """a - b per (seed, fold) run both have (Series indexed by seed, fold, a single column)."""
    both = a.index.intersection(b.index)
    return (a.loc[both] - b.loc[both]).iloc[:, 0]


# ------------------------------------------------------------ measured from the trained models
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

