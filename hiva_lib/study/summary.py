"""``results/SUMMARY.md``: the embedded study's results in a few tables, generated from the
files in ``results/`` (no number is typed by hand), and the README's results block, which is
a copy of it between two marker lines (:func:`sync_readme`; a test checks that they agree).

    python -m hiva_lib.study.summary            # write results/SUMMARY.md
    python -m hiva_lib.study.summary --readme   # and copy it into README.md (and the
                                                # diagnosis tables into docs/model.md)

What it reads, per SynthFACS preset: ``report/summary.csv`` and ``report/gains.csv``
(notebook 05), ``claims.csv`` (notebook 10), ``mechanism.csv`` (notebook 09, when present);
and ``bench_noise-v2.csv`` (the newest noise measurement). Missing inputs leave their rows out.
:func:`mechanism_markdown` is docs/model.md's generated block (``mechanism.csv`` and
``mechanism_layers.csv``), kept in step by the same command.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from hiva_lib.integrity import atomic_write_text
from hiva_lib.study import paper_tables as PT
from hiva_lib.study.claim_rule import NOT_RUN
from hiva_lib.study.stats import CONTRADICTED, SUPPORTED
from hiva_lib.variants import CONTROLS, VARIANTS

PRESETS = ("synth-bp4d", "synth-disfa", "synth-gft")
START, END = "<!-- summary:start -->", "<!-- summary:end -->"
# docs/model.md's block of the language branch's diagnosis, generated the same way
MECHANISM_DOC = "docs/model.md"
MECHANISM_MARKS = ("<!-- mechanism:start -->", "<!-- mechanism:end -->")
CAVEAT = ("SynthFACS is a cartoon with known AU regions: nothing here is evidence about BP4D, "
          "DISFA or GFT. These numbers test whether the paper's mechanisms do what the paper "
          "says on data where the answer is known and the noise is measured.")


def _csv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.exists() else None


def _interval(row) -> str:
    if not np.isfinite(row.gain_low):
        return f"{row.gain:+.2f}, no interval ({int(row.gain_n)} run)"
    return f"{row.gain:+.2f} [{row.gain_low:+.2f}, {row.gain_high:+.2f}]"


def _table_row(root: Path, ds: str) -> dict | None:
    """One preset's line of the Tables IV-VI summary."""
    summary, gains = (_csv(root / ds / "report" / f) for f in ("summary.csv", "gains.csv"))
    if summary is None or gains is None:
        return None
    ave = summary[summary["column"] == "AVE"].set_index("variant")
    g = gains[gains["column"] == "AVE"].set_index("variant")
    if not {"full", "baseline"} <= set(ave.index) or "full" not in g.index:
        return None
    _, abl = PT.table_for(ds)
    paper = PT.paper_row(ds, "full")["AVE"] - PT.paper_row(ds, "baseline")["AVE"]
    resolved = [f"{PT.row_name(v, abl)} {r.gain:+.2f}" for v, r in g.iterrows()
                if v not in CONTROLS and (r.resolved is True or r.resolved == "True")]

    def cell(v: str) -> str:
        r = ave.loc[v]
        return f"{r['mean']:.1f}" + ("" if not np.isfinite(r["std"]) else f" ± {r['std']:.1f}")

    return {"preset (table)": f"{ds} ({PT.ROMAN[abl]})",
            "runs per row (HiVA, Baseline)": f"{int(ave.loc['full', 'n'])}, "
                                             f"{int(ave.loc['baseline', 'n'])}",
            "Baseline": cell("baseline"), "HiVA": cell("full"),
            "HiVA - Baseline [95% CI]": _interval(g.loc["full"]),
            "paper": f"{paper:+.1f}",
            "rows resolved vs Baseline (Holm)": "; ".join(resolved) or "none"}


