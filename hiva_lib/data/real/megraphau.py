"""Import and export of ME-GraphAU's list files (CVI-SZU/ME-GraphAU, ``data/<DS>/list``).

Their format, as written by ``tool/BP4D_image_label_process.py`` / ``DISFA_image_label_process.py``:

- ``<DS>_{train,test}_img_path_fold<k>.txt``: one image path per line, relative to the image
  folder (``F001/T1/2440.jpg`` for BP4D, ``SN001/0.png`` for DISFA);
- ``<DS>_{train,test}_label_fold<k>.txt``: one row per image, space-separated 0/1, the AUs in
  the order of :data:`hiva_lib.data.au.DATASET_AUS`;
- ``<DS>_weight_fold<k>.txt`` (the name in the repository's lists) or
  ``<DS>_train_weight_fold<k>.txt`` (the name ``tool/<DS>_calculate_AU_class_weights.py``
  writes): one tab-separated ``%f`` row of AU weights computed from the train labels of fold k
  as w = (1 / r) / sum(1 / r) * N, r the positive rate of each AU
  (:func:`hiva_lib.losses.inverse_frequency_weights`).

Test fold k's images form fold k of our index; train lists, when present, are used to refuse
subject leakage and as the labels a weight file is checked against (else the other folds' test
lists, which is what ME-GraphAU's train lists hold). ``<DS>`` is BP4D, DISFA (or GFT, same
pattern, test fold 1 only, its train list = fold 0).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from hiva_lib.data.au import au_keys, dataset_aus
from hiva_lib.data.prepared import (
    DatasetError,
    PreparedDataset,
    check_output_dir,
    check_subject_disjoint,
    load_prepared,
    prepared_dir_writer,
    write_index,
)
from hiva_lib.data.real.extract import link_or_copy as _link_or_copy
from hiva_lib.data.real.face_align import square_resize
from hiva_lib.losses import inverse_frequency_weights
from hiva_lib.progress import progress as progress_bar

PREFIX = {"bp4d": "BP4D", "disfa": "DISFA", "gft": "GFT"}
# the repository's weight-file name, and the one its tool script writes
WEIGHT_FILES = ("{ds}_weight_fold{k}.txt", "{ds}_train_weight_fold{k}.txt")
WEIGHT_ATOL = 1e-5  # the files hold %f (6 decimals)


def _list_path(list_dir: Path, dataset: str, split: str, kind: str, fold: int) -> Path:
    return list_dir / f"{PREFIX[dataset]}_{split}_{kind}_fold{fold}.txt"


def _read_pair(list_dir: Path, dataset: str, split: str, fold: int, n_aus: int
               ) -> tuple[list[str], np.ndarray]:
    paths_file = _list_path(list_dir, dataset, split, "img_path", fold)
    labels_file = _list_path(list_dir, dataset, split, "label", fold)
    for f in (paths_file, labels_file):
        if not f.exists():
            raise DatasetError(f"{f}: missing list file. ME-GraphAU lists are "
                               f"{PREFIX[dataset]}_test_img_path_fold<k>.txt and "
                               f"{PREFIX[dataset]}_test_label_fold<k>.txt in list_dir.")
    paths = [ln.strip() for ln in paths_file.read_text().splitlines() if ln.strip()]
    labels = _read_labels(labels_file, n_aus)
    if len(labels) != len(paths):
        raise DatasetError(f"{labels_file}: {len(labels)} rows, but {paths_file.name} has "
                           f"{len(paths)} images; image and label counts do not match. Restore "
                           "both lists from the same ME-GraphAU run.")
    return paths, labels


def _read_labels(labels_file: Path, n_aus: int) -> np.ndarray:
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


def _checked_weights(list_dir: Path, dataset: str, fold: int, train: np.ndarray, source: str,
                     au_ids: tuple[int, ...]) -> list[float] | None:
    """The weight file of ``fold``, if any, after checking it against our weights on ``train``."""
    weights = None
    ours = inverse_frequency_weights(train)
    for name in WEIGHT_FILES:
        path = list_dir / name.format(ds=PREFIX[dataset], k=fold)
        if not path.exists():
            continue
        fix = (f"Restore it from ME-GraphAU's data/{PREFIX[dataset]}/list, or delete it (training "
               "computes the weights from the train labels anyway).")
        try:
            theirs = np.loadtxt(path, ndmin=1).ravel()
        except ValueError as e:
            raise DatasetError(f"{path}: not one row of numbers ({e}). {fix}") from e
        if theirs.shape != ours.shape:
            raise DatasetError(f"{path}: {theirs.size} weights, but {dataset} has {len(ours)} "
                               f"AUs. {fix}")
        diff = np.abs(theirs - ours)
        if not (diff <= WEIGHT_ATOL).all():  # also catches nan / inf
            i = int(np.argmax(np.where(np.isfinite(diff), diff, np.inf)))
            raise DatasetError(
                f"{path}: AU{au_ids[i]} weight {theirs[i]:f}, but inverse_frequency_weights of "
                f"fold {fold}'s train labels ({source}) gives {ours[i]:f} (tolerance "
                f"{WEIGHT_ATOL:g}): the weights do not belong to these labels. Use the list and "
                "weight files of one ME-GraphAU run, or delete the weight file.")
        weights = theirs.tolist()
    return weights


def _parse(path: str, row: int) -> tuple[str, str, int]:
    """'F001/T1/2440.jpg' -> (F001, T1, 2440); 'SN001/0.png' -> (SN001, SN001, 0)."""
    parts = Path(path).parts
    stem = Path(path).stem
    subject = parts[0]
    sequence = parts[1] if len(parts) > 2 else parts[0]
    return subject, sequence, int(stem) if stem.isdigit() else row


def megraphau_image_root(list_dir: str | Path, image_root: str | Path | None) -> Path:
    """``image_root``, or ME-GraphAU's ``data/<DS>/img`` beside ``data/<DS>/list``."""
    return Path(image_root) if image_root is not None else Path(list_dir).parent / "img"


