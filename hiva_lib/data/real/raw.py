"""BP4D, DISFA and GFT in their distributed layouts -> the prepared-data-set contract.

The paper (Sec. IV-A) evaluates on BP4D and DISFA with the subject-independent 3-fold
protocol and on GFT with its official train/test split. The fold assignment below is the
one of ME-GraphAU's ``tool/BP4D_image_label_process.py`` and ``tool/DISFA_image_label_process.py``
(the de facto split of the AU literature): three subject "parts"; test fold 1 is part 3,
fold 2 is part 2, fold 3 is part 1, and each fold trains on the other two parts.
What each layout expects, and what was assumed, is in docs/data.md.

Every problem with the raw data (wrong root, missing label file, unreadable frame, frame /
label count mismatch, unknown subject, leakage) raises one :class:`DatasetError` and leaves
``data_root`` as it was: nothing at the output path, and the crops this call added to the
cache removed again. Aligned crops are cached per sequence under ``<data_root>/.cache``, so
that a run that is interrupted or crashes (not bad input) keeps them and the next run resumes
where it stopped.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import pandas as pd

from hiva_lib.data.au import au_keys, dataset_aus
from hiva_lib.data.prepared import (
    DatasetError,
    PreparedDataset,
    check_apart,
    check_output_dir,
    check_subject_disjoint,
    load_prepared,
    make_dirs,
    prepared_dir_writer,
    remove_dirs,
    write_index,
)
from hiva_lib.data.real.face_align import FaceAligner
from hiva_lib.presets import SMOKE_FRAMES, SMOKE_SEQUENCES
from hiva_lib.progress import progress as progress_bar

if TYPE_CHECKING:
    from tqdm import tqdm

# Subject parts of the 3-fold protocol (ME-GraphAU tool scripts; JAA-Net uses the same).
BP4D_PARTS: tuple[tuple[str, ...], ...] = (
    ("F001", "M007", "F018", "F008", "F002", "M004", "F010", "F009", "M012", "M001", "F016",
     "M014", "F023", "M008"),
    ("M011", "F003", "M010", "M002", "F005", "F022", "M018", "M017", "F013", "M016", "F020",
     "F011", "M013", "M005"),
    ("F007", "F015", "F006", "F019", "M006", "M009", "F012", "M003", "F004", "F021", "F017",
     "M015", "F014"),
)
DISFA_PARTS: tuple[tuple[str, ...], ...] = (
    ("SN002", "SN010", "SN001", "SN026", "SN027", "SN032", "SN030", "SN009", "SN016"),
    ("SN013", "SN018", "SN011", "SN028", "SN012", "SN006", "SN031", "SN021", "SN024"),
    ("SN003", "SN029", "SN023", "SN025", "SN008", "SN005", "SN007", "SN017", "SN004"),
)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
VIDEO_SUFFIXES = (".avi", ".mp4", ".mov", ".mkv", ".wmv")
GFT_FIRST_FRAME = 1  # assumed: GFT label files count video frames from 1 (docs/data.md)


def parts_to_folds(parts: tuple[tuple[str, ...], ...]) -> dict[str, int]:
    """Subject -> test fold: part 1 is tested in fold 3, part 3 in fold 1 (ME-GraphAU)."""
    return {s: len(parts) - i for i, part in enumerate(parts) for s in part}


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
        f"raw_root='/path/to/{name}') or `papermill notebooks/01_prepare_data.ipynb out.ipynb "
        f"-p dataset {dataset} -p raw_root /path/to/{name}`; see docs/data.md."
    )


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
    video_frames: int | None = None  # frames the video must have (label lines)
    dropped_unknown: int = 0

    def subset(self, k: int) -> RawSequence:
        return RawSequence(self.subject, self.sequence, self.frames[:k], self.labels[:k],
                           None if self.images is None else self.images[:k], self.video,
                           None if self.positions is None else self.positions[:k],
                           None, self.dropped_unknown)


def _find_dir(dataset: str, raw_root: Path, candidates: tuple[str, ...], given: str | None,
              what: str) -> Path:
    if given is not None:
        path = Path(given) if Path(given).is_absolute() else raw_root / given
        if not path.is_dir():
            raise raw_root_error(dataset, raw_root, f"the {what} folder {path} does not exist")
        return path
    for c in candidates:
        if (raw_root / c).is_dir():
            return raw_root / c
    raise raw_root_error(dataset, raw_root, f"no {what} folder (looked for {list(candidates)})")


def _frame_files(folder: Path) -> dict[int, Path]:
    """Frame number -> image file; names are numbers, zero-padded or not (0001.jpg, 643.jpg)."""
    return {int(p.stem): p for p in folder.iterdir()
            if p.suffix.lower() in IMAGE_SUFFIXES and p.stem.isdigit()}


def _occurrence(values: np.ndarray, path: Path, columns: list[str]) -> np.ndarray:
    """Check a 0/1/9 occurrence block; returns the keep-mask of frames with no unknown (9)."""
    bad = ~np.isin(values, (0, 1, 9))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DatasetError(f"{path}: value {values[r, c]!r} in data row {r + 1}, column "
                           f"{columns[c]} is not an occurrence code (0, 1, or 9 = unknown). "
                           "Restore the file from your licensed copy.")
    return ~(values == 9).any(axis=1)


def _match_images(seq_dir: Path, frames: np.ndarray, label_file: Path) -> list[Path]:
    files = _frame_files(seq_dir)
    missing = [int(f) for f in frames if int(f) not in files]
    if missing:
        raise DatasetError(
            f"{seq_dir}: {len(missing)} of {len(frames)} frames labelled in {label_file.name} "
            f"have no image (first: frame {missing[0]}); frame and label counts do not match. "
            "Restore the frames from your licensed copy, or remove those rows from the labels."
        )
    return [files[int(f)] for f in frames]


# ---------------------------------------------------------------------------------- BP4D
def scan_bp4d(raw_root: Path, au_ids: tuple[int, ...], frames_dir: str | None = None,
              labels_dir: str | None = None) -> list[RawSequence]:
    """BP4D: AUCoding/AU_OCC/F001_T1.csv + Sequences(2D+3D)/F001/T1/<frame>.jpg.

    Frames whose label is 9 (unknown) for any of the data set's AUs are dropped.
    """
    labels = _find_dir("bp4d", raw_root, ("AUCoding/AU_OCC", "AU_OCC", "AUCoding"),
                       labels_dir, "AU occurrence label")
    frames_root = _find_dir("bp4d", raw_root, ("Sequences(2D+3D)", "Sequences", "2D+3D",
                                               "img", "images", "frames"), frames_dir, "frames")
    csvs = sorted(p for p in labels.glob("*.csv") if re.fullmatch(r"[FM]\d{3}_T\d+", p.stem))
    if not csvs:
        raise raw_root_error("bp4d", raw_root, f"no <subject>_<task>.csv label files in {labels}")
    cols = [str(a) for a in au_ids]
    out = []
    for csv in csvs:
        subject, task = csv.stem.split("_")
        try:
            df = pd.read_csv(csv)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise DatasetError(f"{csv}: unreadable label file ({e}). Restore it from your "
                               "licensed copy.") from e
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise DatasetError(f"{csv}: no column for AU {missing} (columns: "
                               f"{list(df.columns)[:8]}...). BP4D occurrence files have a frame "
                               "column then one column per AU number.")
        keep = _occurrence(df[cols].to_numpy(), csv, cols)
        frames = df[df.columns[0]].to_numpy()[keep].astype(int)
        seq_dir = frames_root / subject / task
        if not seq_dir.is_dir():
            raise DatasetError(f"{seq_dir}: no frames for the labelled sequence {csv.name}; "
                               "frame and label counts do not match. Restore the frames.")
        out.append(RawSequence(subject, task, frames, df[cols].to_numpy()[keep].astype(np.int8),
                               images=_match_images(seq_dir, frames, csv),
                               dropped_unknown=int((~keep).sum())))
    labelled = {(s.subject, s.sequence) for s in out}
    for subj in sorted(p for p in frames_root.iterdir() if p.is_dir()):
        for task in sorted(p for p in subj.iterdir() if p.is_dir()):
            if (subj.name, task.name) not in labelled and _frame_files(task):
                raise DatasetError(
                    f"{labels / (subj.name + '_' + task.name + '.csv')}: missing label file for "
                    f"the frames in {task}. Restore it from your licensed copy (AUCoding/AU_OCC)."
                )
    return out


# ---------------------------------------------------------------------------------- DISFA
def _read_intensity(path: Path) -> tuple[np.ndarray, np.ndarray]:
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

    Label line i is video frame i; positive = intensity >= 2. ``frame`` is that 0-based
    position (the file's own frame numbers start at 1), the number ME-GraphAU names the image
    by (``SN001/0.png``), so both routes give the same (subject, frame) keys.
    """
    labels = _find_dir("disfa", raw_root, ("ActionUnit_Labels", "ActionUnit_labels"),
                       labels_dir, "ActionUnit_Labels")
    videos = _find_dir("disfa", raw_root, (f"Videos_{camera}Camera", f"Video_{camera}Camera",
                                           "Videos"), videos_dir, "video")
    subjects = sorted(p.name for p in labels.iterdir() if p.is_dir() and p.name.startswith("SN"))
    if not subjects:
        raise raw_root_error("disfa", raw_root, f"no SN<nnn> subject folders in {labels}")
    out = []
    for s in subjects:
        frames, cols = None, []
        for a in au_ids:
            path = labels / s / f"{s}_au{a}.txt"
            if not path.exists():
                raise DatasetError(f"{path}: missing label file (DISFA AU{a} of {s}). Restore it "
                                   "from your licensed copy (ActionUnit_Labels).")
            f, v = _read_intensity(path)
            if frames is None:
                frames = f
            elif len(f) != len(frames) or (f != frames).any():
                raise DatasetError(f"{path}: {len(f)} frames, but {s}_au{au_ids[0]}.txt has "
                                   f"{len(frames)}; the label files of {s} disagree. Restore them.")
            cols.append(v >= 2)
        video = videos / f"{camera}Video{s}_comp.avi"
        if not video.exists():
            cands = [p for p in videos.iterdir() if s in p.stem and p.suffix.lower()
                     in VIDEO_SUFFIXES] if videos.is_dir() else []
            if len(cands) != 1:
                raise DatasetError(f"{video}: missing video for the labelled subject {s}. "
                                   "Restore it from your licensed copy.")
            video = cands[0]
        positions = np.arange(len(frames))
        out.append(RawSequence(s, s, positions, np.stack(cols, 1).astype(np.int8), video=video,
                               positions=positions, video_frames=len(frames)))
    for p in sorted(videos.iterdir()):
        m = re.search(r"SN\d{3}", p.stem)
        if p.suffix.lower() in VIDEO_SUFFIXES and m and m.group() not in subjects:
            raise DatasetError(f"{labels / m.group()}: missing label files for the video {p.name}. "
                               "Restore ActionUnit_Labels/<subject> from your licensed copy.")
    return out


