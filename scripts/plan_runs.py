"""The power of the runs behind each claim, and how many runs a resolution needs.

For every claim part of a data set's ledger (notebook 10, :mod:`hiva_lib.study.claims`) it
prints, from the committed (or given) results: the runs, the mean and sd of the per-run
values, the 95% interval's half-width now, the smallest effect these runs detect with 80%
power (two-sided 5%, and at the first Holm step's level), the (seed, fold) pairs that 80% power
at 1 F1 point needs (gains), and the pairs for a 95% half-width of 1 and 2 units.

With ``--runs`` it prints instead the runs the ledger's design needs
(:mod:`hiva_lib.study.run_plan`: the matched-training control and no_language beside HiVA and
the Baseline on every preset, three subject-disjoint folds, the causal tests of the collapse),
how many of them the results hold, and the estimated time of the rest, with the notebook-04
parameters that train each group (scripts/regenerate_results.sh runs them).

    python scripts/plan_runs.py                          # every preset with results
    python scripts/plan_runs.py --dataset synth-disfa --half-widths 0.5 1 2
    python scripts/plan_runs.py --results-root study_out/results --csv plan.csv
    python scripts/plan_runs.py --runs --at-once 2       # the runs still to train
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from hiva_lib.study import claim_measures as M
from hiva_lib.study import claims as C
from hiva_lib.study import run_plan

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dataset", nargs="*", help="default: every data set under results-root")
    ap.add_argument("--results-root", type=Path, default=ROOT / "results")
    ap.add_argument("--half-widths", nargs="*", type=float, default=[1.0, 2.0])
    ap.add_argument("--csv", type=Path, help="also write the table here")
    ap.add_argument("--runs", action="store_true",
                    help="print the runs the design needs and their estimated time instead")
    ap.add_argument("--at-once", type=int, default=2, help="runs at a time (--runs)")
    ap.add_argument("--data-root", type=Path, default=ROOT / "data" / "prepared",
                    help="--runs: results of another data version than the data prepared "
                         "here are trained again (not checked where it is not prepared)")
    args = ap.parse_args(argv)
    if args.runs:
        return print_runs(args.results_root, args.at_once, args.csv, args.data_root)
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


def print_runs(results_root: Path, at_once: int, csv: Path | None, data_root: Path) -> int:
    """The run plan of :mod:`hiva_lib.study.run_plan`, its total and the notebook calls."""
    if at_once < 1:
        print(f"--at-once {at_once}: give at least 1 run at a time", file=sys.stderr)
        return 2
    missing = [ds for ds in run_plan.PRESETS if not (data_root / ds / "index.csv").exists()]
    if missing:
        print(f"{data_root}: {', '.join(missing)} not prepared there, so their results count "
              "as done whatever data version they record (pass --data-root to check it)\n")
    table = run_plan.plan_table(results_root, at_once, data_root)
    shown = table.drop(columns=["notebook_yaml", "why"])
    with pd.option_context("display.width", 200, "display.max_columns", 20,
                           "display.max_colwidth", 70):
        print(shown.round(1).to_string(index=False))
    minutes = table["minutes"].sum(min_count=1)
    known = "" if table["minutes"].notna().all() else \
        " (groups without recorded times left out)"
    print(f"\n{int(table['to_train'].sum())} runs to train of {int(table['needed'].sum())} "
          f"needed, {int(table['stage1_to_train'].sum())} new stage-1 runs among them; about "
          f"{minutes / 60:.1f} h at {at_once} at once{known}, from the median times that "
          f"ablation_status.csv recorded on the machine that ran them (a stage-2 time for "
          "every run: baseline_s2, with no text branch, takes less).\n\nNotebook 04 calls:")
    for r in table[table["to_train"] > 0].itertuples():
        print(f"  {r.dataset}: -y '{r.notebook_yaml}'   # {r.why}")
    if csv:
        table.to_csv(csv, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
