"""The cluster path at CI size: the smoke grid as submitit jobs against the local executor.

Runs every row of Tables IV-VI (smoke size, synth-disfa, the folds given; default fold 1) twice
into a temporary folder: with notebook 04's local executor (one run after the other, every
thread) and with ``executor="submitit-local"`` (each run a real subprocess job, submitted as
on a cluster: the fold's stage-1 job first, the other runs waiting for it). Prints each run's
status and whether its per-AU F1 equals the local executor's; exits 1 if any run failed or
differs. No cluster is needed: submitit's local executor stands in for SLURM (docs/cluster.md).

    python scripts/check_cluster.py
    python scripts/check_cluster.py --folds 1 2 3 --keep /tmp/cluster_check
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from hiva_lib import variants
from hiva_lib.data.prepare import prepare_dataset
from hiva_lib.engine.ablation import run_ablation


def f1_of(results_root: Path, variant: str, fold: int) -> dict:
    path = results_root / "synth-disfa" / variant / "seed0" / f"fold{fold}" / "metrics.json"
    return json.loads(path.read_text())["f1"]


def check(root: Path, folds: list[int]) -> pd.DataFrame:
    """Both executors on the smoke grid; one row per run with the comparison."""
    data_root = root / "data"
    prepare_dataset("synth-disfa", data_root, smoke=True, progress=False)
    tables, seconds = {}, {}
    for executor in ("local", "submitit-local"):
        t0 = time.time()
        tables[executor] = run_ablation(
            "synth-disfa", list(variants.TABLE_ROWS), folds, smoke=True, executor=executor,
            workers=1, data_root=str(data_root), runs_root=str(root / executor / "runs"),
            results_root=str(root / executor / "results"))
        seconds[executor] = round(time.time() - t0, 1)
    rows = []
    for r in tables["submitit-local"].itertuples():
        same = f1_of(root / "local" / "results", r.variant, r.fold) == f1_of(
            root / "submitit-local" / "results", r.variant, r.fold)
        rows.append(dict(variant=r.variant, fold=r.fold, status=r.status, job_id=r.job_id,
                         mean_f1=round(r.mean_f1, 4), f1_equal_to_local=same))
    print(f"seconds: {seconds}")
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folds", type=int, nargs="+", default=[1])
    ap.add_argument("--keep", type=Path, help="a folder to keep everything in (default: a "
                    "temporary one, deleted at the end)")
    args = ap.parse_args(argv)
    if args.keep:
        table = check(args.keep, args.folds)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            table = check(Path(tmp), args.folds)
    print(table.to_string(index=False))
    ok = (table.status == "done").all() and table.f1_equal_to_local.all()
    print("every run done, per-AU F1 equal to the local executor's" if ok
          else "FAILED: a run failed or differs from the local executor's")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
