"""Losses: the weighted multi-label AU loss L_au (Eq. 4), the total loss (Eq. 7), class weights.

L_diff (Eq. 1) lives with the text encoder in :mod:`hiva_lib.model.text`.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def inverse_frequency_weights(labels: np.ndarray) -> np.ndarray:
    """Inverse-frequency AU weights from a (n, N) 0/1 label matrix of the training fold.

    w_i = (1 / f_i) normalised so that the weights average to 1, f_i the positive
    rate of AU i: the scheme of ME-GraphAU's class-weight files (checked in
    tests/test_real_data.py). An AU with no positive gets the largest finite weight.
    """
    labels = np.asarray(labels, dtype=np.float64)
    freq = labels.mean(axis=0)
    inv = np.where(freq > 0, 1.0 / np.maximum(freq, 1e-12), 0.0)
    if (freq == 0).any():  # never-positive AU: keep it finite, as large as the rarest seen
        inv[freq == 0] = inv.max() if inv.max() > 0 else 1.0
    return inv / inv.sum() * len(inv)


def au_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor | None = None,
    reduction: str = "sum",
) -> torch.Tensor:
    """Eq. 4: sigmoid cross-entropy per AU, weighted per AU, averaged over the batch.

    ``reduction="sum"`` adds the N AU terms as Eq. 4 writes it (the paper's scale, against
    which lambda = 1e-5 was tuned); ``"mean"`` averages them (ME-GraphAU's convention).
    """
    per_au = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(0)
    if weights is not None:
        per_au = per_au * weights.to(per_au)
    if reduction == "sum":
        return per_au.sum()
    if reduction == "mean":
        return per_au.mean()
    raise ValueError(f"au_loss reduction must be 'sum' or 'mean', not {reduction!r}")


def total_loss(l_au: torch.Tensor, l_diff: torch.Tensor | None, lambda_diff: float
               ) -> torch.Tensor:
    """Eq. 7: L = L_au + lambda * L_diff (stage 2); L_au alone when there is no L_diff
    (stage 1, the vision-only Baseline and "w/o L_diff")."""
    if l_diff is None:
        return l_au
    return l_au + lambda_diff * l_diff.float()
