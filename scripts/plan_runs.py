"""The power of the runs behind each claim, and how many runs a resolution needs.

For every claim part of a data set's ledger (notebook 10, :mod:`hiva_lib.study.claims`) it
prints, from the committed (or given) results: the runs, the mean and sd of the per-run
values, the 95% interval's half-width now, the smallest effect these runs detect with 80%
power (two-sided 5%, and at the first Holm step's level), the (seed, fold) pairs that 80% power
at 1 F1 point needs (gains), and the pairs for a 95% half-width of 1 and 2 units.

    python scripts/plan_runs.py                          # every preset with results
    python scripts/plan_runs.py --dataset synth-disfa --half-widths 0.5 1 2
    python scripts/plan_runs.py --results-root study_out/results --csv plan.csv
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from hiva_lib.study import claim_measures as M
from hiva_lib.study import claims as C

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dataset", nargs="*", help="default: every data set under results-root")
    ap.add_argument("--results-root", type=Path, default=ROOT / "results")
    ap.add_argument("--half-widths", nargs="*", type=float, default=[1.0, 2.0])
    ap.add_argument("--csv", type=Path, help="also write the table here")
    args = ap.parse_args(argv)
    names = args.dataset or sorted(p.parent.name for p in args.results_root.glob("*/claims.csv"))
    if not names:
        print(f"{args.results_root}: no data set with results; pass --results-root or run "
              "notebooks 04 and 09 first", file=sys.stderr)
        return 2
    tables = []
    for ds in names:
        table = C.power_table(M.ClaimInputs(ds, args.results_root), tuple(args.half_widths))
        tables.append(table.assign(dataset=ds))
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(f"\n== {ds}\n" + table.round(3).to_string(index=False))
    if args.csv:
        pd.concat(tables).to_csv(args.csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
