"""What the BP4D, DISFA and GFT readers share: the scanned sequence, folder and label checks.

A scanner (:mod:`.bp4d`, :mod:`.disfa`, :mod:`.gft`) turns a licensed copy into a list of
:class:`RawSequence`; :mod:`.raw` aligns their frames and writes the prepared data set.
Every problem raises one :class:`~hiva_lib.data.prepared.DatasetError` that names the file,
the problem and the fix.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hiva_lib.data.prepared import DatasetError
from hiva_lib.hints import run_hint

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
VIDEO_SUFFIXES = (".avi", ".mp4", ".mov", ".mkv", ".wmv")

EXPECTED = {
    "bp4d": "AUCoding/AU_OCC/<subject>_<task>.csv (e.g. F001_T1.csv: a frame column then one "
            "column per AU, 0/1, 9 = unknown) and the 2D frames in Sequences(2D+3D)/<subject>/"
            "<task>/<frame>.jpg (e.g. F001/T1/0001.jpg)",
    "disfa": "ActionUnit_Labels/<subject>/<subject>_au<k>.txt (e.g. SN001/SN001_au1.txt, lines "
             "'frame,intensity') and Videos_LeftCamera/LeftVideo<subject>_comp.avi",
    "gft": "labels/<subject>.csv (a frame column then AU columns AU1..AU24, 0/1, 9 or empty = "
           "unknown), videos/<subject>.<avi|mp4> or frames/<subject>/<frame>.jpg, and "
           "split.csv (columns subject,split with split = train or test: the official "
           "partition of the GFT meta-data)",
}


def raw_root_error(dataset: str, raw_root: object, problem: str) -> DatasetError:
    name = dataset.upper()
    return DatasetError(
        f"{raw_root}: {problem}. raw_root must be the folder of your licensed {name} copy, "
        f"holding {EXPECTED[dataset]}. Pass it as prepare_dataset('{dataset}', "
        f"raw_root='/path/to/{name}'), or "
        + run_hint("01_prepare_data", {"dataset": dataset, "raw_root": f"/path/to/{name}"})
        + "; see docs/data.md."
    )


def parts_to_folds(parts: tuple[tuple[str, ...], ...]) -> dict[str, int]:
    """Subject -> test fold: part 1 is tested in fold 3, part 3 in fold 1 (ME-GraphAU)."""
    return {s: len(parts) - i for i, part in enumerate(parts) for s in part}


@dataclass
class RawSequence:
    """One labelled sequence: frames in label order, their 0/1 labels, and where pixels are."""

    subject: str
    sequence: str
    frames: np.ndarray  # frame numbers as in the label file
    labels: np.ndarray  # (n, N) 0/1
    images: list[Path] | None = None  # image layouts: one file per frame
    video: Path | None = None  # video layouts: frames[i] is at 0-based position positions[i]
    positions: np.ndarray | None = None
    video_frames: int | None = None  # frames the labels describe; the whole video is checked
    max_unlabelled_tail: int = 0  # video frames past the last label allowed (DISFA rule)
    unlabelled_tail: int = 0  # found by reading the video: frames past the last label
    dropped_unknown: int = 0

    def subset(self, k: int) -> RawSequence:
        """The first ``k`` frames (smoke runs); the video's length is then not checked."""
        return RawSequence(self.subject, self.sequence, self.frames[:k], self.labels[:k],
                           None if self.images is None else self.images[:k], self.video,
                           None if self.positions is None else self.positions[:k],
                           dropped_unknown=self.dropped_unknown)


def find_dir(dataset: str, raw_root: Path, candidates: tuple[str, ...], given: str | None,
             what: str) -> Path:
    """The folder ``given`` (relative to raw_root), else the first of ``candidates`` there."""
    if given is not None:
        path = Path(given) if Path(given).is_absolute() else raw_root / given
        if not path.is_dir():
            raise raw_root_error(dataset, raw_root, f"the {what} folder {path} does not exist")
        return path
    for c in candidates:
        if (raw_root / c).is_dir():
            return raw_root / c
    raise raw_root_error(dataset, raw_root, f"no {what} folder (looked for {list(candidates)})")


def frame_files(folder: Path) -> dict[int, Path]:
    """Frame number -> image file; names are numbers, zero-padded or not (0001.jpg, 643.jpg)."""
    return {int(p.stem): p for p in folder.iterdir()
            if p.suffix.lower() in IMAGE_SUFFIXES and p.stem.isdigit()}


def read_label_csv(csv: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(csv)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DatasetError(f"{csv}: unreadable label file ({e}). Restore it from your "
                           "licensed copy.") from e


def occurrence(values: np.ndarray, path: Path, columns: list[str]) -> np.ndarray:
    """Check a 0/1/9 occurrence block (the data rows of a CSV under its header line); returns
    the keep-mask of frames with no unknown (9). A column with one word in it is read as text:
    its values are compared as numbers, so the word itself is the one named."""
    numbers = pd.DataFrame(values).apply(pd.to_numeric, errors="coerce").to_numpy(float)
    bad = ~np.isin(numbers, (0, 1, 9))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DatasetError(f"{path}: value {values[r, c]!r} in line {r + 2} (data row {r + 1}), "
                           f"column {columns[c]} is not an occurrence code (0, 1, or 9 = "
                           "unknown). Restore the file from your licensed copy.")
    return ~(numbers == 9).any(axis=1)


def match_images(seq_dir: Path, frames: np.ndarray, label_file: Path) -> list[Path]:
    """The image of every labelled frame in ``seq_dir``; a missing one is an error."""
    files = frame_files(seq_dir)
    missing = [int(f) for f in frames if int(f) not in files]
    if missing:
        raise DatasetError(
            f"{seq_dir}: {len(missing)} of {len(frames)} frames labelled in {label_file.name} "
            f"have no image (first: frame {missing[0]}); frame and label counts do not match. "
            "Restore the frames from your licensed copy, or remove those rows from the labels."
        )
    return [files[int(f)] for f in frames]
