"""The ablations of Tables IV-VI: every variant preset over the folds and seeds of a data set.

Resumable: finished runs are reused (their DONE marker and metrics), a run that failed or was
killed resumes from its last checkpoint when called again. Failures are not hidden: the status
of every run is written to ``results/<dataset>/ablation_status.csv`` as it changes (``started``
before a run that trains, then ``done``, ``reused`` or ``failed``; a ``started`` row left
behind means the kernel died during that run; on a cluster ``submitted`` with the job's id,
state and log), merged with the rows of earlier calls (one row per variant, seed and fold), and
the call raises at the end if any of its runs failed. A finished run that is reused leaves its
``done`` row as it was (an interrupted call never turns it into ``started`` or ``reused``).

Before the first run the call prints its plan (runs to train, to resume, reused; the estimated
time: :mod:`hiva_lib.engine.grid`) and then shows a bar over the runs with an ETA.

Where the runs go (``executor``): ``"local"`` (default) trains them on this machine, ``workers``
at once: on a CPU, by default two runs share the cores with one thread each, which on 2 cores
finishes the embedded study's stage-2 runs 1.1-1.25x faster than one run on two threads
(docs/report.md); on a GPU, one run at a time. Stage 1 of a (seed, fold) is trained by that
fold's first run; the fold's other runs start once it is finished and reuse it. Training is
bit-reproducible for a given number of threads per run; another number gives other last digits
(the thread count is recorded in each result's provenance). ``"slurm"`` submits one SLURM job
per run through submitit, ``"submitit-local"`` runs the same jobs as subprocesses of this
machine (:mod:`hiva_lib.engine.cluster`, docs/cluster.md).
"""
from __future__ import annotations

import dataclasses
import multiprocessing
import os
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from hiva_lib import variants
from hiva_lib.data.prepared import PreparedDataset
from hiva_lib.engine.config import TrainConfig, make_config
from hiva_lib.engine.distributed import launched_by_torchrun, resolve_device
from hiva_lib.engine.evaluate import aggregate_folds
from hiva_lib.engine.grid import Job, Plan, describe, estimate, make_plan, progress_bar
from hiva_lib.engine.runs import ablation_status_path
from hiva_lib.engine.train import load_data, run_variant
from hiva_lib.engine.validate import check_ablation_values
from hiva_lib.integrity import atomic_write_text

STATUS_KEY = ["variant", "seed", "fold"]
STATUS_COLUMNS = ["variant", "row_name", "fold", "seed", "status", "mean_f1", "error",
                  "seconds", "updated", "executor", "job_id", "job_state", "log"]
FINISHED = ("done", "reused")


class AblationStatusError(ValueError):
    """An existing ablation_status.csv cannot be read or merged."""


def read_status(path: Path) -> pd.DataFrame:
    """The status table of earlier calls (empty if none), or one error naming the file."""
    if not path.exists():
        return pd.DataFrame(columns=STATUS_COLUMNS)
    try:
        table = pd.read_csv(path, keep_default_na=False, na_values=[""],
                            dtype={"job_id": str})  # SLURM's 123_4, a local pid: text
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


@dataclass
class StatusFile:
    """``ablation_status.csv``: every run recorded for a data set, rewritten at each change."""

    path: Path
    table: pd.DataFrame
    before: pd.DataFrame  # as it was when this call opened it

    @classmethod
    def open(cls, path: Path) -> StatusFile:
        table = read_status(path)  # a bad file stops us before any run
        return cls(path, table, table.copy())

    def record(self, row: dict) -> None:
        self.table = merge_status(self.table, pd.DataFrame([row]))
        atomic_write_text(self.table.to_csv(index=False), self.path)

    def earlier(self, job: Job) -> dict | None:
        """The row of ``job`` (seed, fold, slug) as this call found it, or None."""
        seed, fold, slug = job
        t = self.before
        hit = t[(t.variant == slug) & (t.seed == seed) & (t.fold == fold)]
        return hit.iloc[-1].to_dict() if len(hit) else None

    def finish(self, job: Job, row: dict) -> None:
        """Record a run's outcome; a reused run whose row already said it finished keeps
        that row, and the file is not rewritten for it (unless this call wrote ``started``
        over the row: then the row is put back as it was)."""
        old = self.earlier(job)
        if row["status"] == "reused" and old is not None and old["status"] in FINISHED:
            seed, fold, slug = job
            t = self.table
            now = t[(t.variant == slug) & (t.seed == seed) & (t.fold == fold)]
            if now.iloc[-1]["status"] != old["status"]:
                self.record(old)
            return
        self.record(row)


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def started_row(job: Job, status: str = "started", executor: str = "local") -> dict:
    seed, fold, slug = job
    return dict(variant=slug, row_name=variants.VARIANTS[slug].row_name, fold=fold, seed=seed,
                status=status, mean_f1=float("nan"), error="", seconds=float("nan"),
                updated=_now(), executor=executor)


