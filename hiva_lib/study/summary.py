"""``results/SUMMARY.md``: the embedded study's results in a few tables, generated from the
files in ``results/`` (no number is typed by hand), and the README's results block, which is
a copy of it between two marker lines (:func:`sync_readme`; a test checks that they agree).

    python -m hiva_lib.study.summary            # write results/SUMMARY.md
    python -m hiva_lib.study.summary --readme   # and copy it into README.md

What it reads, per SynthFACS preset: ``report/summary.csv`` and ``report/gains.csv``
(notebook 05), ``claims.csv`` (notebook 09), ``mechanism.csv`` (notebook 10, when present);
and ``bench_noise-v2.csv`` (the newest noise measurement). Missing inputs leave their rows out.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from hiva_lib.engine.checkpoint import atomic_write_text
from hiva_lib.study import paper_tables as PT

PRESETS = ("synth-bp4d", "synth-disfa", "synth-gft")
START, END = "<!-- summary:start -->", "<!-- summary:end -->"
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
                if r.resolved is True or r.resolved == "True"]

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
        cells.setdefault("claim", [f"{r.claim} {r.statement}" for r in t.itertuples()])
    if not cells:
        return None
    return pd.DataFrame({"claim": cells.pop("claim"), **cells})


def _claim_cell(r) -> str:
    if str(r.reason).startswith("no results"):
        return "not run"
    text = f"**{r.verdict}**" if r.verdict != "not resolved" else r.verdict
    if np.isfinite(r.value):
        ci = f" [{r.low:.2f}, {r.high:.2f}]" if np.isfinite(r.low) else ""
        text += f": {r.value:+.2f}{ci}, {int(r.n)} run(s)"
    parts = getattr(r, "parts_resolved", "")  # claims tables written before it: absent
    if isinstance(parts, str) and parts and not parts.endswith(" of 1"):
        text += f", {parts} parts resolved"
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


def _mechanism(root: Path) -> str | None:
    lines = []
    for ds in PRESETS:
        t = _csv(root / ds / "mechanism.csv")
        if t is None or "z_cosine" not in t:
            continue
        last = t[t["epoch"] == t.groupby(["variant", "seed", "fold"])["epoch"]
                 .transform("max")]
        first = t[t["epoch"] == 0]
        parts = [f"{v} {first[first.variant == v]['z_cosine'].mean():.3f} -> "
                 f"{g['z_cosine'].mean():.3f} ({len(g)} runs)" for v, g in last.groupby("variant")]
        lines.append(f"- {ds}: " + "; ".join(parts))
    if not lines:
        return None
    return ("Mean off-diagonal cosine of the AU embeddings Z before stage 2 -> after it "
            "(`mechanism.csv`, notebook 10):\n\n" + "\n".join(lines))


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
        out += ["The claims ledger (`results/<preset>/claims.md`, rules in `docs/claims.md`: "
                "runs as units, Holm within a claim's parts; the interval compared with the "
                "paper's effect where it prints one):", "", PT.markdown_table(claims), ""]
    for part in (_mechanism(root), _alternatives(root), _noise(root)):
        if part:
            out += [part, ""]
    return "\n".join(out).rstrip() + "\n"


def write_summary(results_root: str | Path) -> Path:
    """Write ``results_root/SUMMARY.md``; returns its path."""
    path = Path(results_root) / "SUMMARY.md"
    atomic_write_text(summary_markdown(results_root), path)
    return path


def readme_block(readme: str) -> str:
    """The text between the README's summary markers (one error when they are missing)."""
    m = re.search(re.escape(START) + r"\n(.*?)" + re.escape(END), readme, re.S)
    if not m:
        raise ValueError(f"README.md has no block between {START!r} and {END!r}: add the two "
                         "lines where the results summary goes")
    return m.group(1)


def sync_readme(readme_path: str | Path, summary_path: str | Path) -> None:
    """Replace the README's summary block by the summary file's text."""
    readme = Path(readme_path).read_text()
    block = readme_block(readme)
    text = Path(summary_path).read_text()
    atomic_write_text(readme.replace(START + "\n" + block + END, START + "\n" + text + END),
                      Path(readme_path))


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
        print(f"copied into {root / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
