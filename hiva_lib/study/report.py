"""Our results beside the paper's Tables I-VI: collect, summarise, compare, write.

The training engine writes one folder per finished run::

    results/<dataset>/<variant>/seed<seed>/fold<k>[-v<n>]/metrics.json
        {"dataset", "variant", "seed", "fold", "au_ids", "f1": {"AU1": 0.53, ...},
         "mean_f1", "n_test", "config", "checkpoint", ...}

F1 there is a fraction; everything here is in % like the paper (F1 x 100, Sec. IV-A).
AVE is the mean over AUs of the per-AU F1 of a run, then averaged over runs, which is the
paper's protocol (per-AU F1 averaged over the 3 folds, AVE their mean).
Gains over the Baseline are paired per (seed, fold) run, with a 95% interval over the pairs
(:mod:`hiva_lib.study.stats`, t-interval by default); a gain is resolved only when its interval
excludes 0. The controls (shuffled descriptions, no language model, the lambda sweep;
:data:`hiva_lib.variants.CONTROLS`) are not rows of the paper's tables: they get their own
table (``controls.csv``).
:func:`write_report` writes ``results/<dataset>/report/``; its text and figure are drawn by
:mod:`hiva_lib.study.report_render`.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from hiva_lib.data.au import au_keys, dataset_aus
from hiva_lib.engine import runs as layout  # the results folder layout
from hiva_lib.engine.recorded import check_recorded_numbers
from hiva_lib.integrity import latest_versions
from hiva_lib.study import paper_tables as PT
from hiva_lib.study import report_render as render
from hiva_lib.study import stats
from hiva_lib.variants import CONTROLS


class ReportError(FileNotFoundError):
    """Results to report on are missing or malformed."""


def _run_hint(dataset: str) -> str:
    from hiva_lib.hints import run_hint

    return (f"Run the experiments first (all variants): "
            f"{run_hint('04_ablations', {'dataset': dataset})}; or notebooks/03_train_stage2.ipynb "
            "for the full model only; or pass results_root pointing at the folder that holds "
            "them.")


# ----------------------------------------------------------------------------- collect
def collect_results(results_root: str | Path, dataset: str) -> pd.DataFrame:
    """One row per finished run: dataset, variant, seed, fold, run, n_test, mean_f1, one
    column per AU (fractions 0-1), checkpoint, path. Of several versions of one
    (variant, seed, fold) run (``fold1``, ``fold1-v2``, ``fold1-v10``) the newest by version
    number is kept (:func:`hiva_lib.integrity.latest_versions`)."""
    base = layout.dataset_results(results_root, dataset)
    found = layout.finished_results(results_root, dataset)
    if not found:
        raise ReportError(f"{base}: no results (no <variant>/seed<s>/fold<k>/metrics.json). "
                          + _run_hint(dataset))
    keys = au_keys(dataset_aus(dataset))
    rows = []
    for folder in latest_versions(found):
        path = folder / "metrics.json"
        try:
            m = json.loads(path.read_text())
            if m["dataset"] != dataset or [int(a) for a in m["au_ids"]] != list(
                    dataset_aus(dataset)):
                raise ReportError(f"{path}: results of {m['dataset']} / AUs {m['au_ids']} filed "
                                  f"under {dataset}. Move the folder to "
                                  f"{layout.dataset_results(results_root, m['dataset'])}/.")
            # a metrics file copied into another run's folder would be counted twice
            where = (folder.parent.parent.name, folder.parent.name, layout.fold_of(folder.name))
            says = (m["variant"], layout.seed_name(int(m["seed"])), int(m["fold"]))
            if where != says:
                home = layout.fold_results(results_root, dataset, says[0], int(m["seed"]), says[2])
                raise ReportError(f"{path}: results of {says[0]}/{says[1]}/"
                                  f"{layout.fold_name(says[2])} filed "
                                  f"under {'/'.join(map(str, where))}. Move the folder to "
                                  f"{home}.")
            check_recorded_numbers(folder, m)  # the F1 of its predictions.npz, or an error
            row = dict(dataset=m["dataset"], variant=m["variant"], seed=int(m["seed"]),
                       fold=int(m["fold"]), run=folder.name, n_test=m.get("n_test"),
                       mean_f1=float(m["mean_f1"]),
                       **{k: float(m["f1"][k]) for k in keys},
                       checkpoint=m.get("checkpoint"), path=str(path),
                       data_fingerprint=m.get("data_fingerprint"))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise ReportError(f"{path}: malformed metrics file ({type(err).__name__}: {err}). "
                              f"Move the results folder {folder} away and evaluate that run "
                              "again (notebooks 02/03; its checkpoint is kept).") from None
        rows.append(row)
    table = pd.DataFrame(rows).sort_values(["variant", "seed", "fold"]).reset_index(drop=True)
    layout.check_one_data_version(list(zip(table.path, table.data_fingerprint, strict=True)),
                                  f"{base}: the report", ReportError)
    return table


# ----------------------------------------------------------------------------- summarise
def _au_columns(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if re.fullmatch(r"AU\d+", str(c))]


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Per variant and column (each AU, then AVE): mean and sample std over all runs
    (folds x seeds) in %, n runs, n folds, n seeds. std is NaN for a single run."""
    cols = _au_columns(df)
    long = df.assign(AVE=df[cols].mean(axis=1)).melt(
        id_vars=["variant", "seed", "fold"], value_vars=[*cols, "AVE"],
        var_name="column", value_name="f1")
    long["f1"] *= 100.0
    grouped = long.groupby(["variant", "column"], sort=False)
    out = grouped["f1"].agg(mean="mean", std="std", n="count").reset_index()
    counts = df.groupby("variant").agg(n_folds=("fold", "nunique"), n_seeds=("seed", "nunique"))
    out = out.join(counts, on="variant")
    order = {c: i for i, c in enumerate([*cols, "AVE"])}
    return (out.sort_values(["variant", "column"], key=lambda s: s.map(order)
                            if s.name == "column" else s)
            .reset_index(drop=True))


