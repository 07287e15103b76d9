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
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import pandas as pd
import torch

from hiva_lib import variants
from hiva_lib.data.prepared import PreparedDataset
from hiva_lib.engine.cluster import check_executor, run_on_cluster
from hiva_lib.engine.config import TrainConfig, make_config
from hiva_lib.engine.distributed import launched_by_torchrun, resolve_device
from hiva_lib.engine.evaluate import aggregate_folds
from hiva_lib.engine.grid import Job, describe, estimate, make_plan, progress_bar, run_one
from hiva_lib.engine.runs import ablation_status_path, load_data
from hiva_lib.engine.status import STATUS_COLUMNS, RunRecorder, StatusFile
from hiva_lib.engine.validate import check_ablation_values


def default_workers(device: str) -> int:
    """Runs at once: 2 on a CPU with two or more threads, 1 on a GPU or under torchrun."""
    if launched_by_torchrun() or resolve_device(device).type != "cpu":
        return 1
    return min(2, torch.get_num_threads())


def run_sequential(jobs: list[Job], base_cfg: TrainConfig, data: PreparedDataset,
                   track: RunRecorder) -> list[dict]:
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


def _next_job(todo: list[Job], running: list[Job], stage1_ready: set) -> Job | None:
    """The first job that may start: its fold's stage 1 is finished, or no run of its fold
    is running (then this one trains it)."""
    busy = {(s, f) for s, f, _ in running}
    for seed, fold, slug in todo:
        if (seed, fold) in stage1_ready or (seed, fold) not in busy:
            return seed, fold, slug
    return None


def run_parallel(jobs: list[Job], base_cfg: TrainConfig, track: RunRecorder, workers: int
                 ) -> list[dict]:
    """The runs of :func:`run_sequential`, ``workers`` at once in spawned processes of
    ``threads // workers`` threads each; a fold's other runs wait for its stage 1. A worker
    that dies (killed, out of memory) fails the runs in flight, which resume from their
    last.pt when called again; the other runs go on in a new pool."""
    threads = max(1, torch.get_num_threads() // workers)
    print(f"{workers} runs at once, {threads} thread(s) each", flush=True)
    todo, stage1_ready = list(jobs), set()
    running: dict[Future, tuple[Job, dict, float]] = {}
    pool = _pool(workers, threads)
    try:
        while todo or running:
            while len(running) < workers and (job := _next_job(
                    todo, [j for j, _, _ in running.values()], stage1_ready)):
                todo.remove(job)
                seed, fold, slug = job
                cfg = dataclasses.replace(base_cfg, seed=seed, fold=fold, variant=slug)
                stage1 = "skip" if (seed, fold) in stage1_ready else None
                running[pool.submit(run_one, cfg, stage1)] = (job, *track.begin(job))
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            broken = False
            for future in finished:
                job, row, t0 = running.pop(future)
                error = future.exception()
                if isinstance(error, BrokenProcessPool):
                    broken, error = True, WORKER_DIED
                elif error is None:
                    stage1_ready.add(job[:2])
                track.end(job, row, t0, None if error else future.result(), error)
            if broken:  # the pool is unusable: its other workers were stopped too
                _stop(pool)
                pool = _pool(workers, threads)
    finally:
        _stop(pool)  # on an interrupt too: a killed run resumes from its last.pt
    return track.rows


WORKER_DIED = ("its worker process died (killed, or out of memory?), and the runs in flight "
               "with it. Call again: they resume from their last.pt")


def _pool(workers: int, threads: int) -> ProcessPoolExecutor:
    """A pool with all its workers started now: Python 3.11 starts them on demand, and one
    started while the pool's manager thread waits is not watched (its death goes unnoticed
    until another run ends)."""
    pool = ProcessPoolExecutor(workers, multiprocessing.get_context("spawn"), _init_worker,
                               (threads,))
    wait([pool.submit(os.getpid) for _ in range(workers)])  # each submit starts one
    return pool


def _stop(pool: ProcessPoolExecutor) -> None:
    """Shut the pool down without waiting for its runs: its workers are terminated."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # public in 3.14
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join()


def run_locally(jobs: list[Job], base_cfg: TrainConfig, data: PreparedDataset,
                status: StatusFile, workers: int) -> pd.DataFrame:
    """The runs on this machine, ``workers`` at once, after printing the plan; a bar over the
    runs while they train."""
    if workers > 1 and launched_by_torchrun():
        raise ValueError("workers > 1 cannot be combined with torchrun (DDP); use workers=1")
    plan = estimate(make_plan(jobs, base_cfg), status.before, workers)
    print(describe(plan, f"on this machine, {workers} at once"), flush=True)
    track = RunRecorder(status, plan, progress_bar(plan))
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
