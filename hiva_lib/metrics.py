"""Evaluation metric of the paper: per-AU F1 at threshold 0.5, and its mean."""
from __future__ import annotations

import numpy as np


def f1_per_au(probs: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """F1 of each AU column (fractions in [0, 1]); an AU with no positive and no predicted
    positive scores 0, as sklearn's ``zero_division=0`` and the AU literature do."""
    pred = np.asarray(probs) >= threshold
    true = np.asarray(labels) > 0.5
    tp = (pred & true).sum(0).astype(np.float64)
    fp = (pred & ~true).sum(0)
    fn = (~pred & true).sum(0)
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def all_positive_f1(labels: np.ndarray) -> np.ndarray:
    """F1 per AU of the trivial detector that says every AU is always on: 2p / (1 + p)."""
    p = np.asarray(labels, dtype=np.float64).mean(0)
    return 2 * p / (1 + p)