def _claims(root: Path) -> pd.DataFrame | None:
    cells = {}
    for ds in PRESETS:
        t = _csv(root / ds / "claims.csv")
        if t is None:
            continue
        cells[ds] = [_claim_cell(r) for r in t.itertuples()]
        cells.setdefault("claim", [f"{r.claim} ({getattr(r, 'role', '')}) {r.statement}"
                                   .replace(" () ", " ") for r in t.itertuples()])
    if not cells:
        return None
    return pd.DataFrame({"claim": cells.pop("claim"), **cells})


def _claim_cell(r) -> str:
    """One claim on one preset: its family verdict (the verdict where the table has no
    family columns), the statistic with its intervals, the family's Holm p."""
    if str(r.reason).startswith("no results"):
        return "not run"
    verdict = getattr(r, "verdict_family", r.verdict)
    text = f"**{verdict}**" if verdict in (SUPPORTED, CONTRADICTED) else verdict
    if np.isfinite(r.value):
        ci = f" [{r.low:.2f}, {r.high:.2f}]" if np.isfinite(r.low) else ""
        text += f": {r.value:+.2f}{ci}"
        low, high = getattr(r, "low_clustered", None), getattr(r, "high_clustered", None)
        if low is not None:
            text += (f", seed x fold [{low:.2f}, {high:.2f}]" if np.isfinite(low)
                     else ", no seed x fold interval")
        text += f", {int(r.n)} run(s)"
    shown = getattr(r, "part", "")
    if isinstance(shown, str) and shown.endswith(NOT_RUN):  # the part that decides it
        text += f": {shown.removesuffix(NOT_RUN)} not run"
    parts = getattr(r, "parts_resolved", "")  # claims tables written before it: absent
    if isinstance(parts, str) and parts and not parts.endswith(" of 1"):
        text += f", {parts} parts resolved over the runs"
    p_family = getattr(r, "p_family", float("nan"))
    if np.isfinite(p_family):
        text += f", family p={p_family:.2g}"
    versus = getattr(r, "vs_paper", "")
    if isinstance(versus, str) and versus.startswith(("smaller", "larger")):
        text += f"; {versus}"
    return text


def _noise(root: Path) -> str | None:
    files = sorted(root.glob("bench_noise*.csv"), key=lambda p: (len(p.name), p.name))
    if not files:
        return None
    t = pd.read_csv(files[-1])
    t = t[(t["threads"] == 1) & (t["stage"] == 1)]
    parts = [f"{ds} {g['mean_f1'].std(ddof=1):.2f} (seeds {', '.join(map(str, g['seed']))})"
             for ds, g in t.groupby("dataset")]
    return (f"Seed noise of the fold-1 Baseline (sd of mean F1 over seeds, one thread, "
            f"`{files[-1].relative_to(root.parent)}`): " + "; ".join(parts) + ".")


def _run_counts(root: Path) -> str | None:
    """Per preset, the (seed, fold) runs behind each row of its report, grouped by count."""
    lines = []
    for ds in PRESETS:
        t = _csv(root / ds / "report" / "summary.csv")
        if t is None:
            continue
        ave = t[t["column"] == "AVE"]
        groups = [f"{n} each: {', '.join(g['variant'])}" for n, g in
                  sorted(ave.groupby("n"), key=lambda x: -x[0])]
        lines.append(f"- {ds}: " + "; ".join(groups))
    if not lines:
        return None
    return ("Trained (seed, fold) runs behind each row (`report/summary.csv`; the rows and "
            "controls with fewer runs than HiVA and the Baseline are compared on the runs "
            "they share):\n\n" + "\n".join(lines))


