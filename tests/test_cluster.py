"""The grid on a cluster (submitit), tested without one: signals stop a run with a checkpoint,
submitit's local executor runs the grid as real subprocess jobs with the local executor's
results, a killed job resumes when the grid is submitted again, and the sbatch scripts say
what was asked (a stand-in ``sbatch`` records them)."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import hiva_lib.engine.loop as loop
import hiva_lib.engine.runs as runs
import hiva_lib.engine.train as train
from hiva_lib.engine import stop
from hiva_lib.engine.ablation import run_ablation
from hiva_lib.engine.config import make_config
from hiva_lib.engine.validate import ParameterError

# stage 1: 2 epochs x 4 steps, a checkpoint every 2 steps: long enough to be interrupted
KW = dict(smoke=True, epochs_stage1=2, max_steps_per_epoch=4, checkpoint_every=2)


def _roots(base: Path, data_root) -> dict:
    return dict(data_root=str(data_root), runs_root=str(base / "runs"),
                results_root=str(base / "res"))


def _f1(roots: dict, variant: str, folder: str = "fold1") -> dict:
    path = Path(roots["results_root"]) / "synth-disfa" / variant / "seed0" / folder
    return json.loads((path / "metrics.json").read_text())["f1"]


def test_a_stop_signal_saves_last_pt_and_the_run_resumes_to_the_same_weights(
        tmp_path, smoke_data_root, monkeypatch):
    kw = dict(KW, checkpoint_every=0)  # epoch ends only: a mid-epoch last.pt is the signal's
    ref = train.train_stage1(make_config("synth-disfa", **kw, **_roots(tmp_path / "a",
                                                                      smoke_data_root)))
    cfg = make_config("synth-disfa", **kw, **_roots(tmp_path / "b", smoke_data_root))
    real, steps = loop.train_step, {"n": 0}

    def step_then_signal(fit, images, labels):
        out = real(fit, images, labels)
        steps["n"] += 1
        if steps["n"] == 6:  # epoch 2, batch 2
            os.kill(os.getpid(), signal.SIGUSR1)
        return out

    monkeypatch.setattr(loop, "train_step", step_then_signal)
    with stop.stop_on_signals(), pytest.raises(stop.TrainingStopped, match="SIGUSR1.*last.pt"):
        train.train_stage1(cfg)
    state = torch.load(runs.stage1_dir(cfg) / "last.pt", weights_only=False)
    assert (state["epoch"], state["batch"], state["step"]) == (1, 2, 6)
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # handlers put back
    steps["n"] = -100  # no further signal
    resumed = train.train_stage1(cfg)
    a = torch.load(ref.checkpoint, weights_only=False)["model"]
    b = torch.load(resumed.checkpoint, weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, smoke_data_root):
    """The local executor's grid (one process after the other, every thread)."""
    roots = _roots(tmp_path_factory.mktemp("local"), smoke_data_root)
    run_ablation("synth-disfa", ["baseline", "full"], [1], workers=1, **KW, **roots)
    return roots


@pytest.mark.slow
def test_submitit_local_jobs_give_the_local_executors_results(tmp_path, smoke_data_root,
                                                                reference, capsys):
    roots = _roots(tmp_path, smoke_data_root)
    table = run_ablation("synth-disfa", ["baseline", "full"], [1], executor="submitit-local",
                         **KW, **roots)
    assert list(table.status) == ["done", "done"]
    assert list(table.executor) == ["submitit-local"] * 2
    for log in table.log:
        assert Path(log).exists() and "run " in Path(log).read_text()
    for variant in ("baseline", "full"):  # same runs, same thread count: the same F1 per AU
        assert _f1(roots, variant) == _f1(reference, variant)
    # the full run waited for its fold's stage-1 job and reused its checkpoint
    assert "stage 1 already finished" in Path(table.log[1]).read_text()
    # called again: every run is reused and the status file is not rewritten
    status = Path(roots["results_root"]) / "synth-disfa" / "ablation_status.csv"
    before, mtime = status.read_bytes(), status.stat().st_mtime_ns
    capsys.readouterr()
    again = run_ablation("synth-disfa", ["baseline", "full"], [1], workers=1, **KW, **roots)
    assert list(again.status) == ["reused", "reused"]
    assert "0 to train, 0 to resume from last.pt, 2 finished" in capsys.readouterr().out
    assert status.read_bytes() == before and status.stat().st_mtime_ns == mtime