# ---------------------------------------------------------------------------------- GFT
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
    labels = _find_dir("gft", raw_root, ("labels", "AUCoding", "AU_OCC"), labels_dir,
                       "AU occurrence label")
    csvs = sorted(labels.glob("*.csv"))
    if not csvs:
        raise raw_root_error("gft", raw_root, f"no <subject>.csv label files in {labels}")
    has_frames = frames_dir is not None or (raw_root / "frames").is_dir()
    media = _find_dir("gft", raw_root, ("frames",) if has_frames else ("videos", "Videos"),
                      frames_dir if has_frames else videos_dir, "frames or videos")
    out = []
    for csv in csvs:
        subject = csv.stem
        try:
            df = pd.read_csv(csv)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise DatasetError(f"{csv}: unreadable label file ({e}). Restore it from your "
                               "licensed copy.") from e
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
        keep = _occurrence(values, csv, [str(c) for c in cols])
        frames = df[frame_col].to_numpy()[keep].astype(int)
        seq = RawSequence(subject, subject, frames, values[keep].astype(np.int8),
                          dropped_unknown=int((~keep).sum()))
        if has_frames:
            seq_dir = media / subject
            if not seq_dir.is_dir():
                raise DatasetError(f"{seq_dir}: no frames for the labelled subject {csv.name}; "
                                   "frame and label counts do not match. Restore the frames "
                                   "from your licensed copy, or remove the label file.")
            seq.images = _match_images(seq_dir, frames, csv)
        else:
            vids = [p for p in media.iterdir() if p.stem == subject
                    and p.suffix.lower() in VIDEO_SUFFIXES]
            if not vids:
                raise DatasetError(f"{media / (subject + '.avi')}: missing video for the labelled "
                                   "subject. Restore it from your licensed copy.")
            # GFT videos may run past the coded segment: only the labelled frames must exist
            seq.video, seq.positions = vids[0], frames - first_frame
            if (seq.positions < 0).any():
                raise DatasetError(f"{csv}: frame numbers below first_frame={first_frame}; pass "
                                   "first_frame=0 if the labels count frames from 0.")
        out.append(seq)
    labelled = {s.subject for s in out}
    unlabelled = sorted(p for p in media.iterdir() if p.stem not in labelled and (
        (p.is_dir() and _frame_files(p)) if has_frames else p.suffix.lower() in VIDEO_SUFFIXES))
    if unlabelled:
        raise DatasetError(
            f"{labels / (unlabelled[0].stem + '.csv')}: missing label file for "
            f"{unlabelled[0]} ({len(unlabelled)} unlabelled subject(s) in {media}). Restore the "
            "labels from your licensed copy, or move the media of subjects you do not use out "
            f"of {media}.")
    return out


