"""The report's rendering: the text of ``report.md`` (our F1 beside the paper's, the
gains over the Baseline, the controls) and the figure of our deltas and gains
(``deltas.png``/``.pdf``), from the tables that :mod:`hiva_lib.study.report` computes."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from hiva_lib.study import paper_tables as PT
from hiva_lib.study import stats


def _wide(sbs: pd.DataFrame, value: str, table: str) -> pd.DataFrame:
    part = sbs[sbs["table"] == table]
    wide = part.pivot(index="paper_row", columns="column", values=value)
    cols = [c for c in part["column"].unique()]
    return wide.loc[list(dict.fromkeys(part["paper_row"])), cols]


def _cell(mean: float, std: float) -> str:
    return f"{mean:.1f}" if np.isnan(std) else f"{mean:.1f} ± {std:.1f}"


def _spread_known(resolved: object) -> bool:
    return resolved is not None and resolved == resolved  # None / NaN: a single run


def _resolved_text(resolved: object) -> str:
    if not _spread_known(resolved):
        return f"n/a (< {stats.MIN_PAIRS} pairs)"
    return "yes" if resolved else "no (interval holds 0)"


def _interval_text(low: float, high: float) -> str:
    return "" if not np.isfinite(low) else f"[{low:.1f}, {high:.1f}]"


METHOD_NAMES = {"t": "t-interval over the pairs",
                "bootstrap": "percentile bootstrap over the pairs"}


def _gain_lines(ours: pd.DataFrame, abl: str, method: str) -> list[str]:
    """The AVE gain of each variant over the Baseline, ours (paired mean with its 95%
    interval over the (seed, fold) runs) beside the paper's, and whether ours is resolved."""
    gains = ours[(ours["column"] == "AVE") & (ours["variant"] != "baseline")]
    table = pd.DataFrame({
        "row": gains["paper_row"],
        "ours gain": [f"{m:.1f}" for m in gains["ours_gain"]],
        "95% CI": [_interval_text(lo, hi) for lo, hi in zip(gains["gain_low"],
                                                            gains["gain_high"], strict=True)],
        "pairs": [str(int(n)) if n == n else "" for n in gains["gain_n"]],
        "resolved": [_resolved_text(r) for r in gains["resolved"]],
        "paper gain": gains["paper_gain"].round(1) + 0.0,
        "same sign": np.where(np.sign(gains["ours_gain"]) == np.sign(gains["paper_gain"]),
                              "yes", "no")})
    known = [r for r in gains["resolved"] if _spread_known(r)]
    n_res = sum(bool(r) for r in known)
    note = (f"{n_res} of {len(gains)} gains are resolved (Holm-adjusted p < 0.05 over the "
            f"{len(gains)} rows, one family)."
            if known else f"Fewer than {stats.MIN_PAIRS} (seed, fold) pairs per variant: no "
            "interval, so no gain is resolved; run more folds or seeds.")
    return [f"## AVE gain over the vision-only Baseline (F1 points), Table {abl}", "",
            "Ours: the gain paired per (seed, fold) run, its mean and 95% interval "
            f"({METHOD_NAMES[method]}); resolved: its Holm-adjusted p over the table's rows is "
            "below 0.05. A gain that is not resolved may have its sign, and its agreement in "
            "sign with the paper, by chance. " + note, "",
            PT.markdown_table(table), ""]


def _controls_lines(controls: pd.DataFrame, method: str) -> list[str]:
    if controls.empty:
        return []
    table = pd.DataFrame({
        "control": controls["control"],
        "AVE": [_cell(m, s) for m, s in zip(controls["ave"], controls["ave_std"],
                                             strict=True)],
        "runs": controls["runs"]})
    for ref, name in (("baseline", "Baseline"), ("full", "HiVA")):
        table[f"gain vs {name} [95% CI]"] = [
            f"{g:.1f} {_interval_text(lo, hi)}".strip() if g == g else ""
            for g, lo, hi in zip(controls[f"gain_vs_{ref}"], controls[f"low_vs_{ref}"],
                                 controls[f"high_vs_{ref}"], strict=True)]
        table[f"resolved vs {name}"] = np.where(controls[f"resolved_vs_{ref}"], "yes", "no")
    if "grad_ratio" in controls:
        table["grad ratio"] = [f"{r:.2g}" if r == r else "" for r in controls["grad_ratio"]]
    return ["## Controls (not rows of the paper)", "",
            "shuffled_text: every AU gets another AU's descriptions; no_language: learned "
            "per-AU tokens, no language model; lambda_<v>: HiVA with Eq. 7's lambda = v. "
            f"Gains paired per (seed, fold), 95% {METHOD_NAMES[method]}; resolved: Holm-"
            "adjusted p < 0.05 over the controls against the same reference; grad ratio: "
            "||grad(lambda L_diff)|| / ||grad L_au|| on the text layers "
            "(hiva_lib.study.ldiff_balance).", "", PT.markdown_table(table), ""]


