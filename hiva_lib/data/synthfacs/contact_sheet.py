"""The SynthFACS contact sheet: a grid of a data set's faces with their active AUs."""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from hiva_lib.data.prepared import PreparedDataset, load_prepared
from hiva_lib.integrity import atomic_write, file_sha256, file_versions, free_version
from hiva_lib.project import default_figures_root


def contact_sheet(root_or_dataset: str | Path | PreparedDataset, path: str | Path, n: int = 24,
                  outlines: bool = False, seed: int = 0, cols: int = 6,
                  metadata: dict[str, str] | None = None) -> Path:
    """Write a PNG grid of ``n`` faces with their active AUs under each (optionally outlines
    of the active AUs' ground-truth regions). Faces are a seeded random sample of the frames.
    ``metadata``: PNG text entries (e.g. the data set's fingerprint).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    data = root_or_dataset if isinstance(root_or_dataset, PreparedDataset) else \
        load_prepared(root_or_dataset)
    labels = data.labels()
    rng = np.random.default_rng(seed)
    n = min(n, len(labels))
    pick = np.sort(rng.choice(len(labels), n, replace=False))
    regions = data.region_masks() if outlines else None
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.0, rows * 2.3))
    colors = plt.cm.tab10(np.linspace(0, 1, 10))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, i in zip(np.atleast_1d(axes).ravel(), pick, strict=False):
        with Image.open(data.image_path(int(i))) as im:
            img = np.asarray(im.convert("RGB"))
        ax.imshow(img)
        on = [a for a, v in zip(data.au_ids, labels[i], strict=True) if v]
        if regions is not None:
            h = img.shape[0]
            for c, j in enumerate(np.flatnonzero(labels[i])):
                m = cv2.resize(regions[i, j].astype(np.uint8), (h, h),
                               interpolation=cv2.INTER_NEAREST)
                ax.contour(m, levels=[0.5], colors=[colors[c % 10]], linewidths=0.7)
        text = " ".join(f"AU{a}" for a in on) or "neutral"
        if len(text) > 26:  # two lines under the face
            cut = text.rfind(" ", 0, 26)
            text = text[:cut] + "\n" + text[cut + 1:]
        ax.text(0.5, -0.02, f"{data.index['subject'].iat[i]}: {text}", fontsize=7,
                ha="center", va="top", transform=ax.transAxes)
    fig.suptitle(f"{data.name}: {len(data.index)} frames, "
                 f"{data.index['subject'].nunique()} subjects; "
                 "active AUs (intensity >= 2) under each"
                 + (", outlines: their regions" if outlines else ""),
                 fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, format="png", metadata=metadata)
    plt.close(fig)
    return path


CONTACT_SHEET = "synthfacs_contact_sheet.png"


def write_contact_sheet(data: PreparedDataset, figures_root: str | Path | None = None,
                        smoke: bool = False, overwrite: bool = False) -> Path:
    """The contact sheet of a SynthFACS data set at ``figures_root/<dataset>/`` (default
    figures/, smoke: study_out/_smoke/figures/, under the project root); returns its path.

    The PNG carries the SHA-256 of the data set's index.csv. A sheet of the same data set is
    reused; one of another data set is kept and the new sheet goes to the first free
    ``-v2``, ``-v3``... name, unless ``overwrite`` replaces it.
    """
    from PIL import Image

    tag = f"{data.name} index.csv sha256 {file_sha256(data.root / 'index.csv')}"
    base = Path(figures_root or default_figures_root(smoke)) / data.name / CONTACT_SHEET
    if not overwrite:
        for _, version in file_versions(base):
            with Image.open(version) as im:
                if im.info.get("Source") == tag:
                    return version
    path = base if overwrite else free_version(base)
    # atomic: a killed run leaves no half-written sheet
    return atomic_write(path, lambda tmp: contact_sheet(data, tmp, metadata={"Source": tag}))
