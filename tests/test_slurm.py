"""The grid on a real SLURM (the one-node cluster of ``scripts/ci/slurm.sh``: slurmctld and
slurmd on this machine, no accounting database): notebook 04's ``executor="slurm"`` at smoke
size with CPU jobs (``gpus_per_job=0``, 1 CPU each). The scheduler's own record (``scontrol
show job``) shows that no stage-2 job starts before its fold's stage-1 job has ended; a failed
stage-1 job gets its dependent jobs cancelled by SLURM (``--kill-on-invalid-dep``), every run is
reported failed with its log, and the next call finishes them; a job signalled as SLURM does
before its time limit is requeued and resumes to the F1 of an uninterrupted run; a cancelled
job is recorded as failed and resumes from its last.pt; job states are read without sacct."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

import hiva_lib.engine.train as train
from hiva_lib.engine.ablation import run_ablation
from hiva_lib.engine.cluster import SubmittedJob
from hiva_lib.engine.config import make_config
from hiva_lib.engine.slurm_states import SLURM_ACTIVE
from hiva_lib.engine.status import read_status

pytestmark = pytest.mark.slow

# stage 1: 2 epochs x 4 steps, a checkpoint every 2 steps (as tests/test_cluster.py)
KW = dict(smoke=True, epochs_stage1=2, max_steps_per_epoch=4, checkpoint_every=2)
# CPU jobs: no --gres (the way to run on a CPU partition), 1 CPU, little memory
CPU_JOBS = dict(gpus_per_job=0, cpus_per_job=1, mem_gb=1, time_limit_min=30)
START = "start it with: bash scripts/ci/slurm.sh start"


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """Skip (saying why) unless sbatch is here and a node of the cluster is up."""
    if not shutil.which("sbatch"):
        pytest.skip(f"no SLURM on this machine (sbatch is not on the PATH); {START}")
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                             timeout=30)
    except subprocess.TimeoutExpired:
        pytest.skip(f"the SLURM controller does not answer (sinfo timed out); {START}")
    states = out.stdout.split()
    if out.returncode or not any(s.rstrip("*") in ("idle", "mixed") for s in states):
        pytest.skip(f"no idle SLURM node (sinfo: {states or out.stderr.strip()}); {START}")


def _roots(base: Path, data_root) -> dict:
    return dict(data_root=str(data_root), runs_root=str(base / "runs"),
                results_root=str(base / "res"))


def _grid(roots: dict, variants: list[str], folds: list[int], **kw) -> pd.DataFrame:
    return run_ablation("synth-disfa", variants, folds, executor="slurm", cluster=CPU_JOBS,
                        **KW, **roots, **kw)


def _f1(roots: dict, variant: str, fold: int = 1, folder: str | None = None) -> dict:
    path = (Path(roots["results_root"]) / "synth-disfa" / variant / "seed0"
            / (folder or f"fold{fold}"))
    return json.loads((path / "metrics.json").read_text())["f1"]


def _status(roots: dict) -> pd.DataFrame:
    return read_status(Path(roots["results_root"]) / "synth-disfa" / "ablation_status.csv")


def _job(job_id: str) -> dict[str, str]:
    """``scontrol show job``: slurmctld's record of a job (kept MinJobAge after its end)."""
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True,
                         text=True, check=True).stdout
    return dict(w.split("=", 1) for w in out.split() if "=" in w)


def _stage1_lock(roots: dict, timeout: float = 300) -> Path:
    """The LOCK of the fold-1 stage-1 run folder once a job trains it."""
    base, t0 = train.stage1_dir(make_config("synth-disfa", **KW, **roots)), time.time()
    while time.time() - t0 < timeout:
        lock = base / "LOCK"
        if lock.exists() and lock.read_text():
            return lock
        time.sleep(0.1)
    raise AssertionError(f"no job trained {base} within {timeout} s")


def _held_mid_run(lock: Path, last_pt: bool) -> int:
    """Stop (SIGSTOP) the job's training process while it trains (``last_pt``: once it has
    saved a last.pt), so that the test's signal lands mid-run even on a fast machine where a
    smoke run lasts seconds; returns its pid (SIGCONT it after signalling)."""
    pid = json.loads(lock.read_text())["pid"]
    while last_pt and lock.exists() and not (lock.parent / "last.pt").exists():
        time.sleep(0.005)
    os.kill(pid, signal.SIGSTOP)
    if not (lock.exists() and (not last_pt or (lock.parent / "last.pt").exists())):
        os.kill(pid, signal.SIGCONT)
        raise AssertionError(f"the run of {lock.parent} ended before the test could signal it")
    return pid


