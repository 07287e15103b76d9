"""Run the embedded study end to end: papermill over the numbered notebooks, then the
reproduction check against the committed results.

    python scripts/run_study.py                       # SynthFACS default: synth-disfa, fold 1
    python scripts/run_study.py --dataset synth-bp4d --all-folds --seeds 0 1 2
    python scripts/run_study.py --only 01_prepare_data 02_train_stage1 --smoke
    python scripts/run_study.py --into-committed      # regenerate the committed reference

Notebooks run in order: data (01), stage 1 (02), stage 2 of HiVA (03), every ablation row (04,
reusing the runs of 02/03), the report (05), figures (06), efficiency (07), inference (08),
the mechanism diagnostics (09), the paper's claims tested (10, after 09: C5 reads its
mechanism.csv), the reproduction check (11).

Where it writes. By default every output goes to the git-ignored ``study_out/``: runs/,
results/, figures/ and the executed notebooks (notebooks/<dataset>/); the prepared data to the
shared data/prepared/. The reports, claims and figures are computed from the runs of that one
root, so a fresh clone's ``git status`` stays clean. ``--smoke`` writes all of it, its data
included, under study_out/_smoke/, ``--root DIR`` under DIR. ``--into-committed`` writes the
committed reference instead (runs/, results/, figures/ of the project): the deliberate way to
regenerate it.

The end: each number the run produced (every run's F1, mean and per AU) beside the committed
one, its noise band from the measured seed noise and "identical" / "reproduced" / "differs"
(hiva_lib/study/reproduce.py states the rule); the exit status is 1 when a number differs
beyond its band (smoke runs were trained with other settings: each reads "other settings",
status 0), then the versions of python, torch, timm, transformers and numpy beside those that
made the committed results (where they differ, "identical" cannot be expected; the locked
versions: ``bash scripts/install.sh``). Finished runs are reused, so a second call only
redoes what is missing.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import papermill as pm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hiva_lib.project import COMMITTED_ROOTS, OUTPUT_ROOT, default_roots  # noqa: E402

NOTEBOOKS = ["01_prepare_data", "02_train_stage1", "03_train_stage2", "04_ablations",
             "05_report", "06_figures", "07_efficiency", "08_inference",
             "09_mechanism", "10_claims", "11_reproduce"]  # C5 (in 10) reads mechanism.csv (09)


def output_roots(args: argparse.Namespace) -> tuple[dict[str, str], Path]:
    """The notebooks' root parameters and the folder of the executed notebooks."""
    if args.into_committed:
        return ({k: str(ROOT / v) for k, v in COMMITTED_ROOTS.items()},
                ROOT / "results" / "notebooks" / args.dataset)  # results/notebooks: ignored
    if args.root:
        return ({f"{k}_root": str(args.root / k) for k in ("data", "runs", "results", "figures")},
                args.root / "notebooks" / args.dataset)
    # the notebooks' own defaults (hiva_lib.project.default_roots): a notebook run by hand
    # in JupyterLab reads and writes the same folders as the study command, smoke size apart
    roots = {k: str(ROOT / v) for k, v in default_roots(args.smoke).items()}
    return roots, Path(roots["runs_root"]).parent / "notebooks" / args.dataset


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dataset", default="synth-disfa")
    ap.add_argument("--smoke", action="store_true", help="tiny model, a few steps")
    ap.add_argument("--all-folds", action="store_true",
                    help="ablations on every test fold (default: fold 1 only, minutes)")
    ap.add_argument("--seeds", nargs="*", type=int, default=[0],
                    help="training seeds of the ablations (notebook 04; default: 0)")
    ap.add_argument("--only", nargs="*", help="notebook names to run (default: all)")
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--root", type=Path, help="put data/, runs/, results/, figures/ under "
                       f"this folder (default: runs/, results/, figures/ under {OUTPUT_ROOT}/)")
    where.add_argument("--into-committed", action="store_true",
                       help="write the committed reference (runs/, results/, figures/ of the "
                       "project) instead: regenerating it on purpose")
    ap.add_argument("--no-check", action="store_true",
                    help="skip the reproduction check at the end (benchmarks)")
    args = ap.parse_args(argv)
    if args.smoke and args.into_committed:
        ap.error("--smoke runs are not the committed reference: drop --into-committed")
    return args


def reproduction_check(results_root: str, dataset: str) -> int:
    """Print each number of this run beside the committed one; 1 when one differs."""
    from hiva_lib.study import reproduce as R

    try:
        table = R.reproduction_table(results_root, ROOT / "results", [dataset])
    except R.ReproduceError as e:
        print(f"== reproduction check: not possible ({e})", flush=True)
        return 0
    print("== reproduction check: this run's F1 (points) beside the committed results/ "
          f"(noise: {table['noise'].iat[0]})\n{R.format_table(table)}", flush=True)
    print(f"== {R.environment_report(dataset, ROOT / 'results')}", flush=True)
    return R.exit_status(table)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    roots, out = output_roots(args)
    shared = {"dataset": args.dataset, "smoke": args.smoke,
              "folds": None if args.all_folds else [1], "seeds": args.seeds, **roots}
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
    if args.no_check or args.into_committed:
        return 0  # the committed reference is not compared with itself
    return reproduction_check(roots["results_root"], args.dataset)


if __name__ == "__main__":
    sys.exit(main())
