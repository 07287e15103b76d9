"""The claims ledger written and drawn: ``results/<dataset>/claims.csv`` and ``claims.md``
(:func:`write_claims`, :func:`write_ledger`, from :func:`hiva_lib.study.claims.
evaluate_claims`), ambiguity 7's alternatives beside them, and the verdicts of every data set in
one figure (:func:`plot_verdicts`, :func:`verdict_figure`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hiva_lib.study import stats
from hiva_lib.study.claim_measures import ALTERNATIVES, ClaimInputs
from hiva_lib.study.claims import CLAIM_IDS, CLAIMS, alternative_checks, evaluate_claims
from hiva_lib.study.stats import NOT_RESOLVED

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
    from hiva_lib.engine.checkpoint import atomic_write_text

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
