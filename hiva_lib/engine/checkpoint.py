"""Checkpoints: atomic torch files and text, loaded with one clear error.

A checkpoint is written to a temporary file in the same folder and moved into place with
``os.replace``, so a run killed mid-write leaves the previous checkpoint intact.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from hiva_lib.errors import CheckpointError  # noqa: F401  (re-exported: its old home)


def atomic_save(obj: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def atomic_write_text(text: str, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def atomic_write_json(obj: Any, path: str | Path) -> None:
    atomic_write_text(json.dumps(obj, indent=2, default=str), path)


def load_checkpoint(path: str | Path, what: str, fix: str) -> dict:
    """Load a checkpoint on the CPU, or raise one :class:`CheckpointError` naming ``fix``."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: {what} not found. {fix}")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # a truncated or foreign file
        raise CheckpointError(f"{path}: {what} is unreadable ({e}). {fix}") from e


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file: the fingerprint that ties results to the checkpoint they came from."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# The run-folder policy (versions, signatures) moved to hiva_lib.engine.runs; these names are
# still importable from here for callers written before the split.
_MOVED_TO_RUNS = ("finished_versions", "first_free", "run_signature", "find_finished",
                  "resolve_run_dir", "run_version", "latest_versions", "file_versions",
                  "free_version", "newest_version")


def __getattr__(name: str):
    if name in _MOVED_TO_RUNS:  # imported lazily: runs imports this module
        from hiva_lib.engine import runs

        return getattr(runs, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
