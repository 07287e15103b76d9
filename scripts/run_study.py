"""Run the embedded study end to end: papermill over the numbered notebooks.

    python scripts/run_study.py                      # SynthFACS default (synth-disfa, fold 1)
    python scripts/run_study.py --dataset synth-bp4d --smoke

Executed notebooks are written to results/notebooks/<dataset>/ so their outputs can be read.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import papermill as pm

ROOT = Path(__file__).resolve().parents[1]
STEPS: list[tuple[str, dict]] = [
    ("01_prepare_data", {}),
    ("02_train_stage1", {}),
    ("03_train_stage2", {}),
]


def _only_known(name: str, roots: dict) -> dict:
    # 01 takes data_root only; the training notebooks take all three
    return {"data_root": roots["data_root"]} if roots and name.startswith("01") else roots


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dataset", default="synth-disfa")
    ap.add_argument("--smoke", action="store_true", help="tiny model, a few steps")
    ap.add_argument("--only", nargs="*", help="notebook names to run (default: all)")
    ap.add_argument("--root", type=Path, help="put data/, runs/, results/ under this folder "
                    "instead of the project (benchmarks, trials)")
    args = ap.parse_args(argv)
    roots = {}
    if args.root:
        roots = {k: str(args.root / v) for k, v in
                 (("data_root", "data"), ("runs_root", "runs"), ("results_root", "results"))}
    out = (args.root or ROOT) / "results" / "notebooks" / args.dataset
    out.mkdir(parents=True, exist_ok=True)
    for name, extra in STEPS:
        if args.only and name not in args.only:
            continue
        t0 = time.time()
        print(f"== {name} ({args.dataset})", flush=True)
        pm.execute_notebook(ROOT / "notebooks" / f"{name}.ipynb", out / f"{name}.ipynb",
                            parameters={"dataset": args.dataset, "smoke": args.smoke, **extra,
                                        **_only_known(name, roots)},
                            cwd=str(ROOT), progress_bar=False, log_output=True)
        print(f"== {name} done in {time.time() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
