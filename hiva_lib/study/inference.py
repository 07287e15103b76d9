"""AU detection on your own faces: an image, a folder of images, or a video.

``infer(checkpoint, source, out)`` runs a trained model (``final.pt`` of notebook 02/03,
loaded with :func:`hiva_lib.engine.evaluate.load_trained`) on every frame: every face is detected
and aligned with :mod:`hiva_lib.data.real.face_align` (the 5-point template the real data sets
are prepared with; ``faces="largest"`` keeps one face per frame; ``align="skip"`` when the
inputs are already face crops), resized and centre-cropped exactly as in evaluation. The same
function serves notebook 08 and the ``hiva-detect`` command (:mod:`hiva_lib.study.cli`).

The CSV follows the conventions AU tools read, one row per (frame, face), columns in this
order (:func:`output_columns`):

* ``frame, face_id, timestamp, confidence, success``: OpenFace 2.2's first five columns.
  ``frame`` counts from 1 in the video (the real frame number, also with ``every``); an image
  is frame 1 of its own. ``face_id`` numbers the faces of a frame left to right from 0 (no
  tracking across frames). ``timestamp`` = (frame - 1) / the video's frame rate, in seconds
  (0 for an image). ``confidence`` is the face detector's probability (empty with
  ``align="skip"``: no detector ran); ``success`` is 1 for a scored face, 0 for a frame where
  no face was found (one row, face_id 0, everything else empty);
* ``FaceRectX, FaceRectY, FaceRectWidth, FaceRectHeight``: the detected box in pixels of the
  frame (py-feat's names);
* ``AU01, AU02, ...``: the model's probability per AU of the checkpoint (py-feat's names and
  meaning), zero-padded;
* ``AU01_c, AU02_c, ...``: presence, 1 where the (rounded) probability >= ``threshold``
  (OpenFace's occurrence columns), the threshold recorded in the run's JSON;
* ``source``: the file, relative to the folder given;
* ``error``: empty for a frame that was read; for an image that cannot be read (corrupt, not
  an image, no permission) the reason, on a row with ``success`` 0: the folder's other images
  are still scored, and the end of the run names the skipped files.

There are no ``_r`` (intensity) columns: the model is trained on occurrence labels only (the
paper's F1 task), so it has no intensity to report, and a probability is not an intensity.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from hiva_lib.data.loader import load_size_for, prepare_batch
from hiva_lib.integrity import atomic_write_json, atomic_write_text, file_sha256, free_version
from hiva_lib.study.drawing import save_overlay
from hiva_lib.study.maps import overlay_maps

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
OPENFACE_COLUMNS = ("frame", "face_id", "timestamp", "confidence", "success")
BOX_COLUMNS = ("FaceRectX", "FaceRectY", "FaceRectWidth", "FaceRectHeight")
CSV_NAME = "au_probabilities.csv"  # inside an output folder


class InferenceError(ValueError):
    """The input to :func:`infer` cannot be read."""


def au_column(au: int) -> str:
    """``AU01``: the zero-padded name OpenFace and py-feat use."""
    return f"AU{int(au):02d}"


def output_columns(au_ids: Iterable[int]) -> list[str]:
    """The CSV's columns, in their fixed order (module docstring)."""
    probs = [au_column(a) for a in au_ids]
    return [*OPENFACE_COLUMNS, *BOX_COLUMNS, *probs, *(f"{c}_c" for c in probs), "source",
            "error"]


@dataclass
class Frame:
    source: str  # the file, relative to the folder given (POSIX separators)
    frame: int  # from 1
    timestamp: float  # seconds
    image: np.ndarray | None = field(repr=False)  # RGB uint8; None: unreadable
    error: str = ""  # why the image could not be read
    scale: float = 1.0  # pixels of the frame per pixel of ``image`` (> 1: downscaled)


# A frame larger than this (side, pixels) is read downscaled: face detection on a 16000 px
# photo takes gigabytes and minutes for faces that are found as well at 4096 px. Boxes are
# reported in the pixels of the frame as given.
MAX_SIDE = 4096
# ... and one of more pixels than this is refused without decoding (its decoded copies alone
# take gigabytes: a smaller machine would be killed without a word)
MAX_PIXELS = 100_000_000


