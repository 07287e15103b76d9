"""Import ME-GraphAU (or MDHR) list folders as prepared data sets.

Test fold k's list becomes fold k of our index (GFT, same pattern: test fold 1, its train
list is fold 0). A fold's train lists, when present, must be the other folds' test lists
(ME-GraphAU's protocol) and are checked for it; a weight file must equal
:func:`~hiva_lib.losses.inverse_frequency_weights` of the fold's train labels. The formats are
in :mod:`.listfiles`; the way back (our prepared set as a ME-GraphAU / MDHR folder) is
:mod:`.megraphau_export`.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from hiva_lib.data.au import au_keys, dataset_aus
from hiva_lib.data.prepared import (
    JPEG_QUALITY,
    JPEG_SUFFIXES,
    DatasetError,
    PreparedDataset,
    check_output_dir,
    check_subject_disjoint,
    load_prepared,
    prepared_dir_writer,
    write_index,
)
from hiva_lib.data.real.extract import link_or_copy
from hiva_lib.data.real.face_align import square_resize
from hiva_lib.data.real.listfiles import (
    MEGRAPHAU,
    PREFIX,
    WEIGHT_FILES,
    count_mismatch,
    file_name,
    parse_image_name,
    path_list_names,
    read_labels,
    read_paths,
)
from hiva_lib.data.real.megraphau_export import export_megraphau, write_megraphau_lists
from hiva_lib.losses import inverse_frequency_weights
from hiva_lib.progress import progress as progress_bar

WEIGHT_ATOL = 1e-5  # the files hold %f (6 decimals)
KEY = ["subject", "sequence", "frame"]


def megraphau_image_root(list_dir: str | Path, image_root: str | Path | None) -> Path:
    """``image_root``, else the first folder there of ME-GraphAU's ``data/<DS>/img`` beside
    ``data/<DS>/list`` and MDHR's ``img`` / ``img_o`` (DISFA) beside its lists."""
    if image_root is not None:
        return Path(image_root)
    list_dir = Path(list_dir)
    candidates = [list_dir.parent / "img", list_dir / "img", list_dir / "img_o"]
    return next((c for c in candidates if c.is_dir()), candidates[0])


def _path_list(list_dir: Path, dataset: str, split: str, fold: int) -> Path | None:
    found = [list_dir / n for n in path_list_names(dataset, split, fold)
             if (list_dir / n).exists()]
    return found[0] if found else None


def _read_pair(list_dir: Path, dataset: str, split: str, fold: int
               ) -> tuple[list[str], np.ndarray, Path]:
    """One (path list, label list) pair; their row counts must agree."""
    paths_file = _path_list(list_dir, dataset, split, fold)
    labels_file = list_dir / file_name(MEGRAPHAU, dataset, "labels", fold, split)
    for f in (paths_file or list_dir / path_list_names(dataset, split, fold)[0], labels_file):
        if not f.exists():
            raise DatasetError(f"{f}: missing list file. ME-GraphAU lists are "
                               f"{PREFIX[dataset]}_{split}_img_path_fold<k>.txt and "
                               f"{PREFIX[dataset]}_{split}_label_fold<k>.txt in list_dir.")
    assert paths_file is not None
    paths = read_paths(paths_file)
    labels = read_labels(labels_file, len(dataset_aus(dataset)))
    if len(labels) != len(paths):
        raise count_mismatch(dataset, labels_file, len(labels), paths_file, len(paths))
    return paths, labels, paths_file


def _table(paths: list[str], labels: np.ndarray, fold: int, where: Path,
           au_ids: tuple[int, ...]) -> pd.DataFrame:
    keys = [parse_image_name(p, where, i + 1) for i, p in enumerate(paths)]
    table = pd.DataFrame(keys, columns=KEY)
    table["source"], table["fold"] = paths, fold
    table[au_keys(au_ids)] = labels
    return table


def _test_lists(list_dir: Path, dataset: str, test_folds: list[int]) -> pd.DataFrame:
    """Every test list (GFT: and its train list, fold 0) as one index table, in list order."""
    au_ids = dataset_aus(dataset)
    parts = []
    for k in test_folds:
        paths, labels, where = _read_pair(list_dir, dataset, "test", k)
        parts.append(_table(paths, labels, k, where, au_ids))
    if dataset == "gft":  # train/test split: the train list is fold 0
        paths, labels, where = _read_pair(list_dir, dataset, "train", 1)
        parts.append(_table(paths, labels, 0, where, au_ids))
    index = pd.concat(parts, ignore_index=True)
    check_subject_disjoint(index, list_dir)
    twice = index.duplicated(KEY, keep=False)
    if twice.any():
        first = index[twice].iloc[0]
        raise DatasetError(f"{list_dir}: the image {first['source']!r} is listed "
                           f"{int((index['source'] == first['source']).sum())} times in the "
                           "test lists; every frame belongs to one test fold once. Restore the "
                           "lists.")
    return index


