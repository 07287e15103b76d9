"""The list folders of ME-GraphAU and MDHR: file names, image names, formats, derived files.

Established from the public repositories (read, not copied; docs/data.md):

- ME-GraphAU (CVI-SZU/ME-GraphAU): a data-set folder ``data/<DS>`` holds ``img/`` and
  ``list/``; its ``tool/<DS>_image_label_process.py`` writes
  ``<DS>_{train,test}_img_path_fold<k>.txt`` (one path a line, ``F001/T1/2440.jpg`` for BP4D,
  ``SN001/0.png`` for DISFA, 0 the label line) and ``<DS>_{train,test}_label_fold<k>.txt``
  (``np.savetxt(fmt='%d')``: space-separated 0/1 rows in the AU order of
  :data:`hiva_lib.data.au.DATASET_AUS`). Test fold k is one subject part, listed subject by
  subject in the part's order; the train list of fold k is the other two parts, the higher
  test fold first (fold 1 trains on folds 3 then 2). ``<DS>_weight_fold<k>.txt`` (the
  repository's name; its ``tool/<DS>_calculate_AU_class_weights.py`` writes
  ``<DS>_train_weight_fold<k>.txt``) is one tab-separated ``%f`` row,
  :func:`~hiva_lib.losses.inverse_frequency_weights` of the train labels;
  ``<DS>_train_AU_relation_fold<k>.txt`` (``tool/<DS>_deal_AU_relation.py``, read by its
  stage 2) holds per train row the N*N values 2*a_j + a_k, column j*N+k, ``%d``.
- MDHR (CVI-SZU/MDHR): the lists sit directly in the data-set folder (``--dataset_path``),
  images in ``img/`` (BP4D) or ``img_o/`` (DISFA); DISFA's path lists are
  ``DISFA_{train,test}_path_fold<k>.txt`` naming ``SN001/SN001_0.png``; the weights are
  ``<DS>_train_weight_fold<k>.txt``; ``<DS>_{train,test}_sub_label_fold<k>.txt`` hold, per
  row, one number per face region (:data:`MDHR_REGIONS`, the AU groups of its model): the
  region's AUs read as a binary number, the first AU the highest bit (checked on all of
  MDHR's published label and sub-label lists). MDHR publishes complete label lists, row for
  row with ME-GraphAU's path lists; ME-GraphAU's own label lists are 5-row samples.

GFT has no list in either repository; we name its images ``<subject>/<frame>.jpg`` by analogy.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hiva_lib.data.au import dataset_aus
from hiva_lib.data.prepared import DatasetError

PREFIX = {"bp4d": "BP4D", "disfa": "DISFA", "gft": "GFT"}
PUBLISHED_SAMPLE_ROWS = 5  # ME-GraphAU's data/<DS>/list label lists hold their first 5 rows
# MDHR's face regions (model/model_<DS>.py: up, mid, down / down1, down2) and their AUs
MDHR_REGIONS: dict[str, tuple[tuple[int, ...], ...]] = {
    "bp4d": ((1, 2, 4, 7), (6,), (12, 14, 15), (10, 17, 23, 24)),
    "disfa": ((1, 2, 4), (6, 9), (12, 25, 26)),
}


@dataclass(frozen=True)
class ListFormat:
    """Where a repository keeps its lists and images, and how it names them."""

    name: str
    list_subdir: str  # the lists' folder inside the data-set folder ("" = the folder itself)
    weight_file: str  # the weight-file name its training reads
    disfa_image: str  # DISFA image name; BP4D is <subject>/<task>/<frame>.jpg in both
    disfa_paths: str  # the kind word of DISFA's path lists
    disfa_image_dir: str  # DISFA's image folder (BP4D: img)
    relation: bool  # writes <DS>_train_AU_relation_fold<k>.txt
    sub_labels: bool  # writes <DS>_{split}_sub_label_fold<k>.txt

    def list_dir(self, folder: Path) -> Path:
        return folder / self.list_subdir if self.list_subdir else folder

    def image_dir(self, folder: Path, dataset: str) -> Path:
        return folder / (self.disfa_image_dir if dataset == "disfa" else "img")


MEGRAPHAU = ListFormat("megraphau", "list", "{DS}_weight_fold{k}.txt", "{s}/{f}.png", "img_path",
                       "img", relation=True, sub_labels=False)
MDHR = ListFormat("mdhr", "", "{DS}_train_weight_fold{k}.txt", "{s}/{s}_{f}.png", "path",
                  "img_o", relation=False, sub_labels=True)
FORMATS = {"megraphau": MEGRAPHAU, "mdhr": MDHR}
# weight files an import reads: the repository's name and the one the tool script writes
WEIGHT_FILES = ("{DS}_weight_fold{k}.txt", "{DS}_train_weight_fold{k}.txt")


def get_format(name: str, dataset: str) -> ListFormat:
    if name not in FORMATS:
        raise ValueError(f"list_format={name!r}: choose one of {sorted(FORMATS)}")
    if name == "mdhr" and dataset not in MDHR_REGIONS:
        raise ValueError(f"MDHR has lists for {sorted(MDHR_REGIONS)} only, not {dataset!r} "
                         "(its sub labels are defined per BP4D / DISFA face region)")
    return FORMATS[name]


def file_name(fmt: ListFormat, dataset: str, kind: str, fold: int, split: str = "train") -> str:
    """``kind``: paths, labels, sub_labels, relation (train only), weights (train only)."""
    ds = PREFIX[dataset]
    if kind == "paths":
        word = fmt.disfa_paths if dataset == "disfa" else "img_path"
        return f"{ds}_{split}_{word}_fold{fold}.txt"
    if kind == "weights":
        return fmt.weight_file.format(DS=ds, k=fold)
    word = {"labels": "label", "sub_labels": "sub_label", "relation": "AU_relation"}[kind]
    return f"{ds}_{split}_{word}_fold{fold}.txt"


def path_list_names(dataset: str, split: str, fold: int) -> list[str]:
    """The names a path list may have (ME-GraphAU's, then MDHR's where it differs)."""
    return list(dict.fromkeys(file_name(f, dataset, "paths", fold, split)
                              for f in FORMATS.values()))


def image_name(fmt: ListFormat, dataset: str, subject: str, sequence: str, frame: int) -> str:
    """The image path a list names for one frame (relative to the image folder)."""
    if dataset == "disfa" and sequence == subject:
        return fmt.disfa_image.format(s=subject, f=frame)
    if dataset == "gft" and sequence == subject:
        return f"{subject}/{frame}.jpg"
    return f"{subject}/{sequence}/{frame}.jpg"


# F001/T1/2440.jpg | SN001/SN001_0.png (MDHR) | SN001/0.png; any image suffix, zero padding
_NAME_PATTERNS = (re.compile(r"(?P<s>[^/]+)/(?P<q>[^/]+)/0*(?P<f>\d+)\.\w+"),
                  re.compile(r"(?P<s>[^/]+)/(?P=s)_0*(?P<f>\d+)\.\w+"),
                  re.compile(r"(?P<s>[^/]+)/0*(?P<f>\d+)\.\w+"))


def parse_image_name(path: str, where: Path, line: int) -> tuple[str, str, int]:
    """'F001/T1/2440.jpg' -> (F001, T1, 2440); 'SN001/0.png', 'SN001/SN001_0.png' ->
    (SN001, SN001, 0)."""
    for pattern in _NAME_PATTERNS:
        m = pattern.fullmatch(path)
        if m:
            s = m.group("s")
            return s, m.groupdict().get("q") or s, int(m.group("f"))
    raise DatasetError(f"{where}: line {line} {path!r} is not an image path of ME-GraphAU's "
                       "or MDHR's naming (<subject>/<task>/<frame>.jpg, <subject>/<frame>.png "
                       "or <subject>/<subject>_<frame>.png). Restore the list.")


def read_paths(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def read_labels(labels_file: Path, n_aus: int) -> np.ndarray:
    """A label list: rows of ``n_aus`` space-separated 0/1."""
    fix = "Restore it from ME-GraphAU's list folder (np.savetxt(..., fmt='%d') of 0/1 rows)."
    try:
        labels = np.loadtxt(labels_file, ndmin=2)
    except ValueError as e:
        raise DatasetError(f"{labels_file}: not rows of space-separated numbers ({e}). "
                           f"{fix}") from e
    if labels.shape[1] != n_aus:
        raise DatasetError(f"{labels_file}: {labels.shape[1]} columns, but the data set has "
                           f"{n_aus} AUs. {fix}")
    bad = ~np.isin(labels, (0, 1))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DatasetError(f"{labels_file}: value {labels[r, c]:g} in row {r + 1}, column "
                           f"{c + 1} is not 0/1. The labels must be binary occurrence; {fix}")
    return labels.astype(np.int8)


def count_mismatch(dataset: str, labels_file: Path, n_labels: int, paths_file: Path,
                   n_paths: int) -> DatasetError:
    """The error for a label list whose rows do not match its path list."""
    ds = PREFIX[dataset]
    head = (f"{labels_file}: {n_labels} rows, but {paths_file.name} has {n_paths} images")
    if n_labels == PUBLISHED_SAMPLE_ROWS < n_paths and dataset in MDHR_REGIONS:
        return DatasetError(
            f"{head}. This is the {PUBLISHED_SAMPLE_ROWS}-row sample that ME-GraphAU publishes "
            f"in data/{ds}/list (only its image-path lists and weight files are complete). Get "
            "the full label lists: MDHR (github.com/CVI-SZU/MDHR) publishes them, row for row "
            f"with these path lists, as data/{ds}_dataset/{ds}_{{train,test}}_label_fold<k>.txt "
            "(copy them over these); or run ME-GraphAU's "
            f"tool/{ds}_image_label_process.py on your licensed {ds} labels; or prepare {ds} "
            "from the raw data (notebook 01, -p raw_root) and write ME-GraphAU lists with "
            "hiva_lib.data.real.megraphau.export_megraphau.")
    return DatasetError(f"{head}; image and label counts do not match. Write both lists from "
                        "the same ME-GraphAU (or MDHR) list folder.")


def fold_rows(folds: np.ndarray, fold: int) -> tuple[np.ndarray, np.ndarray]:
    """Row positions (train, test) of ``fold`` in ME-GraphAU's list order: the test rows in
    index order; the train rows fold by fold, the higher fold first (fold 1 trains on 3 then
    2; GFT's fold 1 on fold 0)."""
    others = sorted(set(folds.tolist()) - {fold}, reverse=True)
    train = np.concatenate([np.flatnonzero(folds == k) for k in others])
    return train, np.flatnonzero(folds == fold)


def au_relation(labels: np.ndarray) -> np.ndarray:
    """ME-GraphAU's AU relation rows: column j*N+k is 2*a_j + a_k (0-3, a pair's state)."""
    a = np.asarray(labels, np.int64)
    return (2 * a[:, :, None] + a[:, None, :]).reshape(len(a), -1)


def mdhr_sub_labels(labels: np.ndarray, dataset: str) -> np.ndarray:
    """MDHR's region labels: per region of :data:`MDHR_REGIONS`, its AUs as a binary number."""
    aus = dataset_aus(dataset)
    a = np.asarray(labels, np.int64)
    cols = []
    for group in MDHR_REGIONS[dataset]:
        bits = [a[:, aus.index(au)] << (len(group) - 1 - i) for i, au in enumerate(group)]
        cols.append(np.sum(bits, axis=0))
    return np.stack(cols, 1)


def int_rows_text(rows: np.ndarray) -> bytes:
    """``np.savetxt(fmt='%d', delimiter=' ')`` of a 2-D integer array, as bytes."""
    rows = np.asarray(rows, np.int64)
    if rows.size and rows.min() >= 0 and rows.max() <= 9:  # one digit each: fast path
        buf = np.full((len(rows), 2 * rows.shape[1]), ord(" "), np.uint8)
        buf[:, 0::2] = rows + ord("0")
        buf[:, -1] = ord("\n")
        return buf.tobytes()
    return "".join(" ".join(map(str, r)) + "\n" for r in rows.tolist()).encode()


def weights_text(weights: np.ndarray) -> bytes:
    """``np.savetxt(w[None], fmt='%f', delimiter='\\t')``: one tab-separated row."""
    return ("\t".join(f"{w:f}" for w in weights) + "\n").encode()


def paths_text(paths: list[str]) -> bytes:
    return "".join(f"{p}\n" for p in paths).encode()