def _first_last(t: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows of mechanism.csv before stage 2 (epoch 0) and at each run's last epoch."""
    last = t[t["epoch"] == t.groupby(["variant", "seed", "fold"])["epoch"].transform("max")]
    return t[t["epoch"] == 0], last


def _mechanism(root: Path) -> str | None:
    lines = []
    for ds in PRESETS:
        t = _csv(root / ds / "mechanism.csv")
        if t is None or "z_cosine" not in t:
            continue
        first, last = _first_last(t)
        parts = [f"{v} {first[first.variant == v]['z_cosine'].mean():.3f} -> "
                 f"{g['z_cosine'].mean():.3f} ({len(g)} runs)" for v, g in last.groupby("variant")]
        lines.append(f"- {ds}: " + "; ".join(parts))
    if not lines:
        return None
    return ("Mean off-diagonal cosine of the AU embeddings Z before stage 2 -> after it "
            "(`mechanism.csv`, notebook 09):\n\n" + "\n".join(lines))


def _before_after(first: pd.Series, last: pd.Series, digits: int = 2) -> str:
    """"a -> b" of two means over runs; "b" alone when there is no before."""
    b = f"{last.mean():.{digits}f}"
    return b if first.dropna().empty else f"{first.mean():.{digits}f} -> {b}"


def _mean_range(col: pd.Series, digits: int = 2, percent: bool = False) -> str:
    """The mean over runs with its range (min-max) when runs differ; '' when unmeasured."""
    v = col.dropna()
    if v.empty:
        return ""
    f = (lambda x: f"{100 * x:.0f}%") if percent else (lambda x: f"{x:.{digits}f}")
    return f(v.mean()) + (f" ({f(v.min())}-{f(v.max())})" if len(v) > 1 and v.max() > v.min()
                          else "")


# Z's AU-specific part in absolute terms (mechanism.csv; files written before them lack them)
SCALE_FREE = {"z_spread": "Z spread", "z_shared_norm": "Z shared norm",
              "z_specific_rank": "Z specific rank"}
NO_VALUES = pd.Series(dtype=float)


def _mechanism_rows(t: pd.DataFrame, ds: str) -> list[dict]:
    """One row per variant of one preset's mechanism.csv: before stage 2 (epoch 0) and the
    last epoch, means over runs (ranges over runs where it matters)."""
    first, last = _first_last(t)
    rows = []
    for v, g in last.groupby("variant"):
        f = first[first["variant"] == v]
        chance = 1 / g["tokens"].dropna().mean() if g["tokens"].notna().any() else np.nan
        rows.append({
            "preset": ds, "variant": v, "runs": len(g),
            "H cosine": _before_after(f["h_cosine"], g["h_cosine"]),
            "Z cosine": _before_after(f["z_cosine"], g["z_cosine"], 3),
            "Z cosine, last (range)": _mean_range(g["z_cosine"], 3),
            "Z AU-specific part": _before_after(f["z_specific"], g["z_specific"], 3),
            "dL_au/dZ shared": _before_after(f["z_grad_shared"], g["z_grad_shared"]),
            **{name: _before_after(f.get(c, NO_VALUES), g.get(c, NO_VALUES))
               for c, name in SCALE_FREE.items()},
            "DDCA entropy / uniform": _mean_range(g["ddca_entropy_norm"]),
            "DDCA AU pairs on one token": _mean_range(g["ddca_argmax_pairs"], percent=True),
            "DDCA peak on largest F_i": _mean_range(g["ddca_peak_at_largest"], percent=True),
            "CDCA entropy / uniform": _mean_range(g["cdca_entropy_norm"]),
            "CDCA frames, all AUs one peak": _mean_range(g["cdca_argmax_all"], percent=True),
            "CDCA peak on largest X_g": _mean_range(g["cdca_peak_at_largest"], percent=True),
            "chance (1/tokens)": "" if not np.isfinite(chance) else f"{100 * chance:.0f}%"})
    return rows


def _layer_table(root: Path) -> pd.DataFrame | None:
    """The AU-specific part along HiVA's text branch (mechanism_layers.csv), per preset: before
    stage 2 -> final, means over runs."""
    rows = []
    for ds in PRESETS:
        t = _csv(root / ds / "mechanism_layers.csv")
        if t is None or "full" not in set(t["variant"]):
            continue
        t = t[t["variant"] == "full"]
        row = {"preset": ds, "runs": t.groupby(["seed", "fold"]).ngroups}
        for stage, g in t.groupby("stage", sort=False):
            row[stage] = _before_after(g.loc[g["when"] == "before", "specific"],
                                       g.loc[g["when"] == "final", "specific"], 3)
        rows.append(row)
    return pd.DataFrame(rows) if rows else None


def _causal_table(root: Path) -> pd.DataFrame | None:
    """causal.csv of each preset: one row per causal test, each check's paired difference
    from HiVA with its 95% interval (* where resolved under Holm over the test's checks)."""
    rows = []
    for ds in PRESETS:
        t = _csv(root / ds / "causal.csv")
        if t is None or t.empty:
            continue
        for v, g in t.groupby("variant", sort=False):
            row = {"preset": ds, "test": v, "what it changes": VARIANTS[v].row_name,
                   "runs": int(g["n"].max())}
            for r in g.itertuples():
                what = r.check.removeprefix(f"{v} - full (").removesuffix(")")
                what = what.replace(", last epoch", "").replace("AVE F1", "AVE F1 (points)")
                row[what] = (f"{r.value:+.3g} [{r.low:+.3g}, {r.high:+.3g}]"
                             + ("*" if r.resolved else ""))
            rows.append(row)
    return pd.DataFrame(rows).fillna("") if rows else None


def mechanism_markdown(results_root: str | Path) -> str:
    """docs/model.md's generated block: the diagnosis of the language branch in numbers, from
    ``mechanism.csv`` and ``mechanism_layers.csv`` of each preset (definitions:
    :mod:`hiva_lib.study.mechanism`)."""
    root = Path(results_root)
    rows = [r for ds in PRESETS if (t := _csv(root / ds / "mechanism.csv")) is not None
            for r in _mechanism_rows(t, ds)]
    if not rows:
        return "No `mechanism.csv` in results/ yet: run notebook 09.\n"
    table = pd.DataFrame(rows).fillna("")
    maps = list(table.columns).index("DDCA entropy / uniform")  # the attention maps' first
    embed = list(table.columns[:maps])
    attend = [*table.columns[:3], *table.columns[maps:]]
    out = ["The text embeddings per variant, means over its runs (before stage 2 -> last "
           "epoch; ranges over runs in brackets): mean off-diagonal cosine of H and Z, the "
           "AU-specific part of Z (||Z - mean over AUs|| / ||mean||), the share of the "
           "energy of dL_au/dZ common to all AUs (1/N for unrelated pulls on N AUs), and the "
           "two parts of Z apart: the rms distance of the AUs' Z to their mean (spread), the "
           "norm of that mean (shared norm), and the effective rank of the AU-specific parts "
           "over N - 1 (1: equal spread in N - 1 directions; 1/(N - 1): one line):", "",
           PT.markdown_table(table[embed]), "",
           "The attention maps at the end of training (test frames): entropy over the image "
           "tokens relative to uniform; AU pairs whose maps peak on the same token; for CDCA, "
           "frames where all AUs peak on one token; maps that peak on the token of largest "
           "feature norm (chance for the shared and the largest-norm peak: 1/tokens):", "",
           PT.markdown_table(table[attend]), ""]
    layers = _layer_table(root)
    if layers is not None:
        out += ["The AU-specific part along HiVA's text branch (before stage 2 -> final; H: "
                "BERT's sentence vectors, proj: W_p H, layer1-3: the Transformer of Eq. 2, "
                "layer3 = Z):", "", PT.markdown_table(layers.fillna("")), ""]
    causal = _causal_table(root)
    if causal is not None:
        out += ["The causal tests beside HiVA on the runs they share (`causal.csv`): each "
                "test's value minus HiVA's, paired per (seed, fold) run, mean [95% "
                "t-interval]; * where resolved under Holm over the test's five checks; Z's "
                "measures at the last epoch:", "", PT.markdown_table(causal), ""]
    return "\n".join(out).rstrip() + "\n"


def _alternatives(root: Path) -> str | None:
    lines = []
    for ds in PRESETS:
        t = _csv(root / ds / "ambiguity7.csv")
        if t is None or t.empty:
            continue
        cells = [f"{r.check}: {r.value:+.2f}"
                 + (f" [{r.low:+.2f}, {r.high:+.2f}]" if np.isfinite(r.low) else "")
                 + f", {int(r.n)} run(s)" + (" (resolved)" if r.resolved else "")
                 for r in t.itertuples()]
        lines.append(f"- {ds}: " + "; ".join(cells))
    if not lines:
        return None
    return ("Ambiguity 7 beside HiVA, paired per run (`ambiguity7.csv`, Holm within each "
            "alternative; `docs/model.md`):\n\n" + "\n".join(lines))


def summary_markdown(results_root: str | Path) -> str:
    """The summary, from the files under ``results_root``."""
    root = Path(results_root)
    rows = [r for r in (_table_row(root, ds) for ds in PRESETS) if r]
    out = [CAVEAT, ""]
    if rows:
        out += ["Mean F1 (%) over the runs (± sd), HiVA's AVE gain over the vision-only Baseline "
                "paired per (seed, fold) run with its 95% t-interval, the paper's gain, and the "
                "table rows whose gain over the Baseline is resolved (Holm over the rows):", "",
                PT.markdown_table(pd.DataFrame(rows)), ""]
    claims = _claims(root)
    if claims is not None:
        out += ["The claims ledger (`results/<preset>/claims.md`, rules in `docs/claims.md`): "
                "runs as units; each claim's family is its parts on every preset, under Holm "
                "(family p); a verdict must hold under the 95% interval over the runs and "
                "under the one over seeds x folds (crossed random effects: none with one "
                "fold), else it reads 'not resolved (holds within runs only)'; the interval "
                "compared with the paper's effect where it prints one:", "",
                PT.markdown_table(claims), ""]
    for part in (_run_counts(root), _mechanism(root), _alternatives(root), _noise(root)):
        if part:
            out += [part, ""]
    return "\n".join(out).rstrip() + "\n"


def write_summary(results_root: str | Path) -> Path:
    """Write ``results_root/SUMMARY.md``; returns its path."""
    path = Path(results_root) / "SUMMARY.md"
    atomic_write_text(summary_markdown(results_root), path)
    return path


def readme_block(readme: str, start: str = START, end: str = END) -> str:
    """The text between a file's two marker lines (one error when they are missing)."""
    m = re.search(re.escape(start) + r"\n(.*?)" + re.escape(end), readme, re.S)
    if not m:
        raise ValueError(f"no block between {start!r} and {end!r}: add the two lines where "
                         "the generated text goes")
    return m.group(1)


def sync_block(path: str | Path, text: str, start: str = START, end: str = END) -> None:
    """Replace the block between ``path``'s markers by ``text``."""
    doc = Path(path).read_text()
    block = readme_block(doc, start, end)
    atomic_write_text(doc.replace(start + "\n" + block + end, start + "\n" + text + end),
                      Path(path))


def sync_readme(readme_path: str | Path, summary_path: str | Path) -> None:
    """Replace the README's summary block by the summary file's text."""
    sync_block(readme_path, Path(summary_path).read_text())


def main(argv: list[str] | None = None) -> int:
    root = Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results-root", type=Path, default=root / "results")
    ap.add_argument("--readme", action="store_true", help="copy the summary into README.md")
    args = ap.parse_args(argv)
    path = write_summary(args.results_root)
    print(f"wrote {path}")
    if args.readme:
        sync_readme(root / "README.md", path)
        sync_block(root / MECHANISM_DOC, mechanism_markdown(args.results_root), *MECHANISM_MARKS)
        print(f"copied into {root / 'README.md'}; the diagnosis tables into {MECHANISM_DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
