"""Eq. 7's balance: from what lambda does L_diff (Eq. 1) do anything? (the lambda sweep)

L_diff depends on the text embeddings H only, so the parameters it can move are the trained
text layers (the last BERT layers; the learned token table of ``no_language``). On those
parameters we measure, on a few training batches of a trained model, the gradient norms of
lambda·L_diff and of L_au (Eq. 4) and their ratio r = ||grad(lambda·L_diff)|| / ||grad(L_au)||:
r << 1 means L_diff hardly moves the text layers at that lambda, r >~ 1 that it dominates.
Written per run to ``results/<dataset>/ldiff_balance.csv`` (:func:`write_balance`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from hiva_lib.data.loader import FrameDataset, load_size_for, prepare_batch
from hiva_lib.integrity import atomic_write_text
from hiva_lib.losses import au_loss, inverse_frequency_weights
from hiva_lib.model.text import l_diff

COLUMNS = ["variant", "seed", "fold", "lambda_diff", "batches", "l_au", "l_diff",
           "grad_au", "grad_ldiff", "ratio"]


def _norm(grads) -> float:
    return float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None)))


def gradient_ratio(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                   weights: torch.Tensor, lam: float, reduction: str = "sum") -> dict:
    """On one batch (images already prepared): L_au, L_diff, the gradient norms of L_au and
    of lam·L_diff on the trained text layers, and their ratio. Eval descriptions, dropout off
    (the measurement is deterministic); the model's parameters are left as they were."""
    if model.text is None:
        raise ValueError("a vision-only model (the Baseline) has no text layers and no L_diff")
    params = [p for p in model.text.layers.parameters()]
    was = model.training
    model.eval()
    try:
        with torch.enable_grad():
            for p in params:
                p.requires_grad_(True)
            out = model(images)
            la = au_loss(out.logits.float(), labels.float(), weights, reduction)
            ld = l_diff(model.text(None).h)
            g_au = torch.autograd.grad(la, params, allow_unused=True)
            g_ld = torch.autograd.grad(lam * ld, params, allow_unused=True)
    finally:
        model.train(was)
        model.set_stage(model.stage)  # restores which parameters train
    grad_au, grad_ld = _norm(g_au), _norm(g_ld)
    return dict(l_au=la.item(), l_diff=ld.item(), grad_au=grad_au, grad_ldiff=grad_ld,
                ratio=grad_ld / grad_au if grad_au > 0 else float("nan"))


def measure_run(study, variant: str, lam: float | None = None, n_batches: int = 4,
                batch_size: int = 16) -> dict:
    """:func:`gradient_ratio` averaged over ``n_batches`` training batches of the study's fold
    (a fixed order: the first rows of a seeded permutation), for the trained ``variant``.
    ``lam``: the model's own lambda (the sweep), else the study's training preset's."""
    model = study.model(variant)
    if lam is None:
        lam = model.cfg.lambda_diff if model.cfg.lambda_diff is not None \
            else study.cfg.lambda_diff
    data = study.data
    train_rows, _ = data.split(study.cfg.fold)
    weights = torch.tensor(inverse_frequency_weights(data.labels(train_rows)),
                           dtype=torch.float32)
    rows = np.random.default_rng(study.cfg.seed).permutation(train_rows)
    rows = rows[:n_batches * batch_size]
    crop = model.cfg.img_size
    loader = DataLoader(FrameDataset(data, rows, load_size_for(crop)), batch_size=batch_size)
    parts = [gradient_ratio(model, prepare_batch(x, crop, train=False), y, weights, lam,
                            study.cfg.au_loss_reduction) for x, y, _ in loader]
    mean = {k: float(np.mean([p[k] for p in parts])) for k in parts[0]}
    return dict(variant=variant, seed=study.cfg.seed, fold=study.cfg.fold, lambda_diff=lam,
                batches=len(parts), **mean)


def write_balance(rows: list[dict], results_root: str | Path, dataset: str) -> pd.DataFrame:
    """``rows`` (of :func:`measure_run`) merged into ``results/<dataset>/ldiff_balance.csv``,
    replacing earlier rows of the same (variant, seed, fold); returns the table."""
    path = Path(results_root) / dataset / "ldiff_balance.csv"
    new = pd.DataFrame(rows, columns=COLUMNS)
    old = pd.read_csv(path) if path.exists() else pd.DataFrame(columns=COLUMNS)
    table = (pd.concat([old, new], ignore_index=True)
             .drop_duplicates(["variant", "seed", "fold"], keep="last")
             .sort_values(["lambda_diff", "seed", "fold"]).reset_index(drop=True))
    atomic_write_text(table.to_csv(index=False), path)
    return table
