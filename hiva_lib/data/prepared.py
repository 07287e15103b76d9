"""The prepared-data-set contract shared by SynthFACS and BP4D / DISFA / GFT.

A prepared data set is a folder::

    <root>/meta.json    {"dataset", "au_ids", "protocol", "test_folds", "image_size",
                         "source", "positive_rule", "format_version"}
    <root>/index.csv    one row per frame: subject, sequence, frame, image, fold, AU<k>...
    <root>/images/...   the (aligned, cropped) face images, paths in ``image`` are relative
    <root>/regions.npz  optional (SynthFACS only): ground-truth AU region masks

Folds: ``fold`` is an integer per row. Evaluating test fold ``k`` trains on every row
whose fold differs from ``k``. The 3-fold protocols (BP4D, DISFA) use folds 1-3 with
``test_folds = [1, 2, 3]``; GFT's official split uses fold 0 for train and 1 for test,
``test_folds = [1]``. A subject lives in one fold only (no identity leakage), and no image
content (SHA-256 of the file's bytes) appears in two folds: the same face copied under another
subject id is leakage too. The hashes are cached in ``<root>/.image_sha256.csv`` (by size and
modification time), so a large data set is read once.

The data version: :func:`data_fingerprint` (SHA-256 of ``index.csv`` and ``meta.json``) is
recorded by every run and result, so nothing of another version is reused. The images'
content: ``<root>/images.sha256`` (``sha256sum`` format, one line per row of index.csv),
written at preparation; every :func:`load_prepared` checks the images against it (through
the size/mtime cache above; :func:`verify_image_content` with ``full=True`` rereads every
file), so an image changed after preparation is one error before anything is trained,
evaluated, reused or drawn. Results record its SHA-256 (:func:`image_content`).
Labels are 0/1 occurrence (DISFA: intensity >= 2 is 1).

Preparers write through :func:`prepared_dir_writer`, so a failed preparation leaves
nothing behind and a finished one is never overwritten silently. A folder at the output path
that is not a prepared data set (e.g. the raw licensed copy) is never replaced, even with
``overwrite=True``, and the output may not lie inside its sources or hold them.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hiva_lib.data.au import au_keys
from hiva_lib.integrity import atomic_write_text, file_sha256

FORMAT_VERSION = 1
INDEX_COLUMNS = ["subject", "sequence", "frame", "image", "fold"]
META_KEYS = ["dataset", "au_ids", "protocol", "test_folds", "image_size", "source"]
PROTOCOLS = ("3fold", "train_test")
# the images of BP4D, DISFA and GFT are stored as JPEG at this quality, whatever the source
# (frames, videos, ME-GraphAU's PNG); a 256 px face crop is about 25 KiB and decodes in < 1 ms
JPEG_QUALITY = 95
# their side by default: the loader's resize size for the paper's 224 crop (loader.load_size_for),
# so the loader neither resizes them nor upsamples a 224 crop to 256 (the former 224 storage)
REAL_IMAGE_SIZE = 256
JPEG_SUFFIXES = (".jpg", ".jpeg")


class DatasetError(ValueError):
    """A prepared data set (or a raw one being prepared) is missing or malformed."""


@dataclass
class PreparedDataset:
    root: Path
    meta: dict
    index: pd.DataFrame
    # decoded images {(row, size): uint8 tensor}, kept by hiva_lib.data.loader for small data sets:
    # the runs of an ablation share one PreparedDataset and decode each image once
    decoded: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.meta["dataset"]

    @property
    def au_ids(self) -> tuple[int, ...]:
        return tuple(self.meta["au_ids"])

    @property
    def au_columns(self) -> list[str]:
        return au_keys(self.au_ids)

    @property
    def test_folds(self) -> list[int]:
        return list(self.meta["test_folds"])

    def labels(self, rows: np.ndarray | None = None) -> np.ndarray:
        """(n, N) float32 0/1 label matrix in the data set's AU order."""
        table = self.index if rows is None else self.index.iloc[rows]
        return table[self.au_columns].to_numpy(np.float32)

    @property
    def fingerprint(self) -> str:
        """The data version: :func:`data_fingerprint` of this folder."""
        return data_fingerprint(self.root)

    @property
    def content(self) -> str | None:
        """The version of the images' content: :func:`image_content` of this folder."""
        return image_content(self.root)

    def image_path(self, row: int) -> Path:
        return self.root / self.index["image"].iat[row]

    def split(self, fold: int) -> tuple[np.ndarray, np.ndarray]:
        """Row positions (train, test) for test fold ``fold``."""
        if fold not in self.test_folds:
            raise DatasetError(
                f"{self.root / 'meta.json'}: fold {fold} is not a test fold of {self.name} "
                f"(test folds: {self.test_folds}); pass one of them as fold"
            )
        folds = self.index["fold"].to_numpy()
        return np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)

    def region_masks(self) -> np.ndarray | None:
        """(n, N, R, R) bool ground-truth region masks (SynthFACS), or None."""
        path = self.root / "regions.npz"
        if not path.exists():
            return None
        with np.load(path) as z:
            masks = z["masks"]
            shape = tuple(z["shape"])
        if masks.dtype == np.uint8 and len(shape) == 4:  # stored bit-packed
            masks = np.unpackbits(masks, axis=-1, count=shape[-1]).astype(bool)
        return masks.reshape(shape)