def _check_train_list(paths_file: Path, paths: list[str], index: pd.DataFrame, fold: int
                      ) -> pd.DataFrame:
    """Fold ``fold``'s train path list: no test subject (leakage), and exactly the other
    folds' test images (what ME-GraphAU's lists hold, and what we train on); returns those
    test rows in the train list's order."""
    test = set(index.loc[index["fold"] == fold, "subject"])
    leak = sorted({Path(p).parts[0] for p in paths} & test)
    if leak:
        raise DatasetError(f"{paths_file}: subject leakage, subjects {leak[:5]} are in both the "
                           f"train and the test list of fold {fold}. Use subject-independent "
                           "lists.")
    others = index[index["fold"] != fold].set_index("source")
    missing = sorted(set(others.index) - set(paths))
    extra = sorted(set(paths) - set(others.index))
    if missing or extra or len(paths) != len(others):
        raise DatasetError(
            f"{paths_file}: {len(paths)} images, but the other folds' test lists hold "
            f"{len(others)} ({len(missing)} of them missing here, first {missing[:1]}; "
            f"{len(extra)} here in no test list, first {extra[:1]}). Fold {fold} trains on the "
            "other folds' test lists; use the train and test lists of one ME-GraphAU (or MDHR) "
            "list folder.")
    return others.loc[paths]


def _train_labels(list_dir: Path, dataset: str, fold: int, index: pd.DataFrame
                  ) -> tuple[np.ndarray, str]:
    """Fold ``fold``'s train labels and where they come from, its train lists checked."""
    paths_file = _path_list(list_dir, dataset, "train", fold)
    labels_file = list_dir / file_name(MEGRAPHAU, dataset, "labels", fold, "train")
    au_cols = au_keys(dataset_aus(dataset))
    others = index.loc[index["fold"] != fold, au_cols].to_numpy()
    if dataset == "gft" or (paths_file is None and not labels_file.exists()):
        return others, "the other folds' lists"
    if not labels_file.exists():
        assert paths_file is not None
        _check_train_list(paths_file, read_paths(paths_file), index, fold)
        return others, "the other folds' lists"
    # the counts first: a 5-row sample is reported as such, not as a leak or a bad weight file
    paths, labels, paths_file = _read_pair(list_dir, dataset, "train", fold)
    rows = _check_train_list(paths_file, paths, index, fold)
    differ = (rows[au_cols].to_numpy() != labels).any(axis=1)
    if differ.any():
        r = int(np.argmax(differ))
        raise DatasetError(f"{labels_file}: row {r + 1} ({paths[r]}) has other labels than in "
                           "its test list. Use the lists of one ME-GraphAU (or MDHR) run.")
    return labels, labels_file.name


def _checked_weights(list_dir: Path, dataset: str, fold: int, train: np.ndarray, source: str
                     ) -> list[float] | None:
    """The weight file of ``fold``, if any, after checking it against our weights on ``train``."""
    au_ids = dataset_aus(dataset)
    weights = None
    ours = inverse_frequency_weights(train)
    for name in WEIGHT_FILES:
        path = list_dir / name.format(DS=PREFIX[dataset], k=fold)
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


def _check_folders(list_dir: Path, image_root: Path, dataset: str) -> None:
    if not list_dir.is_dir():
        raise DatasetError(f"{list_dir}: not a folder. Pass list_dir = ME-GraphAU's "
                           f"data/{PREFIX[dataset]}/list.")
    if not image_root.is_dir():
        raise DatasetError(f"{image_root}: not a folder. Pass image_root = the folder the list "
                           f"paths are relative to (ME-GraphAU's data/{PREFIX[dataset]}/img).")


def _check_images(index: pd.DataFrame, image_root: Path) -> None:
    missing = [p for p in index["source"] if not (image_root / p).exists()]
    if missing:
        raise DatasetError(f"{image_root / missing[0]}: image missing ({len(missing)} of "
                           f"{len(index)} listed images). Check image_root.")


