"""The SynthFACS writer: render a preset's frames into a prepared data set on disk.

The files follow the prepared-data contract (hiva_lib/data/prepared.py): images, index.csv,
meta.json, plus regions.npz with each frame's ground-truth AU region masks.
"""
from __future__ import annotations

import contextlib
import functools
import multiprocessing
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

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
             overwrite: bool = False, progress: bool = True, workers: int | None = None
             ) -> PreparedDataset:
    """Render a SynthFACS preset into a prepared data set on disk (hiva_lib/data/prepared.py
    contract).

    Writes images/<subject>/<sequence>/<frame>.png, index.csv (AU<k> 0/1 labels plus I<k>
    intensities of all 15 AUs), meta.json and regions.npz ("masks": np.packbits of the
    (n, N, 32, 32) bool region masks along the last axis, "shape"). Same arguments give
    byte-identical files, whatever ``workers`` (processes rendering at once; None: 2 where
    the machine has 2 cores or more): every frame's randomness is seeded by its own subject
    and frame. Returns ``load_prepared(root)``.
    """
    p = get_preset(preset)
    if image_size < 32:
        raise ValueError(f"image_size must be >= 32 (got {image_size})")
    index = sample_labels(p.name, n_subjects, frames_per_subject, seed)
    n_sub = index["subject"].nunique()
    jobs = _frame_jobs(index)
    paths = [rel for _, rel, _, _ in jobs]
    with prepared_dir_writer(root, overwrite=overwrite) as tmp:
        job = _RenderJob(p.name, seed, image_size, str(tmp),
                         {s: sample_identity(stream_seed(seed, p.name, s, 1))
                          for s in range(n_sub)},
                         index[[f"I{a}" for a in ALL_AU_IDS]].to_numpy().astype(np.float32))
        regions = _render_all(job, jobs, workers, f"rendering {p.name}" if progress else None)
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


@dataclass(frozen=True)
class _RenderJob:
    """What every frame's rendering shares: the preset, seed, size, the output folder, the
    subjects' identities and every row's intensities."""

    preset: str
    seed: int
    image_size: int
    out: str
    identities: dict
    intensities: np.ndarray


def _frame_jobs(index: pd.DataFrame) -> list[tuple[int, str, int, int]]:
    """(row, image path, subject number from 0, frame) of every row of the index."""
    return [(i, f"images/{subj}/{seq}/{int(fr):04d}.png", int(subj[1:]) - 1, int(fr))
            for i, (subj, seq, fr) in enumerate(zip(index["subject"], index["sequence"],
                                                    index["frame"], strict=True))]


def _render_rows(job: _RenderJob, rows: list[tuple[int, str, int, int]]) -> np.ndarray:
    """Render and write ``rows``' images: their region masks (len(rows), N, 32, 32)."""
    from PIL import Image

    au_ids = get_preset(job.preset).au_ids
    regions = np.zeros((len(rows), len(au_ids), REGION_SIZE, REGION_SIZE), bool)
    for k, (i, rel, s, fr) in enumerate(rows):
        nz = sample_nuisance(stream_seed(job.seed, job.preset, s, fr, 3))
        img, masks = render_face(job.identities[s], job.intensities[i], nz, job.image_size)
        out = Path(job.out) / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(out, optimize=False, compress_level=6)
        for j, a in enumerate(au_ids):
            regions[k, j] = downsample_mask(masks[a])
    return regions


def _render_all(job: _RenderJob, jobs: list, workers: int | None, desc: str | None
                ) -> np.ndarray:
    """Every row rendered, in chunks of 64 frames, by ``workers`` spawned processes (one: in
    this one); the region masks in row order."""
    from hiva_lib.progress import progress as bar

    workers = min(2, os.cpu_count() or 1) if workers is None else max(1, int(workers))
    main = getattr(sys.modules["__main__"], "__file__", None)
    if main and not Path(main).exists():  # e.g. a script on stdin: spawn cannot start there
        workers = 1
    chunks = [jobs[i:i + 64] for i in range(0, len(jobs), 64)]
    render = functools.partial(_render_rows, job)
    parallel = workers > 1 and len(chunks) > 1
    parts = []
    with bar(total=len(jobs), desc=desc or "", disable=desc is None) as shown, \
            (multiprocessing.get_context("spawn").Pool(workers) if parallel
             else contextlib.nullcontext()) as pool:
        for part in (pool.imap(render, chunks) if parallel else map(render, chunks)):
            parts.append(part)
            shown.update(len(part))
    return np.concatenate(parts)