def _training_pid(roots: dict, saved: bool = False, timeout: float = 240) -> int:
    """The pid in the LOCK of a stage-1 run folder (fold1, fold1-v2...) once a job trains
    (``saved``: and has saved a last.pt)."""
    cfg = make_config("synth-disfa", **KW, **roots)
    base, t0 = runs.stage1_dir(cfg), time.time()
    while time.time() - t0 < timeout:
        for lock in base.parent.glob(f"{base.name}*/LOCK"):
            text = lock.read_text() if lock.exists() else ""
            if not text:
                continue
            pid = json.loads(text)["pid"]
            if not saved or _stopped_with_last_pt(pid, lock.parent):
                return pid
        time.sleep(0.2)
    raise AssertionError(f"no LOCK in {base}*")


def _stopped_with_last_pt(pid: int, folder: Path) -> bool:
    """Whether the job ``pid`` saved a last.pt in ``folder``; it is then left stopped (SIGSTOP),
    so that it cannot finish the run before the test kills it: a smoke run's last.pt lives for
    a fraction of a second on a fast machine, shorter than a poll's sleep."""
    while True:
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:
            return False
        if (folder / "last.pt").exists():
            return True
        if not (folder / "LOCK").exists():  # finished (or failed) before its first last.pt
            os.kill(pid, signal.SIGCONT)
            return False
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.01)


@pytest.mark.slow
def test_a_job_signalled_or_killed_mid_run_resumes(tmp_path, smoke_data_root, reference):
    roots = _roots(tmp_path, smoke_data_root)
    grid = dict(variant_slugs=["baseline"], folds=[1], executor="submitit-local", **KW, **roots)
    # SLURM's warning signal: last.pt at once, submitit requeues the job, which resumes
    first = run_ablation("synth-disfa", wait=False, **grid)
    assert list(first.status) == ["submitted"] and first.job_id[0]
    os.kill(_training_pid(roots), signal.SIGUSR1)
    table = run_ablation("synth-disfa", **grid)  # the job is still running: waited for
    assert list(table.status) == ["done"] and table.job_id[0] == first.job_id[0]
    log = Path(table.log[0]).read_text()
    assert "stopped by SIGUSR1" in log and "resuming" in log
    assert _f1(roots, "baseline") == _f1(reference, "baseline")
    # a hard kill (no signal to catch): the grid submitted again resumes from last.pt
    run_ablation("synth-disfa", wait=False, if_exists="version", **grid)
    os.kill(_training_pid(roots, saved=True), signal.SIGKILL)
    with pytest.raises(RuntimeError, match="ended without a result.*log: ") as err:
        run_ablation("synth-disfa", if_exists="version", **grid)
    assert "notebook 04 again" in str(err.value)
    status = pd.read_csv(Path(roots["results_root"]) / "synth-disfa" / "ablation_status.csv")
    assert list(status.status) == ["failed"] and status.log[0].endswith("_log.out")
    table = run_ablation("synth-disfa", if_exists="version", **grid)
    assert list(table.status) == ["done"]  # fold1-v2, resumed from its last.pt
    assert "resuming" in Path(table.log[0]).read_text()
    assert _f1(roots, "baseline", "fold1-v2") == _f1(reference, "baseline")


def _fake_slurm(bin_dir: Path) -> None:
    """``sbatch`` that records nothing and answers as SLURM does; ``srun`` that exists."""
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(
        "#!/bin/sh\nn=$(cat \"$0.count\" 2>/dev/null || echo 1000)\nn=$((n+1))\n"
        "echo $n > \"$0.count\"\necho \"Submitted batch job $n\"\n")
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    for name in ("sbatch", "srun"):
        (bin_dir / name).chmod(0o755)


