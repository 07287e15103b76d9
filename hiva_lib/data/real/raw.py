"""BP4D, DISFA and GFT in their distributed layouts -> the prepared-data-set contract.

The paper (Sec. IV-A) evaluates on BP4D and DISFA with the subject-independent 3-fold
protocol and on GFT with its official train/test split. :func:`prepare_real` runs the steps:
scan the layout (:mod:`.bp4d`, :mod:`.disfa`, :mod:`.gft`), assign folds, align the frames into
the crop cache (:mod:`.extract`), write the prepared set. What each layout expects, and what
was assumed, is in docs/data.md.

Every problem with the raw data (wrong root, missing label file, unreadable frame, frame /
label count mismatch, unknown subject, leakage) raises one :class:`DatasetError` and leaves
``data_root`` as it was: nothing at the output path, and the crops this call added to the
cache removed again. Aligned crops are cached per sequence under ``<data_root>/.cache``, so
that a run that is interrupted or crashes (not bad input) keeps them and the next run resumes
where it stopped.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from hiva_lib.data.au import au_keys, dataset_aus
from hiva_lib.data.prepared import (
    REAL_IMAGE_SIZE,
    DatasetError,
    PreparedDataset,
    check_apart,
    check_output_dir,
    check_subject_disjoint,
    load_prepared,
    prepared_dir_writer,
    write_index,
)
from hiva_lib.data.real.bp4d import BP4D_PARTS, scan_bp4d
from hiva_lib.data.real.common import (
    EXPECTED,
    IMAGE_SUFFIXES,
    VIDEO_SUFFIXES,
    RawSequence,
    parts_to_folds,
    raw_root_error,
)
from hiva_lib.data.real.disfa import DISFA_PARTS, scan_disfa
from hiva_lib.data.real.extract import CacheWrites, extract_sequence, link_or_copy
from hiva_lib.data.real.face_align import FaceAligner
from hiva_lib.data.real.gft import GFT_FIRST_FRAME, read_gft_split, scan_gft
from hiva_lib.presets import SMOKE_FRAMES, SMOKE_SEQUENCES
from hiva_lib.progress import progress as progress_bar

SCANNERS: dict[str, Callable[..., list[RawSequence]]] = {
    "bp4d": scan_bp4d, "disfa": scan_disfa, "gft": scan_gft}
POSITIVE_RULE = {"bp4d": "occurrence == 1 (9 = unknown: frame dropped)",
                 "disfa": "intensity >= 2", "gft": "occurrence == 1 (9/empty = unknown: dropped)"}
# keyword arguments each layout scanner takes (what prepare_real passes on)
LAYOUT_OPTIONS = {"bp4d": ("frames_dir", "labels_dir"),
                  "disfa": ("videos_dir", "labels_dir", "camera"),
                  "gft": ("labels_dir", "videos_dir", "frames_dir", "first_frame")}
PARTS = {"bp4d": BP4D_PARTS, "disfa": DISFA_PARTS}


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
    return parts_to_folds(PARTS[dataset]), protocol, test_folds


def _check_arguments(dataset: str, raw_root: Path, layout_kw: dict) -> None:
    if not raw_root.is_dir():
        raise raw_root_error(dataset, raw_root, "not a folder")
    unknown_kw = sorted(set(layout_kw) - set(LAYOUT_OPTIONS[dataset]))
    if unknown_kw:
        raise TypeError(f"prepare_real({dataset!r}) does not take {unknown_kw}; its layout "
                        f"options are {list(LAYOUT_OPTIONS[dataset])}")


def _check_subjects(dataset: str, raw_root: Path, sequences: list[RawSequence],
                    fold_of: dict[str, int], protocol: str, split_given: bool,
                    split_file: str | Path | None) -> None:
    """Every scanned subject has a fold; a GFT split file names no subject without data."""
    scanned = {s.subject for s in sequences}
    unknown = sorted(scanned - set(fold_of))
    if unknown:
        raise DatasetError(f"{raw_root}: subjects {unknown[:5]} are not in the {dataset} "
                           f"{protocol} table. Remove them, or pass folds={{subject: fold}} "
                           "(or, for GFT, list them in split.csv).")
    if dataset == "gft" and not split_given:  # the official split must be complete
        absent = sorted(set(fold_of) - scanned)
        if absent:
            raise DatasetError(
                f"{split_file or raw_root / 'split.csv'}: subjects {absent[:5]} ({len(absent)}) "
                f"are in the split but have no labels or media under {raw_root}. Restore them "
                "from your licensed copy, or remove them from the split file.")


def _smoke_subset(sequences: list[RawSequence]) -> list[RawSequence]:
    """A few frames of a few sequences per subject: checks the pipeline in seconds."""
    per_subject: dict[str, int] = {}
    kept = []
    for s in sequences:
        if per_subject.get(s.subject, 0) < SMOKE_SEQUENCES:
            per_subject[s.subject] = per_subject.get(s.subject, 0) + 1
            kept.append(s.subset(SMOKE_FRAMES))
    return kept


def _check_test_folds_present(raw_root: Path, sequences: list[RawSequence],
                              fold_of: dict[str, int], test_folds: list[int],
                              protocol: str) -> None:
    present = {fold_of[s.subject] for s in sequences}
    if not set(test_folds) <= present:
        raise DatasetError(f"{raw_root}: no subjects for test folds "
                           f"{sorted(set(test_folds) - present)}; every fold of the {protocol} "
                           "protocol needs subjects. Check raw_root (or folds / split.csv).")


def _extract_all(dataset: str, sequences: list[RawSequence], aligner: FaceAligner, cache: Path,
                 fold_of: dict[str, int], au_ids: tuple[int, ...], writes: CacheWrites,
                 progress: bool) -> pd.DataFrame:
    """Align every sequence into the cache; the index table of the prepared set."""
    rows = []
    total = sum(len(s.frames) for s in sequences)
    with progress_bar(total=total, unit="frame", desc=f"{dataset} ({aligner.mode})",
                      disable=not progress) as bar:
        for seq in sequences:
            found = extract_sequence(seq, aligner, cache, bar, writes)
            for k, (f, lab) in enumerate(zip(seq.frames, seq.labels, strict=True)):
                rows.append([seq.subject, seq.sequence, int(f),
                             f"images/{seq.subject}/{seq.sequence}/{int(f)}.jpg",
                             fold_of[seq.subject], *lab.tolist(), int(found[k])])
    cols = ["subject", "sequence", "frame", "image", "fold", *au_keys(au_ids), "face_found"]
    return pd.DataFrame(rows, columns=cols)


def _unlabelled_tails(sequences: list[RawSequence]) -> dict[str, int]:
    """Video frames past the last label line, per sequence that has some (reported)."""
    tails = {f"{s.subject}/{s.sequence}" if s.sequence != s.subject else s.subject:
             s.unlabelled_tail for s in sequences if s.unlabelled_tail}
    if tails:
        warnings.warn(f"videos longer than their labels: {tails} frame(s) past the last label "
                      "line were skipped (the DISFA frame-count rule, docs/data.md); recorded "
                      "in meta.json -> preparation.unlabelled_video_frames", stacklevel=3)
    return tails


def _meta(dataset: str, raw_root: Path, protocol: str, test_folds: list[int], image_size: int,
          aligner: FaceAligner, smoke: bool, layout_kw: dict,
          sequences: list[RawSequence]) -> dict:
    layout = {"first_frame": layout_kw.get("first_frame", GFT_FIRST_FRAME)} \
        if dataset == "gft" else {}
    tails = {"unlabelled_video_frames": t} if (t := _unlabelled_tails(sequences)) else {}
    return {"dataset": dataset, "au_ids": list(dataset_aus(dataset)), "protocol": protocol,
            "test_folds": test_folds, "image_size": image_size, "source": str(raw_root),
            "positive_rule": POSITIVE_RULE[dataset],
            "preparation": {"align": aligner.mode, "smoke": smoke, "image_size": image_size,
                            **layout, **tails, "dropped_unknown_frames": int(sum(
                                s.dropped_unknown for s in sequences))}}


def _write(out_root: Path, overwrite: bool, raw_root: Path, cache: Path, index: pd.DataFrame,
           meta: dict) -> None:
    """The prepared folder: images hard-linked from the cache, then index.csv and meta.json."""
    with prepared_dir_writer(out_root, overwrite, sources=[raw_root]) as tmp:
        for rel, subj, seqn, f in zip(index["image"], index["subject"], index["sequence"],
                                      index["frame"], strict=True):
            link_or_copy(cache / subj / seqn / f"{f}.jpg", tmp / rel)
        write_index(tmp, meta, index)


def prepare_real(dataset: str, raw_root: str | Path, out_root: str | Path, align: str = "auto",
                 image_size: int = REAL_IMAGE_SIZE, overwrite: bool = False, smoke: bool = False,
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
    _check_arguments(dataset, raw_root, layout_kw)
    check_output_dir(out_root, overwrite, sources=[raw_root])
    cache = Path(cache_dir) if cache_dir else out_root.parent / ".cache" / out_root.name
    check_apart(cache, [raw_root])
    au_ids = dataset_aus(dataset)
    sequences = SCANNERS[dataset](raw_root, au_ids, **layout_kw)
    fold_of, protocol, test_folds = _fold_table(dataset, raw_root, folds, split_file)
    _check_subjects(dataset, raw_root, sequences, fold_of, protocol, bool(folds), split_file)
    if smoke:
        sequences = _smoke_subset(sequences)
    _check_test_folds_present(raw_root, sequences, fold_of, test_folds, protocol)
    aligner = FaceAligner(align, image_size, device)
    cache = cache / f"{aligner.mode}-{image_size}"
    writes = CacheWrites()
    try:
        index = _extract_all(dataset, sequences, aligner, cache, fold_of, au_ids, writes,
                             progress)
        check_subject_disjoint(index, raw_root)
        meta = _meta(dataset, raw_root, protocol, test_folds, image_size, aligner, smoke,
                     layout_kw, sequences)
        _write(out_root, overwrite, raw_root, cache, index, meta)
    except DatasetError:  # bad input: leave data_root as it was (a crash or a kill keeps the cache)
        writes.undo()
        raise
    return load_prepared(out_root)


__all__ = ["prepare_real", "SCANNERS", "LAYOUT_OPTIONS", "POSITIVE_RULE", "PARTS",
           # the layout readers, importable from here as before the split per data set
           "BP4D_PARTS", "DISFA_PARTS", "parts_to_folds", "EXPECTED", "raw_root_error",
           "RawSequence", "IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "scan_bp4d", "scan_disfa",
           "scan_gft", "read_gft_split", "GFT_FIRST_FRAME"]