SCANNERS: dict[str, Callable[..., list[RawSequence]]] = {
    "bp4d": scan_bp4d, "disfa": scan_disfa, "gft": scan_gft}
POSITIVE_RULE = {"bp4d": "occurrence == 1 (9 = unknown: frame dropped)",
                 "disfa": "intensity >= 2", "gft": "occurrence == 1 (9/empty = unknown: dropped)"}


# ---------------------------------------------------------------------------------- pixels
def _read_frames(seq: RawSequence, only: set[int] | None = None
                 ) -> Iterator[tuple[int, np.ndarray]]:
    """(row, RGB frame) of a sequence in order; ``only`` restricts to some rows."""
    if seq.images is not None:
        for i, path in enumerate(seq.images):
            if only is not None and i not in only:
                continue
            img = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if img is None:
                raise DatasetError(f"{path}: unreadable frame (not a valid image). Restore it "
                                   "from your licensed copy.")
            yield i, cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        return
    assert seq.video is not None and seq.positions is not None
    rows = {int(p): i for i, p in enumerate(seq.positions) if only is None or i in only}
    last = max(rows) if rows else -1
    cap = cv2.VideoCapture(str(seq.video))
    if not cap.isOpened():
        raise DatasetError(f"{seq.video}: unreadable video (OpenCV cannot open it). Restore it, "
                           "or install an OpenCV build with its codec.")
    pos = 0
    try:
        while True:
            full = only is None and seq.video_frames is not None
            if not full and pos > last:
                break
            if not cap.grab():
                break
            if pos in rows:
                ok, frame = cap.retrieve()
                if not ok or frame is None:
                    raise DatasetError(f"{seq.video}: frame {pos} cannot be decoded. Restore the "
                                       "video from your licensed copy.")
                yield rows[pos], cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            pos += 1
    finally:
        cap.release()
    need = seq.video_frames if (only is None and seq.video_frames is not None) else last + 1
    if pos < need or (only is None and seq.video_frames is not None and pos != need):
        raise DatasetError(f"{seq.video}: {pos} frames, but the labels of {seq.subject} describe "
                           f"{need}; frame and label counts do not match. Restore the video or "
                           "the label files from your licensed copy.")


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


