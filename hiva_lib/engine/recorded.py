"""The numbers of a results folder, recomputed from its predictions before they are reported.

An evaluation writes ``predictions.npz`` (the test fold's probabilities and labels) beside
``metrics.json`` (the per-AU F1 of those predictions and their mean). Every reader of the
numbers (the report, the ledger of claims, aggregates, the reproduction check, a reused
evaluation) goes through :func:`check_recorded_numbers`: the F1 are computed again from the
predictions, so a hand-edited ``metrics.json`` (or predictions replaced under it) is one
error naming the file, never a number in a table. Results without ``predictions.npz`` are
checked for their own consistency (the mean of the per-AU F1) only.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from hiva_lib.data.au import au_keys
from hiva_lib.integrity import DamagedFileError, read_json
from hiva_lib.metrics import f1_per_au

PREDICTIONS = "predictions.npz"
# F1 are ratios of counts, written as float64: the same predictions give the same digits
TOLERANCE = 1e-9


class RecordedNumbersError(DamagedFileError):
    """A metrics.json disagrees with itself or with the predictions beside it."""


def _fix(folder: Path) -> str:
    return (f"Restore {folder / 'metrics.json'} (e.g. git checkout -- {folder}), or move "
            f"{folder} away and evaluate that run again (notebooks 02/03): its numbers are "
            "computed again from its checkpoint.")


def _predictions(folder: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """(probs, labels) of ``folder/predictions.npz``; None when there is none."""
    path = folder / PREDICTIONS
    if not path.exists():
        return None
    try:
        with np.load(path) as saved:
            return np.asarray(saved["probs"]), np.asarray(saved["labels"])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
        raise RecordedNumbersError(
            f"{path}: unreadable ({type(err).__name__}: {err}), so the F1 of "
            f"{folder / 'metrics.json'} cannot be checked. {_fix(folder)}") from err


def recorded_problems(folder: Path, metrics: dict) -> list[str]:
    """How ``metrics`` (the metrics.json of ``folder``) differs from its own per-AU mean and
    from the F1 recomputed from ``predictions.npz``: one line per difference."""
    if not isinstance(metrics.get("f1"), dict) or not metrics["f1"]:
        return []  # no numbers to check (a malformed file is its reader's error)
    f1 = {k: float(v) for k, v in metrics["f1"].items()}
    problems = []
    mean = float(np.mean(list(f1.values())))
    if "mean_f1" in metrics and abs(float(metrics["mean_f1"]) - mean) > TOLERANCE:
        problems.append(f"mean_f1 {float(metrics['mean_f1']):.6g} is not the mean of its "
                        f"per-AU F1 ({mean:.6g})")
    saved = _predictions(folder)
    if saved is None:
        return problems
    probs, labels = saved
    keys = au_keys(metrics["au_ids"]) if "au_ids" in metrics else list(f1)
    if probs.shape != labels.shape or probs.ndim != 2 or probs.shape[1] != len(keys):
        return [*problems, f"{PREDICTIONS} holds probabilities {probs.shape} and labels "
                f"{labels.shape}, not one column per AU of {keys}"]
    if metrics.get("n_test") is not None and int(metrics["n_test"]) != len(labels):
        problems.append(f"n_test {metrics['n_test']} but {len(labels)} frames in {PREDICTIONS}")
    found = dict(zip(keys, f1_per_au(probs, labels), strict=True))
    for key in keys:
        if key not in f1 or abs(f1[key] - found[key]) > TOLERANCE:
            problems.append(f"{key} F1 {f1.get(key)} recorded, {found[key]:.6g} recomputed "
                            f"from {PREDICTIONS}")
    return problems


def check_recorded_numbers(folder: str | Path, metrics: dict) -> None:
    """One :class:`RecordedNumbersError` naming ``folder/metrics.json`` when its numbers are
    not those of its predictions (:func:`recorded_problems`)."""
    folder = Path(folder)
    problems = recorded_problems(folder, metrics)
    if problems:
        more = f" (+{len(problems) - 4} more)" if len(problems) > 4 else ""
        raise RecordedNumbersError(
            f"{folder / 'metrics.json'}: its numbers are not those of the predictions beside "
            f"it ({'; '.join(problems[:4])}{more}): the file was edited, or its predictions "
            f"replaced, since the evaluation wrote them. {_fix(folder)}")


def read_metrics(folder: str | Path, fix: str) -> dict:
    """``folder/metrics.json``, read (one error naming ``fix`` when unreadable) and checked
    against its predictions (:func:`check_recorded_numbers`)."""
    folder = Path(folder)
    metrics = read_json(folder / "metrics.json", fix)
    check_recorded_numbers(folder, metrics)
    return metrics
