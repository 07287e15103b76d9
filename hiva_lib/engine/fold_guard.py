"""Which subjects a checkpoint was trained on, and the check that it is evaluated on others.

The fold mix-up (a fold-1 checkpoint evaluated on fold 2, whose test subjects it trained on)
scores far too high and goes unnoticed; every checkpoint therefore records its data set, fold
and training subjects, and evaluation refuses a test fold that shares any of them.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

from hiva_lib.data.prepared import PreparedDataset


class FoldMixError(ValueError):
    """A checkpoint is evaluated on subjects it was trained on."""


def _subjects(data: PreparedDataset, rows) -> list[str]:
    return sorted({str(s) for s in data.index["subject"].iloc[rows]})


def trained_on(data: PreparedDataset, fold: int) -> dict:
    """The record stored in a checkpoint: data set, fold, training subjects and their hash."""
    train_rows, _ = data.split(fold)
    subjects = _subjects(data, train_rows)
    digest = hashlib.sha256("\n".join(subjects).encode()).hexdigest()
    return dict(dataset=data.name, fold=int(fold), subjects=subjects, subjects_sha256=digest)


def check_held_out(record: dict | None, data: PreparedDataset, fold: int,
                   checkpoint: str | Path) -> None:
    """Refuse to evaluate ``checkpoint`` on ``fold`` of ``data`` if its test subjects include
    any subject the checkpoint was trained on. Checkpoints written before this record existed
    (``record`` None) or trained on another data set are not checked."""
    if not record or record.get("dataset") != data.name:
        return
    _, test_rows = data.split(fold)
    shared = sorted(set(record["subjects"]) & set(_subjects(data, test_rows)))
    if shared:
        raise FoldMixError(
            f"{checkpoint}: trained on fold {record['fold']}'s training subjects of "
            f"{data.name}, and {len(shared)} of them ({', '.join(shared[:5])}"
            f"{', ...' if len(shared) > 5 else ''}) are in test fold {fold}: its scores "
            f"would be inflated. Evaluate it with fold={record['fold']} (-p fold "
            f"{record['fold']}), or use the checkpoint trained for fold {fold}.")