def import_megraphau_lists(list_dir: str | Path, image_root: str | Path | None, dataset: str,
                           data_root: str | Path = "data/prepared", overwrite: bool = False,
                           image_size: int | None = None, progress: bool = True
                           ) -> PreparedDataset:
    """Write ``<data_root>/<dataset>/`` from ME-GraphAU list files and their image folder.

    image_root None is ``<list_dir>/../img`` (ME-GraphAU's layout). image_size None links (or
    copies) the images as they are; an int re-encodes them as centre-square crops of that size.
    Subject leakage between a fold's train and test list, a subject in two test folds, or a
    weight file that does not match :func:`~hiva_lib.losses.inverse_frequency_weights` of the
    fold's train labels raises :class:`DatasetError`; nothing is written then.
    """
    dataset = dataset.lower()
    if dataset not in PREFIX:
        raise ValueError(f"ME-GraphAU lists exist for {sorted(PREFIX)}, not {dataset!r}")
    list_dir, image_root = Path(list_dir), megraphau_image_root(list_dir, image_root)
    out_root = Path(data_root) / dataset
    if not list_dir.is_dir():
        raise DatasetError(f"{list_dir}: not a folder. Pass list_dir = ME-GraphAU's "
                           f"data/{PREFIX[dataset]}/list.")
    if not image_root.is_dir():
        raise DatasetError(f"{image_root}: not a folder. Pass image_root = the folder the list "
                           f"paths are relative to (ME-GraphAU's data/{PREFIX[dataset]}/img).")
    check_output_dir(out_root, overwrite, sources=[list_dir, image_root])
    au_ids = dataset_aus(dataset)
    test_folds = [1] if dataset == "gft" else [1, 2, 3]
    rows = []
    for k in test_folds:
        paths, labels = _read_pair(list_dir, dataset, "test", k, len(au_ids))
        rows += [(p, k, lab) for p, lab in zip(paths, labels, strict=True)]
    if dataset == "gft":  # train/test split: the train list is fold 0
        paths, labels = _read_pair(list_dir, dataset, "train", 1, len(au_ids))
        rows += [(p, 0, lab) for p, lab in zip(paths, labels, strict=True)]
    records = [(*_parse(p, i), p, k) for i, (p, k, _) in enumerate(rows)]
    index = pd.DataFrame(records, columns=["subject", "sequence", "frame", "source", "fold"])
    index[au_keys(au_ids)] = np.stack([lab for _, _, lab in rows])
    check_subject_disjoint(index, list_dir)
    for k in test_folds:  # a fold's train list must not share subjects with its test list
        train_file = _list_path(list_dir, dataset, "train", "img_path", k)
        if dataset != "gft" and train_file.exists():
            train = {Path(ln.strip()).parts[0] for ln in train_file.read_text().splitlines()
                     if ln.strip()}
            test = set(index.loc[index["fold"] == k, "subject"])
            if train & test:
                raise DatasetError(f"{train_file}: subject leakage, subjects "
                                   f"{sorted(train & test)[:5]} are in both the train and the "
                                   f"test list of fold {k}. Use subject-independent lists.")
    missing = [p for p in index["source"] if not (image_root / p).exists()]
    if missing:
        raise DatasetError(f"{image_root / missing[0]}: image missing ({len(missing)} of "
                           f"{len(index)} listed images). Check image_root.")
    suffix = ".jpg" if image_size else None
    index["image"] = ["images/" + (str(Path(p).with_suffix(suffix)) if suffix else p)
                      for p in index["source"]]
    if image_size is None:
        with Image.open(image_root / index["source"].iat[0]) as im:
            size = im.size[0]
    else:
        size = image_size
    weights = {}
    labels = index[au_keys(au_ids)].to_numpy()
    for k in test_folds:
        train_file = _list_path(list_dir, dataset, "train", "label", k)
        if dataset == "gft" or not train_file.exists():
            train, source = labels[index["fold"].to_numpy() != k], "the other folds' lists"
        else:
            train, source = _read_labels(train_file, len(au_ids)), train_file.name
        w = _checked_weights(list_dir, dataset, k, train, source, au_ids)
        if w is not None:
            weights[str(k)] = w
    meta = {"dataset": dataset, "au_ids": list(au_ids),
            "protocol": "train_test" if dataset == "gft" else "3fold", "test_folds": test_folds,
            "image_size": size, "source": f"ME-GraphAU lists {list_dir} + images {image_root}",
            "positive_rule": "as in the ME-GraphAU label lists",
            "preparation": {"align": "imported", "smoke": False, "image_size": image_size,
                            "list_dir": str(list_dir.resolve())},
            "megraphau_weights": weights}
    with prepared_dir_writer(out_root, overwrite, sources=[list_dir, image_root]) as tmp:
        for src, rel in progress_bar(zip(index["source"], index["image"], strict=True),
                                     total=len(index), desc=f"import {dataset}",
                                     disable=not progress):
            if image_size is None:
                _link_or_copy(image_root / src, tmp / rel)
                continue
            img = cv2.imread(str(image_root / src), cv2.IMREAD_COLOR)
            if img is None:
                raise DatasetError(f"{image_root / src}: unreadable image. Restore it.")
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(tmp / rel), square_resize(img, image_size),
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
        write_index(tmp, meta, index.drop(columns="source"))
    return load_prepared(out_root)