def _meta(dataset: str, test_folds: list[int], list_dir: Path, image_root: Path,
          image_size: int | None, first_image: Path, weights: dict[str, list[float]]) -> dict:
    if image_size is None:
        with Image.open(first_image) as im:
            size = im.size[0]
    return {"dataset": dataset, "au_ids": list(dataset_aus(dataset)),
            "protocol": "train_test" if dataset == "gft" else "3fold", "test_folds": test_folds,
            "image_size": size if image_size is None else image_size,
            "source": f"ME-GraphAU lists {list_dir} + images {image_root}",
            "positive_rule": "as in the ME-GraphAU label lists",
            "preparation": {"align": "imported", "smoke": False, "image_size": image_size,
                            "list_dir": str(list_dir.resolve())},
            "megraphau_weights": weights}


def _store_image(src: Path, dst: Path, image_size: int | None) -> None:
    """A JPEG that needs no resize is linked as it is (no second lossy encoding); any other
    image (DISFA's PNG, or one to resize) is written as JPEG, like the raw route's crops."""
    if src.suffix.lower() in JPEG_SUFFIXES:
        with Image.open(src) as im:
            size = im.size
        if image_size is None or size == (image_size, image_size):
            link_or_copy(src, dst)
            return
    img = cv2.imread(str(src), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if img is None:
        raise DatasetError(f"{src}: unreadable image. Restore it.")
    if image_size is not None:
        img = square_resize(img, image_size)
    dst.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(dst), img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])


def stored_name(path: str) -> str:
    """The prepared image name of a listed image: JPEG keeps its name, others become .jpg."""
    return path if Path(path).suffix.lower() in JPEG_SUFFIXES else str(
        Path(path).with_suffix(".jpg"))


def _write(out_root: Path, overwrite: bool, list_dir: Path, image_root: Path,
           index: pd.DataFrame, meta: dict, image_size: int | None, progress: bool) -> None:
    """Images stored as JPEG (:func:`_store_image`), then index.csv and meta.json."""
    with prepared_dir_writer(out_root, overwrite, sources=[list_dir, image_root]) as tmp:
        for src, rel in progress_bar(zip(index["source"], index["image"], strict=True),
                                     total=len(index), desc=f"import {meta['dataset']}",
                                     disable=not progress):
            _store_image(image_root / src, tmp / rel, image_size)
        write_index(tmp, meta, index.drop(columns="source"))


def import_megraphau_lists(list_dir: str | Path, image_root: str | Path | None, dataset: str,
                           data_root: str | Path = "data/prepared", overwrite: bool = False,
                           image_size: int | None = None, progress: bool = True
                           ) -> PreparedDataset:
    """Write ``<data_root>/<dataset>/`` from ME-GraphAU (or MDHR) list files and their images.

    list_dir: ME-GraphAU's ``data/<DS>/list`` or MDHR's ``data/<DS>_dataset``. image_root None
    is ``<list_dir>/../img`` (ME-GraphAU's layout) or MDHR's ``img`` / ``img_o`` in list_dir
    (:func:`megraphau_image_root`). image_size None keeps the
    images' size, an int makes centre-square crops of that size; either way a JPEG that needs no
    resize is linked (or copied) as it is, and every other image (DISFA's PNG) is stored as JPEG
    at :data:`~hiva_lib.data.prepared.JPEG_QUALITY`, as the raw route stores BP4D, DISFA, GFT.
    Mismatched row counts (e.g. ME-GraphAU's published 5-row label samples), a train list that
    is not the other folds' test lists (e.g. subject leakage), a subject in two test folds, or
    a weight file that does not match the fold's train labels raise :class:`DatasetError`;
    nothing is written then.
    """
    dataset = dataset.lower()
    if dataset not in PREFIX:
        raise ValueError(f"ME-GraphAU lists exist for {sorted(PREFIX)}, not {dataset!r}")
    list_dir, image_root = Path(list_dir), megraphau_image_root(list_dir, image_root)
    _check_folders(list_dir, image_root, dataset)
    out_root = Path(data_root) / dataset
    check_output_dir(out_root, overwrite, sources=[list_dir, image_root])
    test_folds = [1] if dataset == "gft" else [1, 2, 3]
    index = _test_lists(list_dir, dataset, test_folds)
    train = {k: _train_labels(list_dir, dataset, k, index) for k in test_folds}
    _check_images(index, image_root)
    weights = {str(k): w for k, (labels, source) in train.items()
               if (w := _checked_weights(list_dir, dataset, k, labels, source)) is not None}
    index["image"] = ["images/" + stored_name(p) for p in index["source"]]
    meta = _meta(dataset, test_folds, list_dir, image_root, image_size,
                 image_root / index["source"].iat[0], weights)
    _write(out_root, overwrite, list_dir, image_root, index, meta, image_size, progress)
    return load_prepared(out_root)


# the export (megraphau_export) is importable from here too, as before
__all__ = ["import_megraphau_lists", "megraphau_image_root", "write_megraphau_lists",
           "export_megraphau"]
