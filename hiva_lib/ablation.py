"""The ablations of Tables IV-VI: every variant preset over the folds and seeds of a data set.

Resumable: finished runs are reused (their DONE marker and metrics), a run that failed or was
killed resumes from its last checkpoint when called again. Failures are not hidden: the status
of every run is written to ``results/<dataset>/ablation_status.csv`` as it changes (``started``
before a run, then ``done``, ``reused`` or ``failed``; a ``started`` row left behind means the
kernel died during that run), merged with the rows of earlier calls (one row per variant, seed
and fold), and the call raises at the end if any of its runs failed.
"""
from __future__ import annotations

import dataclasses
import time
import traceback
from pathlib import Path

import pandas as pd

from . import variants
from .checkpoint import atomic_write_text
from .config import make_config
from .train import aggregate_folds, load_data, run_variant

STATUS_KEY = ["variant", "seed", "fold"]
STATUS_COLUMNS = ["variant", "row_name", "fold", "seed", "status", "mean_f1", "error",
                  "seconds", "updated"]


class AblationStatusError(ValueError):
    """An existing ablation_status.csv cannot be read or merged."""


def read_status(path: Path) -> pd.DataFrame:
    """The status table of earlier calls (empty if none), or one error naming the file."""
    if not path.exists():
        return pd.DataFrame(columns=STATUS_COLUMNS)
    try:
        table = pd.read_csv(path, keep_default_na=False, na_values=[""])
        missing = [c for c in [*STATUS_KEY, "status"] if c not in table.columns]
        if missing:
            raise ValueError(f"columns {missing} missing")
        table[["seed", "fold"]] = table[["seed", "fold"]].astype(int)
    except (ValueError, pd.errors.ParserError) as e:
        raise AblationStatusError(
            f"{path}: unreadable ablation status table ({e}). It only records earlier runs "
            "(the runs themselves are in runs/ and results/): move it away or delete it and "
            "call again.") from None
    return table.reindex(columns=STATUS_COLUMNS)


def merge_status(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """``old`` with the rows of ``new`` added or replacing those of the same (variant, seed,
    fold), sorted by seed, fold and variant."""
    both = pd.concat([old, new.reindex(columns=STATUS_COLUMNS)], ignore_index=True)
    both = both.drop_duplicates(STATUS_KEY, keep="last")
    return both.sort_values(["seed", "fold", "variant"], kind="stable").reset_index(drop=True)


def run_ablation(dataset: str, variant_slugs: list[str] | None = None,
                 folds: list[int] | None = None, seeds: list[int] | tuple[int, ...] = (0,),
                 smoke: bool = False, **overrides) -> pd.DataFrame:
    """Run ``variant_slugs`` (default: all eight rows) on ``folds`` (default: all test folds)
    for each seed; return this call's status rows. The status file holds every run ever
    recorded for the data set, updated after each run."""
    slugs = list(variant_slugs or variants.VARIANTS)
    unknown = [s for s in slugs if s not in variants.VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from {list(variants.VARIANTS)}")
    # Baseline first: it is the shared stage-1 model every other variant starts from.
    slugs.sort(key=lambda s: s != "baseline")
    base_cfg = make_config(dataset, smoke=smoke, **overrides)
    out = base_cfg.results_root
    status_path = Path(out) / dataset / "ablation_status.csv"
    recorded = read_status(status_path)  # a bad file stops us before any run
    data = load_data(base_cfg)
    folds = list(folds or data.test_folds)
    status: list[dict] = []

    def record(row: dict) -> None:
        nonlocal recorded
        recorded = merge_status(recorded, pd.DataFrame([row]))
        atomic_write_text(recorded.to_csv(index=False), status_path)

    for seed in seeds:
        for fold in folds:
            for slug in slugs:
                cfg = dataclasses.replace(base_cfg, seed=seed, fold=fold, variant=slug)
                t0 = time.time()
                row = dict(variant=slug, row_name=variants.VARIANTS[slug].row_name, fold=fold,
                           seed=seed, status="started", mean_f1=float("nan"), error="",
                           seconds=float("nan"), updated=time.strftime("%Y-%m-%d %H:%M:%S"))
                record(row)  # a kernel killed during this run leaves "started"
                # one stage-1 run per (seed, fold), even when every variant is rerun
                # ("version"): the variants after the first reuse the one just made
                stage1 = "skip" if slug != slugs[0] and cfg.if_exists == "version" else None
                try:
                    res = run_variant(cfg, data, stage1_if_exists=stage1)
                    row.update(status="reused" if res.skipped else "done",
                               mean_f1=res.metrics["mean_f1"])
                except Exception as e:  # recorded and re-raised below, never swallowed
                    row.update(status="failed", error=repr(e))
                    traceback.print_exc()
                row.update(seconds=round(time.time() - t0, 1),
                           updated=time.strftime("%Y-%m-%d %H:%M:%S"))
                record(row)
                status.append(row)
                print(f"[{row['status']}] {row['row_name']}, fold {fold}, seed {seed}: "
                      f"mean F1 {row['mean_f1']:.3f} ({row['seconds']} s)", flush=True)
    table = pd.DataFrame(status, columns=STATUS_COLUMNS)
    for seed in seeds:
        for slug in slugs:
            if ((table.variant == slug) & (table.seed == seed) & (table.status != "failed")).any():
                aggregate_folds(out, dataset, slug, seed)
    failed = table[table.status == "failed"]
    if len(failed):
        raise RuntimeError(f"{len(failed)} ablation runs failed (see {status_path}); call "
                           "again to rerun them:\n"
                           + failed[["row_name", "fold", "seed", "error"]].to_string())
    return table
