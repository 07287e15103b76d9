"""Checkpoints: atomic torch files carrying their config, and the run-folder policy.

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


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or does not match the run asking for it."""


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


def resolve_run_dir(base: Path, if_exists: str) -> tuple[Path, bool]:
    """Pick the folder of a run. Returns (folder, finished).

    A finished run (``DONE`` marker present) is reused with ``if_exists="skip"``, refused with
    ``"error"``, or a fresh versioned sibling ``<base>-v2``, ``-v3``... is made with ``"version"``.
    An unfinished one is resumed.
    """
    if if_exists not in ("skip", "version", "error"):
        raise ValueError(f"if_exists must be 'skip', 'version' or 'error', not {if_exists!r}")
    if not (base / "DONE").exists():
        return base, False
    if if_exists == "skip":
        return base, True
    if if_exists == "error":
        raise CheckpointError(
            f"{base}: this run already finished. Pass if_exists='skip' to reuse it or "
            "'version' to run it again into a new folder."
        )
    k = 2
    while (base.parent / f"{base.name}-v{k}" / "DONE").exists():
        k += 1
    return base.parent / f"{base.name}-v{k}", False
