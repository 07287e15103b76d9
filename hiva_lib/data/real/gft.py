"""GFT (Sayette Group Formation Task) in an assumed layout: we found no public description of
its file layout or of the subject ids of its official partition, so the preparer expects
``labels/<subject>.csv`` + ``videos/<subject>.avi`` (or ``frames/<subject>/<frame>.jpg``) +
``split.csv`` (docs/data.md). Train is fold 0, test fold 1.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from hiva_lib.data.prepared import DatasetError, check_subject_disjoint
from hiva_lib.data.real.common import (
    VIDEO_SUFFIXES,
    RawSequence,
    find_dir,
    frame_files,
    match_images,
    occurrence,
    raw_root_error,
    read_label_csv,
)

GFT_FIRST_FRAME = 1  # assumed: GFT label files count video frames from 1 (docs/data.md)


def _au_id(col: str) -> int | None:
    m = re.fullmatch(r"(?:AU)?0*(\d+)", str(col).strip(), flags=re.IGNORECASE)
    return int(m.group(1)) if m else None


def read_gft_split(path: Path) -> dict[str, int]:
    """split.csv (subject, split in {train, test}) -> subject -> fold (train 0, test 1)."""
    if not path.exists():
        raise DatasetError(f"{path}: missing split file. GFT is evaluated on its official "
                           "train/test partition: write it as split.csv with columns "
                           "subject,split (train or test), or pass split_file=...")
    fix = ("Write it as a CSV with a header row subject,split and one row per subject, split "
           "= train or test (the official GFT partition).")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: unreadable split file ({e}). {fix}") from e
    if not {"subject", "split"} <= set(df.columns):
        raise DatasetError(f"{path}: needs columns subject,split (has {list(df.columns)}). {fix}")
    split = df["split"].str.strip().str.lower()
    bad = sorted(set(split) - {"train", "test"})
    if bad:
        raise DatasetError(f"{path}: split values {bad} are not 'train' or 'test'. {fix}")
    table = pd.DataFrame({"subject": df["subject"].str.strip(), "fold": (split == "test") * 1})
    check_subject_disjoint(table, path)
    return dict(zip(table["subject"], table["fold"].astype(int), strict=True))


def scan_gft(raw_root: Path, au_ids: tuple[int, ...], labels_dir: str | None = None,
             videos_dir: str | None = None, frames_dir: str | None = None,
             first_frame: int = GFT_FIRST_FRAME) -> list[RawSequence]:
    """GFT (assumed layout, docs/data.md): labels/<subject>.csv + videos/ or frames/.

    Label frame numbers count from ``first_frame`` (video position = frame - first_frame).
    """
    labels = find_dir("gft", raw_root, ("labels", "AUCoding", "AU_OCC"), labels_dir,
                      "AU occurrence label")
    csvs = sorted(labels.glob("*.csv"))
    if not csvs:
        raise raw_root_error("gft", raw_root, f"no <subject>.csv label files in {labels}")
    has_frames = frames_dir is not None or (raw_root / "frames").is_dir()
    media = find_dir("gft", raw_root, ("frames",) if has_frames else ("videos", "Videos"),
                     frames_dir if has_frames else videos_dir, "frames or videos")
    out = []
    for csv in csvs:
        seq = _labelled_frames(csv, au_ids)
        if has_frames:
            _attach_images(seq, media, csv)
        else:
            _attach_video(seq, media, csv, first_frame)
        out.append(seq)
    _check_every_subject_labelled(out, labels, media, has_frames)
    return out


def _labelled_frames(csv: Path, au_ids: tuple[int, ...]) -> RawSequence:
    """The frames of ``csv`` with no unknown (9 / empty) label, and their 0/1 labels."""
    df = read_label_csv(csv)
    frame_col = next((c for c in df.columns if str(c).strip().lower() == "frame"),
                     df.columns[0])
    by_id = {_au_id(c): c for c in df.columns if c != frame_col and _au_id(c) is not None}
    missing = [a for a in au_ids if a not in by_id]
    if missing:
        raise DatasetError(f"{csv}: no column for AU {missing} (columns: "
                           f"{list(df.columns)[:8]}...). GFT label files need a frame column "
                           "and one column per AU (AU1 or 1); add the missing ones.")
    cols = [by_id[a] for a in au_ids]
    values = df[cols].fillna(9).to_numpy()
    keep = occurrence(values, csv, [str(c) for c in cols])
    frames = df[frame_col].to_numpy()[keep].astype(int)
    return RawSequence(csv.stem, csv.stem, frames, values[keep].astype(np.int8),
                       dropped_unknown=int((~keep).sum()))


def _attach_images(seq: RawSequence, media: Path, csv: Path) -> None:
    seq_dir = media / seq.subject
    if not seq_dir.is_dir():
        raise DatasetError(f"{seq_dir}: no frames for the labelled subject {csv.name}; "
                           "frame and label counts do not match. Restore the frames "
                           "from your licensed copy, or remove the label file.")
    seq.images = match_images(seq_dir, seq.frames, csv)


def _attach_video(seq: RawSequence, media: Path, csv: Path, first_frame: int) -> None:
    vids = [p for p in media.iterdir() if p.stem == seq.subject
            and p.suffix.lower() in VIDEO_SUFFIXES]
    if not vids:
        raise DatasetError(f"{media / (seq.subject + '.avi')}: missing video for the labelled "
                           "subject. Restore it from your licensed copy.")
    # GFT videos may run past the coded segment: only the labelled frames must exist
    seq.video, seq.positions = vids[0], seq.frames - first_frame
    if (seq.positions < 0).any():
        raise DatasetError(f"{csv}: frame numbers below first_frame={first_frame}; pass "
                           "first_frame=0 if the labels count frames from 0.")


def _check_every_subject_labelled(sequences: list[RawSequence], labels: Path, media: Path,
                                  has_frames: bool) -> None:
    labelled = {s.subject for s in sequences}
    unlabelled = sorted(p for p in media.iterdir() if p.stem not in labelled and (
        (p.is_dir() and frame_files(p)) if has_frames else p.suffix.lower() in VIDEO_SUFFIXES))
    if unlabelled:
        raise DatasetError(
            f"{labels / (unlabelled[0].stem + '.csv')}: missing label file for "
            f"{unlabelled[0]} ({len(unlabelled)} unlabelled subject(s) in {media}). Restore the "
            "labels from your licensed copy, or move the media of subjects you do not use out "
            f"of {media}.")