def _wait_state(job_id: str, states: tuple[str, ...], timeout: float = 120) -> str:
    t0 = time.time()
    while time.time() - t0 < timeout:
        state = _job(job_id)["JobState"]
        if state in states:
            return state
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} never reached {states} (last: {state})")


@pytest.fixture(scope="module")
def grid(tmp_path_factory, smoke_data_root):
    """Baseline and full on folds 1 and 2: a stage-1 array, then an array per fold (afterok)."""
    roots = _roots(tmp_path_factory.mktemp("grid"), smoke_data_root)
    return roots, _grid(roots, ["baseline", "full"], [1, 2])


def test_no_stage2_job_starts_before_its_folds_stage1_job_ends(grid):
    roots, table = grid
    assert list(table.status) == ["done"] * 4 and set(table.executor) == {"slurm"}
    assert set(table.job_state) == {"COMPLETED"}
    ids = {(v, f): j for v, f, j in table[["variant", "fold", "job_id"]].itertuples(index=False)}
    stage1, stage2 = (ids[("baseline", 1)], ids[("baseline", 2)]), (ids[("full", 1)],
                                                                     ids[("full", 2)])
    assert len({j.split("_")[0] for j in stage1}) == 1  # one array for the stage-1 runs
    for fold in (1, 2):  # slurmctld's own start and end times (no accounting needed)
        for job_id in (ids[("baseline", fold)], ids[("full", fold)]):  # result, then exit
            _wait_state(job_id, ("COMPLETED",))
        first, second = _job(ids[("baseline", fold)]), _job(ids[("full", fold)])
        assert second["StartTime"] >= first["EndTime"], (fold, first, second)
        script = Path(roots["runs_root"], "synth-disfa", "jobs",
                      f"{ids[('full', fold)].split('_')[0]}_submission.sh").read_text()
        assert f"#SBATCH --dependency=afterok:{ids[('baseline', fold)]}" in script
        assert "#SBATCH --kill-on-invalid-dep=yes" in script and "--gres" not in script
    for job_id in (*stage1, *stage2):  # 1 CPU each: jobs were not given the whole node
        assert _job(job_id)["NumCPUs"] == "1"
    script = Path(roots["runs_root"], "synth-disfa", "jobs",
                  f"{stage1[0].split('_')[0]}_submission.sh").read_text()
    assert "--gres" not in script and "dependency" not in script
    for log in table.log:
        assert "run " in Path(log).read_text()
    for log in table[table.variant == "full"].log:  # it reused its fold's stage 1
        assert "stage 1 already finished" in Path(log).read_text()


def test_job_states_are_read_from_slurmctld_without_accounting(tmp_path):
    sacct = subprocess.run(["sacct", "-j", "1"], capture_output=True, text=True)
    if sacct.returncode == 0:
        pytest.skip("this cluster keeps accounting (sacct answers): the test is for one "
                    "without, such as scripts/ci/slurm.sh's")
    job_id = subprocess.run(["sbatch", "--parsable", "-c1", "--mem=100M", "-o", "/dev/null",
                             "--wrap", "sleep 120"], capture_output=True, text=True,
                            check=True).stdout.strip()
    tracked = SubmittedJob((0, 1, "baseline"), job_id, tmp_path, "slurm")
    try:
        assert tracked.state() in ("PENDING", "RUNNING") and not tracked.ended()
    finally:
        subprocess.run(["scancel", job_id], check=True)
    _wait_state(job_id, ("CANCELLED",))
    time.sleep(6)  # past the states' cache
    assert tracked.state() == "CANCELLED" and tracked.ended()
    # a job slurmctld no longer holds (MinJobAge after its end), with no sacct to ask: ended
    gone = SubmittedJob((0, 1, "baseline"), "999999", tmp_path, "slurm")
    assert gone.state() == "ENDED" and gone.ended()
    assert "ENDED" not in SLURM_ACTIVE and "UNKNOWN" in SLURM_ACTIVE


