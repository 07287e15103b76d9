"""Checkpoints: atomic torch files, loaded only when intact, with one clear error.

A checkpoint is written to a temporary file in the same folder and moved into place
(:func:`hiva_lib.integrity.atomic_write`), so a run killed mid-write leaves the previous
checkpoint intact and a full disk is one error. A finished run's ``final.pt`` has its SHA-256
recorded beside it (``final.pt.sha256``, written before ``DONE``); every load checks it, so a
damaged or replaced checkpoint is never trained on, evaluated, drawn or used for inference.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hiva_lib.errors import CheckpointError  # noqa: F401  (re-exported: its old home)
from hiva_lib.integrity import (  # noqa: F401  (atomic_write_* re-exported for the engine)
    DamagedFileError,
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    file_sha256,
    verify_checksum,
    write_checksum,
)


def _nbytes(obj: Any) -> int:
    """The bytes of the tensors in ``obj`` (what torch.save writes, give or take headers)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_nbytes(v) for v in obj)
    return 0


def atomic_save(obj: Any, path: str | Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp), _nbytes(obj))


def damaged_fix(path: str | Path) -> str:
    """How to get past a damaged checkpoint of a run folder."""
    path = Path(path)
    return (f"Restore {path.name} (e.g. from a backup), or train this run again into a new "
            f"version folder (-p if_exists version), or delete {path.parent} and run again.")


def _finished_final(path: Path) -> bool:
    """``path`` is the final.pt of a run marked finished (``DONE`` beside it)."""
    return path.name == "final.pt" and (path.parent / "DONE").exists()


def load_checkpoint(path: str | Path, what: str, fix: str) -> dict:
    """Load a checkpoint on the CPU after checking it against its recorded SHA-256, or raise
    one :class:`CheckpointError` naming ``fix``. A finished run's ``final.pt`` saved before
    SHA-256 records gets its record now, once it has loaded."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: {what} not found. {fix}")
    digest = verify_checksum(path, damaged_fix(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file
        if _finished_final(path):  # training again would reuse the finished run
            raise DamagedFileError(f"{path}: {what} of a finished run is unreadable ({e}). "
                                   + damaged_fix(path)) from e
        raise CheckpointError(f"{path}: {what} is unreadable ({e}). {fix}") from e
    if digest is None and _finished_final(path):
        _record_legacy(path)
    return state


def _record_legacy(path: Path) -> None:
    """Record the SHA-256 of a finished run saved before records: from now on it is checked.
    A read-only run folder is left as it is."""
    try:
        digest = write_checksum(path)
    except OSError:
        return
    print(f"{path}: saved before SHA-256 records; its SHA-256 {digest[:12]} is recorded now "
          "and checked on every later load")


def check_finished(run_dir: Path) -> Path:
    """The ``final.pt`` of a finished run about to be reused, checked first: against its
    SHA-256 record, or (saved before records) by loading it."""
    final = run_dir / "final.pt"
    if not final.exists():
        raise CheckpointError(f"{final}: the checkpoint of a finished run is missing. "
                              + damaged_fix(final))
    if verify_checksum(final, damaged_fix(final)) is None:
        load_checkpoint(final, "checkpoint", damaged_fix(final))
    return final


# The run-folder policy (versions, signatures) moved to hiva_lib.engine.runs, the version
# names to hiva_lib.integrity; these names are still importable from here for old callers.
_MOVED_TO_RUNS = ("finished_versions", "first_free", "run_signature", "find_finished",
                  "resolve_run_dir", "run_version", "latest_versions", "file_versions",
                  "free_version", "newest_version")


def __getattr__(name: str):
    if name in _MOVED_TO_RUNS:  # imported lazily: runs imports this module
        from hiva_lib.engine import runs

        return getattr(runs, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