def _fail(path: Path, problem: str, fix: str) -> DatasetError:
    return DatasetError(f"{path}: {problem}. {fix}")


def prepare_hint(dataset: str) -> str:
    from hiva_lib.hints import run_hint

    return (f"Prepare it first: {run_hint('01_prepare_data', {'dataset': dataset})} (real data "
            "sets also need raw_root, the licensed copy), or pass data_root pointing at the "
            "folder that holds it.")


def load_prepared(root: str | Path, check_images: bool = True) -> PreparedDataset:
    """Load and validate a prepared data set; any problem raises one :class:`DatasetError`."""
    root = Path(root)
    name = root.name
    meta_path, index_path = root / "meta.json", root / "index.csv"
    if not root.is_dir():
        raise _fail(root, "no prepared data set here", prepare_hint(name))
    if not meta_path.exists():
        raise _fail(meta_path, "missing", prepare_hint(name))
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise _fail(meta_path, f"not valid JSON ({e})",
                    "Delete the folder and prepare again.") from e
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise _fail(meta_path, f"missing keys {missing}", "Delete the folder and prepare again.")
    if meta["protocol"] not in PROTOCOLS:
        raise _fail(meta_path, f"unknown protocol {meta['protocol']!r}", f"Use one of {PROTOCOLS}.")
    if meta.get("format_version", FORMAT_VERSION) != FORMAT_VERSION:
        raise _fail(meta_path, f"format_version {meta.get('format_version')} is not "
                    f"{FORMAT_VERSION}", "Prepare the data set again with this hiva_lib.")
    if not index_path.exists():
        raise _fail(index_path, "missing", prepare_hint(name))
    try:
        index = pd.read_csv(index_path, dtype={"subject": str, "sequence": str, "image": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise _fail(index_path, f"not a readable CSV table ({e})",
                    "Delete the folder and prepare again.") from e
    try:
        au_cols = au_keys(meta["au_ids"])
    except (ValueError, TypeError) as e:
        raise _fail(meta_path, f"au_ids {meta['au_ids']!r} are not AU ids of this study ({e})",
                    "Delete the folder and prepare again.") from e
    missing = [c for c in INDEX_COLUMNS + au_cols if c not in index.columns]
    if missing:
        raise _fail(index_path, f"missing columns {missing}",
                    "Prepare the data set again; the contract is in hiva_lib/data/prepared.py.")
    if index.empty:
        raise _fail(index_path, "has no rows", prepare_hint(name))
    check_labels(index, au_cols, index_path)
    check_rows(index, root, index_path)
    check_au_set(meta, meta_path)
    folds = set(index["fold"].unique().tolist())
    if not set(meta["test_folds"]) <= folds:
        raise _fail(index_path, f"test folds {meta['test_folds']} not all present (folds found: "
                    f"{sorted(folds)})", "Prepare the data set again.")
    check_subject_disjoint(index, index_path)
    if check_images:
        paths = index["image"].map(lambda p: (root / p).exists())
        if not paths.all():
            first = index["image"][~paths].iloc[0]
            raise _fail(root / first, f"image missing ({(~paths).sum()} of {len(index)} missing)",
                        "The images folder is incomplete; prepare the data set again.")
        sha = image_hashes(root, index["image"])
        check_content_disjoint(root, index, sha)
        check_image_content(root, index, sha)
    return PreparedDataset(root=root, meta=meta, index=index)


def check_labels(index: pd.DataFrame, au_cols: list[str], index_path: Path) -> None:
    """Every label 0 or 1; the first other value is named with its row (the line of
    index.csv) and column, as it is written there."""
    values = index[au_cols]
    numbers = values.apply(pd.to_numeric, errors="coerce").to_numpy()
    bad = ~np.isin(numbers, (0, 1))
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise _fail(index_path, f"label {values.iat[r, c]!r} in row {r + 2}, column "
                    f"{au_cols[c]} is not 0/1",
                    "Labels must be binary occurrence; prepare again.")


def check_rows(index: pd.DataFrame, root: Path, index_path: Path) -> None:
    """No row twice (the same image, or the same subject/sequence/frame) and no image path
    outside the data set's folder (absolute, or climbing out with '..')."""
    for cols in (["image"], ["subject", "sequence", "frame"]):
        dup = index.duplicated(subset=cols, keep=False)
        if dup.any():
            rows = [int(r) + 2 for r in np.flatnonzero(dup)[:4]]
            first = index.loc[dup, cols].iloc[0].tolist()
            raise _fail(index_path, f"{int(dup.sum())} rows repeat one {'/'.join(cols)} "
                        f"(e.g. {first} in rows {rows})",
                        "Each frame must be listed once; prepare the data set again.")
    escaping = index["image"].map(
        lambda p: Path(p).is_absolute() or ".." in Path(p).parts or not str(p).strip())
    if escaping.any():
        r = int(np.flatnonzero(escaping.to_numpy())[0])
        raise _fail(index_path, f"image path {index['image'].iat[r]!r} in row {r + 2} is not "
                    f"inside the data set's folder {root}",
                    "Image paths must be relative to it (images/...); prepare again.")


def check_au_set(meta: dict, meta_path: Path) -> None:
    """A known data set (bp4d, synth-disfa...) has its own AU set and no other."""
    from hiva_lib.data.au import DATASET_AUS

    expected = DATASET_AUS.get(str(meta.get("dataset", "")).lower())
    if expected is not None and [int(a) for a in meta["au_ids"]] != list(expected):
        raise _fail(meta_path, f"au_ids {meta['au_ids']} are not the AU set of "
                    f"{meta['dataset']} {list(expected)}",
                    "meta.json was edited or belongs to another data set; prepare again.")


def data_fingerprint(root: str | Path) -> str:
    """SHA-256 over ``index.csv`` and ``meta.json`` of a prepared data set: its version.
    Preparing again (other frames, labels, folds or settings) gives another fingerprint."""
    digest = hashlib.sha256()
    for name in ("meta.json", "index.csv"):
        digest.update(name.encode() + b"\0" + (Path(root) / name).read_bytes() + b"\0")
    return digest.hexdigest()


HASH_CACHE = ".image_sha256.csv"


def image_hashes(root: Path, images: pd.Series, full: bool = False) -> pd.Series:
    """SHA-256 of each image file (cached by path, size and mtime in ``root/.image_sha256.csv``;
    a read-only data set is hashed without the cache). ``full``: every file is read again,
    whatever the cache says."""
    cache_path = root / HASH_CACHE
    cache: dict[str, tuple[int, int, str]] = {}
    with contextlib.suppress(OSError, ValueError, KeyError, pd.errors.ParserError,
                             pd.errors.EmptyDataError):
        if not full:
            table = pd.read_csv(cache_path, dtype={"image": str, "sha256": str})
            cache = {r.image: (int(r.size), int(r.mtime_ns), r.sha256)
                     for r in table.itertuples()}
    out, rows, changed = [], [], False
    for rel in images:
        st = (root / rel).stat()
        hit = cache.get(rel)
        if hit and hit[:2] == (st.st_size, st.st_mtime_ns):
            sha = hit[2]
        else:
            sha, changed = hashlib.sha256((root / rel).read_bytes()).hexdigest(), True
        out.append(sha)
        rows.append((rel, st.st_size, st.st_mtime_ns, sha))
    if changed:
        with contextlib.suppress(OSError):
            pd.DataFrame(rows, columns=["image", "size", "mtime_ns", "sha256"]).to_csv(
                cache_path, index=False)
    return pd.Series(out, index=images.index)


IMAGE_MANIFEST = "images.sha256"


def write_image_manifest(root: Path, index: pd.DataFrame, sha: pd.Series | None = None) -> Path:
    """``root/images.sha256``: the SHA-256 of every image of index.csv, in its order
    (``sha256sum`` format: ``cd <root> && sha256sum -c images.sha256`` checks it too)."""
    sha = image_hashes(root, index["image"]) if sha is None else sha
    text = "".join(f"{h}  {rel}\n" for h, rel in zip(sha, index["image"], strict=True))
    return atomic_write_text(text, root / IMAGE_MANIFEST)


def read_image_manifest(root: Path) -> dict[str, str] | None:
    """{image: SHA-256} of ``root/images.sha256`` (None when there is none); a damaged file
    is one DatasetError."""
    path = root / IMAGE_MANIFEST
    if not path.exists():
        return None
    out = {}
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        sha, sep, rel = line.partition("  ")
        if not sep or len(sha) != 64 or not rel:
            raise _fail(path, f"line {n} is not '<sha256>  <image>' (truncated or damaged)",
                        "Restore it, or prepare the data set again.")
        out[rel] = sha
    return out


def image_content(root: str | Path) -> str | None:
    """The version of the images' content: SHA-256 of ``images.sha256`` (None without one).
    Results record it beside the data fingerprint."""
    path = Path(root) / IMAGE_MANIFEST
    return file_sha256(path) if path.exists() else None


def check_image_content(root: Path, index: pd.DataFrame, sha: pd.Series) -> None:
    """The images as they are (``sha``) against ``images.sha256``, written at preparation.
    A data set prepared before manifests gets one now (from then on it is checked)."""
    manifest = read_image_manifest(root)
    if manifest is None:
        with contextlib.suppress(OSError):  # a read-only copy stays unchecked
            write_image_manifest(root, index, sha)
            print(f"{root}: prepared before image manifests; the images' SHA-256 are recorded "
                  f"now in {IMAGE_MANIFEST} and checked on every later load")
        return
    path = root / IMAGE_MANIFEST
    if set(manifest) != set(index["image"]):
        extra = sorted(set(index["image"]) ^ set(manifest))
        raise _fail(path, f"lists other images than index.csv ({len(extra)} differ, e.g. "
                    f"{extra[0]})", "It belongs to another preparation: prepare the data set "
                    "again (notebook 01 with -p overwrite True).")
    changed = [(rel, h) for rel, h in zip(index["image"], sha, strict=True) if manifest[rel] != h]
    if changed:
        rel, found = changed[0]
        raise _fail(root / rel, f"{len(changed)} of {len(index)} images differ from the SHA-256 "
                    f"recorded in {path} at preparation (e.g. this one: {manifest[rel]} "
                    f"recorded, {found} now): the images were changed after preparation",
                    "Restore them, or prepare the data set again (notebook 01 with -p "
                    "overwrite True); results of the changed images are not reused.")


def verify_image_content(root: str | Path, full: bool = False) -> None:
    """Check every image of a prepared data set against ``images.sha256``; ``full`` rereads
    every file instead of trusting the size/mtime cache (e.g. after a suspect copy)."""
    root = Path(root)
    index = load_prepared(root, check_images=False).index
    check_image_content(root, index, image_hashes(root, index["image"], full=full))


def check_content_disjoint(root: Path, index: pd.DataFrame, sha: pd.Series | None = None
                           ) -> None:
    """Refuse image leakage: byte-identical images in two folds (e.g. a subject's frames
    copied under a new subject id into the test fold)."""
    sha = image_hashes(root, index["image"]) if sha is None else sha
    folds_per_hash = index.groupby(sha)["fold"].nunique()
    shared = folds_per_hash[folds_per_hash > 1].index
    if len(shared):
        dup = index[sha.isin(shared)].assign(sha=sha).sort_values(["sha", "fold"])
        first = dup[dup.sha == shared[0]]
        pairs = ", ".join(f"{r.image} (subject {r.subject}, fold {r.fold})"
                          for r in first.itertuples())
        raise DatasetError(
            f"{root / 'index.csv'}: image leakage, {len(shared)} image(s) appear byte-identical "
            f"in several folds (e.g. {pairs}). The same face is in training and test; remove "
            "the copies, or give them the subject (and fold) they belong to, and prepare again.")


def check_subject_disjoint(index: pd.DataFrame, where: Path | str) -> None:
    """Refuse identity leakage: every subject must sit in exactly one fold."""
    per_subject = index.groupby("subject")["fold"].nunique()
    leaking = per_subject[per_subject > 1]
    if len(leaking):
        raise DatasetError(
            f"{where}: subject leakage, subjects {leaking.index.tolist()[:5]} appear in "
            f"several folds. Assign each subject to a single fold (subject-independent protocol)."
        )


def is_prepared(root: Path) -> bool:
    """A folder written by :func:`prepared_dir_writer` (meta.json and index.csv)."""
    return (root / "meta.json").is_file() and (root / "index.csv").is_file()


def check_apart(out: str | Path, sources: Iterable[str | Path]) -> None:
    """Refuse an output folder that is one of ``sources``, lies inside one, or holds one."""
    resolved = Path(out).resolve()
    for src in sources:
        src_path = Path(src).resolve()
        if resolved == src_path or src_path in resolved.parents or resolved in src_path.parents:
            raise DatasetError(
                f"{out}: this output folder {'is' if resolved == src_path else 'overlaps'} the "
                f"source {src}. Preparation would write into (or replace) the data it reads; "
                "pass a data_root outside it, e.g. data_root='data/prepared'.")


def check_output_dir(root: str | Path, overwrite: bool = False,
                     sources: Iterable[str | Path] = ()) -> None:
    """Refuse, before anything is written, an output path that preparation must not replace.

    Refused: a finished data set without ``overwrite``; any other non-empty folder or file
    (whatever ``overwrite`` says: it may be the raw copy or someone's work); an output inside one
    of ``sources`` (raw data, image folders) or holding one of them.
    """
    root = Path(root)
    check_apart(root, sources)
    if not root.exists():
        return
    if is_prepared(root):
        if not overwrite:
            raise DatasetError(f"{root}: a prepared data set is already here. Use it as it is, "
                               "or pass overwrite=True to prepare it again.")
        return
    if root.is_file() or any(root.iterdir()):
        raise DatasetError(
            f"{root}: exists and is not a prepared data set (no meta.json + index.csv), so it is "
            "left alone, even with overwrite=True. Move it away, or pass another data_root.")


def make_dirs(folder: Path) -> list[Path]:
    """``mkdir -p`` returning the folders it created (outermost first), so they can be undone."""
    created = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
    folder.mkdir(parents=True, exist_ok=True)
    return created


def remove_dirs(created: list[Path]) -> None:
    """Undo :func:`make_dirs`: remove the folders, innermost first, where they are empty."""
    for d in reversed(created):
        with contextlib.suppress(OSError):
            d.rmdir()


@contextlib.contextmanager
def prepared_dir_writer(root: str | Path, overwrite: bool = False,
                        sources: Iterable[str | Path] = ()) -> Iterator[Path]:
    """Write a prepared data set into a temporary sibling, moved into place on success.

    A failure leaves nothing at ``root`` (nor the folders created for it); what may be at
    ``root`` is checked by :func:`check_output_dir` first. A finished data set is replaced
    (with ``overwrite``) only after the new one is complete.
    """
    root = Path(root)
    check_output_dir(root, overwrite, sources)
    tmp = root.parent / f".{root.name}.partial-{os.getpid()}"
    if tmp.exists():  # left by a killed run of a process with our pid
        shutil.rmtree(tmp)
    created = make_dirs(tmp)
    try:
        yield tmp
        if is_prepared(tmp):  # the images' content, recorded beside index.csv
            index = pd.read_csv(tmp / "index.csv", usecols=["image"], dtype={"image": str})
            if index["image"].map(lambda p: (tmp / p).is_file()).all():  # else: its own error
                write_image_manifest(tmp, index)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        remove_dirs(created)
        raise
    if root.exists() and is_prepared(root):
        old = root.parent / f".{root.name}.old-{os.getpid()}"
        root.rename(old)
        tmp.rename(root)
        shutil.rmtree(old)
    else:
        if root.exists():  # an empty folder (checked above): nothing to keep
            root.rmdir()
        tmp.rename(root)


def write_index(folder: Path, meta: dict, index: pd.DataFrame) -> None:
    """Write meta.json and index.csv (columns in contract order) into ``folder``."""
    meta = {**meta, "format_version": FORMAT_VERSION}
    cols = INDEX_COLUMNS + au_keys(meta["au_ids"])
    extra = [c for c in index.columns if c not in cols]
    index[cols + extra].to_csv(folder / "index.csv", index=False)
    (folder / "meta.json").write_text(json.dumps(meta, indent=2))


def summary_table(data: PreparedDataset) -> pd.DataFrame:
    """Per fold: subjects, frames and AU base rates (%), for the notebooks' overview."""
    idx = data.index
    rows = []
    for fold, part in idx.groupby("fold"):
        rates = (part[data.au_columns].mean() * 100).round(1)
        rows.append({"fold": fold, "subjects": part["subject"].nunique(), "frames": len(part),
                     **rates.to_dict()})
    return pd.DataFrame(rows).set_index("fold")
