"""Stopping a run cleanly on a signal: a checkpoint at the current step, then an exception.

SLURM warns a job before its time limit with the signal of ``--signal`` (submitit asks for
SIGUSR2; clusters often use SIGUSR1), and preemption and ``scancel`` send SIGTERM. Inside
:func:`stop_on_signals` these signals only set a flag; the training loop reads it after each
step (under DDP every ``log_every`` steps, all ranks agreeing), saves ``last.pt`` and raises
:class:`TrainingStopped`. The run resumes from there when it is started again.

Outside :func:`stop_on_signals` (notebooks, the local ablation runner) nothing is installed
and the signals keep their default meaning.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


class TrainingStopped(RuntimeError):
    """A run stopped on a signal after saving its ``last.pt``; starting it again resumes."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


class _State:
    installed = False
    signum: int | None = None


def _flag(signum: int, frame: object) -> None:
    _State.signum = _State.signum or signum


def installed() -> bool:
    """Whether :func:`stop_on_signals` is active in this process."""
    return _State.installed


def requested() -> int | None:
    """The signal that asked this process to stop, or None."""
    return _State.signum


@contextlib.contextmanager
def stop_on_signals() -> Iterator[dict[int, object]]:
    """Turn SIGTERM, SIGUSR1 and SIGUSR2 into a stop request for the training loop; yields
    the handlers they had before (submitit's requeue handler among them). Main thread only
    (Python delivers signals there); elsewhere it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield {}
        return
    previous = {s: signal.signal(s, _flag) for s in STOP_SIGNALS}
    _State.installed, _State.signum = True, None
    try:
        yield previous
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        _State.installed = False


def ignore_in_loader_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: SLURM signals every process of a job step, and a loader
    worker killed by SIGUSR1/2 (their default action) would fail the step before the main
    process has saved. The workers end with their parent anyway."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name