def write_megraphau_lists(data: PreparedDataset, out_dir: str | Path) -> list[Path]:
    """Export a prepared data set as ME-GraphAU list files (paths relative to root/images).

    Writes train/test image-path and label lists and the class-weight file of each test fold,
    so ME-GraphAU (or MDHR) can run on exactly our split: image folder = ``data.root/images``.
    """
    dataset = data.name.removeprefix("synth-")
    if dataset not in PREFIX:
        raise ValueError(f"no ME-GraphAU list naming for {data.name!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rel = data.index["image"].str.replace(r"^images/", "", regex=True).to_numpy()
    written = []
    for k in data.test_folds:
        train, test = data.split(k)
        for split, rows in (("train", train), ("test", test)):
            p = _list_path(out_dir, dataset, split, "img_path", k)
            p.write_text("".join(f"{r}\n" for r in rel[rows]))
            lab = _list_path(out_dir, dataset, split, "label", k)
            np.savetxt(lab, data.labels(rows), fmt="%d", delimiter=" ")
            written += [p, lab]
        w = out_dir / WEIGHT_FILES[0].format(ds=PREFIX[dataset], k=k)
        np.savetxt(w, inverse_frequency_weights(data.labels(train))[None], fmt="%f",
                   delimiter="\t")
        written.append(w)
    return written


__all__ = ["import_megraphau_lists", "write_megraphau_lists"]
