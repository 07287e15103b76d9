"""Images of a prepared data set as tensors: loading, caching, and batch augmentation.

Images are decoded once to uint8 at ``load_size`` (the crop size x 256/224, as the AU
literature's resize-then-crop; real data sets are prepared at that size, 256 px for the 224 crop,
so they are not resized here). Decoding is OpenCV's (:func:`read_image`): twice as fast as PIL
for a 256 px JPEG and the same pixels as PIL for JPEG and PNG (scripts/bench_decode.py,
tests/test_real_data.py); a resize, where one is needed, is still PIL's antialiased bilinear.
Small data sets (SynthFACS) are kept in memory, decoded once per process and shared by every
run on the same ``PreparedDataset``; large ones are read by DataLoader workers. Augmentation
(random crop + horizontal flip) runs on whole batches on the training device, which is cheaper
than per-image PIL transforms. The mean/std normalisation is the model's (its backbone's own,
:class:`hiva_lib.model.backbone.Backbone`), not done here.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from hiva_lib.data.prepared import DatasetError, PreparedDataset

CACHE_LIMIT_BYTES = 2 << 30  # larger sets of rows are read from disk per batch, not cached


def load_size_for(crop: int) -> int:
    return int(round(crop * 256 / 224))


def read_image(path: str | Path, size: int) -> torch.Tensor:
    """uint8 RGB (3, size, size) of an image file: decoded by OpenCV (EXIF orientation ignored,
    as PIL does), resized with PIL's bilinear filter only when it is not ``size`` already, so
    the tensors are those of the former PIL decoder pixel for pixel."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is None:
        raise DatasetError(f"{path}: unreadable image (missing, or not an image OpenCV can "
                           "decode). Prepare the data set again.")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if rgb.shape[:2] != (size, size):  # PIL's antialiased bilinear, as before the cv2 decoder
        rgb = np.array(Image.fromarray(rgb).resize((size, size), Image.BILINEAR))
    return torch.from_numpy(rgb).permute(2, 0, 1)


class FrameDataset(Dataset):
    """(uint8 image (3, S, S), float labels (N,), row) for rows of a prepared data set."""

    def __init__(self, data: PreparedDataset, rows: np.ndarray, load_size: int,
                 cache: bool = False) -> None:
        self.data, self.rows, self.load_size = data, np.asarray(rows), load_size
        self.labels = torch.from_numpy(data.labels(self.rows))
        self._cache: torch.Tensor | None = None
        if cache and len(self.rows) * 3 * load_size**2 <= CACHE_LIMIT_BYTES:
            self._cache = torch.stack([self._decoded(i) for i in range(len(self.rows))])

    def _decoded(self, i: int) -> torch.Tensor:
        key = (int(self.rows[i]), self.load_size)
        if key not in self.data.decoded:
            self.data.decoded[key] = self._read(i)
        return self.data.decoded[key]

    def _read(self, i: int) -> torch.Tensor:
        return read_image(self.data.image_path(int(self.rows[i])), self.load_size)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        image = self._cache[i] if self._cache is not None else self._read(i)
        return image, self.labels[i], i


def draw_augmentation(batch: int, size: int, crop: int,
                      generator: torch.Generator | None = None) -> tuple[list[int], torch.Tensor]:
    """The random crop offset (one per batch) and horizontal flips (one per image), drawn on
    the host (no device sync): the draws of :func:`prepare_batch` in training, in its order."""
    off = torch.randint(0, size - crop + 1, (2,), generator=generator).tolist()
    return off, torch.rand(batch, generator=generator) < 0.5


def apply_augmentation(images: torch.Tensor, crop: int, off: list[int], flip: torch.Tensor
                       ) -> torch.Tensor:
    """uint8 (B,3,S,S) -> float (B,3,crop,crop) in [0, 1], cropped at ``off`` and flipped
    where ``flip`` (a host tensor, copied without blocking)."""
    x = images.float().div_(255)[:, :, off[0]:off[0] + crop, off[1]:off[1] + crop]
    return torch.where(flip.to(x.device, non_blocking=True)[:, None, None, None], x.flip(-1), x)


def prepare_batch(images: torch.Tensor, crop: int, train: bool,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 (B,3,S,S) -> float (B,3,crop,crop) in [0, 1]: random or centre crop, flips.
    The model normalises its input itself (the backbone's mean/std)."""
    b, _, s, _ = images.shape
    if train:
        return apply_augmentation(images, crop, *draw_augmentation(b, s, crop, generator))
    o = (s - crop) // 2
    return images.float().div_(255)[:, :, o:o + crop, o:o + crop]