def markdown(dataset: str, runs: pd.DataFrame, sbs: pd.DataFrame, audit: pd.DataFrame,
              plot_name: str, controls: pd.DataFrame | None = None, method: str = "t") -> str:
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
    lines += [f"## Ours (F1 %, mean ± std over seeds x folds), rows of Table {abl}", "",
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
                  f"(Spearman, {len(ave)} variants): {rho:.2f}. Variants whose AVEs differ by "
                  "less than their run-to-run spread can swap ranks by chance: read it with "
                  "the resolved gains below.", ""]
    if ours["ours_gain"].notna().any():
        lines += _gain_lines(ours, abl, method)
    if controls is not None:
        lines += _controls_lines(controls, method)
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
def render_deltas(sbs: pd.DataFrame, dataset: str) -> Figure:
    """Left: heatmap of ours - paper per variant (rows) and AU (columns). Right: each
    variant's AVE gain over the vision-only Baseline, ours (paired mean, 95% CI) beside the
    paper's: absolute F1 on SynthFACS says nothing about the paper, the gains can."""
    import matplotlib

    matplotlib.use("Agg")  # files only; works headless and inside papermill
    import matplotlib.pyplot as plt

    _, abl_n = PT.table_for(dataset)
    abl = PT.ROMAN[abl_n]
    delta = _wide(sbs, "delta", abl)
    values = delta.to_numpy(float)
    lim = max(1.0, float(np.nanmax(np.abs(values)))) if np.isfinite(values).any() else 1.0
    n_rows, n_cols = values.shape
    fig, (ax, gx) = plt.subplots(1, 2, sharey=True,
                                 figsize=(5.0 + 0.72 * n_cols, max(2.6, 1.4 + 0.5 * n_rows)),
                                 gridspec_kw={"width_ratios": [n_cols + 1.5, 5.0]})
    im = ax.imshow(values, cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto")
    ax.set_xticks(range(n_cols), delta.columns)
    ax.set_yticks(range(n_rows), delta.index)
    ax.axvline(n_cols - 1.5, color="black", lw=1)  # separates AVE from the AUs
    for i in range(n_rows):
        for j in range(n_cols):
            v = round(float(values[i, j]), 1) + 0.0  # + 0.0 turns -0.0 into 0.0
            if np.isfinite(v):
                ax.text(j, i, f"{v:+.1f}", ha="center", va="center", fontsize=8,
                        color="white" if abs(v) > 0.6 * lim else "black")
    ax.set_title(f"{dataset}: our F1 - paper Table {abl} (points)", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02, label="delta F1 (points)")

    # one bar pair per heatmap row; the Baseline is the reference (gain 0 by definition)
    ave = sbs[(sbs["table"] == abl) & (sbs["column"] == "AVE")].set_index("paper_row")
    ave = ave.reindex(delta.index)
    y = np.arange(n_rows)
    gx.axvline(0, color="grey", lw=0.8)
    err = np.vstack([ave["ours_gain"] - ave["gain_low"], ave["gain_high"] - ave["ours_gain"]])
    gx.barh(y - 0.2, ave["ours_gain"], 0.4, xerr=np.nan_to_num(err.astype(float)), capsize=3,
            color="tab:blue", label="ours (paired mean, 95% CI)")
    gx.barh(y + 0.2, ave["paper_gain"], 0.4, color="tab:orange", label=f"paper (Table {abl})")
    for i, variant in enumerate(ave["variant"]):
        if variant == "baseline":
            gx.text(0.5, i, "reference", transform=gx.get_yaxis_transform(), ha="center",
                    va="center", fontsize=8, color="grey")
    gx.set_xlabel("AVE gain over Baseline (F1 points)", fontsize=8)
    gx.set_title("gain over Baseline: ours vs paper", fontsize=10)
    gx.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.09), frameon=False)
    gx.grid(axis="x", alpha=0.3)
    gx.tick_params(axis="y", left=False)
    fig.tight_layout()
    return fig


def _figure_bytes(fig: Figure, fmt: str) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=150)
    return buf.getvalue()


def deltas_bytes(sbs: pd.DataFrame, dataset: str, formats: tuple[str, ...]) -> list[bytes]:
    """:func:`render_deltas` as the bytes of a file of each format (e.g. "png", "pdf")."""
    import matplotlib.pyplot as plt

    fig = render_deltas(sbs, dataset)
    try:
        return [_figure_bytes(fig, fmt) for fmt in formats]
    finally:
        plt.close(fig)