def test_a_failed_stage1_job_cancels_its_dependents_and_the_next_call_finishes_them(
        tmp_path, smoke_data_root, grid):
    roots = _roots(tmp_path, smoke_data_root)
    # stage 1 of fold 1 fails in its job: it finds a damaged last.pt to resume from
    last = train.stage1_dir(make_config("synth-disfa", **KW, **roots)) / "last.pt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="2 ablation runs failed") as err:
        _grid(roots, ["baseline", "full"], [1])
    assert "last.pt: resume checkpoint is unreadable" in str(err.value)
    status = _status(roots)
    assert list(status.status) == ["failed", "failed"]
    baseline, full = status.iloc[0], status.iloc[1]
    assert baseline.job_state == "FAILED"  # its job raised: the error and log are named
    assert "last.pt: resume checkpoint is unreadable" in baseline.error
    assert f"log: {baseline.log}" in baseline.error
    # SLURM cancelled the dependent job (afterok can no longer be met); it never ran
    assert full.job_state == "CANCELLED (DependencyNeverSatisfied)", full.job_state
    assert "ended without a result" in full.error and "log: " in full.error
    assert not Path(full.log).exists() or "run " not in Path(full.log).read_text()
    assert Path(baseline.log).exists() and "unreadable" in Path(baseline.log.replace(
        "_log.out", "_log.err")).read_text()
    # the damaged file removed, as its error says: the next call submits both and finishes
    last.unlink()
    table = _grid(roots, ["baseline", "full"], [1])
    assert list(table.status) == ["done", "done"]
    assert set(table.job_id).isdisjoint({baseline.job_id, full.job_id})  # new jobs
    grid_roots, _ = grid
    assert _f1(roots, "full") == _f1(grid_roots, "full")


def _baseline_job_held_mid_run(tmp_path: Path, data_root: Path, last_pt: bool
                               ) -> tuple[dict, str, Path, int]:
    """A stage-1 job of the Baseline submitted without waiting and held mid-run
    (:func:`_held_mid_run`): its roots, job id, stage-1 LOCK and training pid."""
    roots = _roots(tmp_path, data_root)
    first = _grid(roots, ["baseline"], [1], wait=False)
    job_id = first.job_id[0]
    assert list(first.status) == ["submitted"] and first.job_state[0] == "PENDING"
    lock = _stage1_lock(roots)
    return roots, job_id, lock, _held_mid_run(lock, last_pt)


def test_a_job_signalled_before_its_time_limit_is_requeued_and_resumes(
        tmp_path, smoke_data_root, grid):
    roots, job_id, _, pid = _baseline_job_held_mid_run(tmp_path, smoke_data_root, False)
    # what slurmstepd does --signal's delay before the time limit (submitit asks USR2@120)
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    os.kill(pid, signal.SIGCONT)
    _wait_state(job_id, ("PENDING",))  # requeued by the job itself (scontrol requeue)
    assert int(_job(job_id)["Restarts"]) == 1
    table = _grid(roots, ["baseline"], [1])  # still queued: waited for, not submitted again
    assert list(table.status) == ["done"] and table.job_id[0] == job_id
    log = Path(table.log[0]).read_text()
    assert "stopped by SIGUSR2" in log and "resuming" in log
    grid_roots, _ = grid  # an uninterrupted run of the same config, also 1 CPU under SLURM
    assert _f1(roots, "baseline") == _f1(grid_roots, "baseline")


def test_a_cancelled_job_is_recorded_failed_and_resumes_from_last_pt(
        tmp_path, smoke_data_root, grid):
    roots, job_id, lock, pid = _baseline_job_held_mid_run(tmp_path, smoke_data_root, True)
    subprocess.run(["scancel", job_id], check=True)
    os.kill(pid, signal.SIGCONT)
    with pytest.raises(RuntimeError, match="1 ablation runs failed") as err:
        _grid(roots, ["baseline"], [1])
    assert "SIGTERM" in str(err.value) and "log: " in str(err.value)
    status = _status(roots)
    assert list(status.status) == ["failed"] and status.job_id[0] == job_id
    _wait_state(job_id, ("CANCELLED",))  # its result written, the job ends as cancelled
    assert (lock.parent / "last.pt").exists()
    table = _grid(roots, ["baseline"], [1])
    assert list(table.status) == ["done"] and table.job_id[0] != job_id
    assert "resuming" in Path(table.log[0]).read_text()
    grid_roots, _ = grid
    assert _f1(roots, "baseline") == _f1(grid_roots, "baseline")