def finished_row(row: dict, t0: float, result: tuple[bool, float] | None,
                 error: BaseException | str | None) -> dict:
    """``row`` updated with the outcome: (reused?, mean F1) or the error."""
    if error is None:
        row = {**row, "status": "reused" if result[0] else "done", "mean_f1": result[1]}
    else:  # a worker's error carries its traceback as the cause
        if isinstance(error, BaseException):
            traceback.print_exception(error)
        row = {**row, "status": "failed",
               "error": error if isinstance(error, str) else repr(error)}
    row.update(seconds=round(time.time() - t0, 1), updated=_now())
    tqdm.write(f"[{row['status']}] {row['row_name']}, fold {row['fold']}, seed {row['seed']}: "
               f"mean F1 {row['mean_f1']:.3f} ({row['seconds']} s)", file=sys.stdout)
    return row


@dataclass
class Tracker:
    """The status file, the plan and the progress bar of one call, updated together."""

    status: StatusFile
    plan: Plan
    bar: object = None
    rows: list = dataclasses.field(default_factory=list)

    def begin(self, job: Job) -> tuple[dict, float]:
        """The run's ``started`` row, written unless the plan reuses a finished run (a kernel
        killed during a run that trains leaves "started")."""
        row = started_row(job)
        if self.plan.kinds.get(job) != "reuse":
            self.status.record(row)
        return row, time.time()

    def end(self, job: Job, row: dict, t0: float, result: tuple[bool, float] | None,
            error: BaseException | str | None) -> dict:
        row = finished_row(row, t0, result, error)
        self.status.finish(job, row)
        self.rows.append(row)
        if self.bar is not None and self.plan.kinds.get(job) != "reuse":
            self.bar.update(1)
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
                   track: Tracker) -> list[dict]:
    """The runs one after the other; a fold's first run trains (or reuses) its stage 1 with
    ``cfg.if_exists``, the fold's later runs reuse it ("skip")."""
    stage1_ready = set()
    for job in jobs:
        seed, fold, slug = job
        row, t0 = track.begin(job)
        cfg = dataclasses.replace(base_cfg, seed=seed, fold=fold, variant=slug)
        stage1 = "skip" if (seed, fold) in stage1_ready else None
        try:
            result, error = run_one(cfg, stage1, data), None
        except Exception as e:  # recorded and re-raised at the end, never swallowed
            result, error = None, e
        if error is None:
            stage1_ready.add((seed, fold))
        track.end(job, row, t0, result, error)
    return track.rows


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


