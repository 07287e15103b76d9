"""DISFA in its distributed layout: per-AU intensity files and the left camera's videos.

Label line i (0-based) is video frame i; positive = intensity >= 2. Our ``frame`` is that
0-based line, the number ME-GraphAU names the image by (``SN001/0.png``), so the raw route and
an import of ME-GraphAU lists give the same (subject, frame) keys. Which camera and which frame
numbering ME-GraphAU's images come from is our assumption (docs/data.md).

Frame-count rule: the video may run past the labels by at most
:data:`DISFA_MAX_UNLABELLED_TAIL` frames (SN010 has 4,844 label lines where the other subjects
have 4,845); those frames are skipped and reported (a warning, and
``meta.json -> preparation.unlabelled_video_frames``). A video shorter than its labels, or
longer by more, is refused: labels and video do not belong together.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from hiva_lib.data.prepared import DatasetError
from hiva_lib.data.real.common import VIDEO_SUFFIXES, RawSequence, find_dir, raw_root_error

DISFA_PARTS: tuple[tuple[str, ...], ...] = (
    ("SN002", "SN010", "SN001", "SN026", "SN027", "SN032", "SN030", "SN009", "SN016"),
    ("SN013", "SN018", "SN011", "SN028", "SN012", "SN006", "SN031", "SN021", "SN024"),
    ("SN003", "SN029", "SN023", "SN025", "SN008", "SN005", "SN007", "SN017", "SN004"),
)
DISFA_MAX_UNLABELLED_TAIL = 5  # video frames past the last label line that are skipped


def read_intensity(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One ``<SN>_au<k>.txt``: (frame numbers, intensities 0-5), one 'frame,intensity' a line."""
    frames, values = [], []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.replace(" ", "").split(",")
        try:
            f, v = int(parts[0]), int(float(parts[1]))
        except (ValueError, IndexError) as e:
            raise DatasetError(f"{path}: line {n} {line!r} is not 'frame,intensity'. Restore the "
                               "file from your licensed copy.") from e
        if not 0 <= v <= 5:
            raise DatasetError(f"{path}: line {n}: intensity {v} outside 0-5. Restore the file.")
        frames.append(f)
        values.append(v)
    if not frames:
        raise DatasetError(f"{path}: empty label file. Restore it from your licensed copy.")
    return np.array(frames), np.array(values)


def scan_disfa(raw_root: Path, au_ids: tuple[int, ...], videos_dir: str | None = None,
               labels_dir: str | None = None, camera: str = "Left") -> list[RawSequence]:
    """DISFA: ActionUnit_Labels/SN001/SN001_au1.txt + Videos_LeftCamera/LeftVideoSN001_comp.avi.

    One sequence per subject (``sequence`` = subject), ``frame`` = the 0-based label line.
    """
    labels = find_dir("disfa", raw_root, ("ActionUnit_Labels", "ActionUnit_labels"),
                      labels_dir, "ActionUnit_Labels")
    videos = find_dir("disfa", raw_root, (f"Videos_{camera}Camera", f"Video_{camera}Camera",
                                          "Videos"), videos_dir, "video")
    subjects = sorted(p.name for p in labels.iterdir() if p.is_dir() and p.name.startswith("SN"))
    if not subjects:
        raise raw_root_error("disfa", raw_root, f"no SN<nnn> subject folders in {labels}")
    out = []
    for s in subjects:
        occurrence = _subject_labels(labels / s, s, au_ids)
        positions = np.arange(len(occurrence))
        out.append(RawSequence(s, s, positions, occurrence, video=_video(videos, s, camera),
                               positions=positions, video_frames=len(occurrence),
                               max_unlabelled_tail=DISFA_MAX_UNLABELLED_TAIL))
    _check_every_video_labelled(videos, labels, subjects)
    return out


def _subject_labels(folder: Path, s: str, au_ids: tuple[int, ...]) -> np.ndarray:
    """(n, N) 0/1 occurrence (intensity >= 2) of subject ``s``; its AU files must agree."""
    frames, cols = None, []
    for a in au_ids:
        path = folder / f"{s}_au{a}.txt"
        if not path.exists():
            raise DatasetError(f"{path}: missing label file (DISFA AU{a} of {s}). Restore it "
                               "from your licensed copy (ActionUnit_Labels).")
        f, v = read_intensity(path)
        if frames is None:
            frames = f
        elif len(f) != len(frames) or (f != frames).any():
            raise DatasetError(f"{path}: {len(f)} frames, but {s}_au{au_ids[0]}.txt has "
                               f"{len(frames)}; the label files of {s} disagree. Restore them.")
        cols.append(v >= 2)
    return np.stack(cols, 1).astype(np.int8)


def _video(videos: Path, s: str, camera: str) -> Path:
    video = videos / f"{camera}Video{s}_comp.avi"
    if video.exists():
        return video
    cands = [p for p in videos.iterdir() if s in p.stem and p.suffix.lower() in VIDEO_SUFFIXES]
    if len(cands) != 1:
        raise DatasetError(f"{video}: missing video for the labelled subject {s}. "
                           "Restore it from your licensed copy.")
    return cands[0]


def _check_every_video_labelled(videos: Path, labels: Path, subjects: list[str]) -> None:
    for p in sorted(videos.iterdir()):
        m = re.search(r"SN\d{3}", p.stem)
        if p.suffix.lower() in VIDEO_SUFFIXES and m and m.group() not in subjects:
            raise DatasetError(f"{labels / m.group()}: missing label files for the video {p.name}. "
                               "Restore ActionUnit_Labels/<subject> from your licensed copy.")
