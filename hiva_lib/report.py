"""Our results beside the paper's Tables I-VI: collect, summarise, compare, plot.

The training engine writes one folder per finished run::

    results/<dataset>/<variant>/seed<seed>/fold<k>[-v<n>]/metrics.json
        {"dataset", "variant", "seed", "fold", "au_ids", "f1": {"AU1": 0.53, ...},
         "mean_f1", "n_test", "config", "checkpoint", ...}

F1 there is a fraction; everything here is in % like the paper (F1 x 100, Sec. IV-A).
AVE is the mean over AUs of the per-AU F1 of a run, then averaged over runs, which is the
paper's protocol (per-AU F1 averaged over the 3 folds, AVE their mean).
:func:`write_report` writes ``results/<dataset>/report/``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from . import paper_tables as PT
from .au import au_keys, dataset_aus

RUN_DIR = re.compile(r"^fold(\d+)(?:-v(\d+))?$")


class ReportError(FileNotFoundError):
    """Results to report on are missing or malformed."""


def _run_hint(dataset: str) -> str:
    return (f"Run the experiments first: papermill notebooks/04_ablations.ipynb out.ipynb "
            f"-p dataset {dataset} (all variants), or notebooks/03_train_stage2.ipynb for the "
            "full model only; or pass results_root pointing at the folder that holds them.")


# ----------------------------------------------------------------------------- collect
def collect_results(results_root: str | Path, dataset: str) -> pd.DataFrame:
    """One row per finished run: dataset, variant, seed, fold, run, n_test, mean_f1, one
    column per AU (fractions 0-1), checkpoint, path. Of several versions of one
    (variant, seed, fold) run (``fold1``, ``fold1-v2``) the newest is kept."""
    base = Path(results_root) / dataset
    paths = sorted(base.glob("*/seed*/fold*/metrics.json"))
    if not paths:
        raise ReportError(f"{base}: no results (no <variant>/seed<s>/fold<k>/metrics.json). "
                          + _run_hint(dataset))
    keys = au_keys(dataset_aus(dataset))
    rows = []
    for path in paths:
        match = RUN_DIR.match(path.parent.name)
        if not match:
            continue
        try:
            m = json.loads(path.read_text())
            if m["dataset"] != dataset or [int(a) for a in m["au_ids"]] != list(
                    dataset_aus(dataset)):
                raise ReportError(f"{path}: results of {m['dataset']} / AUs {m['au_ids']} filed "
                                  f"under {dataset}. Move the folder to "
                                  f"{Path(results_root) / str(m['dataset'])}/.")
            row = dict(dataset=m["dataset"], variant=m["variant"], seed=int(m["seed"]),
                       fold=int(m["fold"]), run=path.parent.name,
                       version=int(match.group(2) or 1), n_test=m.get("n_test"),
                       mean_f1=float(m["mean_f1"]),
                       **{k: float(m["f1"][k]) for k in keys},
                       checkpoint=m.get("checkpoint"), path=str(path))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise ReportError(f"{path}: malformed metrics file ({type(err).__name__}: {err}). "
                              "Delete the run folder and rerun it.") from None
        rows.append(row)
    df = pd.DataFrame(rows)
    df = (df.sort_values("version").drop_duplicates(["variant", "seed", "fold"], keep="last")
          .drop(columns="version").sort_values(["variant", "seed", "fold"])
          .reset_index(drop=True))
    return df


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


# ----------------------------------------------------------------------------- compare
def side_by_side(summary: pd.DataFrame, dataset: str) -> pd.DataFrame:
    """Our mean/std beside the paper's value, one row per (variant, column).

    Every variant is compared with its row of the ablation table (IV-VI); the full model
    is also compared with "HiVA (Ours)" of the comparison table (I-III). ``delta`` =
    ours - paper, in F1 percentage points.
    """
    sota_n, abl_n = PT.table_for(dataset)
    names = PT.variant_row_names()
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
    out["ours_gain"] = out["paper_gain"] = np.nan
    if "baseline" in set(out["variant"]):
        abl_rows = out["table"] == PT.ROMAN[abl_n]
        base = out[abl_rows & (out["variant"] == "baseline")].set_index("column")
        out.loc[abl_rows, "ours_gain"] = out["ours"] - out["column"].map(base["ours"])
        out.loc[abl_rows, "paper_gain"] = out["paper"] - out["column"].map(base["paper"])
    # paper row order (the order of the ablation table), the comparison-table row last
    abl_order = list(PT.load_table(abl_n).index)
    out["_rank"] = [abl_order.index(p) if t == PT.ROMAN[abl_n] and p in abl_order else 99
                    for t, p in zip(out["table"], out["paper_row"], strict=True)]
    return (out.sort_values("_rank", kind="stable").drop(columns="_rank")
            .reset_index(drop=True))


def _wide(sbs: pd.DataFrame, value: str, table: str) -> pd.DataFrame:
    part = sbs[sbs["table"] == table]
    wide = part.pivot(index="paper_row", columns="column", values=value)
    cols = [c for c in part["column"].unique()]
    return wide.loc[list(dict.fromkeys(part["paper_row"])), cols]


def _cell(mean: float, std: float) -> str:
    return f"{mean:.1f}" if np.isnan(std) else f"{mean:.1f} ± {std:.1f}"


def _markdown(dataset: str, runs: pd.DataFrame, sbs: pd.DataFrame, audit: pd.DataFrame,
              plot_name: str) -> str:
    sota_n, abl_n = PT.table_for(dataset)
    abl, sota = PT.ROMAN[abl_n], PT.ROMAN[sota_n]
    lines = [f"# Report: {dataset}", ""]
    if dataset.startswith("synth-"):
        lines += [f"SynthFACS preset: the paper's numbers are those of the real "
                  f"{dataset[6:].upper()} tables. Absolute F1 is not comparable; what can be "
                  "compared is the ordering of the variants and the sign of their gains.", ""]
    per_variant = runs.groupby("variant").agg(runs=("fold", "size"),
                                              seeds=("seed", lambda s: sorted(set(s))),
                                              folds=("fold", lambda s: sorted(set(s))))
    lines += ["## Runs collected", "", PT.markdown_table(per_variant.reset_index()), ""]

    ours = sbs[sbs["table"] == abl]
    cells = ours.assign(cell=[_cell(m, s) for m, s in zip(ours["ours"], ours["ours_std"],
                                                          strict=True)])
    wide = _wide(cells, "cell", abl)
    lines += [f"## Ours (F1 %, mean ± std over folds and seeds), rows of Table {abl}", "",
              PT.markdown_table(wide.reset_index()), "",
              f"## Paper, Table {abl}", "",
              PT.markdown_table(_wide(ours, "paper", abl).reset_index()), "",
              f"## Delta (ours - paper, F1 points), Table {abl}", "",
              PT.markdown_table((_wide(ours, "delta", abl).round(1) + 0.0).reset_index()), "",
              f"![deltas]({plot_name})", ""]
    ave = ours[ours["column"] == "AVE"].set_index("paper_row")
    if len(ave) >= 3:
        rho = ave["ours"].rank().corr(ave["paper"].rank())
        lines += [f"Rank agreement of the variants' AVE with Table {abl} "
                  f"(Spearman, {len(ave)} variants): {rho:.2f}.", ""]
    if ours["ours_gain"].notna().any():
        gains = ours[(ours["column"] == "AVE") & (ours["variant"] != "baseline")]
        table = pd.DataFrame({
            "row": gains["paper_row"], "ours gain": gains["ours_gain"].round(1) + 0.0,
            "paper gain": gains["paper_gain"].round(1) + 0.0,
            "same sign": np.sign(gains["ours_gain"]) == np.sign(gains["paper_gain"])})
        lines += [f"## AVE gain over the vision-only Baseline (F1 points), Table {abl}", "",
                  PT.markdown_table(table), ""]
    full = sbs[sbs["table"] == sota]
    if len(full):
        comp = pd.DataFrame({"ours": full.set_index("column")["ours"],
                             "paper": full.set_index("column")["paper"],
                             "delta": full.set_index("column")["delta"]}).T.round(1) + 0.0
        lines += [f"## HiVA (Ours) vs Table {sota}", "",
                  PT.markdown_table(comp.rename_axis("").reset_index()), ""]
    lines += [PT.audit_markdown(audit)]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- plot
def plot_deltas(sbs: pd.DataFrame, dataset: str, path_stem: Path) -> list[Path]:
    """Heatmap of ours - paper per variant (rows) and AU (columns), PNG and PDF."""
    import matplotlib

    matplotlib.use("Agg")  # files only; works headless and inside papermill
    import matplotlib.pyplot as plt

    _, abl_n = PT.table_for(dataset)
    delta = _wide(sbs, "delta", PT.ROMAN[abl_n])
    values = delta.to_numpy(float)
    lim = max(1.0, float(np.nanmax(np.abs(values)))) if np.isfinite(values).any() else 1.0
    n_rows, n_cols = values.shape
    fig, ax = plt.subplots(figsize=(1.0 + 0.72 * n_cols, max(2.4, 1.3 + 0.5 * n_rows)))
    im = ax.imshow(values, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(values.shape[1]), delta.columns)
    ax.set_yticks(range(values.shape[0]), delta.index)
    ax.axvline(values.shape[1] - 1.5, color="black", lw=1)  # separates AVE from the AUs
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            v = round(float(values[i, j]), 1) + 0.0  # + 0.0 turns -0.0 into 0.0
            if np.isfinite(v):
                ax.text(j, i, f"{v:+.1f}", ha="center", va="center", fontsize=8,
                        color="white" if abs(v) > 0.6 * lim else "black")
    ax.set_title(f"{dataset}: our F1 - paper Table {PT.ROMAN[abl_n]} (points)", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02, label="delta F1 (points)")
    fig.tight_layout()
    paths = [path_stem.with_suffix(".png"), path_stem.with_suffix(".pdf")]
    fig.savefig(paths[0], dpi=150)
    fig.savefig(paths[1])
    plt.close(fig)
    return paths


# ----------------------------------------------------------------------------- write
def write_report(results_root: str | Path, dataset: str,
                 out_dir: str | Path | None = None) -> dict[str, Path]:
    """Collect, summarise, compare, audit and plot; returns {name: path} of what it wrote.

    Everything is computed before the first file is written, so a failure writes nothing.
    """
    runs = collect_results(results_root, dataset)
    summary = summarise(runs.drop(columns=["checkpoint", "path"]))
    sbs = side_by_side(summary, dataset)
    audit = PT.audit_tables()
    text = _markdown(dataset, runs, sbs, audit, "deltas.png")
    out = Path(out_dir) if out_dir is not None else Path(results_root) / dataset / "report"
    out.mkdir(parents=True, exist_ok=True)
    files = {"runs": out / "runs.csv", "summary": out / "summary.csv",
             "side_by_side": out / "side_by_side.csv", "audit": out / "audit.csv",
             "audit_md": out / "audit.md", "report_md": out / "report.md"}
    runs.to_csv(files["runs"], index=False)
    summary.to_csv(files["summary"], index=False)
    sbs.to_csv(files["side_by_side"], index=False)
    audit.to_csv(files["audit"], index=False)
    files["audit_md"].write_text(PT.audit_markdown(audit))
    files["report_md"].write_text(text)
    png, pdf = plot_deltas(sbs, dataset, out / "deltas")
    files.update(deltas_png=png, deltas_pdf=pdf)
    return files