def run_parallel(jobs: list[Job], base_cfg: TrainConfig, track: Tracker, workers: int
                 ) -> list[dict]:
    """The runs of :func:`run_sequential`, ``workers`` at once in spawned processes of
    ``threads // workers`` threads each; a fold's other runs wait for its stage 1."""
    threads = max(1, torch.get_num_threads() // workers)
    print(f"{workers} runs at once, {threads} thread(s) each", flush=True)
    todo, stage1_ready = list(jobs), set()
    running: dict[Job, tuple[dict, float]] = {}
    events: queue.Queue = queue.Queue()
    pool = multiprocessing.get_context("spawn").Pool(workers, _init_worker, (threads,))
    try:
        while todo or running:
            while len(running) < workers and (job := _next_job(todo, running, stage1_ready)):
                todo.remove(job)
                running[job] = track.begin(job)
                seed, fold, slug = job
                cfg = dataclasses.replace(base_cfg, seed=seed, fold=fold, variant=slug)
                stage1 = "skip" if (seed, fold) in stage1_ready else None
                pool.apply_async(run_one, (cfg, stage1), callback=_put(events, job, None),
                                 error_callback=_put(events, job, "error"))
            job, result, error = events.get()
            if error is None:
                stage1_ready.add(job[:2])
            track.end(job, *running.pop(job), result, error)
    finally:
        pool.terminate()  # on an interrupt too: a killed run resumes from its last.pt
        pool.join()
    return track.rows


def _put(events: queue.Queue, job: Job, kind: str | None) -> Callable:
    """A pool callback that posts (job, result, None) or, for errors, (job, None, error)."""
    if kind is None:
        return lambda result: events.put((job, result, None))
    return lambda error: events.put((job, None, error))


def run_locally(jobs: list[Job], base_cfg: TrainConfig, data: PreparedDataset,
                status: StatusFile, workers: int) -> pd.DataFrame:
    """The runs on this machine, ``workers`` at once, after printing the plan; a bar over the
    runs while they train."""
    if workers > 1 and launched_by_torchrun():
        raise ValueError("workers > 1 cannot be combined with torchrun (DDP); use workers=1")
    plan = estimate(make_plan(jobs, base_cfg), status.before, workers)
    print(describe(plan, f"on this machine, {workers} at once"), flush=True)
    track = Tracker(status, plan, progress_bar(plan))
    try:
        rows = (run_parallel(jobs, base_cfg, track, workers) if workers > 1
                else run_sequential(jobs, base_cfg, data, track))
    finally:
        track.bar.close()
    return pd.DataFrame(rows, columns=STATUS_COLUMNS)


def run_ablation(dataset: str, variant_slugs: list[str] | None = None,
                 folds: list[int] | None = None, seeds: list[int] | tuple[int, ...] = (0,),
                 smoke: bool = False, workers: int | None = None, executor: str = "local",
                 wait: bool = True, cluster: dict | None = None, **overrides) -> pd.DataFrame:
    """Run ``variant_slugs`` (default: all eight rows) on ``folds`` (default: all test folds)
    for each seed; return this call's status rows. The status file holds every run ever
    recorded for the data set, updated as each run starts and ends.

    ``executor="local"``: on this machine, ``workers`` runs at once (default
    :func:`default_workers`). ``"slurm"`` / ``"submitit-local"``: one job per run, with the
    job options of ``cluster`` (:class:`hiva_lib.engine.cluster.ClusterOptions`: partition,
    GPUs, CPUs, memory, time limit, array parallelism, extra sbatch lines); ``wait=False``
    returns the table of submitted jobs at once, and a later call reads their results."""
    if isinstance(variant_slugs, str):  # -p variants full: one slug
        variant_slugs = [variant_slugs]
    slugs = list(variant_slugs or variants.TABLE_ROWS)  # controls only when asked for
    base_cfg = make_config(dataset, smoke=smoke, **overrides)
    check_ablation_values(dataset, slugs, folds, seeds, workers, base_cfg.data_root)
    from hiva_lib.engine.cluster import check_executor, run_on_cluster

    options = check_executor(executor, wait, cluster)  # before anything is written
    # Baseline first: it is the shared stage-1 model every other variant starts from.
    slugs.sort(key=lambda s: s != "baseline")
    status = StatusFile.open(ablation_status_path(base_cfg.results_root, dataset))
    data = load_data(base_cfg)
    jobs = [(seed, fold, slug) for seed in seeds for fold in list(folds or data.test_folds)
            for slug in slugs]
    if executor == "local":
        table = run_locally(jobs, base_cfg, data, status,
                            workers or default_workers(base_cfg.device))
    else:
        table = run_on_cluster(jobs, base_cfg, data, status, executor, options, wait)
        if not wait:
            return table
    return conclude(table, base_cfg, slugs, seeds, status.path)


def conclude(table: pd.DataFrame, base_cfg: TrainConfig, slugs: list[str], seeds: list[int],
             status_path: Path) -> pd.DataFrame:
    """Aggregate the folds of every (variant, seed) that ran; raise naming every failed run
    (with its log, for cluster jobs) and how to rerun them."""
    for seed in seeds:
        for slug in slugs:
            if ((table.variant == slug) & (table.seed == seed) & (table.status != "failed")).any():
                aggregate_folds(base_cfg.results_root, base_cfg.dataset, slug, seed)
    failed = table[table.status == "failed"]
    if len(failed):
        columns = ["row_name", "fold", "seed", "error"] + (
            ["log"] if failed["log"].notna().any() else [])
        raise RuntimeError(
            f"{len(failed)} ablation runs failed (see {status_path}). Rerun them: run notebook "
            "04 again (JupyterLab: Run All with the same parameters cell; papermill: the same "
            "command); finished runs are reused and interrupted ones resume.\n"
            + failed[columns].to_string())
    return table