def _extract_sequence(seq: RawSequence, aligner: FaceAligner, cache: Path,
                      bar: tqdm, writes: CacheWrites, batch: int = 16) -> np.ndarray:
    """Write the aligned crops of one sequence into ``cache``; returns face-found flags.

    A sequence finished before (same frames) is skipped: its ``.done`` marker lists them.
    """
    folder = cache / seq.subject / seq.sequence
    done = folder / ".done.json"
    frames = [int(f) for f in seq.frames]
    if done.exists():
        try:
            info = json.loads(done.read_text())
        except json.JSONDecodeError:  # cut short by a kill: extract the sequence again
            info = {"frames": None}
        if info["frames"] == frames and all((folder / f"{f}.jpg").exists() for f in frames):
            bar.update(len(frames))
            return np.array(info["face_found"], bool)
    writes.mkdir(folder)
    n = len(frames)
    found = np.zeros(n, bool)
    marks: dict[int, np.ndarray] = {}
    pending: list[int] = []

    def save(i: int, img: np.ndarray, lm: np.ndarray | None) -> None:
        crop = aligner.crop(img, lm)
        cv2.imwrite(str(writes.will_write(folder / f"{frames[i]}.jpg")),
                    cv2.cvtColor(crop, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])

    def flush(chunk: list[tuple[int, np.ndarray]]) -> None:
        for (i, img), lm in zip(chunk, aligner.landmarks([c[1] for c in chunk]), strict=True):
            if aligner.mode == "skip" or lm is not None:
                save(i, img, lm)
                found[i] = aligner.mode != "skip"
                if lm is not None:
                    marks[i] = lm
            else:
                pending.append(i)
        bar.update(len(chunk))

    chunk: list[tuple[int, np.ndarray]] = []
    for i, img in _read_frames(seq):
        chunk.append((i, img))
        if len(chunk) == batch:
            flush(chunk)
            chunk = []
    if chunk:
        flush(chunk)
    if pending:  # no face found: borrow the landmarks of the nearest frame that had one
        if not marks:
            raise DatasetError(
                f"{seq.images[0].parent if seq.images else seq.video}: no face found in any frame "
                f"of {seq.subject}/{seq.sequence}. Check the frames, or pass align='skip' if they "
                "are already face crops.")
        have = np.array(sorted(marks))
        for i, img in _read_frames(seq, only=set(pending)):
            save(i, img, marks[int(have[np.abs(have - i).argmin()])])
    writes.will_write(done).write_text(json.dumps({"frames": frames,
                                                   "face_found": found.tolist()}))
    return found


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)  # same file system: no second copy of the images
    except OSError:
        shutil.copy2(src, dst)


