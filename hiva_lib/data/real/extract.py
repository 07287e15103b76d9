"""Frames of a scanned sequence -> aligned face crops in the per-sequence crop cache.

A sequence's crops are written under ``<cache>/<subject>/<sequence>/<frame>.jpg`` with a
``.done.json`` marker, so an interrupted preparation resumes at the first unfinished sequence.
:class:`CacheWrites` records what one preparation added, so bad input can take it back.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from hiva_lib.data.prepared import JPEG_QUALITY, DatasetError, make_dirs, remove_dirs
from hiva_lib.data.real.common import RawSequence
from hiva_lib.data.real.face_align import FaceAligner

if TYPE_CHECKING:
    from tqdm import tqdm

# frames a decoder may legitimately fall short of the container's count (a last frame that
# some containers count but hold no picture for)
VIDEO_COUNT_TOLERANCE = 1


def read_frames(seq: RawSequence, only: set[int] | None = None
                ) -> Iterator[tuple[int, np.ndarray]]:
    """(row, RGB frame) of a sequence in order; ``only`` restricts to some rows.

    Reading a whole video with ``seq.video_frames`` set also checks its length
    (:func:`check_video_length`) and sets ``seq.unlabelled_tail``.
    """
    if seq.images is not None:
        yield from _read_images(seq.images, only)
    else:
        yield from _read_video(seq, only)


def _read_images(images: list[Path], only: set[int] | None) -> Iterator[tuple[int, np.ndarray]]:
    for i, path in enumerate(images):
        if only is not None and i not in only:
            continue
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise DatasetError(f"{path}: unreadable frame (not a valid image). Restore it "
                               "from your licensed copy.")
        yield i, cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _read_video(seq: RawSequence, only: set[int] | None) -> Iterator[tuple[int, np.ndarray]]:
    assert seq.video is not None and seq.positions is not None
    rows = {int(p): i for i, p in enumerate(seq.positions) if only is None or i in only}
    last = max(rows) if rows else -1
    whole = only is None and seq.video_frames is not None  # read to the end: count the frames
    cap = cv2.VideoCapture(str(seq.video))
    if not cap.isOpened():
        raise DatasetError(f"{seq.video}: unreadable video (OpenCV cannot open it). Restore it, "
                           "or install an OpenCV build with its codec.")
    reported = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))  # the container's own count
    to_end = only is None  # a full pass reads to the end: a cut video decodes short
    pos = 0
    try:
        while (to_end or pos <= last) and cap.grab():
            if pos in rows:
                ok, frame = cap.retrieve()
                if not ok or frame is None:
                    raise DatasetError(f"{seq.video}: frame {pos} cannot be decoded. Restore the "
                                       "video from your licensed copy.")
                yield rows[pos], cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            pos += 1
    finally:
        cap.release()
    if whole:
        seq.unlabelled_tail = check_video_length(seq, pos)
    elif pos <= last:
        raise _count_error(seq, pos, last + 1)
    if to_end:
        check_decoded_count(seq, pos, reported)


def check_decoded_count(seq: RawSequence, decoded: int, reported: int) -> None:
    """Refuse a video that decodes to fewer frames than its container reports (a file cut
    short, or corrupt past some point), even where its labels are covered (smoke subsets)."""
    if reported > 0 and decoded < reported - VIDEO_COUNT_TOLERANCE:
        raise DatasetError(
            f"{seq.video}: only {decoded} of the {reported} frames its container reports could "
            f"be decoded (of {seq.subject}/{seq.sequence}); the file is cut short or corrupt. "
            "Restore the video from your licensed copy.")


def check_video_length(seq: RawSequence, n_frames: int) -> int:
    """Frames of the video past its last label line; refuses a video shorter than its labels
    or longer by more than ``seq.max_unlabelled_tail`` (the DISFA frame-count rule)."""
    need = seq.video_frames
    assert need is not None
    if n_frames < need or n_frames - need > seq.max_unlabelled_tail:
        raise _count_error(seq, n_frames, need)
    return n_frames - need


def _count_error(seq: RawSequence, have: int, need: int) -> DatasetError:
    allowed = (f" (at most {seq.max_unlabelled_tail} unlabelled frames may follow the last "
               "label line)" if seq.max_unlabelled_tail and have > need else "")
    return DatasetError(f"{seq.video}: {have} frames, but the labels of {seq.subject} describe "
                        f"{need}{allowed}; frame and label counts do not match. Restore the "
                        "video or the label files from your licensed copy.")


class CacheWrites:
    """The files and folders one preparation adds to the crop cache, so that bad input can
    take them back (what was there before, e.g. a killed run's crops, stays)."""

    def __init__(self) -> None:
        self.dirs: list[Path] = []
        self.files: list[Path] = []

    def mkdir(self, folder: Path) -> None:
        self.dirs += make_dirs(folder)

    def will_write(self, path: Path) -> Path:
        if not path.exists():
            self.files.append(path)
        return path

    def undo(self) -> None:
        for f in self.files:
            f.unlink(missing_ok=True)
        remove_dirs(self.dirs)


def _finished(folder: Path, frames: list[int]) -> dict | None:
    """The ``.done.json`` of a sequence extracted before with the same frames, else None."""
    done = folder / ".done.json"
    if not done.exists():
        return None
    try:
        info = json.loads(done.read_text())
    except json.JSONDecodeError:  # cut short by a kill: extract the sequence again
        return None
    if info["frames"] == frames and all((folder / f"{f}.jpg").exists() for f in frames):
        return info
    return None


def extract_sequence(seq: RawSequence, aligner: FaceAligner, cache: Path,
                     bar: tqdm, writes: CacheWrites, batch: int = 16) -> np.ndarray:
    """Write the aligned crops of one sequence into ``cache``; returns face-found flags.

    A sequence finished before (same frames) is skipped: its ``.done.json`` lists them (and
    the video frames past its labels, restored into ``seq.unlabelled_tail``).
    """
    folder = cache / seq.subject / seq.sequence
    frames = [int(f) for f in seq.frames]
    info = _finished(folder, frames)
    if info is not None:
        bar.update(len(frames))
        seq.unlabelled_tail = info.get("unlabelled_tail", 0)
        return np.array(info["face_found"], bool)
    writes.mkdir(folder)
    found = _SequenceCrops(seq, aligner, folder, frames, writes).run(bar, batch)
    writes.will_write(folder / ".done.json").write_text(json.dumps(
        {"frames": frames, "face_found": found.tolist(), "unlabelled_tail": seq.unlabelled_tail}))
    return found


class _SequenceCrops:
    """Detect landmarks batch by batch and write each crop; a frame without a face borrows
    the landmarks of the nearest frame of the sequence that had one."""

    def __init__(self, seq: RawSequence, aligner: FaceAligner, folder: Path, frames: list[int],
                 writes: CacheWrites) -> None:
        self.seq, self.aligner, self.folder, self.frames = seq, aligner, folder, frames
        self.writes = writes
        self.found = np.zeros(len(frames), bool)
        self.marks: dict[int, np.ndarray] = {}
        self.pending: list[int] = []

    def run(self, bar: tqdm, batch: int) -> np.ndarray:
        chunk: list[tuple[int, np.ndarray]] = []
        for i, img in read_frames(self.seq):
            chunk.append((i, img))
            if len(chunk) == batch:
                self._flush(chunk, bar)
                chunk = []
        if chunk:
            self._flush(chunk, bar)
        if self.pending:
            self._borrow_landmarks()
        return self.found

    def _save(self, i: int, img: np.ndarray, lm: np.ndarray | None) -> None:
        crop = self.aligner.crop(img, lm)
        path = self.writes.will_write(self.folder / f"{self.frames[i]}.jpg")
        cv2.imwrite(str(path), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])

    def _flush(self, chunk: list[tuple[int, np.ndarray]], bar: tqdm) -> None:
        skip = self.aligner.mode == "skip"
        for (i, img), lm in zip(chunk, self.aligner.landmarks([c[1] for c in chunk]),
                                strict=True):
            if skip or lm is not None:
                self._save(i, img, lm)
                self.found[i] = not skip
                if lm is not None:
                    self.marks[i] = lm
            else:
                self.pending.append(i)
        bar.update(len(chunk))

    def _borrow_landmarks(self) -> None:
        seq = self.seq
        if not self.marks:
            raise DatasetError(
                f"{seq.images[0].parent if seq.images else seq.video}: no face found in any frame "
                f"of {seq.subject}/{seq.sequence}. Check the frames, or pass align='skip' if they "
                "are already face crops.")
        have = np.array(sorted(self.marks))
        for i, img in read_frames(seq, only=set(self.pending)):
            self._save(i, img, self.marks[int(have[np.abs(have - i).argmin()])])


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard link ``src`` at ``dst`` (same file system: no second copy), else copy it."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
