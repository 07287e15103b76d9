"""The test faces the figures show (Figs. 6-7, attention scores), as the model sees them:
a fixed, seeded choice of faces with many active AUs, their evaluation views and their
ground-truth AU regions cut to those views (SynthFACS).
"""
from __future__ import annotations

import numpy as np
import torch

from hiva_lib.data.loader import FrameDataset, load_size_for, prepare_batch
from hiva_lib.study import attention_scoring as scoring
from hiva_lib.study.study import Study


def load_views(study: Study, rows: np.ndarray, crop: int) -> tuple[torch.Tensor, np.ndarray]:
    """Rows of the data set as the model sees them at evaluation: [0, 1] tensors
    (B, 3, crop, crop; the model normalises them) and the same centre crops as uint8 RGB
    (B, crop, crop, 3)."""
    ds = FrameDataset(study.data, rows, load_size_for(crop))
    images = torch.stack([ds[i][0] for i in range(len(ds))])
    x = prepare_batch(images, crop, train=False)
    o = (images.shape[-1] - crop) // 2
    rgb = images[:, :, o:o + crop, o:o + crop].permute(0, 2, 3, 1).numpy()
    return x, rgb


def sample_faces(study: Study, n: int = 3, min_active: int = 3) -> np.ndarray:
    """Test-fold rows to show: faces with many active AUs, from distinct subjects when
    possible, in a fixed order (seeded by the study's seed)."""
    _, test = study.data.split(study.cfg.fold)
    labels = study.data.labels(test)
    active = labels.sum(1)
    rng = np.random.default_rng(study.cfg.seed)
    order = rng.permutation(len(test))
    order = order[np.argsort(-np.minimum(active[order], min_active), kind="stable")]
    subjects = study.data.index["subject"].to_numpy()[test]
    chosen, seen = [], set()
    for i in order:  # first pass: distinct subjects
        if subjects[i] not in seen:
            chosen.append(i)
            seen.add(subjects[i])
        if len(chosen) == n:
            break
    for i in order:
        if len(chosen) == n:
            break
        if i not in chosen:
            chosen.append(i)
    return test[np.array(chosen, dtype=int)]


def region_in_view(study: Study, rows: np.ndarray, crop: int) -> np.ndarray | None:
    """The AU regions of ``rows`` cut to the model's view (B, N, crop, crop); None for a data
    set without regions (only SynthFACS has them)."""
    masks = study.data.region_masks()
    if masks is None:
        return None
    return scoring.masks_in_view(masks[rows], load_size_for(crop), crop)
