"""A prepared data set as a ME-GraphAU (or MDHR) data-set folder: our split and our crops.

:func:`export_megraphau` writes a complete folder that ME-GraphAU (``dataset_path`` in its
``config/<DS>_config.yaml``) or MDHR (``--dataset_path``) trains on as it is: every list of
:mod:`.listfiles` (paths, labels, weights, and ME-GraphAU's AU relations or MDHR's sub labels)
plus the image folder in the repository's naming. Every exported image is
:data:`MEGRAPHAU_IMAGE_SIZE` x :data:`MEGRAPHAU_IMAGE_SIZE` and its content is the format its
name says (JPEG in ``.jpg``, PNG in ``.png``): an image of ours that is both already is a
symbolic link (a copy where the file system has no links), any other (SynthFACS' 128 px PNGs,
our DISFA JPEGs under ME-GraphAU's ``SN001/0.png``) is written again, resized as our loader
resizes (:func:`hiva_lib.data.loader.read_image`). :func:`write_megraphau_lists` writes the
list files alone, e.g. for an image folder already prepared for ME-GraphAU.

Row order is ME-GraphAU's: test fold k = the rows of fold k in our index order, train = the
other folds, the higher first; so importing ME-GraphAU's lists and exporting them again gives
the same bytes.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from hiva_lib.data.au import dataset_aus
from hiva_lib.data.loader import read_image
from hiva_lib.data.prepared import (
    JPEG_QUALITY,
    JPEG_SUFFIXES,
    DatasetError,
    PreparedDataset,
    make_dirs,
    remove_dirs,
)
from hiva_lib.data.real.extract import link_or_copy
from hiva_lib.data.real.listfiles import (
    PREFIX,
    ListFormat,
    au_relation,
    file_name,
    fold_rows,
    get_format,
    image_name,
    int_rows_text,
    mdhr_sub_labels,
    paths_text,
    weights_text,
)
from hiva_lib.losses import inverse_frequency_weights
from hiva_lib.progress import progress as progress_bar

EXPORT_MARKER = ".hiva_export.json"  # what an export wrote: the only folder it replaces
# ME-GraphAU's training loader draws the 224 crop's offset from the stored image's size, then
# resizes the image to 256 and crops there (MDHR resizes to 256 too): only a 256 x 256 image
# gives a crop inside the image with their offsets; a smaller one stops it (an empty random
# range under 224 px), a larger one crops past the border
MEGRAPHAU_IMAGE_SIZE = 256
_SIGNATURES = {"jpeg": b"\xff\xd8\xff", "png": b"\x89PNG\r\n\x1a\n"}


def _dataset_of(data: PreparedDataset) -> str:
    """ME-GraphAU's data-set name for ``data`` (SynthFACS presets: the set they mimic)."""
    dataset = data.name.removeprefix("synth-")
    if dataset not in PREFIX:
        raise ValueError(f"no ME-GraphAU list naming for {data.name!r}")
    if data.au_ids != dataset_aus(dataset):
        raise DatasetError(f"{data.root / 'meta.json'}: AUs {list(data.au_ids)}, but "
                           f"ME-GraphAU's {PREFIX[dataset]} lists hold AUs "
                           f"{list(dataset_aus(dataset))} in that order. Prepare the data set "
                           "with its standard AU set.")
    return dataset


def image_names(data: PreparedDataset, fmt: ListFormat) -> np.ndarray:
    """The image path each index row has in ``fmt``'s lists; they must be distinct."""
    dataset = _dataset_of(data)
    idx = data.index
    names = np.array([image_name(fmt, dataset, s, q, int(f)) for s, q, f in
                      zip(idx["subject"], idx["sequence"], idx["frame"], strict=True)])
    unique, counts = np.unique(names, return_counts=True)
    if (counts > 1).any():
        raise DatasetError(f"{data.root / 'index.csv'}: rows share the {fmt.name} image name "
                           f"{unique[counts > 1][0]!r} (subject/sequence/frame repeated); "
                           "prepare the data set again.")
    return names