def _fit(rgb: np.ndarray) -> tuple[np.ndarray, float]:
    """``rgb`` downscaled to at most :data:`MAX_SIDE` pixels a side, and the factor."""
    side = max(rgb.shape[:2])
    if side <= MAX_SIDE:
        return rgb, 1.0
    scale = side / MAX_SIDE
    size = (max(1, round(rgb.shape[1] / scale)), max(1, round(rgb.shape[0] / scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), scale


def _too_large(path: Path) -> str:
    """Why ``path`` is too large to decode (from its header), or '' (not too large, or not
    an image PIL reads: then OpenCV decides)."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
    except Image.DecompressionBombError as err:
        return f"image too large to decode ({err})"
    except Exception:  # not an image PIL knows: OpenCV reads it or flags it
        return ""
    if width * height <= MAX_PIXELS:
        return ""
    return (f"image of {width} x {height} px ({width * height / 1e6:.0f} Mpx) is larger than "
            f"the {MAX_PIXELS / 1e6:.0f} Mpx read; downscale it first (e.g. to "
            f"{MAX_SIDE} px a side: convert in.png -resize {MAX_SIDE}x{MAX_SIDE} out.png)")


# ----------------------------------------------------------------------------- reading inputs
def _list_source(source: str | Path | list) -> tuple[str, list[Path], Path]:
    """('images' | 'video', files, root), or one InferenceError saying what is wrong. Frames
    are named by their path relative to ``root`` (the folder given, or the common folder of
    the files), so same-named files in different subfolders (BP4D's F001/T1/0001.jpg and
    F002/T1/0001.jpg) stay apart."""
    if isinstance(source, (list, tuple)):
        files = [Path(p) for p in source]
        missing = [p for p in files if not p.is_file()]
        if not files or missing:
            raise InferenceError(f"{missing[0] if missing else '[]'}: no such image; pass "
                                 "existing image files, a folder or a video")
        root = Path(os.path.commonpath([p.resolve().parent for p in files]))
        return "images", [p.resolve() for p in files], root
    path = Path(source)
    if not path.exists():
        raise InferenceError(f"{path}: no such file or folder; pass an image, a folder of "
                             f"images ({', '.join(IMAGE_EXTS)}) or a video "
                             f"({', '.join(VIDEO_EXTS)})")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise InferenceError(f"{path}: folder holds no images ({', '.join(IMAGE_EXTS)})")
        return "images", files, path
    ext = path.suffix.lower()
    if ext in IMAGE_EXTS:
        return "images", [path], path.parent
    if ext in VIDEO_EXTS:
        return "video", [path], path.parent
    raise InferenceError(f"{path}: unsupported file type {ext!r}; images: {IMAGE_EXTS}, "
                         f"videos: {VIDEO_EXTS}")


def _image_frames(files: list[Path], root: Path, every: int) -> Iterator[Frame]:
    for i, path in enumerate(files):
        if i % every:
            continue
        name = path.relative_to(root).as_posix()
        too_large = _too_large(path)
        if too_large:
            yield Frame(name, 1, 0.0, None, too_large)
            continue
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:  # one bad file must not stop a folder: a flagged row instead
            yield Frame(name, 1, 0.0, None, "unreadable image (corrupt, not an image, or "
                                            "no permission)")
            continue
        rgb, scale = _fit(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        yield Frame(name, 1, 0.0, rgb, scale=scale)


def _video_frames(path: Path, root: Path, every: int) -> Iterator[Frame]:
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise InferenceError(f"{path}: OpenCV cannot open this video (codec?); convert "
                             "it, e.g. ffmpeg -i in.mov out.mp4, or extract frames to a folder")
    fps = cap.get(cv2.CAP_PROP_FPS)
    name = path.relative_to(root).as_posix()
    index, decoded = 0, 0
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            decoded += 1
            if index % every == 0:
                stamp = index / fps if fps > 0 else float("nan")
                rgb, scale = _fit(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
                yield Frame(name, index + 1, stamp, rgb, scale=scale)
            index += 1
    finally:
        cap.release()
    if decoded == 0:
        raise InferenceError(f"{path}: no frame could be decoded")


def iter_frames(source: str | Path | list, every: int = 1,
                max_frames: int | None = None) -> Iterator[Frame]:
    """Every ``every``-th frame (or image) of ``source``, at most ``max_frames`` of them."""
    kind, files, root = _list_source(source)
    frames = (_image_frames(files, root, every) if kind == "images"
              else _video_frames(files[0], root, every))
    for count, frame in enumerate(frames, start=1):
        yield frame
        if max_frames and count >= max_frames:
            return


def count_frames(source: str | Path | list, every: int = 1,
                 max_frames: int | None = None) -> int | None:
    """How many frames :func:`iter_frames` yields (for the progress bar); None if unknown."""
    kind, files, _ = _list_source(source)
    if kind == "images":
        n = len(files)
    else:
        cap = cv2.VideoCapture(str(files[0]))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
        cap.release()
        if n <= 0:
            return None
    n = -(-n // every)
    return min(n, max_frames) if max_frames else n


def _batches(frames: Iterable[Frame], size: int) -> Iterator[list[Frame]]:
    batch: list[Frame] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# ----------------------------------------------------------------------------- outputs
@dataclass
class OutputPaths:
    csv: Path
    overlays: Path
    record: Path  # JSON: checkpoint, threshold, options, columns
    kept: Path | None = None  # the earlier result this one steps aside for


def output_paths(out: str | Path) -> OutputPaths:
    """Where one inference writes. ``out`` is a folder (``au_probabilities.csv``,
    ``overlays/``, ``inference.json`` inside) or a ``.csv`` file (``<stem>_overlays/`` and
    ``<stem>.json`` beside it). Earlier results are kept: a folder that holds a CSV becomes
    ``<out>-v2`` (``-v3``...), a CSV that exists ``<stem>-v2.csv``."""
    out = Path(out)
    if out.suffix.lower() == ".csv":
        csv = free_version(out)
        return OutputPaths(csv, csv.with_name(f"{csv.stem}_overlays"), csv.with_suffix(".json"),
                           out if csv != out else None)
    folder = free_version(out) if (out / CSV_NAME).exists() else out
    return OutputPaths(folder / CSV_NAME, folder / "overlays", folder / "inference.json",
                       out if folder != out else None)


def overlay_path(folder: Path, name: str, frame: int, face_id: int) -> Path:
    """``<overlays>/<source name>_<frame>_face<id>.png``: the subfolders of the source name
    are kept (F001/T1/0001.jpg -> F001/T1/0001.jpg_000001_face0.png), so no two faces share
    a file."""
    return folder / f"{name}_{frame:06d}_face{face_id}.png"


def _rows(frame: Frame, faces: list, probs: np.ndarray, au_ids: tuple[int, ...],
          threshold: float) -> list[dict]:
    """The CSV rows of one frame: one per face, or one with success=0 when none was found."""
    base = dict(frame=frame.frame, timestamp=round(frame.timestamp, 6), source=frame.source)
    if frame.error:
        return [dict(base, face_id=0, success=0, error=frame.error)]
    if not faces:
        return [dict(base, face_id=0, success=0)]
    rows = []
    for face_id, (face, p) in enumerate(zip(faces, probs, strict=True)):
        row = dict(base, face_id=face_id, confidence=round(face.confidence, 6), success=1)
        row.update({c: round(v * frame.scale, 1)  # in pixels of the frame as given
                    for c, v in zip(BOX_COLUMNS, face.box, strict=True)})
        for au, value in zip(au_ids, p, strict=True):
            row[au_column(au)] = round(float(value), 4)
            row[f"{au_column(au)}_c"] = int(row[au_column(au)] >= threshold)
        rows.append(row)
    return rows


def rows_to_table(rows: list[dict], au_ids: tuple[int, ...]) -> pd.DataFrame:
    """The CSV table: the documented column order; integer columns stay integers, with empty
    cells (not 0) where no face was found."""
    table = pd.DataFrame(rows, columns=output_columns(au_ids))
    ints = ["frame", "face_id", "success", *(f"{au_column(a)}_c" for a in au_ids)]
    return table.astype({c: "Int64" for c in ints})


# ----------------------------------------------------------------------------- one batch
@dataclass
class _Run:
    """What every batch of one inference needs."""

    model: torch.nn.Module
    aligner: object  # FaceAligner
    keep: str  # "all" | "largest"
    size: int  # aligned face side (the evaluation's load size)
    threshold: float
    overlays: Path | None  # None: no overlays
    max_overlays: int
    top_aus: int
    n_overlays: int = 0

    @property
    def crop(self) -> int:
        return self.model.cfg.img_size


def _predict(run: _Run, crops: list[np.ndarray]) -> tuple[np.ndarray, torch.Tensor | None]:
    """AU probabilities (F, N) of aligned face crops, and the model input they came from."""
    if not crops:
        return np.zeros((0, len(run.model.au_ids))), None
    images = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2)
    x = prepare_batch(images.to(next(run.model.parameters()).device), run.crop, train=False)
    with torch.no_grad():
        return torch.sigmoid(run.model(x).logits.float()).cpu().numpy(), x


def _score_batch(run: _Run, batch: list[Frame]) -> list[dict]:
    """Detect, align and score every face of a batch of frames; returns its CSV rows."""
    readable = [f for f in batch if f.image is not None]
    faces_of = iter(run.aligner.faces([f.image for f in readable], run.keep) if readable else [])
    found = [next(faces_of) if f.image is not None else [] for f in batch]
    crops = [run.aligner.crop(frame.image, face.landmarks)
             for frame, faces in zip(batch, found, strict=True) for face in faces]
    probs, x = _predict(run, crops)
    if not np.isfinite(probs).all():  # never a row of NaN read as "absent"
        raise InferenceError(
            f"the model gives non-finite probabilities (NaN or inf) for the faces of "
            f"{', '.join(sorted({f.source for f in batch}))}: its weights or its input are "
            "broken; nothing was written. Use the final.pt of a run that finished without "
            "diverging.")
    rows, start = [], 0
    for frame, faces in zip(batch, found, strict=True):
        rows += _rows(frame, faces, probs[start:start + len(faces)], run.model.au_ids,
                      run.threshold)
        start += len(faces)
    if run.overlays is not None and x is not None:
        scored = [r for r in rows if r["success"]]
        _draw_overlays(run, scored, crops, x, probs)
    return rows


# ----------------------------------------------------------------------------- overlays
def _draw_overlays(run: _Run, rows: list[dict], crops: list[np.ndarray], x: torch.Tensor,
                   probs: np.ndarray) -> None:
    """Attention overlays of the batch's faces while fewer than ``max_overlays`` are drawn."""
    todo = list(range(min(len(rows), run.max_overlays - run.n_overlays)))
    if not todo:
        return
    keys = [au_column(a) for a in run.model.au_ids]
    maps, titles = overlay_maps(run.model, x[todo], probs[todo], run.top_aus, keys)
    o = (run.size - run.crop) // 2
    for k in todo:
        row = rows[k]
        active = [au_column(a) for a in run.model.au_ids if row[f"{au_column(a)}_c"]]
        caption = (f"{row['source']} frame {row['frame']} face {row['face_id']}: "
                   f"{' '.join(active) or 'none'}")
        save_overlay(overlay_path(run.overlays, row["source"], row["frame"], row["face_id"]),
                      crops[k][o:o + run.crop, o:o + run.crop], maps[k], titles[k], caption)
    run.n_overlays += len(todo)


# ----------------------------------------------------------------------------- the run
def check_request(source: str | Path | list, align: str, faces: str, threshold: float,
                  every: int, batch_size: int) -> None:
    """Every bad input as one InferenceError, before anything is loaded or written."""
    from hiva_lib.data.real.face_align import ALIGN_MODES, FACE_MODES

    _list_source(source)
    problems = []
    if align not in ALIGN_MODES:
        problems.append(f"align={align!r}: choose one of {ALIGN_MODES}")
    if faces not in FACE_MODES:
        problems.append(f"faces={faces!r}: choose one of {FACE_MODES}")
    if not 0 < threshold < 1:
        problems.append(f"threshold={threshold}: a probability strictly between 0 and 1")
    if every < 1 or batch_size < 1:
        problems.append(f"every={every}, batch_size={batch_size}: both must be >= 1")
    if problems:
        raise InferenceError("; ".join(problems))


def check_output(paths: OutputPaths) -> None:
    """The output folder can be written (checked before any model is loaded or frame read):
    the nearest existing folder on the way must be a writable folder."""
    folder = paths.csv.parent
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise InferenceError(f"{existing}: is a file, so the output {folder} cannot be made; "
                             "pass --out a folder or a .csv path elsewhere")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InferenceError(f"{existing}: not writable, so the output {paths.csv} cannot be "
                             "written; pass --out a folder you can write to")


def _record(checkpoint: Path, source, paths: OutputPaths, table: pd.DataFrame,
            options: dict, au_ids: tuple[int, ...]) -> dict:
    """What the CSV needs to be read later: its checkpoint, threshold and column order."""
    src = [str(s) for s in source] if isinstance(source, (list, tuple)) else str(source)
    return dict(checkpoint=str(checkpoint.resolve()), checkpoint_sha256=file_sha256(checkpoint),
                source=src, csv=str(paths.csv), au_ids=list(au_ids),
                columns=output_columns(au_ids),
                frames=len(table[["source", "frame"]].drop_duplicates()),
                faces=int(table.success.sum()), **options)


def infer(checkpoint: str | Path, source: str | Path | list, out: str | Path,
          align: str = "auto", faces: str = "all", device: str = "cpu", batch_size: int = 16,
          every: int = 1, max_frames: int | None = None, overlays: bool = True,
          max_overlays: int = 50, top_aus: int = 3, threshold: float = 0.5,
          progress: bool = True) -> pd.DataFrame:
    """AU probabilities of every face in ``source`` (image, folder, video or list of images).

    Writes the CSV of the module docstring (one row per (frame, face)) to ``out``
    (:func:`output_paths`: a folder or a ``.csv`` file; earlier results are kept), a JSON
    record beside it (checkpoint and its SHA-256, threshold, options, columns), and for the
    first ``max_overlays`` faces an attention overlay (:func:`overlay_path`). Returns the
    table; ``table.attrs`` names the files written (``csv``, ``overlays``, ``record``,
    ``out_dir``: the folder of the CSV).
    """
    from hiva_lib.data.real.face_align import FaceAligner
    from hiva_lib.engine.distributed import resolve_device
    from hiva_lib.engine.evaluate import load_trained
    from hiva_lib.model.text import cached_text
    from hiva_lib.progress import progress as bar

    check_request(source, align, faces, threshold, every, batch_size)
    paths = output_paths(out)
    check_output(paths)
    try:
        dev = str(resolve_device(device))
    except RuntimeError as err:  # no CUDA here, or not a device name
        raise InferenceError(f"device={device!r}: {err}") from err
    model = load_trained(checkpoint, dev)
    size = load_size_for(model.cfg.img_size)
    if paths.kept is not None:
        print(f"{paths.kept} holds an earlier inference (kept); this one goes to {paths.csv}")
    run = _Run(model, FaceAligner(align, size, dev), faces, size, threshold,
               paths.overlays if overlays else None, max_overlays, top_aus)
    rows: list[dict] = []
    frames = iter_frames(source, every, max_frames)
    with cached_text(model), bar(total=count_frames(source, every, max_frames), unit="frame",
                                 disable=not progress, desc="faces") as shown:
        for batch in _batches(frames, batch_size):  # the descriptions are encoded once
            rows += _score_batch(run, batch)
            shown.update(len(batch))
    table = rows_to_table(rows, model.au_ids)
    skipped = sorted({src for src, err in zip(table.source, table.error, strict=True)
                      if isinstance(err, str) and err})
    if rows and table.error.map(lambda e: isinstance(e, str) and bool(e)).all():
        reasons = "; ".join(f"{r['source']}: {r['error']}" for r in rows[:3])
        raise InferenceError(f"{source}: not one input could be read ({reasons}"
                             f"{' ...' if len(rows) > 3 else ''}); nothing was written. Pass "
                             f"images ({', '.join(IMAGE_EXTS)}) or a video that open.")
    options = dict(unreadable=skipped,
                   align=run.aligner.mode, faces_kept=faces, threshold=threshold, every=every,
                   max_frames=max_frames)
    atomic_write_text(table.to_csv(index=False), paths.csv)
    atomic_write_json(_record(Path(checkpoint), source, paths, table, options, model.au_ids),
                      paths.record)
    table.attrs.update(csv=str(paths.csv), overlays=str(paths.overlays),
                       record=str(paths.record), out_dir=str(paths.csv.parent))
    if skipped:
        print(f"{len(skipped)} unreadable file(s) skipped (rows with an 'error' in "
              f"{paths.csv}): {', '.join(skipped[:10])}{' ...' if len(skipped) > 10 else ''}")
    return table
