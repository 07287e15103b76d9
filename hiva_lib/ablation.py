"""The ablations of Tables IV-VI: every variant preset over the folds and seeds of a data set.

Resumable: finished runs are reused (their DONE marker and metrics), a run that failed or was
killed resumes from its last checkpoint when called again. Failures are not hidden: every run's
status is written to ``results/<dataset>/ablation_status.csv`` and the call raises at the end if
any run failed.
"""
from __future__ import annotations

import dataclasses
import time
import traceback

import pandas as pd

from . import variants
from .checkpoint import atomic_write_text
from .config import make_config
from .train import aggregate_folds, load_data, run_variant


def run_ablation(dataset: str, variant_slugs: list[str] | None = None,
                 folds: list[int] | None = None, seeds: list[int] | tuple[int, ...] = (0,),
                 smoke: bool = False, **overrides) -> pd.DataFrame:
    """Run ``variant_slugs`` (default: all eight rows) on ``folds`` (default: all test folds)
    for each seed; return (and write) the status table."""
    slugs = list(variant_slugs or variants.VARIANTS)
    unknown = [s for s in slugs if s not in variants.VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from {list(variants.VARIANTS)}")
    # Baseline first: it is the shared stage-1 model every other variant starts from.
    slugs.sort(key=lambda s: s != "baseline")
    base_cfg = make_config(dataset, smoke=smoke, **overrides)
    data = load_data(base_cfg)
    folds = list(folds or data.test_folds)
    status = []
    for seed in seeds:
        for fold in folds:
            for slug in slugs:
                cfg = dataclasses.replace(base_cfg, seed=seed, fold=fold, variant=slug)
                t0 = time.time()
                row = dict(variant=slug, row_name=variants.VARIANTS[slug].row_name, fold=fold,
                           seed=seed)
                try:
                    res = run_variant(cfg, data)
                    row.update(status="reused" if res.skipped else "done",
                               mean_f1=res.metrics["mean_f1"], error="")
                except Exception as e:  # recorded and re-raised below, never swallowed
                    row.update(status="failed", mean_f1=float("nan"), error=repr(e))
                    traceback.print_exc()
                row["seconds"] = round(time.time() - t0, 1)
                status.append(row)
                print(f"[{row['status']}] {row['row_name']}, fold {fold}, seed {seed}: "
                      f"mean F1 {row['mean_f1']:.3f} ({row['seconds']} s)", flush=True)
    table = pd.DataFrame(status)
    out = base_cfg.results_root
    atomic_write_text(table.to_csv(index=False), f"{out}/{dataset}/ablation_status.csv")
    for seed in seeds:
        for slug in slugs:
            if ((table.variant == slug) & (table.seed == seed) & (table.status != "failed")).any():
                aggregate_folds(out, dataset, slug, seed)
    failed = table[table.status == "failed"]
    if len(failed):
        raise RuntimeError(f"{len(failed)} ablation runs failed (see {out}/{dataset}/"
                           f"ablation_status.csv); call again to rerun them:\n"
                           + failed[["row_name", "fold", "seed", "error"]].to_string())
    return table