# keyword arguments each layout scanner takes (what prepare_real passes on)
LAYOUT_OPTIONS = {"bp4d": ("frames_dir", "labels_dir"),
                  "disfa": ("videos_dir", "labels_dir", "camera"),
                  "gft": ("labels_dir", "videos_dir", "frames_dir", "first_frame")}


def _fold_table(dataset: str, raw_root: Path, folds: dict[str, int] | None,
                split_file: str | Path | None) -> tuple[dict[str, int], str, list[int]]:
    """Subject -> fold, the protocol and its test folds; ``folds`` overrides are validated."""
    if dataset == "gft":
        protocol, test_folds, allowed = "train_test", [1], {0: "train", 1: "test"}
    else:
        protocol, test_folds, allowed = "3fold", [1, 2, 3], {k: f"test fold {k}" for k in (1, 2, 3)}
    if split_file is not None and dataset != "gft":
        raise DatasetError(f"{split_file}: split_file is GFT's train/test partition; {dataset} "
                           "uses the 3-fold table (override it with folds={subject: fold}).")
    if folds:
        bad = {s: f for s, f in folds.items() if isinstance(f, bool) or f not in allowed}
        if bad:
            s, f = next(iter(bad.items()))
            raise DatasetError(
                f"folds={{...}} argument: subject {s!r} has fold {f!r} ({len(bad)} bad). The "
                f"{dataset} {protocol} protocol has folds {allowed}; give each subject one of "
                "them.")
        return {s: int(f) for s, f in folds.items()}, protocol, test_folds
    if dataset == "gft":
        return read_gft_split(Path(split_file) if split_file else raw_root / "split.csv"), \
            protocol, test_folds
    return parts_to_folds(BP4D_PARTS if dataset == "bp4d" else DISFA_PARTS), protocol, test_folds


