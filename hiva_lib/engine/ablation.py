"""The ablations of Tables IV-VI: every variant preset over the folds and seeds of a data set.

Resumable: finished runs are reused (their DONE marker and metrics), a run that failed or was
killed resumes from its last checkpoint when called again. Failures are not hidden: the status
of every run is written to ``results/<dataset>/ablation_status.csv`` as it changes (``started``
before a run, then ``done``, ``reused`` or ``failed``; a ``started`` row left behind means the
kernel died during that run), merged with the rows of earlier calls (one row per variant, seed
and fold), and the call raises at the end if any of its runs failed.

Runs at once (``workers``): on a CPU, by default two runs share the cores with one thread each,
which on 2 cores finishes the embedded study's stage-2 runs 1.1-1.25x faster than one run on
two threads (docs/report.md); on a GPU, one run at a time. Stage 1 of a (seed, fold) is
trained by that fold's first run; the fold's other runs start once it is finished and reuse
it. Training is bit-reproducible for a given number of threads per run; another number gives
other last digits (the thread count is recorded in each result's provenance).
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
import queue
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from hiva_lib import variants
from hiva_lib.data.prepared import PreparedDataset
from hiva_lib.engine.checkpoint import atomic_write_text
from hiva_lib.engine.config import TrainConfig, make_config
from hiva_lib.engine.distributed import launched_by_torchrun, resolve_device
from hiva_lib.engine.evaluate import aggregate_folds
from hiva_lib.engine.runs import ablation_status_path
from hiva_lib.engine.train import load_data, run_variant

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


def default_workers(device: str) -> int:
    """Runs at once: 2 on a CPU with two or more threads, 1 on a GPU or under torchrun."""
    if launched_by_torchrun() or resolve_device(device).type != "cpu":
        return 1
    return min(2, torch.get_num_threads())


Job = tuple[int, int, str]  # (seed, fold, variant slug)


@dataclass
class StatusFile:
    """``ablation_status.csv``: every run recorded for a data set, rewritten at each change."""

    path: Path
    table: pd.DataFrame

    @classmethod
    def open(cls, path: Path) -> StatusFile:
        return cls(path, read_status(path))  # a bad file stops us before any run

    def record(self, row: dict) -> None:
        self.table = merge_status(self.table, pd.DataFrame([row]))
        atomic_write_text(self.table.to_csv(index=False), self.path)


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def started_row(job: Job) -> dict:
    seed, fold, slug = job
    return dict(variant=slug, row_name=variants.VARIANTS[slug].row_name, fold=fold, seed=seed,
                status="started", mean_f1=float("nan"), error="", seconds=float("nan"),
                updated=_now())


def finished_row(row: dict, t0: float, result: tuple[bool, float] | None,
                 error: BaseException | None) -> dict:
    """``row`` updated with the outcome: (reused?, mean F1) or the error."""
    if error is None:
        row = {**row, "status": "reused" if result[0] else "done", "mean_f1": result[1]}
    else:  # a worker's error carries its traceback as the cause
        traceback.print_exception(error)
        row = {**row, "status": "failed", "error": repr(error)}
    row.update(seconds=round(time.time() - t0, 1), updated=_now())
    print(f"[{row['status']}] {row['row_name']}, fold {row['fold']}, seed {row['seed']}: "
          f"mean F1 {row['mean_f1']:.3f} ({row['seconds']} s)", flush=True)
    return row


_DATA: dict[str, PreparedDataset] = {}  # per worker process: its images are decoded once


def run_one(cfg: TrainConfig, stage1_if_exists: str | None,
            data: PreparedDataset | None = None) -> tuple[bool, float]:
    """One run (stage 1 if needed, stage 2, evaluation): (reused?, mean F1)."""
    if data is None:
        key = f"{cfg.data_root}/{cfg.dataset}"
        if key not in _DATA:
            _DATA[key] = load_data(cfg)
        data = _DATA[key]
    res = run_variant(cfg, data, stage1_if_exists=stage1_if_exists)
    return res.skipped, res.metrics["mean_f1"]


def run_sequential(jobs: list[Job], base_cfg: TrainConfig, data: PreparedDataset,
                   status: StatusFile) -> list[dict]:
    """The runs one after the other; a fold's first run trains (or reuses) its stage 1 with
    ``cfg.if_exists``, the fold's later runs reuse it ("skip")."""
    rows, stage1_ready = [], set()
    for job in jobs:
        seed, fold, slug = job
        row, t0 = started_row(job), time.time()
        status.record(row)  # a kernel killed during this run leaves "started"
        cfg = dataclasses.replace(base_cfg, seed=seed, fold=fold, variant=slug)
        stage1 = "skip" if (seed, fold) in stage1_ready else None
        try:
            result, error = run_one(cfg, stage1, data), None
        except Exception as e:  # recorded and re-raised at the end, never swallowed
            result, error = None, e
        if error is None:
            stage1_ready.add((seed, fold))
        rows.append(finished_row(row, t0, result, error))
        status.record(rows[-1])
    return rows


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)
    os.environ["HIVA_PROGRESS"] = "0"  # bars of parallel runs would interleave; one line each
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """A worker whose notebook kernel was killed stops too (its run resumes from last.pt)."""
    while os.getppid() == parent:
        time.sleep(2)
    os._exit(1)


