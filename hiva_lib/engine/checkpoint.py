"""Checkpoints: atomic torch files carrying their config, and the run-folder policy.

A checkpoint is written to a temporary file in the same folder and moved into place with
``os.replace``, so a run killed mid-write leaves the previous checkpoint intact.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
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


def _versions(base: Path) -> list[Path]:
    """``base``, ``base-v2``, ``base-v3``... up to the first that does not exist (at least base)."""
    out, k = [base], 2
    while (base.parent / f"{base.name}-v{k}").exists():
        out.append(base.parent / f"{base.name}-v{k}")
        k += 1
    return out


def finished_versions(base: Path, marker: str = "DONE") -> list[Path]:
    """The versions of ``base`` (``base``, ``base-v2``...) that hold ``marker``, oldest first."""
    return [v for v in _versions(base) if (v / marker).exists()]


def first_free(base: Path, marker: str) -> Path:
    """The first of ``base``, ``base-v2``... without ``marker`` (a file that says the folder
    holds a finished run or result), or the next new version after them."""
    versions = _versions(base)
    free = [v for v in versions if not (v / marker).exists()]
    return free[0] if free else base.parent / f"{base.name}-v{len(versions) + 1}"


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def run_signature(run_dir: Path) -> dict | None:
    """The signature (the config values that define the run) a finished run was saved with."""
    path = run_dir / "signature.json"
    if path.exists():
        return json.loads(path.read_text())
    final = run_dir / "final.pt"  # runs finished before signature.json existed
    if final.exists():
        return load_checkpoint(final, "checkpoint", "Delete the run folder.").get("signature")
    return None


def find_finished(base: Path, signature: dict | None = None) -> Path | None:
    """The newest finished version of ``base`` saved with ``signature`` (any if None)."""
    same = [v for v in finished_versions(base) if signature is None
            or _canonical(run_signature(v)) == _canonical(signature)]
    return same[-1] if same else None


def resolve_run_dir(base: Path, if_exists: str, signature: dict | None = None
                    ) -> tuple[Path, bool]:
    """Pick the folder of a run among ``base``, ``base-v2``, ``base-v3``... Returns
    (folder, finished).

    A finished run (``DONE`` marker present) whose saved signature equals ``signature`` (any
    finished run if ``signature`` is None) is reused with ``if_exists="skip"``, refused with
    ``"error"``; ``"version"`` runs it again into the next free versioned sibling. A finished
    run with another signature is never reused nor overwritten: the run goes to the first
    unfinished version (resumed if it was started). Nothing is deleted.
    """
    if if_exists not in ("skip", "version", "error"):
        raise ValueError(f"if_exists must be 'skip', 'version' or 'error', not {if_exists!r}")
    reuse = find_finished(base, signature)
    if reuse and if_exists == "skip":
        return reuse, True
    if reuse and if_exists == "error":
        raise CheckpointError(
            f"{reuse}: this run already finished. Pass if_exists='skip' to reuse it or "
            "'version' to run it again into a new folder.")
    folder = first_free(base, "DONE")
    done = finished_versions(base)
    if done and not reuse:
        print(f"{done[-1]} holds a finished run with other settings (kept); this run goes to "
              f"{folder}")
    return folder, False


_VERSIONED = re.compile(r"^(?P<base>.+?)(?:-v(?P<version>\d+))?$")


def run_version(name: str) -> tuple[str, int]:
    """``"fold1-v3"`` -> ``("fold1", 3)``; an unversioned ``"fold1"`` is version 1."""
    m = _VERSIONED.match(name)
    return m["base"], int(m["version"] or 1)


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
    versions = file_versions(path)
    return path if not versions else path.with_name(
        f"{path.stem}-v{versions[-1][0] + 1}{path.suffix}")


def newest_version(path: str | Path) -> Path | None:
    """The newest existing version of ``path`` (by version number), or None."""
    versions = file_versions(Path(path))
    return versions[-1][1] if versions else None