def list_files(data: PreparedDataset, fmt: ListFormat, names: np.ndarray
               ) -> Iterator[tuple[str, bytes]]:
    """(file name, content) of every list file of ``fmt`` for ``data``, fold by fold."""
    dataset = _dataset_of(data)
    labels = data.labels().astype(np.int64)
    folds = data.index["fold"].to_numpy()
    for k in data.test_folds:
        train, test = fold_rows(folds, k)
        for split, rows in (("train", train), ("test", test)):
            yield file_name(fmt, dataset, "paths", k, split), paths_text(names[rows].tolist())
            yield file_name(fmt, dataset, "labels", k, split), int_rows_text(labels[rows])
            if fmt.sub_labels:
                yield (file_name(fmt, dataset, "sub_labels", k, split),
                       int_rows_text(mdhr_sub_labels(labels[rows], dataset)))
        yield (file_name(fmt, dataset, "weights", k),
               weights_text(inverse_frequency_weights(labels[train])))
        if fmt.relation:
            yield file_name(fmt, dataset, "relation", k), int_rows_text(au_relation(labels[train]))


def write_megraphau_lists(data: PreparedDataset, out_dir: str | Path,
                          list_format: str = "megraphau", overwrite: bool = False) -> list[Path]:
    """Write only the list files of ``data`` into ``out_dir`` (no images).

    The paths name images as ME-GraphAU (or MDHR, ``list_format="mdhr"``) does
    (``F001/T1/2440.jpg``, ``SN001/0.png``); :func:`export_megraphau` writes that image
    folder too. A list file already in ``out_dir`` is replaced only with ``overwrite=True``.
    """
    fmt = _format_of(list_format, data)
    out_dir = Path(out_dir)
    names = image_names(data, fmt)
    targets = [out_dir / n for n in _file_names(data, fmt)]
    there = [p for p in targets if p.exists()]
    if there and not overwrite:
        raise DatasetError(f"{there[0]}: a list file is already here ({len(there)} of "
                           f"{len(targets)}). Pass overwrite=True to replace them, or another "
                           "out_dir.")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, content in list_files(data, fmt, names):
        tmp = out_dir / f".{name}.partial-{os.getpid()}"
        tmp.write_bytes(content)
        tmp.replace(out_dir / name)
    return targets


def _format_of(name: str, data: PreparedDataset) -> ListFormat:
    return get_format(name, _dataset_of(data))


def _file_names(data: PreparedDataset, fmt: ListFormat) -> list[str]:
    """The names :func:`list_files` writes, without computing their content."""
    dataset = _dataset_of(data)
    kinds = ["paths", "labels"] + ["sub_labels"] * fmt.sub_labels
    names = []
    for k in data.test_folds:
        names += [file_name(fmt, dataset, kind, k, s) for s in ("train", "test") for kind in kinds]
        names += [file_name(fmt, dataset, "weights", k)]
        names += [file_name(fmt, dataset, "relation", k)] * fmt.relation
    return names


def _check_export_dir(out_dir: Path, overwrite: bool, data: PreparedDataset) -> None:
    """Refuse, before writing, a folder an export must not replace."""
    out, root = out_dir.resolve(), data.root.resolve()
    if out == root or root in out.parents or out in root.parents:
        raise DatasetError(f"{out_dir}: this export folder overlaps the prepared data set "
                           f"{data.root}, whose images it links. Export into another folder.")
    if not out_dir.exists() or (out_dir.is_dir() and not any(out_dir.iterdir())):
        return
    if (out_dir / EXPORT_MARKER).is_file():
        if overwrite:
            return
        raise DatasetError(f"{out_dir}: an export is already here. Use it, or pass "
                           "overwrite=True to write it again (notebook 01: overwrite_export="
                           "True, which leaves the prepared data set as it is).")
    raise DatasetError(
        f"{out_dir}: exists and is not an export of ours (no {EXPORT_MARKER}), so it is left "
        "alone, even with overwrite=True (it may hold ME-GraphAU's own lists and images). "
        "Export into a new folder and point ME-GraphAU's config/<DS>_config.yaml dataset_path "
        "(MDHR: --dataset_path) at it.")


def _image_format(path: Path) -> str | None:
    """``"jpeg"`` or ``"png"`` from a file's first bytes, whatever its name says (else None)."""
    with open(path, "rb") as f:
        head = f.read(8)
    return next((kind for kind, sig in _SIGNATURES.items() if head.startswith(sig)), None)


