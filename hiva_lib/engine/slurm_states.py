"""The states of SLURM jobs read from the scheduler itself (``squeue``, then ``sacct``), so that
they read right on clusters without accounting (no slurmdbd): submitit asks ``sacct`` alone,
and there every job would stay UNKNOWN. Used by the grid's SLURM executor
(:mod:`hiva_lib.engine.cluster`)."""
from __future__ import annotations

import subprocess
import time

# a job in one of these states may still run (UNKNOWN: slurmctld did not answer)
SLURM_ACTIVE = ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD",
                "REQUEUE_FED", "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT",
                "RESV_DEL_HOLD", "PREEMPTED", "UNKNOWN")


class SlurmStates:
    """The states of this process's SLURM jobs, read from slurmctld (``squeue``): one call for
    all of them at most every ``max_age_s``, not one per job. Where slurmctld no longer holds
    a job (``MinJobAge`` after its end) ``sacct`` is asked; where accounting is disabled (no
    slurmdbd, as on many small clusters) that fails and the job is ``ENDED``. (submitit reads
    states from ``sacct`` alone: without accounting every job stays UNKNOWN and a job that
    ended without a result, e.g. cancelled, would be waited for forever.)"""

    def __init__(self, max_age_s: float = 5.0) -> None:
        self.max_age_s = max_age_s
        self.ids: set[str] = set()
        self.states: dict[str, str] = {}
        self.read_at = float("-inf")

    def get(self, job_id: str) -> str:
        if job_id not in self.ids or time.time() - self.read_at > self.max_age_s:
            self.ids.add(job_id)
            self.refresh()
        return self.states.get(job_id) or _sacct_state(job_id)

    def refresh(self) -> None:
        try:
            out = subprocess.run(["squeue", "-h", "-r", "--states=all", "-o", "%i|%T|%r",
                                  "-j", ",".join(sorted(self.ids))],
                                 capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired):
            out = None
        if out is None or (out.returncode and "Invalid job id" not in out.stderr):
            self.states = {i: "UNKNOWN" for i in self.ids}  # no answer: may still run
        else:  # rc 1 "Invalid job id": none of them is held any more
            self.states = {}
            for line in out.stdout.splitlines():
                job_id, state, reason = (line.split("|") + ["", ""])[:3]
                ended_why = reason not in ("", "None") and state not in SLURM_ACTIVE
                self.states[job_id] = f"{state} ({reason})" if ended_why else state
        self.read_at = time.time()


def _sacct_state(job_id: str) -> str:
    """The state ``sacct`` recorded for a job slurmctld no longer holds; ``ENDED`` where
    accounting is disabled or knows nothing of it (the job is over either way)."""
    try:
        out = subprocess.run(["sacct", "-n", "-X", "-P", "-o", "State", "-j", job_id],
                             capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return "ENDED"
    words = out.stdout.split()
    return words[0] if out.returncode == 0 and words else "ENDED"


SLURM_STATES = SlurmStates()