def prepare_real(dataset: str, raw_root: str | Path, out_root: str | Path, align: str = "auto",
                 image_size: int = 224, overwrite: bool = False, smoke: bool = False,
                 progress: bool = True, cache_dir: str | Path | None = None,
                 device: str | None = None, folds: dict[str, int] | None = None,
                 split_file: str | Path | None = None, **layout_kw) -> PreparedDataset:
    """Scan, validate, align and write one real data set at ``out_root``.

    ``folds`` overrides the subject -> fold table (3-fold sets: folds 1-3; GFT: 0 train, 1
    test); ``split_file`` names GFT's split.csv; ``layout_kw`` go to the layout scanner
    (:data:`LAYOUT_OPTIONS`, e.g. ``frames_dir``, ``labels_dir``, GFT's ``first_frame``).
    """
    dataset = dataset.lower()
    raw_root, out_root = Path(raw_root), Path(out_root)
    if not raw_root.is_dir():
        raise raw_root_error(dataset, raw_root, "not a folder")
    unknown_kw = sorted(set(layout_kw) - set(LAYOUT_OPTIONS[dataset]))
    if unknown_kw:
        raise TypeError(f"prepare_real({dataset!r}) does not take {unknown_kw}; its layout "
                        f"options are {list(LAYOUT_OPTIONS[dataset])}")
    check_output_dir(out_root, overwrite, sources=[raw_root])
    cache = Path(cache_dir) if cache_dir else out_root.parent / ".cache" / out_root.name
    check_apart(cache, [raw_root])
    au_ids = dataset_aus(dataset)
    sequences = SCANNERS[dataset](raw_root, au_ids, **layout_kw)
    fold_of, protocol, test_folds = _fold_table(dataset, raw_root, folds, split_file)
    unknown = sorted({s.subject for s in sequences} - set(fold_of))
    if unknown:
        raise DatasetError(f"{raw_root}: subjects {unknown[:5]} are not in the {dataset} "
                           f"{protocol} table. Remove them, or pass folds={{subject: fold}} "
                           "(or, for GFT, list them in split.csv).")
    if dataset == "gft" and not folds:  # the official split must be complete
        absent = sorted(set(fold_of) - {s.subject for s in sequences})
        if absent:
            raise DatasetError(
                f"{split_file or raw_root / 'split.csv'}: subjects {absent[:5]} ({len(absent)}) "
                f"are in the split but have no labels or media under {raw_root}. Restore them "
                "from your licensed copy, or remove them from the split file.")
    if smoke:  # a few frames of a few sequences per subject: checks the pipeline in seconds
        per_subject: dict[str, int] = {}
        kept = []
        for s in sequences:
            if per_subject.get(s.subject, 0) < SMOKE_SEQUENCES:
                per_subject[s.subject] = per_subject.get(s.subject, 0) + 1
                kept.append(s.subset(SMOKE_FRAMES))
        sequences = kept
    present = {fold_of[s.subject] for s in sequences}
    if not set(test_folds) <= present:
        raise DatasetError(f"{raw_root}: no subjects for test folds "
                           f"{sorted(set(test_folds) - present)}; every fold of the {protocol} "
                           "protocol needs subjects. Check raw_root (or folds / split.csv).")

    aligner = FaceAligner(align, image_size, device)
    cache = cache / f"{aligner.mode}-{image_size}"
    rows = []
    total = sum(len(s.frames) for s in sequences)
    writes = CacheWrites()
    try:
        with progress_bar(total=total, unit="frame", desc=f"{dataset} ({aligner.mode})",
                          disable=not progress) as bar:
            for seq in sequences:
                found = _extract_sequence(seq, aligner, cache, bar, writes)
                for k, (f, lab) in enumerate(zip(seq.frames, seq.labels, strict=True)):
                    rows.append([seq.subject, seq.sequence, int(f),
                                 f"images/{seq.subject}/{seq.sequence}/{int(f)}.jpg",
                                 fold_of[seq.subject], *lab.tolist(), int(found[k])])
        cols = ["subject", "sequence", "frame", "image", "fold", *au_keys(au_ids), "face_found"]
        index = pd.DataFrame(rows, columns=cols)
        check_subject_disjoint(index, raw_root)
        layout = {"first_frame": layout_kw.get("first_frame", GFT_FIRST_FRAME)} \
            if dataset == "gft" else {}
        meta = {"dataset": dataset, "au_ids": list(au_ids), "protocol": protocol,
                "test_folds": test_folds, "image_size": image_size, "source": str(raw_root),
                "positive_rule": POSITIVE_RULE[dataset],
                "preparation": {"align": aligner.mode, "smoke": smoke, "image_size": image_size,
                                **layout, "dropped_unknown_frames": int(sum(
                                    s.dropped_unknown for s in sequences))}}
        with prepared_dir_writer(out_root, overwrite, sources=[raw_root]) as tmp:
            for rel, subj, seqn, f in zip(index["image"], index["subject"], index["sequence"],
                                          index["frame"], strict=True):
                _link_or_copy(cache / subj / seqn / f"{f}.jpg", tmp / rel)
            write_index(tmp, meta, index)
    except DatasetError:  # bad input: leave data_root as it was (a crash or a kill keeps the cache)
        writes.undo()
        raise
    return load_prepared(out_root)