def _name_format(name: str | Path) -> str:
    """The format an image name promises: ``"jpeg"`` for .jpg / .jpeg, else ``"png"``."""
    return "jpeg" if Path(name).suffix.lower() in JPEG_SUFFIXES else "png"


def _usable_as_is(src: Path, name: str) -> bool:
    """Our image can be linked under ``name``: the size their loaders need, the format named."""
    if _image_format(src) != _name_format(name):
        return False
    with Image.open(src) as im:
        return im.size == (MEGRAPHAU_IMAGE_SIZE, MEGRAPHAU_IMAGE_SIZE)


def _write_image(src: Path, dst: Path) -> None:
    """``src`` resized as our loader resizes it, written in the format ``dst``'s name says
    (JPEG at :data:`~hiva_lib.data.prepared.JPEG_QUALITY`, PNG lossless)."""
    rgb = read_image(src, MEGRAPHAU_IMAGE_SIZE).permute(1, 2, 0).numpy()
    params = ([cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if _name_format(dst) == "jpeg" else [])
    if not cv2.imwrite(str(dst), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params):
        raise OSError(f"{dst}: could not be written")


def _export_images(data: PreparedDataset, names: np.ndarray, image_dir: Path, progress: bool
                   ) -> dict[str, int]:
    """Each row's image at ``image_dir/<name>``: a symbolic link to ours (else a hard link or a
    copy) where ours is already right for it (:func:`_usable_as_is`), else written again;
    returns how many of each."""
    for parent in {(image_dir / n).parent for n in names}:
        parent.mkdir(parents=True, exist_ok=True)
    kinds = {"symlinks": 0, "hard_links_or_copies": 0, "written": 0}
    sources = data.index["image"].tolist()
    for rel, name in progress_bar(zip(sources, names, strict=True), total=len(names),
                                  desc=f"export {data.name}", disable=not progress):
        src = (data.root / rel).resolve()
        if not _usable_as_is(src, name):
            _write_image(src, image_dir / name)
            kinds["written"] += 1
            continue
        try:
            os.symlink(src, image_dir / name)
            kinds["symlinks"] += 1
        except OSError:  # no symbolic links here (e.g. Windows without the privilege)
            link_or_copy(src, image_dir / name)
            kinds["hard_links_or_copies"] += 1
    return kinds


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    if out_dir.exists() and any(out_dir.iterdir()):  # a former export (checked): replace it
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old)  # removes the links, never what they point to
        return
    if out_dir.exists():
        out_dir.rmdir()
    tmp.rename(out_dir)


def export_megraphau(data: PreparedDataset, out_dir: str | Path, list_format: str = "megraphau",
                     overwrite: bool = False, progress: bool = True) -> Path:
    """Write ``data`` as a ME-GraphAU (or MDHR) data-set folder at ``out_dir``; returns it.

    megraphau: ``out_dir/list/`` (paths, labels, weights ``<DS>_weight_fold<k>.txt``, AU
    relations) and ``out_dir/img/``; set ME-GraphAU's ``dataset_path`` to ``out_dir``.
    mdhr: the lists (with sub labels, ``<DS>_train_weight_fold<k>.txt``) in ``out_dir``, images
    in ``out_dir/img`` (DISFA: ``img_o``); pass ``--dataset_path out_dir``. ``out_dir`` must be
    new or empty, or an export of ours replaced with ``overwrite=True``. Every image is
    256 x 256 in the format its name says, whatever size the prepared set has (SynthFACS: 128).
    """
    fmt = _format_of(list_format, data)
    dataset = _dataset_of(data)
    out_dir = Path(out_dir)
    names = image_names(data, fmt)
    _check_export_dir(out_dir, overwrite, data)
    tmp = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed run of a process with our pid
    created = make_dirs(tmp)
    try:
        write_megraphau_lists(data, fmt.list_dir(tmp), list_format)
        kinds = _export_images(data, names, fmt.image_dir(tmp, dataset), progress)
        (tmp / EXPORT_MARKER).write_text(json.dumps(
            {"list_format": fmt.name, "dataset": data.name, "source": str(data.root.resolve()),
             "rows": len(names), "image_size": MEGRAPHAU_IMAGE_SIZE, "images": kinds},
            indent=2))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        remove_dirs(created)
        raise
    _move_into_place(tmp, out_dir)
    return out_dir
