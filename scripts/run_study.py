"""Run the embedded study end to end: papermill over the numbered notebooks.

    python scripts/run_study.py                       # SynthFACS default: synth-disfa, fold 1
    python scripts/run_study.py --dataset synth-bp4d --all-folds --seeds 0 1 2
    python scripts/run_study.py --only 01_prepare_data 02_train_stage1 --smoke

Notebooks run in order: data (01), stage 1 (02), stage 2 of HiVA (03), every ablation row (04,
reusing the runs of 02/03), the report (05), figures (06), efficiency (07), inference (08),
the paper's claims tested (09).
Finished runs are reused, so a second call only redoes what is missing. Executed notebooks are
written to results/notebooks/<dataset>/ so their outputs can be read.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import papermill as pm

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["01_prepare_data", "02_train_stage1", "03_train_stage2", "04_ablations",
             "05_report", "06_figures", "07_efficiency", "08_inference", "09_claims"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dataset", default="synth-disfa")
    ap.add_argument("--smoke", action="store_true", help="tiny model, a few steps")
    ap.add_argument("--all-folds", action="store_true",
                    help="ablations on every test fold (default: fold 1 only, minutes)")
    ap.add_argument("--seeds", nargs="*", type=int, default=[0],
                    help="training seeds of the ablations (notebook 04; default: 0)")
    ap.add_argument("--only", nargs="*", help="notebook names to run (default: all)")
    ap.add_argument("--root", type=Path, help="put data/, runs/, results/, figures/ under this "
                    "folder instead of the project (benchmarks, trials)")
    args = ap.parse_args(argv)
    shared = {"dataset": args.dataset, "smoke": args.smoke,
              "folds": None if args.all_folds else [1], "seeds": args.seeds}
    if args.root:
        shared.update({f"{k}_root": str(args.root / k)
                       for k in ("data", "runs", "results", "figures")})
    out = (args.root or ROOT) / "results" / "notebooks" / args.dataset
    out.mkdir(parents=True, exist_ok=True)
    for name in NOTEBOOKS:
        if args.only and name not in args.only:
            continue
        path = ROOT / "notebooks" / f"{name}.ipynb"
        accepted = pm.inspect_notebook(str(path))  # pass each notebook only its own parameters
        params = {k: v for k, v in shared.items() if k in accepted}
        t0 = time.time()
        print(f"== {name} {params}", flush=True)
        pm.execute_notebook(path, out / f"{name}.ipynb", parameters=params, cwd=str(ROOT),
                            progress_bar=False, log_output=True)
        print(f"== {name} done in {time.time() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
