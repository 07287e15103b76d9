"""The ablation grid as cluster jobs through submitit: one job per (variant, seed, fold).

``executor="slurm"`` submits SLURM jobs (``sbatch``; run it where ``sbatch`` works, e.g. the
login node); ``"submitit-local"`` runs the same jobs as subprocesses of this machine (all at
once: for trying the cluster path on a few runs). Per (seed, fold) whose stage 1 is not
finished, the fold's first run (the Baseline when it is in the grid) is submitted first and
trains stage 1; the fold's other runs are submitted as a second array that starts only after it
(``--dependency=afterok:<job>``, and each job also waits for that job's end before it starts,
which is all the local executor has). Everything else is one array, at most
``array_parallelism`` jobs at once.

Resumable and honest: finished runs are reused and not submitted; a run still queued or running
from an earlier call is not submitted twice; every job's id, state and log go to
``ablation_status.csv``. A job stops cleanly on SLURM's warning before its time limit (SIGUSR2
of submitit's ``--signal``, or SIGUSR1) and on SIGTERM: ``last.pt`` saved at the current step
(:mod:`hiva_lib.engine.stop`), then submitit requeues it (up to ``max_requeues`` times) and it
resumes from there; a job that ends unfinished resumes the same way when the grid is submitted
again. With more than one GPU per job the run is trained under ``torchrun --standalone``
inside the job (DDP on the job's GPUs).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import submitit
from submitit.core.utils import JobPaths, pickle_load

from hiva_lib.data.prepared import PreparedDataset
from hiva_lib.engine import stop
from hiva_lib.engine.config import TrainConfig
from hiva_lib.engine.grid import Job, Plan, describe, estimate, job_config, make_plan
from hiva_lib.engine.validate import ParameterError
from hiva_lib.integrity import atomic_write_json

EXECUTORS = ("local", "slurm", "submitit-local")
ACTIVE = ("submitted", "running")  # statuses of a job that may still be queued or running


@dataclass
class ClusterOptions:
    """What each job asks SLURM for (notebook 04's parameters of the same names)."""

    partition: str | None = None  # --partition; None: the cluster's default
    gpus_per_job: int = 1  # --gres=gpu:N; more than 1: the run trains under torchrun (DDP)
    cpus_per_job: int = 8  # --cpus-per-task (loader workers + the training process)
    mem_gb: float = 64  # --mem
    time_limit_min: int = 720  # --time; a run killed at it resumes from last.pt
    array_parallelism: int = 16  # --array=...%N: jobs of one array running at once
    sbatch_extra: list[str] = field(default_factory=list)  # e.g. ["--account=lab", "--qos=high"]
    setup: list[str] = field(default_factory=list)  # shell lines first, e.g. "module load cuda"
    log_folder: str | None = None  # default: <runs_root>/<dataset>/jobs (job scripts, logs)
    max_requeues: int = 3  # requeues after a time limit or preemption (submitit)
    signal_delay_s: int = 120  # the stop signal comes this long before the time limit


def _whole(value: object, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def sbatch_flags(lines: list[str]) -> dict[str, str | bool]:
    """``["--account=lab", "#SBATCH --exclusive"]`` -> ``{"account": "lab", "exclusive":
    True}``: extra sbatch lines as submitit's additional parameters."""
    flags: dict[str, str | bool] = {}
    for line in lines:
        text = line.strip().removeprefix("#SBATCH").strip()
        if not text.startswith("--") or " " in text.split("=", 1)[0]:
            raise ParameterError(
                f"invalid parameters (nothing was written):\n  sbatch_extra={line!r}: not an "
                "sbatch option. Give each as '--name=value' or '--flag', e.g. "
                "sbatch_extra = ['--account=mylab', '--qos=normal'] in the parameters cell "
                "(papermill: -y \"sbatch_extra: ['--account=mylab']\")")
        key, _, value = text[2:].partition("=")
        flags[key] = value if value else True
    return flags


def _option_problems(opts: ClusterOptions) -> list[str]:
    problems = []
    for name in ("gpus_per_job", "cpus_per_job", "time_limit_min", "array_parallelism",
                 "max_requeues", "signal_delay_s"):
        low = 0 if name in ("gpus_per_job", "max_requeues", "signal_delay_s") else 1
        if not _whole(getattr(opts, name), low):
            problems.append(f"{name}={getattr(opts, name)!r}: must be a whole number >= {low}")
    if not isinstance(opts.mem_gb, int | float) or opts.mem_gb <= 0:
        problems.append(f"mem_gb={opts.mem_gb!r}: must be a number > 0 (GB per job)")
    for name in ("sbatch_extra", "setup"):
        value = getattr(opts, name)
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            problems.append(f"{name}={value!r}: must be a list of strings")
    return problems


def check_executor(executor: str, wait: object, cluster: dict | ClusterOptions | None
                   ) -> ClusterOptions | None:
    """The executor and its job options, checked before anything is written: one
    ParameterError naming each bad value and the fix."""
    if executor not in EXECUTORS:
        raise ParameterError(f"invalid parameters (nothing was written):\n  executor="
                             f"{executor!r}: choose one of {', '.join(EXECUTORS)}")
    if not isinstance(wait, bool):
        raise ParameterError(f"invalid parameters (nothing was written):\n  wait={wait!r}: "
                             "True (wait for the jobs) or False (submit and return)")
    if executor == "local":
        return None
    if isinstance(cluster, ClusterOptions):
        opts = cluster
    else:
        names = {f.name for f in dataclasses.fields(ClusterOptions)}
        unknown = sorted(set(cluster or {}) - names)
        if unknown:
            raise ParameterError(f"invalid parameters (nothing was written):\n  cluster options "
                                 f"{unknown}: unknown; allowed: {', '.join(sorted(names))}")
        opts = ClusterOptions(**{k: v for k, v in (cluster or {}).items() if v is not None})
    problems = _option_problems(opts)
    if problems:
        raise ParameterError("invalid parameters (nothing was written):\n  "
                             + "\n  ".join(problems) + "\nSet them in the parameters cell "
                             "(papermill: -p name value).")
    sbatch_flags(opts.sbatch_extra)
    if executor == "slurm" and not (shutil.which("sbatch") and shutil.which("srun")):
        raise ParameterError(
            "executor='slurm': SLURM's sbatch and srun are not on this machine's PATH. Run "
            "notebook 04 where they are (the cluster's login node), or set executor = "
            "'local' in the parameters cell (papermill: -p executor local).")
    return opts


# ----------------------------------------------------------------------------- executors
def log_folder(base_cfg: TrainConfig, opts: ClusterOptions) -> Path:
    """Where the jobs' scripts, pickles and logs go (on the cluster's shared file system)."""
    if opts.log_folder:
        return Path(opts.log_folder).absolute()
    return Path(base_cfg.runs_root) / base_cfg.dataset / "jobs"


def make_executor(kind: str, opts: ClusterOptions, folder: Path, name: str,
                  dependency: str | None = None) -> submitit.Executor:
    """A submitit executor for ``kind`` with the jobs' options (and a dependency)."""
    if kind == "submitit-local":
        import torch

        ex = submitit.LocalExecutor(folder, max_num_timeout=opts.max_requeues)
        gpus = min(opts.gpus_per_job, torch.cuda.device_count())
        ex.update_parameters(timeout_min=opts.time_limit_min, gpus_per_node=gpus,
                             signal_delay_s=opts.signal_delay_s)
        return ex
    ex = submitit.SlurmExecutor(folder, max_num_timeout=opts.max_requeues)
    extra = {**({"dependency": dependency, "kill-on-invalid-dep": "yes"} if dependency else {}),
             **sbatch_flags(opts.sbatch_extra)}
    mem = f"{int(opts.mem_gb * 1024)}MB" if opts.mem_gb % 1 else f"{int(opts.mem_gb)}GB"
    params = dict(job_name=name, partition=opts.partition, time=opts.time_limit_min,
                  nodes=1, ntasks_per_node=1, cpus_per_task=opts.cpus_per_job,
                  gres=f"gpu:{opts.gpus_per_job}" if opts.gpus_per_job else None, mem=mem,
                  array_parallelism=opts.array_parallelism, signal_delay_s=opts.signal_delay_s,
                  setup=opts.setup or None, additional_parameters=extra or None)
    ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return ex


# ----------------------------------------------------------------------------- the job
TORCHRUN_SIGNALS = "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1,SIGUSR2"


def torchrun_command(nproc: int, payload: Path) -> list[str]:
    """One run on ``nproc`` GPUs of this node: torchrun's single-node rendezvous."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
            "--nproc_per_node", str(nproc), "-m", "hiva_lib.engine.cluster", str(payload)]


@dataclass
class GridJob(submitit.helpers.Checkpointable):
    """One run of the grid inside a job: wait for its fold's stage-1 job if it has one, then
    stage 1 if needed, stage 2, evaluation; returns (reused?, mean F1, seconds of the run,
    without the wait). Requeued by submitit
    (``checkpoint``: the same call) after a time-limit warning; it then resumes."""

    cfg: TrainConfig
    stage1_if_exists: str | None = None
    gpus: int = 1
    after: str | None = None  # the result file of the stage-1 job this run waits for
    folder: str = "."

    def __call__(self) -> tuple[bool, float, float]:
        print(f"run {self.cfg.variant}, seed {self.cfg.seed}, fold {self.cfg.fold} of "
              f"{self.cfg.dataset}", flush=True)
        wait_for_job(self.after)
        t0 = time.time()
        if os.environ.get("SLURM_CPUS_PER_TASK"):  # torch would use every core of the node
            import torch

            torch.set_num_threads(int(os.environ["SLURM_CPUS_PER_TASK"]))
        with stop.stop_on_signals() as previous:
            try:
                reused, f1 = self._torchrun() if self.gpus > 1 else self._in_process()
                return reused, f1, round(time.time() - t0, 1)
            except stop.TrainingStopped as e:
                print(e, flush=True)
                requeue = previous.get(signal.SIGUSR2)
                if e.signum != signal.SIGTERM and callable(requeue):
                    requeue(e.signum, None)  # submitit: checkpoint() and requeue, then exit
                raise

    def _in_process(self) -> tuple[bool, float]:
        from hiva_lib.engine.ablation import run_one

        return run_one(self.cfg, self.stage1_if_exists)

    def _torchrun(self) -> tuple[bool, float]:
        tag = f"{self.cfg.variant}_seed{self.cfg.seed}_fold{self.cfg.fold}_{os.getpid()}"
        payload, outcome = (Path(self.folder) / f"{tag}_{x}.json" for x in ("run", "outcome"))
        atomic_write_json(dict(cfg=self.cfg.to_dict(), stage1_if_exists=self.stage1_if_exists,
                               outcome=str(outcome)), payload)
        env = {**os.environ, "TORCHELASTIC_SIGNALS_TO_HANDLE": TORCHRUN_SIGNALS}
        proc = subprocess.Popen(torchrun_command(self.gpus, payload), env=env)
        forwarded = False
        while proc.poll() is None:
            if stop.requested() and not forwarded:  # torchrun passes SIGTERM to every rank
                proc.send_signal(signal.SIGTERM)
                forwarded = True
            time.sleep(0.5)
        if stop.requested():
            name = stop.signal_name(stop.requested())
            raise stop.TrainingStopped(f"torchrun stopped by {name}; every rank saved "
                                       "last.pt", stop.requested())
        if proc.returncode:
            raise RuntimeError(f"torchrun exited with status {proc.returncode} (the ranks' "
                               "errors are in this job's log)")
        result = json.loads(outcome.read_text())
        return result["reused"], result["mean_f1"]


def wait_for_job(result_file: str | None, poll_s: float = 2.0) -> None:
    """Wait until the job whose submitit result file is ``result_file`` has ended; raise if
    it failed (under SLURM the afterok dependency has already waited)."""
    if not result_file:
        return
    path = Path(result_file)
    while not path.exists():
        time.sleep(poll_s)
    state, value = pickle_load(path)
    if state != "success":
        raise RuntimeError(f"the stage-1 job of this fold failed, so this run cannot start "
                           f"({last_line(value)}); its log is beside {path}")


def last_line(text: object) -> str:
    lines = [x for x in str(text).strip().splitlines() if x.strip()]
    return lines[-1].strip() if lines else str(text)


def main(argv: list[str] | None = None) -> int:
    """One rank of a run under torchrun: ``python -m hiva_lib.engine.cluster run.json``."""
    from hiva_lib.engine.distributed import is_main
    from hiva_lib.engine.train import run_variant

    payload = json.loads(Path((argv or sys.argv[1:])[0]).read_text())
    cfg = TrainConfig(**payload["cfg"])
    with stop.stop_on_signals():
        res = run_variant(cfg, stage1_if_exists=payload["stage1_if_exists"])
    if is_main():
        atomic_write_json(dict(reused=res.skipped, mean_f1=res.metrics["mean_f1"]),
                          payload["outcome"])
    return 0


# ----------------------------------------------------------------------------- jobs' states
@dataclass
class Tracked:
    """A job of this grid: submitted now, or found queued from an earlier call."""

    job: Job
    job_id: str
    folder: Path
    kind: str
    handle: object = None  # the submitit Job when submitted by this process

    @property
    def paths(self) -> JobPaths:
        return JobPaths(self.folder, self.job_id, 0)

    def ended(self) -> bool:
        if self.paths.result_pickle.exists():
            return True
        if self.handle is not None:
            return self.handle.done()
        if self.kind == "slurm":
            return submitit.SlurmJob(self.folder, self.job_id).done()
        return not _pid_alive(int(self.job_id.split("_")[0]))

    def state(self) -> str:
        if self.paths.result_pickle.exists():
            return "ENDED"
        try:
            job = self.handle or (submitit.SlurmJob(self.folder, self.job_id)
                                  if self.kind == "slurm" else None)
            return job.state if job is not None else "RUNNING"
        except Exception:  # sacct unreachable: the state is unknown, the job may still run
            return "UNKNOWN"

    def outcome(self) -> tuple[tuple[bool, float] | None, float, str | None]:
        """(result, seconds, None) or (None, nan, error naming the log) of an ended job."""
        logs = f"log: {self.paths.stdout}, {self.paths.stderr}"
        if not self.paths.result_pickle.exists():
            return None, float("nan"), (
                f"job {self.job_id} ended without a result (state {self.state()}: killed, out "
                "of memory, timed out, or cancelled because its stage-1 job failed); "
                f"submitting the grid again resumes the run from its last.pt; {logs}")
        state, value = pickle_load(self.paths.result_pickle)
        if state == "success":
            return (value[0], value[1]), value[2], None
        return None, float("nan"), f"job {self.job_id}: {last_line(value)}; {logs}"


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a job's local controller); one that ended as a
    child of this process is reaped here, else it would linger as a zombie."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0]:
            return False
    except ChildProcessError:  # not a child of this process
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ----------------------------------------------------------------------------- the grid
def queued_jobs(jobs: list[Job], history: pd.DataFrame, kind: str) -> dict[Job, Tracked]:
    """The runs whose job of an earlier call (same executor) may still be queued or running."""
    out = {}
    for row in history.itertuples():
        job = (int(row.seed), int(row.fold), row.variant)
        if (job in jobs and row.status in ACTIVE and row.executor == kind
                and isinstance(row.job_id, str) and row.job_id):
            tracked = Tracked(job, str(row.job_id), Path(str(row.log)).parent, kind)
            if not tracked.ended():
                out[job] = tracked
    return out


def _stage1_providers(todo: list[Job], plan: Plan, queued: dict[Job, Tracked]
                      ) -> dict[tuple[int, int], Job]:
    """Per (seed, fold) whose stage 1 is to be trained: the run that trains it (a job still
    queued from an earlier call, else the fold's first run to submit)."""
    providers: dict[tuple[int, int], Job] = {}
    for job in [*queued, *todo]:
        if job[:2] in plan.stage1_to_train:
            providers.setdefault(job[:2], job)
    return providers


def submit(todo: list[Job], plan: Plan, base_cfg: TrainConfig, kind: str,
           opts: ClusterOptions, queued: dict[Job, Tracked]) -> dict[Job, Tracked]:
    """Submit ``todo``: one array of the runs that can start now, then per fold an array of
    the runs that wait for its stage-1 job (afterok). Returns the submitted jobs."""
    folder = log_folder(base_cfg, opts)
    name = f"hiva-{base_cfg.dataset}"
    providers = _stage1_providers(todo, plan, queued)
    waiting = {j for j in todo if j[:2] in providers and providers[j[:2]] != j}
    done: dict[Job, Tracked] = {}

    def group(jobs: list[Job], executor: submitit.Executor, after: Tracked | None) -> None:
        with executor.batch():
            handles = [executor.submit(GridJob(
                job_config(base_cfg, j), "skip" if after else None, opts.gpus_per_job,
                str(after.paths.result_pickle) if after else None, str(folder))) for j in jobs]
        for j, h in zip(jobs, handles, strict=True):
            done[j] = Tracked(j, str(h.job_id), folder, kind, h)

    now = [j for j in todo if j not in waiting]
    if now:
        group(now, make_executor(kind, opts, folder, name), None)
    for fold_key, provider in providers.items():
        later = [j for j in todo if j in waiting and j[:2] == fold_key]
        first = done.get(provider) or queued[provider]
        if later:
            group(later, make_executor(kind, opts, folder, name,
                                       dependency=f"afterok:{first.job_id}"), first)
    return done


def submitted_row(tracked: Tracked, state: str) -> dict:
    from hiva_lib.engine.ablation import started_row

    row = started_row(tracked.job, "submitted" if state == "PENDING" else "running",
                      tracked.kind)
    row.update(job_id=tracked.job_id, job_state=state, log=str(tracked.paths.stdout))
    return row


def run_on_cluster(jobs: list[Job], base_cfg: TrainConfig, data: PreparedDataset, status,
                   kind: str, opts: ClusterOptions, wait: bool) -> pd.DataFrame:
    """The grid as jobs: plan, reuse the finished runs here, submit the rest (not those still
    queued from an earlier call), then wait for all of them unless ``wait`` is False."""
    from hiva_lib.engine.ablation import STATUS_COLUMNS, Tracker, run_one

    folder = log_folder(base_cfg, opts)
    queued = queued_jobs(jobs, status.before, kind)
    plan = estimate(make_plan(jobs, base_cfg, set(queued)), status.before, 1)
    where = "as SLURM jobs" if kind == "slurm" else "as local submitit jobs"
    print(describe(plan, where).replace("Estimated time: about",
                                        "Compute time (the jobs' sum, queueing not counted):")
          + f"\nJob scripts and logs: {folder}", flush=True)
    track = Tracker(status, plan)
    for job in plan.jobs("reuse"):  # nothing to train: no job, the results are read here
        row, t0 = track.begin(job)
        track.end(job, row, t0, run_one(job_config(base_cfg, job), None, data), None)
    todo = plan.jobs("train") + plan.jobs("resume")
    todo.sort(key=jobs.index)
    tracked = {**queued, **submit(todo, plan, base_cfg, kind, opts, queued)}
    for t in tracked.values():
        row = submitted_row(t, "PENDING" if t.job in todo else t.state())
        status.record(row)
        track.rows.append(row)
    if not wait:
        print(f"{len(todo)} job(s) submitted, {len(queued)} still queued from an earlier "
              "call. Run notebook 04 again (or notebook 05) later to read their results.")
        return pd.DataFrame(track.rows, columns=STATUS_COLUMNS)
    wait_for(tracked, track)
    rows = [r for r in track.rows if r["status"] not in ACTIVE]
    rows.sort(key=lambda r: jobs.index((r["seed"], r["fold"], r["variant"])))
    return pd.DataFrame(rows, columns=STATUS_COLUMNS)


def wait_for(tracked: dict[Job, Tracked], track, poll_s: float = 10.0) -> None:
    """Poll the jobs until every one has ended, recording each outcome (and its log) as it
    comes, with a bar over the runs."""
    from hiva_lib.engine.ablation import finished_row
    from hiva_lib.engine.grid import progress_bar

    bar = progress_bar(track.plan)
    pending = dict(tracked)
    try:
        while pending:
            for job, t in list(pending.items()):
                if t.ended():
                    result, seconds, error = t.outcome()
                    state = "COMPLETED" if error is None else (
                        "FAILED" if t.paths.result_pickle.exists() else t.state())
                    row = finished_row(submitted_row(t, state), time.time() - seconds,
                                       result, error)
                    track.status.finish(job, row)
                    track.rows.append(row)
                    bar.update(1)
                    del pending[job]
            if pending:
                time.sleep(poll_s)
    finally:
        bar.close()


if __name__ == "__main__":
    sys.exit(main())
