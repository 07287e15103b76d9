"""Integrity at the base layer: atomic writes, SHA-256 checksums, versioned names, JSON
records read with one clear error. Used by the data, engine and study subpackages alike.

- **Atomic writes** (:func:`atomic_write` and its text / JSON / bytes forms): a file is
  written to a temporary sibling and moved into place with ``os.replace``, so a kill leaves
  the previous file intact. A failed write removes its temporary file; a full disk is one
  :class:`OutOfSpaceError` naming the folder, the space needed and the space free.
- **Checksums**: :func:`file_sha256` (cached per process by path, size and modification
  time), and a ``<file>.sha256`` record beside a file (``sha256sum`` format, so
  ``sha256sum -c final.pt.sha256`` checks it too): :func:`write_checksum`,
  :func:`verify_checksum`. A file that differs from its record is one
  :class:`DamagedFileError` naming the file, the SHA-256 recorded and the one found.
- **Versions**: one naming rule, ``name``, ``name-v2``, ``name-v3``... (files:
  ``stem-v2.suffix``); a version of a version is never made (``fold1-v2`` is followed by
  ``fold1-v3``, never ``fold1-v2-v2``).
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from hiva_lib.errors import CheckpointError


class DamagedFileError(CheckpointError):
    """A file is truncated, unreadable, or differs from the SHA-256 recorded for it."""


class OutOfSpaceError(OSError):
    """The disk (or quota) is full: a file could not be written; nothing half-written is left."""


# ----------------------------------------------------------------------------- atomic writes
def _mib(n: int) -> str:
    """A size for messages: MiB, or KiB / bytes for small files (never "0.0 MiB")."""
    if n >= 2**20:
        return f"{n / 2**20:.1f} MiB"
    return f"{n / 2**10:.1f} KiB" if n >= 2**10 else f"{n} bytes"


def _out_of_space(err: BaseException, folder: Path, needed: int) -> bool:
    """A write failed for want of space: ENOSPC / EDQUOT, or less free space than needed
    (torch reports a full disk as a RuntimeError of its zip writer)."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    try:
        return shutil.disk_usage(folder).free < needed
    except OSError:
        return False


def atomic_write(path: str | Path, write: Callable[[Path], None], needed: int = 0) -> Path:
    """``write(tmp)`` into a temporary sibling of ``path``, then moved into place.

    ``needed``: the bytes the file takes (an estimate), named when the disk is full. Any
    failure removes the temporary file; a full disk becomes one :class:`OutOfSpaceError`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)  # a half-written file would keep the disk full
        if isinstance(err, Exception) and _out_of_space(err, path.parent, needed):
            raise out_of_space(path, needed) from err
        raise
    return path


def out_of_space(path: Path, needed: int) -> OutOfSpaceError:
    """The one error of a full disk: the folder, the space needed, the space free, the fix."""
    try:
        free = _mib(shutil.disk_usage(path.parent).free)
    except OSError:
        free = "unknown"
    need = f"about {_mib(needed)}" if needed else "more space"
    return OutOfSpaceError(
        errno.ENOSPC,
        f"{path.parent}: the disk is full; writing {path.name} needs {need}, {free} free "
        "(nothing half-written was left). Free space there, or point the folder (runs_root, "
        "results_root, data_root) at another disk, and run again: a run resumes from its "
        "last checkpoint.")


def atomic_write_bytes(data: bytes, path: str | Path) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), len(data))


def atomic_write_text(text: str, path: str | Path) -> Path:
    return atomic_write_bytes(text.encode(), path)


def atomic_write_json(obj: Any, path: str | Path) -> Path:
    return atomic_write_text(json.dumps(obj, indent=2, default=str), path)


def read_json(path: str | Path, fix: str, error: type[Exception] = DamagedFileError) -> Any:
    """The JSON of ``path``; a truncated or unreadable file is one ``error`` naming the file
    and ``fix`` (a bare JSONDecodeError names neither)."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError, OSError) as err:
        raise error(f"{path}: unreadable ({type(err).__name__}: {err}); the file is truncated "
                    f"or damaged. {fix}") from err


# ----------------------------------------------------------------------------- checksums
_SHA256: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes; cached in this process by (path, size, mtime), so a
    checkpoint loaded by training, evaluation and figures is read for hashing once."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA256:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _SHA256[key] = digest.hexdigest()
    return _SHA256[key]


def checksum_path(path: str | Path) -> Path:
    """``final.pt`` -> ``final.pt.sha256``: where the SHA-256 of a file is recorded."""
    path = Path(path)
    return path.with_name(f"{path.name}.sha256")


def write_checksum(path: str | Path) -> str:
    """Record the SHA-256 of ``path`` beside it (``sha256sum`` format); returns it."""
    path = Path(path)
    digest = file_sha256(path)
    atomic_write_text(f"{digest}  {path.name}\n", checksum_path(path))
    return digest


_RECORD = re.compile(r"^([0-9a-f]{64}) [ *](.+)$")