def runs_in_points(runs: pd.DataFrame) -> pd.DataFrame:
    """variant, seed, fold and each AU's F1 in %, plus AVE (the mean over AUs of a run)."""
    cols = _au_columns(runs)
    out = runs[["variant", "seed", "fold"]].copy()
    out[cols] = runs[cols] * 100.0
    out["AVE"] = out[cols].mean(axis=1)
    return out


GAIN_COLUMNS = ["variant", "column", "gain", "gain_std", "gain_n", "gain_low", "gain_high",
                "method", "p", "p_holm", "resolved"]


def holm_resolved(p: pd.Series, n: pd.Series) -> tuple[np.ndarray, list]:
    """One family of gains (e.g. the table's rows over the Baseline): Holm-adjusted p and
    ``resolved`` (adjusted p < 0.05; None with fewer than MIN_PAIRS pairs: no test)."""
    adjusted = stats.holm(p.to_numpy(float))
    resolved = [None if k < stats.MIN_PAIRS else bool(a < stats.ALPHA)
                for k, a in zip(n, adjusted, strict=True)]
    return adjusted, resolved


def paired_gains(runs: pd.DataFrame, reference: str = "baseline", method: str = "t"
                 ) -> pd.DataFrame:
    """Per variant and column (each AU, then AVE): the gain over ``reference`` in F1 points,
    paired by (seed, fold) run: mean, sample std of the differences (NaN for one pair),
    number of pairs, the 95% interval of the mean (``method``: "t" or "bootstrap",
    :func:`hiva_lib.study.stats.mean_interval`) and ``resolved``: True when the interval
    excludes 0, False when it holds 0, None with fewer than
    :data:`~hiva_lib.study.stats.MIN_PAIRS` pairs (no interval). The AVE gains of the
    variants are one family: their ``resolved`` is Holm's (``p_holm`` < 0.05); the per-AU
    gains are descriptive, uncorrected (``p_holm`` empty)."""
    points = runs_in_points(runs)
    table = stats.gain_table(points, [*_au_columns(runs), "AVE"], reference, method)
    out = table.rename(columns={"n": "gain_n", "low": "gain_low", "high": "gain_high"})
    out["resolved"] = [None if n < stats.MIN_PAIRS else bool(r)
                       for n, r in zip(out["gain_n"], out["resolved"], strict=True)]
    out["p_holm"] = np.nan
    ave = (out["column"] == "AVE") & ~out["variant"].isin(list(CONTROLS))
    if ave.any():
        adjusted, resolved = holm_resolved(out.loc[ave, "p"], out.loc[ave, "gain_n"])
        out.loc[ave, "p_holm"] = adjusted
        out.loc[ave, "resolved"] = pd.Series(resolved, index=out.index[ave], dtype=object)
    return out.reindex(columns=GAIN_COLUMNS)