def test_sbatch_scripts_say_what_was_asked(tmp_path, smoke_data_root, monkeypatch):
    from submitit.core.utils import pickle_load

    _fake_slurm(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    roots = _roots(tmp_path, smoke_data_root)
    cluster = dict(partition="gpu-a100", gpus_per_job=2, cpus_per_job=12, mem_gb=96,
                   time_limit_min=240, array_parallelism=1,
                   sbatch_extra=["--account=facslab", "#SBATCH --qos=high"])
    table = run_ablation("synth-disfa", ["baseline", "full", "wo_ddca"], [1, 2],
                         executor="slurm", wait=False, cluster=cluster, **roots)
    # one array of the two stage-1 runs, then per fold an array waiting for its stage 1
    ids = {(v, f): j for v, f, j in table[["variant", "fold", "job_id"]].itertuples(index=False)}
    assert ids[("baseline", 1)] == "1001_0" and ids[("baseline", 2)] == "1001_1"
    assert {ids[("full", 1)], ids[("wo_ddca", 1)]} == {"1002_0", "1002_1"}
    assert set(table.status) == {"submitted"} and table.log.str.endswith("_log.out").all()
    jobs = Path(roots["runs_root"]) / "synth-disfa" / "jobs"
    first, fold1 = ((jobs / f"{n}_submission.sh").read_text() for n in (1001, 1002))
    for script in (first, fold1):
        for line in ("#SBATCH --partition=gpu-a100", "#SBATCH --gres=gpu:2",
                     "#SBATCH --time=240", "#SBATCH --cpus-per-task=12", "#SBATCH --mem=96GB",
                     "#SBATCH --array=0-1%1", "#SBATCH --account=facslab",
                     "#SBATCH --qos=high", "#SBATCH --signal=USR2@120"):
            assert line in script.splitlines(), (line, script)
        assert f"-m submitit.core._submit {jobs}" in script
    assert "#SBATCH --dependency=afterok:1001_0" in fold1.splitlines()
    assert "dependency" not in first
    assert "#SBATCH --dependency=afterok:1001_1" in (jobs / "1003_submission.sh").read_text()
    # the job's call: the run, 2 GPUs (torchrun), stage 1 reused after its job
    job = pickle_load(jobs / "1002_0_submitted.pkl").function
    assert (job.cfg.variant, job.cfg.fold, job.gpus, job.stage1_if_exists) == (
        "full", 1, 2, "skip")
    assert job.after.endswith("1001_0_0_result.pkl")


def test_torchrun_command_and_bad_options():
    from hiva_lib.engine.cluster import check_executor, torchrun_command

    cmd = torchrun_command(4, Path("run.json"))
    assert cmd[1:] == ["-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
                       "--nproc_per_node", "4", "-m", "hiva_lib.engine.cluster", "run.json"]
    with pytest.raises(ParameterError, match="executor='slurmm'"):
        check_executor("slurmm", True, None)
    with pytest.raises(ParameterError, match="(?s)gpus_per_job=-1.*time_limit_min=0"):
        check_executor("submitit-local", True, dict(gpus_per_job=-1, time_limit_min=0))
    with pytest.raises(ParameterError, match="(?s)sbatch_extra=.account=x.*parameters cell"):
        check_executor("submitit-local", True, dict(sbatch_extra=["account=x"]))
    with pytest.raises(ParameterError, match="partiton"):
        check_executor("submitit-local", True, dict(partiton="gpu"))


@pytest.mark.slow
def test_a_job_of_two_gpus_trains_its_run_under_torchrun(tmp_path, smoke_data_root):
    """gpus_per_job=2: the job runs torchrun with 2 ranks (gloo on this CPU), rank 0 reports."""
    from hiva_lib.engine.cluster import GridJob

    roots = _roots(tmp_path, smoke_data_root)
    cfg = make_config("synth-disfa", variant="full", smoke=True, **roots)
    reused, f1, seconds = GridJob(cfg, None, gpus=2, folder=str(tmp_path))()
    metrics = json.loads((Path(roots["results_root"]) / "synth-disfa" / "full" / "seed0"
                          / "fold1" / "metrics.json").read_text())
    assert not reused and f1 == metrics["mean_f1"] and seconds > 0
    assert (tmp_path / f"full_seed0_fold1_{os.getpid()}_outcome.json").exists()
