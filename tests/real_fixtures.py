"""Tiny BP4D / DISFA / GFT trees in their distributed layouts, for tests/test_real_data.py.

Faces are rendered by SynthFACS (the AU intensities drive the face, so the pictures fit the
labels); file names, label formats and videos follow each data set's distributed layout
(docs/data.md). Each builder returns the labels it wrote as a table: subject, sequence,
frame, fold, AU<k> (the rows the preparer must keep, in order).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from hiva_lib.data.au import au_keys, dataset_aus

SIZE = 64  # rendered frame side: small, the tests only need a face-like picture
# Subjects of each fixture, one per fold part (ME-GraphAU's parts; fold = test fold).
BP4D_SUBJECTS = {"F001": 3, "M011": 2, "F007": 1}
DISFA_SUBJECTS = {"SN001": 3, "SN013": 2, "SN003": 1}
GFT_SUBJECTS = {"001A": 0, "001B": 0, "002C": 1}
DISFA_FILE_AUS = (1, 2, 4, 5, 6, 9, 12, 15, 17, 20, 25, 26)  # the 12 AUs DISFA codes


def render(subject_idx: int, frame_idx: int, intensities: dict[int, float]) -> np.ndarray:
    """RGB uint8 (SIZE, SIZE, 3) face of one subject with these AU intensities (0-5)."""
    from hiva_lib.data import synthfacs

    identity = synthfacs.sample_identity(subject_idx)
    nuisance = synthfacs.sample_nuisance(1000 * subject_idx + frame_idx)
    image, _ = synthfacs.render_face(identity, intensities, nuisance, SIZE)
    return np.ascontiguousarray(image[..., :3], dtype=np.uint8)


def _write_jpg(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def write_video(path: Path, frames: list[np.ndarray], fps: float = 30.0) -> None:
    """Short MJPG .avi (OpenCV's bundled codecs read it back)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened(), f"cannot write {path}"
    for f in frames:
        writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    writer.release()


def _labels(rng: np.random.Generator, n: int, k: int, p: float = 0.35) -> np.ndarray:
    lab = (rng.random((n, k)) < p).astype(int)
    lab[0] = 1  # every AU occurs somewhere, so no fold has an all-zero column by chance
    return lab


def make_bp4d(root: Path, n_frames: int = 5, tasks: tuple[str, ...] = ("T1", "T2"),
              unknown_rows: int = 1, seed: int = 0) -> pd.DataFrame:
    """AUCoding/AU_OCC/<S>_<T>.csv + Sequences(2D+3D)/<S>/<T>/<frame:04d>.jpg.

    The CSV has the BP4D header (frame column "0", then AU numbers 1..27); the first
    ``unknown_rows`` rows of each sequence hold a 9 (unknown) and must be dropped.
    """
    rng = np.random.default_rng(seed)
    aus = dataset_aus("bp4d")
    csv_aus = list(range(1, 28))
    expected = []
    for si, (subject, fold) in enumerate(BP4D_SUBJECTS.items()):
        for task in tasks:
            start = int(rng.integers(1, 500))  # BP4D codes a segment: frame numbers start late
            frames = np.arange(start, start + n_frames + unknown_rows)
            table = pd.DataFrame({"0": frames})
            lab = _labels(rng, len(frames), len(aus))
            for a in csv_aus:
                col = lab[:, aus.index(a)] if a in aus else rng.integers(0, 2, len(frames))
                table[str(a)] = col
            table.loc[: unknown_rows - 1, str(aus[3])] = 9
            path = root / "AUCoding" / "AU_OCC" / f"{subject}_{task}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            table.to_csv(path, index=False)
            for i, f in enumerate(frames):
                img = render(si, i, {a: 3.0 * lab[i, j] for j, a in enumerate(aus)})
                _write_jpg(root / "Sequences(2D+3D)" / subject / task / f"{f:04d}.jpg", img)
            for i in range(unknown_rows, len(frames)):
                expected.append([subject, task, int(frames[i]), fold, *lab[i]])
    return pd.DataFrame(expected, columns=["subject", "sequence", "frame", "fold", *au_keys(aus)])


def make_disfa(root: Path, n_frames: int = 6, seed: int = 0) -> pd.DataFrame:
    """ActionUnit_Labels/<S>/<S>_au<k>.txt ('frame,intensity', from 1) + LeftVideo<S>_comp.avi.

    The expected ``frame`` is the 0-based video position (label line), as ME-GraphAU names it.
    """
    rng = np.random.default_rng(seed)
    aus = dataset_aus("disfa")
    expected = []
    for si, (subject, fold) in enumerate(DISFA_SUBJECTS.items()):
        inten = rng.integers(0, 6, (n_frames, len(DISFA_FILE_AUS)))
        inten[0] = 3
        inten[1, DISFA_FILE_AUS.index(1)] = 1  # intensity 1 is negative (positive = >= 2)
        folder = root / "ActionUnit_Labels" / subject
        folder.mkdir(parents=True, exist_ok=True)
        for j, a in enumerate(DISFA_FILE_AUS):
            lines = [f"{i + 1},{inten[i, j]}" for i in range(n_frames)]
            (folder / f"{subject}_au{a}.txt").write_text("\n".join(lines) + "\n")
        cols = [DISFA_FILE_AUS.index(a) for a in aus]
        frames = [render(si, i, {a: float(inten[i, c]) for a, c in zip(aus, cols, strict=True)})
                  for i in range(n_frames)]
        write_video(root / "Videos_LeftCamera" / f"LeftVideo{subject}_comp.avi", frames)
        for i in range(n_frames):
            expected.append([subject, subject, i, fold, *(inten[i, cols] >= 2).astype(int)])
    return pd.DataFrame(expected, columns=["subject", "sequence", "frame", "fold", *au_keys(aus)])


def make_gft(root: Path, n_frames: int = 5, seed: int = 0, media: str = "videos",
             first_frame: int = 1) -> pd.DataFrame:
    """labels/<S>.csv (frame, AU1..) + videos/<S>.avi (or frames/<S>/<frame>.jpg with
    ``media="frames"``) + split.csv (the assumed GFT layout). Label frame numbers start at
    ``first_frame``."""
    rng = np.random.default_rng(seed)
    aus = dataset_aus("gft")
    expected = []
    for si, (subject, fold) in enumerate(GFT_SUBJECTS.items()):
        lab = _labels(rng, n_frames, len(aus))
        numbers = np.arange(first_frame, first_frame + n_frames)
        table = pd.DataFrame({"frame": numbers})
        for j, a in enumerate(aus):
            table[f"AU{a}"] = lab[:, j]
        path = root / "labels" / f"{subject}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(path, index=False)
        frames = [render(si, i, {a: 3.0 * lab[i, j] for j, a in enumerate(aus)})
                  for i in range(n_frames)]
        if media == "frames":
            for f, img in zip(numbers, frames, strict=True):
                _write_jpg(root / "frames" / subject / f"{f}.jpg", img)
        else:
            write_video(root / "videos" / f"{subject}.avi", frames)
        for i in range(n_frames):
            expected.append([subject, subject, int(numbers[i]), fold, *lab[i]])
    pd.DataFrame({"subject": list(GFT_SUBJECTS),
                  "split": ["test" if f else "train" for f in GFT_SUBJECTS.values()]}
                 ).to_csv(root / "split.csv", index=False)
    return pd.DataFrame(expected, columns=["subject", "sequence", "frame", "fold", *au_keys(aus)])


BUILDERS = {"bp4d": make_bp4d, "disfa": make_disfa, "gft": make_gft}


# ------------------------------------------------------------------ ME-GraphAU / MDHR lists
# Two subjects per fold part, in the part's order (ME-GraphAU's tool scripts list a part subject
# by subject in that order, which is not alphabetical); part p is tested in fold 3 - p.
LIST_PARTS = {"bp4d": (("F018", "F008"), ("M011", "F003"), ("F015", "F006")),
              "disfa": (("SN010", "SN001"), ("SN013", "SN011"), ("SN023", "SN008"))}
# The train parts of folds 1, 2, 3 as the tool scripts write them: part1+part2, part1+part3,
# part2+part3 (0-based part numbers here).
TRAIN_PARTS = {1: (0, 1), 2: (0, 2), 3: (1, 2)}
# MDHR's face regions (model/model_<DS>.py) and their AUs, for its sub-label lists.
MDHR_GROUPS = {"bp4d": ((1, 2, 4, 7), (6,), (12, 14, 15), (10, 17, 23, 24)),
               "disfa": ((1, 2, 4), (6, 9), (12, 25, 26))}


def megraphau_weights(labels: np.ndarray) -> np.ndarray:
    """tool/<DS>_calculate_AU_class_weights.py, rewritten: rate = share of rows > 0 per AU,
    w = 1 / rate, then w / sum(w) * N."""
    n, k = labels.shape
    rate = np.array([np.sum(labels[:, i] > 0) / float(n) for i in range(k)])
    w = 1.0 / rate
    return w / w.sum() * k


def megraphau_relation(labels: np.ndarray) -> np.ndarray:
    """tool/<DS>_deal_AU_relation.py, rewritten: column j*N+k holds 2 * a_j + a_k."""
    n, k = labels.shape
    out = np.zeros((n, k * k))
    for j in range(k):
        for i in range(k):
            out[:, j * k + i] = 2 * labels[:, j] + labels[:, i]
    return out


def mdhr_sub_labels(labels: np.ndarray, dataset: str) -> np.ndarray:
    """MDHR's region labels: the region's AUs written as a binary number, first AU first."""
    aus = dataset_aus(dataset)
    return np.array([[int("".join(str(int(row[aus.index(a)])) for a in group), 2)
                      for group in MDHR_GROUPS[dataset]] for row in labels])


def _list_frames(dataset: str, subject: str, n_frames: int, rng: np.random.Generator
                 ) -> list[tuple[str, int]]:
    """(sequence, frame) of a subject: BP4D tasks T1, T2 from a late frame number; DISFA
    0..n-1, SN010 one frame short (as its labels are in the real data set)."""
    if dataset == "disfa":
        return [(subject, i) for i in range(n_frames - (subject == "SN010"))]
    out = []
    for task in ("T1", "T2"):
        start = int(rng.integers(1, 3000))
        out += [(task, start + i) for i in range(n_frames)]
    return out


def _list_name(dataset: str, list_format: str, subject: str, sequence: str, frame: int) -> str:
    if dataset == "bp4d":
        return f"{subject}/{sequence}/{frame}.jpg"
    return f"{subject}/{subject}_{frame}.png" if list_format == "mdhr" else f"{subject}/{frame}.png"


def _list_parts(dataset: str, list_format: str, n_frames: int, rng: np.random.Generator
                ) -> tuple[list[tuple[list[str], np.ndarray]], pd.DataFrame]:
    """Per part (paths, labels) and the expected index rows."""
    aus = dataset_aus(dataset)
    parts, expected = [], []
    for p, subjects in enumerate(LIST_PARTS[dataset]):
        keys = [(s, q, f) for s in subjects for q, f in _list_frames(dataset, s, n_frames, rng)]
        labels = _labels(rng, len(keys), len(aus), p=0.4)
        parts.append(([_list_name(dataset, list_format, *k) for k in keys], labels))
        expected += [[*k, 3 - p, *lab] for k, lab in zip(keys, labels, strict=True)]
    table = pd.DataFrame(expected, columns=["subject", "sequence", "frame", "fold", *au_keys(aus)])
    return parts, table


def make_megraphau(root: Path, dataset: str, list_format: str = "megraphau", n_frames: int = 4,
                   seed: int = 0) -> tuple[Path, pd.DataFrame]:
    """A data-set folder as ME-GraphAU's tool scripts write it (``<DS>/list`` + ``<DS>/img``)
    or, with ``list_format="mdhr"``, as MDHR's lists lie (``<DS>_dataset/`` with sub labels,
    DISFA paths ``SN001/SN001_0.png`` in ``img_o``). Returns (list folder, expected rows).

    Lists are written with np.savetxt and plain file writes, in the tools' own part order;
    images are small random pictures (the list tests need files, not faces).
    """
    rng = np.random.default_rng(seed)
    ds, mdhr = dataset.upper(), list_format == "mdhr"
    folder = root / (f"{ds}_dataset" if mdhr else ds)
    list_dir = folder if mdhr else folder / "list"
    img_dir = folder / ("img_o" if mdhr and dataset == "disfa" else "img")
    list_dir.mkdir(parents=True, exist_ok=True)
    parts, expected = _list_parts(dataset, list_format, n_frames, rng)
    word = "path" if mdhr and dataset == "disfa" else "img_path"
    for k in (1, 2, 3):
        test = parts[3 - k]
        train = ([p for i in TRAIN_PARTS[k] for p in parts[i][0]],
                 np.concatenate([parts[i][1] for i in TRAIN_PARTS[k]]))
        for split, (paths, labels) in (("test", test), ("train", train)):
            with open(list_dir / f"{ds}_{split}_{word}_fold{k}.txt", "w") as f:
                for p in paths:
                    f.write(p + "\n")
            np.savetxt(list_dir / f"{ds}_{split}_label_fold{k}.txt", labels, fmt="%d",
                       delimiter=" ")
            if mdhr:
                np.savetxt(list_dir / f"{ds}_{split}_sub_label_fold{k}.txt",
                           mdhr_sub_labels(labels, dataset), fmt="%d")
        weight = f"{ds}_train_weight_fold{k}.txt" if mdhr else f"{ds}_weight_fold{k}.txt"
        np.savetxt(list_dir / weight, megraphau_weights(train[1])[None], fmt="%f", delimiter="\t")
        if not mdhr:
            np.savetxt(list_dir / f"{ds}_train_AU_relation_fold{k}.txt",
                       megraphau_relation(train[1]), fmt="%d")
    for paths, _ in parts:
        for p in paths:
            (img_dir / p).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(img_dir / p), rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    return list_dir, expected
