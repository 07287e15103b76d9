"""Checkpoints: atomic torch files that verify themselves, loaded only when intact and finite.

A checkpoint is written to a temporary file in the same folder and moved into place
(:func:`hiva_lib.integrity.atomic_write`), so a run killed mid-write leaves the previous
checkpoint intact and a full disk is one error. Every checkpoint carries the SHA-256 of its
own contents (``content_sha256``: :func:`content_sha256` over every tensor's bytes and every
other value), so a copied, shared or downloaded checkpoint is verified wherever it lies. A
finished run's ``final.pt`` also has the SHA-256 of its file recorded beside it
(``final.pt.sha256``, written before ``DONE``). Every load checks both (a checkpoint saved
before either is loaded as it is), and refuses weights that are not finite (NaN or inf: a
run that diverged), so a damaged, replaced or diverged checkpoint is never trained on,
evaluated, drawn or used for inference.
"""
from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hiva_lib.errors import CheckpointError
from hiva_lib.integrity import DamagedFileError, atomic_write, verify_checksum, write_checksum

# the key of a checkpoint's own checksum (absent in checkpoints saved before it)
CONTENT_KEY = "content_sha256"


class NonFiniteWeightsError(CheckpointError):
    """A checkpoint's weights hold NaN or inf: the run that saved it diverged."""


def _nbytes(obj: Any) -> int:
    """The bytes of the tensors in ``obj`` (what torch.save writes, give or take headers)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_nbytes(v) for v in obj)
    return 0


def _tensor_bytes(t: torch.Tensor) -> np.ndarray:
    """The raw bytes of a tensor (any dtype, bfloat16 included) without a copy when it is
    contiguous on the CPU."""
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()


def _digest(obj: Any, h: Any) -> None:
    """Feed ``obj`` to the hash ``h``: its structure (types, keys in order, shapes, dtypes)
    and every value, so that two objects agree only when torch.load gives the same back."""
    if isinstance(obj, torch.Tensor):
        h.update(f"T{obj.dtype}{tuple(obj.shape)}".encode())
        h.update(_tensor_bytes(obj))
    elif isinstance(obj, np.ndarray):
        h.update(f"N{obj.dtype.str}{obj.shape}".encode())
        h.update(np.ascontiguousarray(obj).tobytes() if obj.dtype != object
                 else pickle.dumps(obj.tolist()))
    elif isinstance(obj, dict):
        h.update(f"D{type(obj).__name__}{len(obj)}".encode())
        for key, value in obj.items():  # torch.load keeps the order
            h.update(repr(key).encode() + b"\0")
            _digest(value, h)
    elif isinstance(obj, list | tuple):
        h.update(f"L{type(obj).__name__}{len(obj)}".encode())
        for value in obj:
            _digest(value, h)
    elif obj is None or isinstance(obj, str | int | float | bool | np.generic):
        h.update(f"V{type(obj).__name__}:{obj!r}\0".encode())
    else:  # anything else as pickle writes it
        h.update(b"P" + pickle.dumps(obj, protocol=4))


def content_sha256(state: dict) -> str:
    """The SHA-256 of a checkpoint's contents (every key but ``content_sha256`` itself)."""
    h = hashlib.sha256()
    _digest({k: v for k, v in state.items() if k != CONTENT_KEY}, h)
    return h.hexdigest()


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` of ``obj`` moved into place; a dict carries its :func:`content_sha256`."""
    if isinstance(obj, dict):
        obj = {**{k: v for k, v in obj.items() if k != CONTENT_KEY},
               CONTENT_KEY: content_sha256(obj)}
    atomic_write(path, lambda tmp: torch.save(obj, tmp), _nbytes(obj))


def damaged_fix(path: str | Path) -> str:
    """How to get past a damaged checkpoint of a run folder."""
    path = Path(path)
    return (f"Restore {path.name} (e.g. from a backup), or train this run again into a new "
            f"version folder (-p if_exists version), or move {path.parent} away and run again.")


def diverged_fix(path: str | Path) -> str:
    """How to get past a checkpoint whose weights are not finite."""
    return (f"Train this run again with a lower learning rate (e.g. -p lr_stage1 / lr_stage2 "
            "at a tenth) into a new version folder (-p if_exists version), or restore "
            f"{Path(path).name} from a backup of a run that did not diverge.")


def _finished_final(path: Path) -> bool:
    """``path`` is the final.pt of a run marked finished (``DONE`` beside it)."""
    return path.name == "final.pt" and (path.parent / "DONE").exists()


def verify_contents(state: Any, path: Path) -> None:
    """The checkpoint's own ``content_sha256`` against its contents (removed from ``state``);
    a checkpoint saved before it is left as it is."""
    if not isinstance(state, dict) or CONTENT_KEY not in state:
        return
    recorded = state.pop(CONTENT_KEY)
    found = content_sha256(state)
    if found != recorded:
        raise DamagedFileError(
            f"{path}: its contents (SHA-256 {found}) differ from the {recorded} recorded "
            f"inside it when it was saved: the file was damaged or edited since (a copy "
            f"too). {damaged_fix(path)}")


def nonfinite_weights(state: Any) -> list[str]:
    """The names of the floating-point tensors of ``state['model']`` (and of ``state``'s own
    top level: text embeddings) that hold NaN or inf."""
    if not isinstance(state, dict):
        return []
    model = state.get("model")
    named = list(model.items()) if isinstance(model, dict) else []
    named += [(k, v) for k, v in state.items() if isinstance(v, torch.Tensor)]
    return [name for name, t in named if isinstance(t, torch.Tensor)
            and t.is_floating_point() and not _finite(t)]


def _finite(t: torch.Tensor) -> bool:
    """Every value of a floating-point tensor is finite: in numpy, one thread, no copy
    (torch's threaded kernels over hundreds of tensors stall on a busy machine)."""
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:  # no numpy dtype: its float32 values
        t = t.float()
    return bool(np.isfinite(t.numpy()).all())


def check_finite(state: Any, path: Path, what: str) -> None:
    """One :class:`NonFiniteWeightsError` naming the tensors of a diverged checkpoint."""
    bad = nonfinite_weights(state)
    if bad:
        more = f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""
        raise NonFiniteWeightsError(
            f"{path}: the weights of this {what} are not finite (NaN or inf in {len(bad)} "
            f"tensor(s): {', '.join(bad[:5])}{more}): the run that saved it diverged, and "
            f"every prediction of it would be meaningless. {diverged_fix(path)}")


def load_checkpoint(path: str | Path, what: str, fix: str) -> dict:
    """Load a checkpoint on the CPU after checking it against its recorded SHA-256 (where
    there is a record beside it) and its own ``content_sha256`` (wherever it lies), with
    finite weights; else one :class:`CheckpointError` naming ``fix`` (or how to get past the
    damage). A finished run's ``final.pt`` saved before SHA-256 records gets its record
    now, once it has loaded."""
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
    verify_contents(state, path)
    check_finite(state, path, what)
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