def _next_job(todo: list[Job], running: dict, stage1_ready: set) -> Job | None:
    """The first job that may start: its fold's stage 1 is finished, or no run of its fold
    is running (then this one trains it)."""
    busy = {(s, f) for s, f, _ in running}
    for seed, fold, slug in todo:
        if (seed, fold) in stage1_ready or (seed, fold) not in busy:
            return seed, fold, slug
    return None


def run_parallel(jobs: list[Job], base_cfg: TrainConfig, status: StatusFile, workers: int
                 ) -> list[dict]:
    """The runs of :func:`run_sequential`, ``workers`` at once in spawned processes of
    ``threads // workers`` threads each; a fold's other runs wait for its stage 1."""
    threads = max(1, torch.get_num_threads() // workers)
    print(f"{workers} runs at once, {threads} thread(s) each", flush=True)
    todo, rows, stage1_ready = list(jobs), [], set()
    running: dict[Job, tuple[dict, float]] = {}
    events: queue.Queue = queue.Queue()
    pool = multiprocessing.get_context("spawn").Pool(workers, _init_worker, (threads,))
    try:
        while todo or running:
            while len(running) < workers and (job := _next_job(todo, running, stage1_ready)):
                todo.remove(job)
                running[job] = (started_row(job), time.time())
                status.record(running[job][0])  # a kernel killed now leaves "started"
                seed, fold, slug = job
                cfg = dataclasses.replace(base_cfg, seed=seed, fold=fold, variant=slug)
                stage1 = "skip" if (seed, fold) in stage1_ready else None
                pool.apply_async(run_one, (cfg, stage1), callback=_put(events, job, None),
                                 error_callback=_put(events, job, "error"))
            job, result, error = events.get()
            if error is None:
                stage1_ready.add(job[:2])
            rows.append(finished_row(*running.pop(job), result, error))
            status.record(rows[-1])
    finally:
        pool.terminate()  # on an interrupt too: a killed run resumes from its last.pt
        pool.join()
    return rows


def _put(events: queue.Queue, job: Job, kind: str | None) -> Callable:
    """A pool callback that posts (job, result, None) or, for errors, (job, None, error)."""
    if kind is None:
        return lambda result: events.put((job, result, None))
    return lambda error: events.put((job, None, error))


def run_ablation(dataset: str, variant_slugs: list[str] | None = None,
                 folds: list[int] | None = None, seeds: list[int] | tuple[int, ...] = (0,),
                 smoke: bool = False, workers: int | None = None, **overrides) -> pd.DataFrame:
    """Run ``variant_slugs`` (default: all eight rows) on ``folds`` (default: all test folds)
    for each seed, ``workers`` runs at once (default :func:`default_workers`); return this
    call's status rows. The status file holds every run ever recorded for the data set,
    updated as each run starts and ends."""
    slugs = list(variant_slugs or variants.TABLE_ROWS)  # controls only when asked for
    unknown = [s for s in slugs if s not in variants.VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; choose from {list(variants.VARIANTS)}")
    # Baseline first: it is the shared stage-1 model every other variant starts from.
    slugs.sort(key=lambda s: s != "baseline")
    base_cfg = make_config(dataset, smoke=smoke, **overrides)
    workers = workers or default_workers(base_cfg.device)
    if workers > 1 and launched_by_torchrun():
        raise ValueError("workers > 1 cannot be combined with torchrun (DDP); use workers=1")
    status = StatusFile.open(ablation_status_path(base_cfg.results_root, dataset))
    data = load_data(base_cfg)
    jobs = [(seed, fold, slug) for seed in seeds for fold in list(folds or data.test_folds)
            for slug in slugs]
    rows = (run_parallel(jobs, base_cfg, status, workers) if workers > 1
            else run_sequential(jobs, base_cfg, data, status))
    table = pd.DataFrame(rows, columns=STATUS_COLUMNS)
    for seed in seeds:
        for slug in slugs:
            if ((table.variant == slug) & (table.seed == seed) & (table.status != "failed")).any():
                aggregate_folds(base_cfg.results_root, dataset, slug, seed)
    failed = table[table.status == "failed"]
    if len(failed):
        raise RuntimeError(f"{len(failed)} ablation runs failed (see {status.path}); call "
                           "again to rerun them:\n"
                           + failed[["row_name", "fold", "seed", "error"]].to_string())
    return table
