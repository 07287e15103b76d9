"""Import and export of ME-GraphAU's list files (CVI-SZU/ME-GraphAU, ``data/<DS>/list``).

Their format, as written by ``tool/BP4D_image_label_process.py`` / ``DISFA_image_label_process.py``:

- ``<DS>_{train,test}_img_path_fold<k>.txt``: one image path per line, relative to the image
  folder (``F001/T1/2440.jpg`` for BP4D, ``SN001/0.png`` for DISFA);
- ``<DS>_{train,test}_label_fold<k>.txt``: one row per image, space-separated 0/1, the AUs in
  the order of :data:`hiva_lib.au.DATASET_AUS`;
- ``<DS>_weight_fold<k>.txt``: one tab-separated row of AU weights, computed by
  ``tool/<DS>_calculate_AU_class_weights.py`` from the train labels of fold k as
  w = (1 / r) / sum(1 / r) * N, r the positive rate of each AU
  (:func:`hiva_lib.losses.inverse_frequency_weights`).

Test fold k's images form fold k of our index; train lists, when present, are only used to
refuse subject leakage. ``<DS>`` is BP4D, DISFA (or GFT, same pattern, test fold 1 only).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from .au import au_keys, dataset_aus
from .datasets import (
    DatasetError,
    PreparedDataset,
    check_subject_disjoint,
    load_prepared,
    prepared_dir_writer,
    write_index,
)
from .face_align import square_resize
from .losses import inverse_frequency_weights
from .real_data import _link_or_copy

PREFIX = {"bp4d": "BP4D", "disfa": "DISFA", "gft": "GFT"}


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
    try:
        labels = np.loadtxt(labels_file, ndmin=2)
    except ValueError as e:
        raise DatasetError(f"{labels_file}: not rows of space-separated numbers ({e}).") from e
    if labels.shape != (len(paths), n_aus):
        raise DatasetError(f"{labels_file}: {labels.shape[0]} rows x {labels.shape[1]} columns, "
                           f"but {paths_file.name} has {len(paths)} images and {dataset} has "
                           f"{n_aus} AUs; image and label counts do not match.")
    bad = ~np.isin(labels, (0, 1))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise DatasetError(f"{labels_file}: value {labels[r, c]:g} in row {r + 1}, column "
                           f"{c + 1} is not 0/1. The labels must be binary occurrence.")
    return paths, labels.astype(np.int8)


def _parse(path: str, row: int) -> tuple[str, str, int]:
    """'F001/T1/2440.jpg' -> (F001, T1, 2440); 'SN001/0.png' -> (SN001, SN001, 0)."""
    parts = Path(path).parts
    stem = Path(path).stem
    subject = parts[0]
    sequence = parts[1] if len(parts) > 2 else parts[0]
    return subject, sequence, int(stem) if stem.isdigit() else row


def import_megraphau_lists(list_dir: str | Path, image_root: str | Path, dataset: str,
                           data_root: str | Path = "data/prepared", overwrite: bool = False,
                           image_size: int | None = None, progress: bool = True
                           ) -> PreparedDataset:
    """Write ``<data_root>/<dataset>/`` from ME-GraphAU list files and their image folder.

    image_size None links (or copies) the images as they are; an int re-encodes them as
    centre-square crops of that size. Subject leakage between a fold's train and test list,
    or a subject in two test folds, raises :class:`DatasetError`; nothing is written then.
    """
    dataset = dataset.lower()
    if dataset not in PREFIX:
        raise ValueError(f"ME-GraphAU lists exist for {sorted(PREFIX)}, not {dataset!r}")
    list_dir, image_root = Path(list_dir), Path(image_root)
    if not list_dir.is_dir():
        raise DatasetError(f"{list_dir}: not a folder. Pass list_dir = ME-GraphAU's "
                           f"data/{PREFIX[dataset]}/list.")
    if not image_root.is_dir():
        raise DatasetError(f"{image_root}: not a folder. Pass image_root = the folder the list "
                           f"paths are relative to (ME-GraphAU's data/{PREFIX[dataset]}/img).")
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
    for k in test_folds:
        w = list_dir / f"{PREFIX[dataset]}_weight_fold{k}.txt"
        if w.exists():
            weights[str(k)] = np.loadtxt(w).ravel().tolist()
    meta = {"dataset": dataset, "au_ids": list(au_ids),
            "protocol": "train_test" if dataset == "gft" else "3fold", "test_folds": test_folds,
            "image_size": size, "source": f"ME-GraphAU lists {list_dir} + images {image_root}",
            "positive_rule": "as in the ME-GraphAU label lists",
            "preparation": {"align": "imported", "smoke": False, "image_size": image_size},
            "megraphau_weights": weights}
    with prepared_dir_writer(Path(data_root) / dataset, overwrite) as tmp:
        for src, rel in tqdm(zip(index["source"], index["image"], strict=True), total=len(index),
                             desc=f"import {dataset}", disable=not progress):
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
    return load_prepared(Path(data_root) / dataset)


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
        w = out_dir / f"{PREFIX[dataset]}_weight_fold{k}.txt"
        np.savetxt(w, inverse_frequency_weights(data.labels(train))[None], fmt="%f",
                   delimiter="\t")
        written.append(w)
    return written


__all__ = ["import_megraphau_lists", "write_megraphau_lists"]
