"""BP4D-Spontaneous in its distributed layout: AU_OCC label CSVs and the 2D frame folders.

The 3-fold split is the one of ME-GraphAU's ``tool/BP4D_image_label_process.py`` (the de facto
split of the AU literature; JAA-Net uses the same): three subject parts, test fold 1 is part 3,
fold 2 part 2, fold 3 part 1, and each fold trains on the other two parts.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from hiva_lib.data.prepared import DatasetError
from hiva_lib.data.real.common import (
    RawSequence,
    find_dir,
    frame_files,
    match_images,
    occurrence,
    raw_root_error,
    read_label_csv,
)

BP4D_PARTS: tuple[tuple[str, ...], ...] = (
    ("F001", "M007", "F018", "F008", "F002", "M004", "F010", "F009", "M012", "M001", "F016",
     "M014", "F023", "M008"),
    ("M011", "F003", "M010", "M002", "F005", "F022", "M018", "M017", "F013", "M016", "F020",
     "F011", "M013", "M005"),
    ("F007", "F015", "F006", "F019", "M006", "M009", "F012", "M003", "F004", "F021", "F017",
     "M015", "F014"),
)


def scan_bp4d(raw_root: Path, au_ids: tuple[int, ...], frames_dir: str | None = None,
              labels_dir: str | None = None) -> list[RawSequence]:
    """BP4D: AUCoding/AU_OCC/F001_T1.csv + Sequences(2D+3D)/F001/T1/<frame>.jpg.

    Frames whose label is 9 (unknown) for any of the data set's AUs are dropped.
    """
    labels = find_dir("bp4d", raw_root, ("AUCoding/AU_OCC", "AU_OCC", "AUCoding"),
                      labels_dir, "AU occurrence label")
    frames_root = find_dir("bp4d", raw_root, ("Sequences(2D+3D)", "Sequences", "2D+3D",
                                              "img", "images", "frames"), frames_dir, "frames")
    csvs = sorted(p for p in labels.glob("*.csv") if re.fullmatch(r"[FM]\d{3}_T\d+", p.stem))
    if not csvs:
        raise raw_root_error("bp4d", raw_root, f"no <subject>_<task>.csv label files in {labels}")
    out = [_sequence(csv, frames_root, au_ids) for csv in csvs]
    _check_every_frame_folder_labelled(out, labels, frames_root)
    return out


def _sequence(csv: Path, frames_root: Path, au_ids: tuple[int, ...]) -> RawSequence:
    subject, task = csv.stem.split("_")
    df = read_label_csv(csv)
    cols = [str(a) for a in au_ids]
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DatasetError(f"{csv}: no column for AU {missing} (columns: "
                           f"{list(df.columns)[:8]}...). BP4D occurrence files have a frame "
                           "column then one column per AU number.")
    keep = occurrence(df[cols].to_numpy(), csv, cols)
    frames = df[df.columns[0]].to_numpy()[keep].astype(int)
    seq_dir = frames_root / subject / task
    if not seq_dir.is_dir():
        raise DatasetError(f"{seq_dir}: no frames for the labelled sequence {csv.name}; "
                           "frame and label counts do not match. Restore the frames.")
    return RawSequence(subject, task, frames, df[cols].to_numpy()[keep].astype(np.int8),
                       images=match_images(seq_dir, frames, csv),
                       dropped_unknown=int((~keep).sum()))


def _check_every_frame_folder_labelled(sequences: list[RawSequence], labels: Path,
                                       frames_root: Path) -> None:
    labelled = {(s.subject, s.sequence) for s in sequences}
    for subj in sorted(p for p in frames_root.iterdir() if p.is_dir()):
        for task in sorted(p for p in subj.iterdir() if p.is_dir()):
            if (subj.name, task.name) not in labelled and frame_files(task):
                raise DatasetError(
                    f"{labels / (subj.name + '_' + task.name + '.csv')}: missing label file for "
                    f"the frames in {task}. Restore it from your licensed copy (AUCoding/AU_OCC)."
                )