# ----------------------------------------------------------------------------- compare
def side_by_side(summary: pd.DataFrame, dataset: str,
                 gains: pd.DataFrame | None = None) -> pd.DataFrame:
    """Our mean/std beside the paper's value, one row per (variant, column).

    Every variant is compared with its row of the ablation table (IV-VI); the full model
    is also compared with "HiVA (Ours)" of the comparison table (I-III). ``delta`` =
    ours - paper, in F1 percentage points. ``ours_gain`` / ``paper_gain``: the gain over the
    vision-only Baseline; with ``gains`` (:func:`paired_gains`) ours is the paired mean with
    its spread and 95% interval (``gain_std``, ``gain_n``, ``gain_low``, ``gain_high``,
    ``method``, ``resolved``), else the difference of the means. Controls are left out
    (:func:`controls_table`).
    """
    sota_n, abl_n = PT.table_for(dataset)
    names = PT.variant_row_names()
    summary = summary[~summary["variant"].isin(list(CONTROLS))]  # their own table
    rows = []
    for (variant, table_n) in [(v, abl_n) for v in summary["variant"].unique()] + \
            ([("full", sota_n)] if "full" in set(summary["variant"]) else []):
        if variant not in names:
            raise ReportError(f"results for unknown variant {variant!r}; known: "
                              f"{list(names)}")
        paper = PT.load_table(table_n)
        row_name = PT.row_name(variant, table_n)
        ref = paper.loc[[row_name]].iloc[0] if row_name in paper.index else None
        ours = summary[summary["variant"] == variant]
        for r in ours.itertuples(index=False):
            value = float(ref[r.column]) if ref is not None and r.column in ref else np.nan
            rows.append(dict(variant=variant, table=PT.ROMAN[table_n], paper_row=row_name,
                             column=r.column, ours=r.mean, ours_std=r.std, n=r.n,
                             paper=value, delta=r.mean - value))
    out = pd.DataFrame(rows)
    # gains over the vision-only Baseline (the paper's Fig. 4 view): on SynthFACS the
    # absolute F1 differs from the paper, but the sign and size of the gains can be compared
    out["ours_gain"] = out["paper_gain"] = out["gain_std"] = out["gain_n"] = np.nan
    out["gain_low"] = out["gain_high"] = np.nan
    out["method"] = ""
    out["resolved"] = None
    if "baseline" in set(out["variant"]):
        abl_rows = out["table"] == PT.ROMAN[abl_n]
        base = out[abl_rows & (out["variant"] == "baseline")].set_index("column")
        out.loc[abl_rows, "ours_gain"] = out["ours"] - out["column"].map(base["ours"])
        out.loc[abl_rows, "paper_gain"] = out["paper"] - out["column"].map(base["paper"])
        if gains is not None and len(gains):
            paired = gains.set_index(["variant", "column"])
            keys = pd.MultiIndex.from_arrays([out.loc[abl_rows, "variant"],
                                              out.loc[abl_rows, "column"]])
            for col, src in (("ours_gain", "gain"), ("gain_std", "gain_std"),
                             ("gain_n", "gain_n"), ("gain_low", "gain_low"),
                             ("gain_high", "gain_high"), ("method", "method"),
                             ("resolved", "resolved")):
                out.loc[abl_rows, col] = paired[src].reindex(keys).to_numpy()
    # paper row order (the order of the ablation table), the comparison-table row last
    abl_order = list(PT.load_table(abl_n).index)
    out["_rank"] = [abl_order.index(p) if t == PT.ROMAN[abl_n] and p in abl_order else 99
                    for t, p in zip(out["table"], out["paper_row"], strict=True)]
    return (out.sort_values("_rank", kind="stable").drop(columns="_rank")
            .reset_index(drop=True))