def recorded_checksum(path: str | Path) -> str | None:
    """The SHA-256 recorded beside ``path`` (None when there is no record)."""
    record = checksum_path(path)
    if not record.exists():
        return None
    m = _RECORD.match(record.read_text().strip())
    if not m or m[2] != Path(path).name:
        raise DamagedFileError(
            f"{record}: not a SHA-256 record of {Path(path).name} (truncated or damaged). "
            f"Restore it, or delete it to record {Path(path).name}'s SHA-256 anew on its next "
            "load (only if you know that file is intact).")
    return m[1]


def check_sha256(path: str | Path, expected: str, recorded_in: str | Path, fix: str) -> str:
    """``expected`` (the SHA-256 recorded in ``recorded_in``) against the file's; one
    :class:`DamagedFileError` naming both when they differ. Returns the digest."""
    found = file_sha256(path)
    if found != expected:
        raise DamagedFileError(
            f"{path}: SHA-256 {found} differs from the {expected} recorded in {recorded_in}: "
            f"the file was damaged or replaced since it was saved. {fix}")
    return found


def verify_checksum(path: str | Path, fix: str) -> str | None:
    """Check ``path`` against its ``.sha256`` record; returns the digest, or None when the
    file has no record (saved before records existed)."""
    expected = recorded_checksum(path)
    if expected is None:
        return None
    return check_sha256(path, expected, checksum_path(path), fix)


# ----------------------------------------------------------------------------- folders
def symlink_loop(path: str | Path, name: str) -> str | None:
    """Why the folder parameter ``name`` (``path``) can hold nothing: a symbolic link loop on
    its way (a raw RuntimeError / ELOOP otherwise, far from the parameter); None when not."""
    try:
        Path(path).resolve()
    except RuntimeError:  # Python < 3.13: "Symlink loop from ..."
        pass
    except OSError as err:
        if err.errno != errno.ELOOP:
            return None
    else:
        return None
    return (f"{name}={str(path)!r}: a symbolic link loop (its links point back at themselves), "
            f"so no folder is there. Point {name} at a real folder, or repair the link "
            f"(ls -l {path}).")


# ----------------------------------------------------------------------------- versions
_VERSIONED = re.compile(r"^(?P<base>.+?)(?:-v(?P<version>\d+))?$")


def run_version(name: str) -> tuple[str, int]:
    """``"fold1-v3"`` -> ``("fold1", 3)``; an unversioned ``"fold1"`` is version 1."""
    m = _VERSIONED.match(name)
    return m["base"], int(m["version"] or 1)


def versioned(base: Path, version: int) -> Path:
    """Version ``version`` of ``base`` (``base`` itself for 1); ``base`` may name a version
    already: versions are always of the unversioned name (never ``fold1-v2-v2``)."""
    stem = run_version(base.name)[0]
    return base.with_name(stem if version == 1 else f"{stem}-v{version}")


def versions(base: Path) -> list[Path]:
    """``base`` and its later versions up to the first that does not exist (at least
    ``base``): ``fold1``, ``fold1-v2``...; from ``fold1-v2``: ``fold1-v2``, ``fold1-v3``..."""
    start = run_version(base.name)[1]
    out, k = [versioned(base, start)], start + 1
    while versioned(base, k).exists():
        out.append(versioned(base, k))
        k += 1
    return out


def finished_versions(base: Path, marker: str = "DONE") -> list[Path]:
    """The versions of ``base`` (``base``, ``base-v2``...) that hold ``marker``, oldest first."""
    return [v for v in versions(base) if (v / marker).exists()]


def first_free(base: Path, marker: str) -> Path:
    """The first of ``base``, ``base-v2``... without ``marker`` (a file that says the folder
    holds a finished run or result), or the next new version after them."""
    found = versions(base)
    free = [v for v in found if not (v / marker).exists()]
    return free[0] if free else versioned(base, run_version(found[-1].name)[1] + 1)


def latest_versions(folders: Iterable[Path]) -> list[Path]:
    """Of the versions of one run among ``folders`` (``fold1``, ``fold1-v2``...), the newest
    only (by version number, not by string order), sorted by path."""
    newest: dict[tuple[Path, str], tuple[int, Path]] = {}
    for folder in folders:
        base, version = run_version(folder.name)
        key = (folder.parent, base)
        if key not in newest or version > newest[key][0]:
            newest[key] = (version, folder)
    return sorted(folder for _, folder in newest.values())


def file_versions(path: Path) -> list[tuple[int, Path]]:
    """(version, file) of ``path`` and its siblings ``<stem>-v2<suffix>``, ``-v3``... that
    exist (the versioning of :func:`run_version`, applied to the stem)."""
    out = []
    for p in path.parent.glob(f"{path.stem}*{path.suffix}"):
        base, version = run_version(p.name.removesuffix(path.suffix))
        if base == path.stem:
            out.append((version, p))
    return sorted(out)


def free_version(path: str | Path) -> Path:
    """``path`` if it does not exist, else the next ``<stem>-v<k><suffix>`` after the newest
    version: a finished measurement or saved input is never overwritten."""
    path = Path(path)
    found = file_versions(path)
    return path if not found else path.with_name(
        f"{path.stem}-v{found[-1][0] + 1}{path.suffix}")


def newest_version(path: str | Path) -> Path | None:
    """The newest existing version of ``path`` (by version number), or None."""
    found = file_versions(Path(path))
    return found[-1][1] if found else None
