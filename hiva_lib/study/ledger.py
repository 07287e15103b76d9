"""The claims ledger written and drawn: ``results/<dataset>/claims.csv``, ``claims_parts.csv``
and ``claims.md`` (:func:`write_claims`, :func:`write_ledger`, from :func:`hiva_lib.study.
claims.evaluate`), ambiguity 7's alternatives beside them, and the verdicts of every data set
in one figure (:func:`plot_verdicts`, :func:`verdict_figure`).

A claim's family spans the presets (:func:`hiva_lib.study.claim_rule.family_columns`), so
writing one preset's ledger also rewrites the family columns (``p_family``,
``verdict_family``) of every preset's ledger under the same results root
(:func:`write_families`): the last preset written leaves them all in step.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hiva_lib.integrity import atomic_write_text
from hiva_lib.study import stats
from hiva_lib.study.claim_measures import ALTERNATIVES, CAUSAL_TESTS, ClaimInputs
from hiva_lib.study.claim_rule import family_columns
from hiva_lib.study.claims import CLAIM_IDS, CLAIMS, alternative_checks, causal_checks, evaluate
from hiva_lib.study.stats import NOT_RESOLVED

CAVEAT = ("The comparison with the paper's effect is about this setting (SynthFACS, a small "
          "pretrained model, short training), not about the paper's data.")


def _ci(low: float, high: float) -> str:
    return f"[{low:.2f}, {high:.2f}]" if np.isfinite(low) else "no interval"


def claims_markdown(table: pd.DataFrame) -> str:
    from hiva_lib.study import paper_tables as PT

    def ours(r) -> str:
        if not np.isfinite(r.value):
            return ""
        return (f"{r.statistic}: {r.value:.2f} {_ci(r.low, r.high)}; seed x fold "
                f"{_ci(r.low_clustered, r.high_clustered)}; n={r.n} run(s)")

    def power(r) -> str:
        if not np.isfinite(r.mde_80):
            return "no sd (fewer than 3 runs)" if np.isfinite(r.value) else ""
        need = f"; {int(r.pairs_for_1pt)} pairs for 1 point" if np.isfinite(r.pairs_for_1pt) \
            else ""
        return f"{r.mde_80:.2g}{need}"

    def family(r) -> str:
        p = getattr(r, "p_family", float("nan"))
        verdict = getattr(r, "verdict_family", "")
        return f"{verdict} (p={p:.2g})" if np.isfinite(p) else str(verdict)

    dataset = table["dataset"].iat[0]
    view = pd.DataFrame({"claim": [f"{c} ({r}): {s}" for c, r, s in zip(
                             table["claim"], table["role"], table["statement"], strict=True)],
                         "paper's evidence": [f"{w}; {p}" for w, p in zip(
                             table["where"], table["paper"], strict=True)],
                         "ours (95% CI over runs; over seeds x folds)":
                             [ours(r) for r in table.itertuples()],
                         "verdict on this preset": table["verdict"],
                         "family verdict (Holm over presets x parts)":
                             [family(r) for r in table.itertuples()],
                         "vs the paper's effect": table["vs_paper"].fillna(""),
                         "80% power at": [power(r) for r in table.itertuples()],
                         "reason": table["reason"]})
    return "\n".join([
        f"# The paper's claims on {dataset}", "",
        "Rules (docs/claims.md): one value per trained (seed, fold) run, a 95% interval over "
        "the runs and one over seeds x folds (crossed random effects, Satterthwaite df); the "
        "parts of a claim are one family, tested at a family-wise 5% level by Holm's method: "
        "supported when every part is resolved on the claimed side, contradicted when any "
        "part is resolved on the other side, not resolved otherwise; a resolved verdict that "
        "the seed x fold intervals do not give is 'not resolved (holds within runs only)'. "
        "The family verdict applies the same rule with Holm over every preset's parts of the "
        "claim; the README and results/SUMMARY.md show it. "
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


def _read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, float_precision="round_trip")


def _write_markdown(table: pd.DataFrame, out: Path) -> Path:
    """``claims.md`` from a claims table, with ``ambiguity7.csv`` beside it when present."""
    md = claims_markdown(table)
    checks = out / "ambiguity7.csv"
    if checks.exists():
        md += "\n" + _alternatives_markdown(_read(checks))
    atomic_write_text(md, out / "claims.md")
    return out / "claims.md"


def write_families(results_root: str | Path) -> list[str]:
    """Every preset under ``results_root`` with ``claims.csv`` and ``claims_parts.csv``: the
    family columns computed over all of them and written back (with ``claims.md``); returns
    the presets."""
    root = Path(results_root)
    names = sorted(p.parent.name for p in root.glob("*/claims_parts.csv")
                   if (p.parent / "claims.csv").exists())
    if not names:
        return []
    claims, parts = family_columns(pd.concat([_read(root / d / "claims.csv") for d in names]),
                                   pd.concat([_read(root / d / "claims_parts.csv")
                                              for d in names]))
    for d in names:
        atomic_write_text(claims[claims["dataset"] == d].to_csv(index=False),
                          root / d / "claims.csv")
        atomic_write_text(parts[parts["dataset"] == d].to_csv(index=False),
                          root / d / "claims_parts.csv")
        _write_markdown(claims[claims["dataset"] == d], root / d)
    return names


def write_claims(table: pd.DataFrame, parts: pd.DataFrame, results_root: str | Path,
                 dataset: str, checks: pd.DataFrame | None = None,
                 causal: pd.DataFrame | None = None) -> dict[str, Path]:
    """``results/<dataset>/claims.csv``, ``claims_parts.csv`` and ``claims.md`` (derived from
    the results; a previous ledger is replaced and the replacement announced), with ``checks``
    (:func:`alternative_checks`) in ``ambiguity7.csv`` and in the markdown when given, the
    causal tests (:func:`causal_checks`) in ``causal.csv``; then the family columns of every
    preset under ``results_root`` (:func:`write_families`)."""
    out = Path(results_root) / dataset
    paths = {"csv": out / "claims.csv", "parts": out / "claims_parts.csv",
             "md": out / "claims.md"}
    if paths["csv"].exists():
        print(f"{paths['csv']}: replacing the previous claims table")
    atomic_write_text(table.to_csv(index=False), paths["csv"])
    atomic_write_text(parts.to_csv(index=False), paths["parts"])
    if checks is not None and not checks.empty:
        paths["ambiguity7"] = out / "ambiguity7.csv"
        atomic_write_text(checks.to_csv(index=False), paths["ambiguity7"])
    if causal is not None and not causal.empty:
        paths["causal"] = out / "causal.csv"
        atomic_write_text(causal.to_csv(index=False), paths["causal"])
    others = [d for d in write_families(results_root) if d != dataset]
    if others:
        print(f"family columns (Holm over presets) rewritten in: {', '.join(others)}")
    return paths


def write_ledger(inputs: ClaimInputs, results_root: str | Path | None = None
                 ) -> dict[str, Path]:
    """Evaluate every claim and ambiguity 7's alternatives from ``inputs`` and write the
    ledger (:func:`write_claims`) under ``results_root`` (default: the inputs' own). Without
    runs: one error that says where it looked, and nothing written."""
    inputs.require_runs()
    checks = pd.concat([alternative_checks(inputs, v) for v in ALTERNATIVES])
    causal = pd.concat([causal_checks(inputs, v) for v in CAUSAL_TESTS])
    table, parts = evaluate(inputs)
    return write_claims(table, parts, results_root or inputs.results_root, inputs.dataset,
                        checks, causal)


VERDICT_COLOURS = {stats.SUPPORTED: "tab:green", stats.CONTRADICTED: "tab:red",
                   stats.NOT_RESOLVED: "lightgrey", stats.WITHIN_RUNS_ONLY: "khaki",
                   stats.NOT_APPLICABLE: "white"}
SHORT = {stats.WITHIN_RUNS_ONLY: "within runs only", stats.NOT_APPLICABLE: "not applicable"}


def plot_verdicts(tables: dict[str, pd.DataFrame]):
    """The verdict of every claim (rows) on every data set (columns), coloured by verdict:
    the family verdict where the table has one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    datasets = list(tables)
    fig, ax = plt.subplots(figsize=(1.6 + 1.8 * len(datasets), 0.6 + 0.45 * len(CLAIMS)))
    for j, ds in enumerate(datasets):
        table = tables[ds].set_index("claim")
        for i, cid in enumerate(CLAIM_IDS):
            column = "verdict_family" if "verdict_family" in table else "verdict"
            v = table[column].get(cid, NOT_RESOLVED)
            # inputs missing: hatched and "not run" (as the tables say), not read as "within noise"
            absent = str(table["reason"].get(cid, "no results")).startswith("no results")
            ax.add_patch(plt.Rectangle((j - 0.45, i - 0.4), 0.9, 0.8, facecolor=VERDICT_COLOURS[v],
                                       hatch="//" if absent else None, edgecolor="white"))
            ax.text(j, i, "not run" if absent else SHORT.get(v, v), ha="center",
                    va="center", fontsize=7)
    ax.set_xlim(-0.5, len(datasets) - 0.5)
    ax.set_ylim(len(CLAIMS) - 0.5, -0.5)
    ax.set_xticks(range(len(datasets)), datasets, fontsize=8)
    ax.set_yticks(range(len(CLAIMS)), CLAIM_IDS, fontsize=8)
    ax.set_title("The paper's claims: family verdicts per data set", fontsize=10)
    ax.legend(handles=[Patch(facecolor=c, edgecolor="grey", label=SHORT.get(v, v))
                       for v, c in VERDICT_COLOURS.items()]
              + [Patch(facecolor=VERDICT_COLOURS[NOT_RESOLVED], hatch="//", edgecolor="white",
                       label="not run (no results)")],
              fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2,
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
    fig = plot_verdicts({d: _read(root / d / "claims.csv") for d in names})
    path = Path(figures_root) / "claims_verdicts.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return path
