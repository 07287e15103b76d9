"""Benchmark: the embedded miniature of Tables IV, V and VI on this CPU (goal <= 90 minutes).

Runs, for synth-bp4d, synth-disfa and synth-gft, notebook 01 (data) and notebook 04 (every row
of the table on every test fold, for the seeds of ``SEEDS``), then notebook 05 (the report),
through scripts/run_study.py, and prints the time of each data set beside the 90-minute goal
(which covers all three) and the total. Finished runs are reused, so only a run on fresh
folders measures the full cost: by default everything goes to a temporary folder;
``--into-project`` writes into the project's committed runs/, results/ (run_study.py
``--into-committed``; data in data/prepared) instead, and ``--root DIR``
into DIR/data, DIR/runs, DIR/results (kept; the committed miniature came from such a run).

The measurement is written to ``<results root>/bench_ablation.csv`` (one row per data set and
a total row; an earlier measurement is kept: the new one goes to ``bench_ablation-v2.csv``,
``-v3``...). With the default temporary folder, whose results are deleted at the end, it goes
to the project's results/.

    python scripts/bench_ablation.py
    python scripts/bench_ablation.py --into-project
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_study  # noqa: E402

from hiva_lib.engine.ablation import default_workers  # noqa: E402
from hiva_lib.integrity import atomic_write_text, free_version  # noqa: E402

DATASETS = ("synth-bp4d", "synth-disfa", "synth-gft")
GOAL_MIN = 90.0  # the whole miniature (all three tables, the seeds below), the SynthFACS budget
# seeds per table: 3 on every fold of Table IV; Table V one seed on its 3 folds; Table VI (one
# test fold) one seed (the budget)
SEEDS = {"synth-bp4d": [0, 1, 2], "synth-disfa": [0], "synth-gft": [0]}


def measurement(times: dict[str, float], mode: str) -> pd.DataFrame:
    """One row per data set and a total row: seconds, minutes, the goal and the share of it.
    ``total_within_goal`` is empty unless all three tables were measured (the goal is theirs)."""
    rows = [dict(dataset=ds, seconds=round(t, 1)) for ds, t in times.items()]
    rows.append(dict(dataset="total", seconds=round(sum(times.values()), 1)))
    table = pd.DataFrame(rows)
    table["minutes"] = (table["seconds"] / 60).round(2)
    table["goal_minutes_all"] = GOAL_MIN
    table["share_of_goal"] = (table["minutes"] / GOAL_MIN).round(3)
    complete = set(times) == set(DATASETS)
    table["total_within_goal"] = (table["minutes"].iat[-1] <= GOAL_MIN) if complete else None
    table["mode"] = mode
    table["date"] = time.strftime("%Y-%m-%d %H:%M:%S")
    table["cpus"] = os.cpu_count()
    table["torch_threads"] = torch.get_num_threads()
    table["runs_at_once"] = default_workers("auto")  # notebook 04's default, used here
    return table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--into-project", action="store_true")
    where.add_argument("--root", type=Path, help="data/, runs/, results/ under this folder")
    ap.add_argument("--datasets", nargs="*", default=list(DATASETS))
    args = ap.parse_args()
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if args.into_project:
            root, results, mode = ["--into-committed"], run_study.ROOT / "results", "into-project"
        else:
            base = args.root or Path(tmp)
            root, mode = ["--root", str(base)], "root" if args.root else "temporary"
            results = base / "results" if args.root else run_study.ROOT / "results"
        for ds in args.datasets:
            t0 = time.time()
            seeds = [str(s) for s in SEEDS[ds]]
            run_study.main(["--dataset", ds, "--all-folds", "--seeds", *seeds, *root, "--no-check",
                            "--only", "01_prepare_data", "04_ablations", "05_report"])
            times[ds] = time.time() - t0
            done = sum(times.values()) / 60
            print(f"{ds}: {times[ds] / 60:.1f} min ({times[ds] / 60 / GOAL_MIN:.0%} of the "
                  f"{GOAL_MIN:.0f}-min goal for all three); so far {done:.1f} / "
                  f"{GOAL_MIN:.0f} min", flush=True)
    total = sum(times.values()) / 60
    verdict = ("met" if total <= GOAL_MIN else "NOT met") if set(times) == set(DATASETS) else \
        f"not decided ({len(times)} of the {len(DATASETS)} tables measured)"
    print("miniature Tables IV-VI: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in times.items())
          + f"; total {total:.1f} min against the goal of <= {GOAL_MIN:.0f} min: {verdict}")
    path = free_version(results / "bench_ablation.csv")
    atomic_write_text(measurement(times, mode).to_csv(index=False), path)
    print(f"measurement written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
