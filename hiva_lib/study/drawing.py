"""Shared drawing helpers of the figures and of inference's overlays: an attention map over a
face (min-max scaled, a flat map labelled as such), and short AU lists for titles."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from hiva_lib.study import attention_scoring as scoring

MAP_CMAP = "jet"
OVERLAY_ALPHA = 0.45


def _upsample(m: np.ndarray, size: int) -> np.ndarray:
    up = scoring.upsample_map(m, (size, size))
    lo, hi = up.min(), up.max()
    return (up - lo) / (hi - lo) if hi > lo else np.zeros_like(up)


def au_list(labels: np.ndarray, keys: list[str], per_line: int = 4) -> str:
    """Active AUs as text, ``per_line`` to a line (titles stay narrow)."""
    on = [k for k, y in zip(keys, labels, strict=True) if y > 0.5]
    lines = [", ".join(on[i:i + per_line]) for i in range(0, len(on), per_line)]
    return "\n".join(lines) or "none"


def _label(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center",
            color="white", fontsize=11, bbox=dict(facecolor="black", alpha=0.6))


def draw_map(ax, rgb: np.ndarray, m: np.ndarray) -> None:
    """``m`` min-max scaled over the face; a degenerate map (constant, e.g. an all-zero
    Grad-CAM) would show as a uniform tint that looks like a map: it is labelled instead."""
    ax.imshow(_upsample(m, rgb.shape[0]), cmap=MAP_CMAP, alpha=OVERLAY_ALPHA, vmin=0, vmax=1)
    if scoring.is_flat(m):
        _label(ax, "flat map")


def overlay(ax, rgb: np.ndarray, m: np.ndarray | None, title: str,
            contour: np.ndarray | None = None, plain: bool = False) -> None:
    """One panel: the face, map ``m`` over it ("n/a" when the model has no such map, unless
    ``plain``), the white ``contour`` of an AU region, and a title."""
    ax.imshow(rgb)
    if m is not None:
        draw_map(ax, rgb, m)
    elif not plain:  # a map this model does not have
        _label(ax, "n/a")
    if contour is not None and contour.any():
        ax.contour(contour.astype(float), levels=[0.5], colors="white", linewidths=1.0)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def save_overlay(path: Path, face: np.ndarray, maps: np.ndarray, titles: list[str],
                  caption: str) -> None:
    """The face beside each of its maps (one row), captioned, saved as ``path``."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 1 + len(maps), figsize=(2.0 * (1 + len(maps)), 2.4))
    axes[0].imshow(face)
    axes[0].set_title("face", fontsize=8)
    for ax, m, t in zip(axes[1:], maps, titles, strict=True):
        ax.imshow(face)
        draw_map(ax, face, m)
        ax.set_title(t, fontsize=7)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(caption, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