def controls_table(runs: pd.DataFrame, method: str = "t",
                   balance: pd.DataFrame | None = None) -> pd.DataFrame:
    """The controls (one row each, those with results): AVE mean ± std over runs,
    and their AVE gains paired per (seed, fold) over the Baseline and over HiVA (full), each
    with its 95% interval, p and ``resolved``: the controls against one reference are one
    family, resolved when the Holm-adjusted p (``p_holm_vs_<ref>``) < 0.05; for the lambda
    sweep, the mean measured gradient ratio ||grad(lambda L_diff)|| / ||grad L_au|| of
    ``balance`` (ldiff_balance.csv)."""
    points = runs_in_points(runs)
    rows = []
    for slug, variant in CONTROLS.items():
        part = points[points["variant"] == slug]
        if part.empty:
            continue
        row = dict(variant=slug, control=variant.row_name, runs=len(part),
                   ave=float(part["AVE"].mean()), ave_std=float(part["AVE"].std()))
        for ref in ("baseline", "full"):
            est = stats.paired_gain(points, slug, ref, "AVE", method)
            row.update({f"gain_vs_{ref}": est.value, f"low_vs_{ref}": est.low,
                        f"high_vs_{ref}": est.high, f"pairs_vs_{ref}": est.n,
                        f"p_vs_{ref}": est.p})
        row["method"] = method
        if balance is not None and len(balance):
            ratio = balance.loc[balance["variant"] == slug, "ratio"]
            row["grad_ratio"] = float(ratio.mean()) if len(ratio) else np.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    for ref in ("baseline", "full") if len(table) else ():  # each reference: one family
        table[f"p_holm_vs_{ref}"], resolved = holm_resolved(table[f"p_vs_{ref}"],
                                                            table[f"pairs_vs_{ref}"])
        table[f"resolved_vs_{ref}"] = [bool(r) for r in resolved]
    return table


# ----------------------------------------------------------------------------- write
def _write_all(contents: dict[str, str | bytes], out: Path) -> None:
    """Write every file into a temporary sibling folder first, then move each into ``out``:
    a failure while writing leaves ``out`` as it was."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for name, data in contents.items():
            (tmp / name).write_bytes(data if isinstance(data, bytes) else data.encode())
        out.mkdir(exist_ok=True)
        for name in contents:
            os.replace(tmp / name, out / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_report(results_root: str | Path, dataset: str,
                 out_dir: str | Path | None = None, method: str = "t") -> dict[str, Path]:
    """Collect, summarise, compare, audit and plot; returns {name: path} of what it wrote.

    Everything, the plot included, is computed and rendered before the first file is
    written, and the files are moved into place only once all are written, so a failure
    writes nothing. A report already in ``out_dir`` is replaced (it is derived from the
    results, which are never touched); the replacement is announced.
    """
    from hiva_lib.engine.validate import check_writable

    out = Path(out_dir) if out_dir is not None else layout.report_dir(results_root, dataset)
    check_writable({"results_root": out})  # before any work: a read-only folder is one error
    runs = collect_results(results_root, dataset)
    summary = summarise(runs.drop(columns=["checkpoint", "path"]))
    gains = paired_gains(runs, method=method)
    sbs = side_by_side(summary, dataset, gains)
    balance_csv = Path(results_root) / dataset / "ldiff_balance.csv"
    controls = controls_table(runs, method, pd.read_csv(balance_csv)
                              if balance_csv.exists() else None)
    audit = PT.audit_tables()
    text = render.markdown(dataset, runs, sbs, audit, "deltas.png", controls, method)
    png, pdf = render.deltas_bytes(sbs, dataset, ("png", "pdf"))
    contents: dict[str, str | bytes] = {
        "runs.csv": runs.to_csv(index=False), "summary.csv": summary.to_csv(index=False),
        "side_by_side.csv": sbs.to_csv(index=False), "audit.csv": audit.to_csv(index=False),
        "gains.csv": gains.to_csv(index=False), "controls.csv": controls.to_csv(index=False),
        "audit.md": PT.audit_markdown(audit), "report.md": text,
        "deltas.png": png, "deltas.pdf": pdf}
    if (out / "report.md").exists():
        print(f"{out}: replacing the previous report with one of {len(runs)} runs")
    _write_all(contents, out)
    names = {"runs": "runs.csv", "summary": "summary.csv", "side_by_side": "side_by_side.csv",
             "gains": "gains.csv", "controls": "controls.csv",
             "audit": "audit.csv", "audit_md": "audit.md", "report_md": "report.md",
             "deltas_png": "deltas.png", "deltas_pdf": "deltas.pdf"}
    return {key: out / name for key, name in names.items()}
