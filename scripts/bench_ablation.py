"""Benchmark: the embedded miniature of Tables IV, V and VI on this CPU (goal <= 60 minutes).

Runs, for synth-bp4d, synth-disfa and synth-gft, notebook 01 (data) and notebook 04 (every row
of the table on every test fold), then notebook 05 (the report), through scripts/run_study.py,
and prints the time of each data set and the total. Finished runs are reused, so only a run on
fresh folders measures the full cost: by default everything goes to a temporary folder;
``--into-project`` writes into the project's data/, runs/, results/ instead (the committed
miniature tables come from such a run).

    python scripts/bench_ablation.py
    python scripts/bench_ablation.py --into-project
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run_study  # noqa: E402

DATASETS = ("synth-bp4d", "synth-disfa", "synth-gft")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--into-project", action="store_true")
    ap.add_argument("--datasets", nargs="*", default=list(DATASETS))
    args = ap.parse_args()
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = [] if args.into_project else ["--root", tmp]
        for ds in args.datasets:
            t0 = time.time()
            run_study.main(["--dataset", ds, "--all-folds", *root, "--only",
                            "01_prepare_data", "04_ablations", "05_report"])
            times[ds] = time.time() - t0
            print(f"{ds}: {times[ds] / 60:.1f} min", flush=True)
    total = sum(times.values())
    print("miniature Tables IV-VI: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in times.items())
          + f"; total {total / 60:.1f} min (goal <= 60 min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
