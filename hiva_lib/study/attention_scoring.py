"""Scoring attention maps against SynthFACS' ground-truth AU regions (Fig. 6, quantified).

The paper judges its DDCA / CDCA maps (Eq. 5, Eq. 6) by eye. SynthFACS knows where each AU
acts, so a map can be scored. Two scores per (map, region):

* **pointing game**: 1 if the map's maximum lies inside the region, else 0;
* **energy inside**: the fraction of the map's (non-negative) mass that falls inside the region.

A map of shape (h, w) (e.g. the 7x7 Swin grid) is first upsampled to the mask's resolution,
bilinearly as in the overlays. A map that is uniform over the view scores, in expectation, the
region's area fraction on both, which is therefore reported as the chance level. Degenerate
maps (constant, e.g. an all-zero Grad-CAM, or without positive mass: :func:`is_flat`) are
given exactly that chance score; they are counted separately so that a method whose maps are
often flat is not mistaken for one that looks at random places.

The masks are drawn on the whole rendered image while the model sees a centre crop of it
(resize to ``load_size``, crop ``crop``: :func:`hiva_lib.data.loader.prepare_batch`); use
:func:`masks_in_view` to cut the masks to the model's view before scoring.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def upsample_map(att: np.ndarray | torch.Tensor, size: tuple[int, int],
                 mode: str = "bilinear") -> np.ndarray:
    """(h, w) or (n, h, w) map(s) -> the same at ``size``, float64."""
    t = torch.as_tensor(np.asarray(att, dtype=np.float64))
    squeeze = t.ndim == 2
    t = t[None] if squeeze else t
    if t.shape[-2:] != tuple(size):
        kw = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
        t = F.interpolate(t[:, None], size=tuple(size), mode=mode, **kw)[:, 0]
    out = t.numpy()
    return out[0] if squeeze else out


def _constant(att: np.ndarray) -> bool:
    return bool(np.ptp(att) <= 1e-12 * max(1.0, float(np.abs(att).max())))


def is_flat(att: np.ndarray | torch.Tensor) -> bool:
    """Whether a map is degenerate: constant (all zeros included: no maximum to point with) or
    without positive mass. Such a map scores the chance level by construction (below), so it
    says nothing about where the model looks; count such maps instead of trusting their score.
    """
    a = np.asarray(att, dtype=np.float64)
    return _constant(a) or float(np.clip(a, 0, None).sum()) <= 0


def pointing_game(att: np.ndarray, mask: np.ndarray, mode: str = "bilinear") -> float:
    """1.0 if the argmax of ``att`` (upsampled to ``mask``'s shape) lies in ``mask``, else 0.0.

    A constant map has no maximum to point with and scores the region's area fraction (its
    expectation under a random tie-break), so a flat map is not rewarded for pixel (0, 0).
    """
    mask = np.asarray(mask, dtype=bool)
    up = upsample_map(att, mask.shape, mode)
    if _constant(up):
        return float(mask.mean())
    return float(mask.flat[int(np.argmax(up))])


def energy_inside(att: np.ndarray, mask: np.ndarray, mode: str = "bilinear") -> float:
    """Fraction of the map's mass (negative values clipped to 0) inside ``mask``.

    A map with no positive mass is scored as a uniform one (the region's area fraction).
    """
    mask = np.asarray(mask, dtype=bool)
    up = np.clip(upsample_map(att, mask.shape, mode), 0, None)
    total = up.sum()
    if total <= 0:
        return float(mask.mean())
    return float(up[mask].sum() / total)


def masks_in_view(masks: np.ndarray, load_size: int, crop: int) -> np.ndarray:
    """Cut full-image masks (..., R, R) to the model's centre-crop view (..., crop, crop).

    The masks cover the whole image, whatever its pixel size; the image is resized to
    ``load_size`` and the centre ``crop`` is taken, as in evaluation. Nearest-neighbour
    resampling keeps the masks binary.
    """
    masks = np.asarray(masks, dtype=bool)
    lead, r = masks.shape[:-2], masks.shape[-1]
    t = torch.from_numpy(masks.reshape(-1, 1, r, r).astype(np.float32))
    t = F.interpolate(t, size=(load_size, load_size), mode="nearest")
    o = (load_size - crop) // 2
    t = t[:, 0, o:o + crop, o:o + crop] > 0.5
    return t.numpy().reshape(*lead, crop, crop)


def score_maps(maps: np.ndarray, masks: np.ndarray,
               mode: str = "bilinear") -> dict[str, np.ndarray]:
    """Score maps (n, h, w) against masks (n, R, R) pairwise: arrays ``pointing``, ``energy``,
    ``area`` (the chance level) of length n, NaN for pairs with an empty mask, and ``flat``
    (bool): the map is degenerate (:func:`is_flat`) and scored at chance by construction."""
    maps, masks = np.asarray(maps), np.asarray(masks, dtype=bool)
    if len(maps) != len(masks):
        raise ValueError(f"{len(maps)} maps but {len(masks)} masks; they are scored pairwise")
    n = len(maps)
    out = {k: np.full(n, np.nan) for k in ("pointing", "energy", "area")}
    out["flat"] = np.array([is_flat(m) for m in maps], dtype=bool)
    if n == 0:
        return out
    up = upsample_map(maps, masks.shape[-2:], mode)
    for i in range(n):
        if not masks[i].any():
            continue
        out["pointing"][i] = pointing_game(up[i], masks[i], mode)
        out["energy"][i] = energy_inside(up[i], masks[i], mode)
        out["area"][i] = masks[i].mean()
    return out
