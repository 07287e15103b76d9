"""The SynthFACS writer: render a preset's frames into a prepared data set on disk.

The files follow the prepared-data contract (hiva_lib/data/prepared.py): images, index.csv,
meta.json, plus regions.npz with each frame's ground-truth AU region masks.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from hiva_lib.data.au import ALL_AU_IDS, au_keys
from hiva_lib.data.prepared import PreparedDataset, load_prepared, prepared_dir_writer, write_index
from hiva_lib.data.synthfacs.face import VERSION, render_face
from hiva_lib.data.synthfacs.labels import get_preset, sample_labels, stream_seed
from hiva_lib.data.synthfacs.subject import sample_identity, sample_nuisance

SOURCE = f"SynthFACS v{VERSION}"
POSITIVE_RULE = "intensity >= 2 (0-5 scale), as DISFA"
REGION_SIZE = 32  # side of the stored region masks (regions.npz)


def downsample_mask(m: np.ndarray, r: int = REGION_SIZE) -> np.ndarray:
    """Area-downsample a bool mask to r x r: a cell is in the region when half of it is."""
    return cv2.resize(m.astype(np.float32), (r, r), interpolation=cv2.INTER_AREA) >= 0.5


def generate(preset: str, root: str | Path, n_subjects: int | None = None,
             frames_per_subject: int | None = None, image_size: int = 128, seed: int = 0,
             overwrite: bool = False, progress: bool = True) -> PreparedDataset:
    """Render a SynthFACS preset into a prepared data set (hiva_lib/data/prepared.py contract).

    Writes images/<subject>/<sequence>/<frame>.png, index.csv (AU<k> 0/1 labels plus I<k>
    intensities of all 15 AUs), meta.json and regions.npz ("masks": np.packbits of the
    (n, N, 32, 32) bool region masks along the last axis, "shape"). Same arguments give
    byte-identical files. Returns ``load_prepared(root)``.
    """
    from PIL import Image

    from hiva_lib.progress import progress as bar

    p = get_preset(preset)
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32 (got {image_size})")
    index = sample_labels(p.name, n_subjects, frames_per_subject, seed)
    n_sub = index["subject"].nunique()
    inten = index[[f"I{a}" for a in ALL_AU_IDS]].to_numpy()
    regions = np.zeros((len(index), len(p.au_ids), REGION_SIZE, REGION_SIZE), bool)
    paths = []
    with prepared_dir_writer(root, overwrite=overwrite) as tmp:
        ids = {s: sample_identity(stream_seed(seed, p.name, s, 1)) for s in range(n_sub)}
        rows = bar(range(len(index)), desc=f"rendering {p.name}", disable=not progress)
        for i in rows:
            subj, seq, fr = index["subject"].iat[i], index["sequence"].iat[i], index["frame"].iat[i]
            s = int(subj[1:]) - 1
            nz = sample_nuisance(stream_seed(seed, p.name, s, int(fr), 3))
            img, masks = render_face(ids[s], inten[i].astype(np.float32), nz, image_size)
            rel = f"images/{subj}/{seq}/{int(fr):04d}.png"
            out = tmp / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(out, optimize=False, compress_level=6)
            paths.append(rel)
            for j, a in enumerate(p.au_ids):
                regions[i, j] = downsample_mask(masks[a])
        index.insert(3, "image", paths)
        meta = dict(dataset=p.name, au_ids=list(p.au_ids), protocol=p.protocol,
                    test_folds=list(p.test_folds), image_size=image_size, source=SOURCE,
                    positive_rule=POSITIVE_RULE, seed=seed, n_subjects=n_sub,
                    frames_per_subject=int(len(index) // n_sub), mimics=p.real,
                    base_rate_targets={f"AU{a}": p.base_rates[a] for a in p.au_ids},
                    region_size=REGION_SIZE, region_au_order=au_keys(p.au_ids))
        write_index(tmp, meta, index)
        np.savez_compressed(tmp / "regions.npz", masks=np.packbits(regions, axis=-1),
                            shape=np.array(regions.shape, np.int64))
    return load_prepared(root)
