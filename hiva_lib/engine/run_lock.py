"""A run folder being trained holds ``LOCK`` (its owner: host, pid, the process's start
time), so that a second identical run refuses instead of training the same folder; a LOCK whose
process is gone, or whose pid now belongs to a later process, is stale and taken over
atomically (:func:`run_lock`)."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from hiva_lib.integrity import out_of_space


class RunLockedError(RuntimeError):
    """Another live process is training this run folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


# an empty LOCK younger than this is being written by a process that just created it
LOCK_WRITE_GRACE_S = 30.0


def boot_time() -> float | None:
    """When this machine booted (seconds since the epoch; Linux), or None where unknown."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return float(line.split()[1])
    return None


def process_start_time(pid: int) -> float | None:
    """When process ``pid`` of this machine started (seconds since the epoch; Linux), or None
    where unknown (no such process, no /proc)."""
    boot = boot_time()
    with contextlib.suppress(OSError, ValueError, IndexError):
        # field 22 of /proc/<pid>/stat, after the command name in parentheses: clock ticks
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        if boot is not None:
            return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    return None


# /proc/stat's boot time is whole seconds: a process may seem to start this much later
START_SLACK_S = 2.0


def _take_lock(path: Path) -> bool:
    """Create ``path`` holding this process's pid and host, or False if it exists. A LOCK
    that cannot be written (a full disk) is removed again: it would block every later run."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(dict(pid=os.getpid(), host=socket.gethostname(),
                           started=time.strftime("%Y-%m-%d %H:%M:%S")), f)
    except BaseException as err:
        path.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise out_of_space(path, 4096) from err
        raise
    return True


def _read_lock(path: Path) -> tuple[dict | None, os.stat_result | None]:
    """(owner, stat) of a LOCK: owner None when it is empty or not JSON; stat None when the
    LOCK is gone. A LOCK this process may not read is one clear error."""
    try:
        st = path.stat()
        text = path.read_text()
    except FileNotFoundError:
        return None, None
    except OSError as err:
        raise RunLockedError(f"{path}: this run folder's LOCK cannot be read ({err}). If no "
                             f"run is training {path.parent}, delete {path}.") from err
    try:
        owner = json.loads(text)
    except ValueError:
        return None, st
    return (owner if isinstance(owner, dict) else None), st


def _stale(owner: dict | None, st: os.stat_result) -> str | None:
    """Why a LOCK is stale (its process is gone), or None while it may be held."""
    if owner is None:
        age = time.time() - st.st_mtime
        return (f"empty or unreadable LOCK, {age:.0f} s old (left by a process that could not "
                "write it, e.g. on a full disk)") if age > LOCK_WRITE_GRACE_S else None
    pid, host = owner.get("pid"), owner.get("host")
    if host != socket.gethostname() or not isinstance(pid, int):
        return None  # another machine's process: it cannot be checked from here
    boot = boot_time()
    if boot is not None and st.st_mtime < boot:
        return f"lock of process {pid} from before this machine booted"
    if not _alive(pid):
        return f"stale lock of process {pid} (no longer running)"
    started = process_start_time(pid)
    if started is not None and started > st.st_mtime + START_SLACK_S:  # the pid was reused
        return (f"lock of process {pid}, written {time.ctime(st.st_mtime)}; that pid now "
                f"belongs to another process, started {time.ctime(started)}")
    return None


@contextlib.contextmanager
def _folder_mutex(folder: Path) -> Iterator[None]:
    """An flock held while a stale LOCK of ``folder`` is examined and taken over, so that of
    two processes taking it over at once exactly one wins (the folder itself is locked where
    the file system allows it, else a hidden ``.LOCK.mutex`` file)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:
        with contextlib.suppress(UnboundLocalError, OSError):
            os.close(fd)
        fd = os.open(folder / ".LOCK.mutex", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _locked(path: Path, owner: dict | None) -> RunLockedError:
    if owner is None:
        return RunLockedError(
            f"{path}: another run is just starting in this folder (its LOCK is still being "
            f"written). Run again in a minute; if it stays empty for {LOCK_WRITE_GRACE_S:.0f} "
            "s it is taken over.")
    return RunLockedError(
        f"{path}: another run is training this folder (pid {owner.get('pid')} on "
        f"{owner.get('host')}, since {owner.get('started')}). Wait for it to finish, then run "
        "again: its result is reused. If that process is gone (e.g. another machine that "
        f"crashed), delete {path}.")


def _acquire(path: Path) -> None:
    """Take ``path`` (LOCK), or take over a stale one atomically, or raise RunLockedError."""
    while not _take_lock(path):
        with _folder_mutex(path.parent):  # examine and replace as one step
            owner, st = _read_lock(path)
            if st is None:
                continue  # released meanwhile: try again
            reason = _stale(owner, st)
            if reason:
                print(f"{path}: {reason}: taken over")
                path.unlink(missing_ok=True)
                if _take_lock(path):
                    return
                continue
        raise _locked(path, owner)


@contextlib.contextmanager
def run_lock(folder: Path, enabled: bool = True) -> Iterator[None]:
    """Hold ``folder/LOCK`` while training: a second identical run refuses with one clear
    error (its result is reused once the first finishes). A lock of this machine whose
    process is gone (dead, or from before the last boot), or an empty LOCK older than
    :data:`LOCK_WRITE_GRACE_S`, is taken over; of two processes taking it over at once
    exactly one wins."""
    path = folder / "LOCK"
    if not enabled:
        yield
        return
    _acquire(path)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
