"""AU detection on your own faces: an image, a folder of images, or a video.

``infer(checkpoint, source, out_dir)`` runs a trained model (``final.pt`` of notebook 02/03,
loaded with :func:`hiva_lib.engine.train.load_trained`) on every frame: the face is detected and
aligned with :mod:`hiva_lib.data.real.face_align` (the same 5-point template the real data sets are
prepared with; ``align="skip"`` when the inputs are already face crops), resized and
centre-cropped exactly as in evaluation, and the AU probabilities are written to
``out_dir/au_probabilities.csv`` (one row per frame). Attention overlays (DDCA maps of the most
probable AUs and the CDCA composite; Grad-CAM for a vision-only model) go to
``out_dir/overlays/*.png``.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from hiva_lib.data.au import au_keys
from hiva_lib.data.loader import load_size_for, prepare_batch
from hiva_lib.engine.checkpoint import atomic_write_text, free_version

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


class InferenceError(ValueError):
    """The input to :func:`infer` cannot be read."""


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


def iter_frames(source: str | Path | list, every: int = 1,
                max_frames: int | None = None) -> Iterator[tuple[str, int, np.ndarray]]:
    """(source name, frame index, RGB uint8 frame) for every ``every``-th frame; the name is
    the file's path relative to the folder given (POSIX separators)."""
    kind, files, root = _list_source(source)
    count = 0
    if kind == "images":
        for i, path in enumerate(files):
            if i % every:
                continue
            bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise InferenceError(f"{path}: unreadable image (corrupt or not an image)")
            yield path.relative_to(root).as_posix(), 0, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            count += 1
            if max_frames and count >= max_frames:
                return
        return
    name = files[0].relative_to(root).as_posix()
    cap = cv2.VideoCapture(str(files[0]))
    if not cap.isOpened():
        raise InferenceError(f"{files[0]}: OpenCV cannot open this video (codec?); convert "
                             "it, e.g. ffmpeg -i in.mov out.mp4, or extract frames to a folder")
    try:
        index = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            if index % every == 0:
                yield name, index, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                count += 1
                if max_frames and count >= max_frames:
                    return
            index += 1
    finally:
        cap.release()
    if count == 0:
        raise InferenceError(f"{files[0]}: no frame could be decoded")


def overlay_path(out_dir: Path, name: str, frame: int) -> Path:
    """``out_dir/overlays/<source name>_<frame>.png``: the subfolders of the source name are
    kept (F001/T1/0001.jpg -> overlays/F001/T1/0001.jpg_000000.png), so no two frames share
    a file."""
    return out_dir / "overlays" / f"{name}_{frame:06d}.png"


def _faces(frames: list[np.ndarray], aligner, size: int) -> list[np.ndarray | None]:
    """Aligned face crops (size x size RGB), None where no face was found."""
    if aligner is None:
        from hiva_lib.data.real.face_align import square_resize

        return [square_resize(f, size) for f in frames]
    marks = aligner.landmarks(frames)
    return [None if m is None else aligner.crop(f, m) for f, m in zip(frames, marks, strict=True)]


def _maps_for_overlay(model: torch.nn.Module, x: torch.Tensor,
                      probs: np.ndarray, top: int) -> tuple[list[np.ndarray], list[str]]:
    """Per face: a stack of maps (top AUs' DDCA + CDCA composite, or Grad-CAM) and names."""
    from hiva_lib.study.maps import gradcam, model_maps

    out = model_maps(model, x)
    keys = au_keys(model.au_ids)
    stacks, names = [], []
    for r in range(len(x)):
        aus = [int(j) for j in np.argsort(-probs[r])[:top]]
        if out["ddca"] is not None or out["cdca"] is not None:
            maps, titles = [], []
            if out["ddca"] is not None:
                maps += [out["ddca"][r, j] for j in aus]
                titles += [f"DDCA {keys[j]} p={probs[r, j]:.2f}" for j in aus]
            if out["cdca"] is not None:
                maps.append(out["cdca"][r, aus].mean(0))
                titles.append("CDCA (" + "+".join(keys[j] for j in aus) + ")")
        else:
            maps = [gradcam(model, x[r:r + 1], j)[0] for j in aus]
            titles = [f"Grad-CAM {keys[j]} p={probs[r, j]:.2f}" for j in aus]
        stacks.append(np.stack([np.asarray(m, np.float64) for m in maps]))
        names.append(titles)
    return stacks, names


def _save_overlay(path: Path, face: np.ndarray, maps: np.ndarray, titles: list[str],
                  caption: str) -> None:
    import matplotlib.pyplot as plt

    from hiva_lib.study.drawing import draw_map

    fig, axes = plt.subplots(1, 1 + len(maps), figsize=(2.0 * (1 + len(maps)), 2.4))
    axes[0].imshow(face)
    axes[0].set_title("face", fontsize=8)
    for ax, m, t in zip(axes[1:], maps, titles, strict=True):
        ax.imshow(face)
        draw_map(ax, face, m)
        ax.set_title(t, fontsize=7)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(caption, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def infer(checkpoint: str | Path, source: str | Path | list, out_dir: str | Path,
          align: str = "auto", device: str = "cpu", batch_size: int = 16, every: int = 1,
          max_frames: int | None = None, overlays: bool = True, max_overlays: int = 50,
          top_aus: int = 3, threshold: float = 0.5) -> pd.DataFrame:
    """AU probabilities of every face in ``source`` (image, folder, video or list of images).

    Writes ``out_dir/au_probabilities.csv`` (source, frame, face_found, one column per AU
    with its probability, active = AUs at or above ``threshold``) and, for the first
    ``max_overlays`` faces, ``out_dir/overlays/<source>_<frame>.png`` (:func:`overlay_path`).
    ``source`` is the file's path relative to the folder given (or to the common folder of a
    list of files), so (source, frame) identifies a row. Frames without a detected face get a
    row with ``face_found=False`` and empty probabilities. An ``out_dir`` that already holds
    results is kept: these go to ``<out_dir>-v2`` (``-v3``...), named in ``table.attrs["out_dir"]``.
    """
    from hiva_lib.data.real.face_align import FaceAligner, resolve_align
    from hiva_lib.engine.train import load_trained
    from hiva_lib.model.text import cached_text

    _list_source(source)  # bad input: one error before anything is loaded or written
    mode = resolve_align(align)
    model = load_trained(checkpoint, device)
    crop = model.cfg.img_size
    size = load_size_for(crop)
    aligner = None if mode == "skip" else FaceAligner(mode, size, device)
    keys = au_keys(model.au_ids)
    out_dir = Path(out_dir)
    if (out_dir / "au_probabilities.csv").exists():  # never overwrite an earlier inference
        earlier, out_dir = out_dir, free_version(out_dir)
        print(f"{earlier} holds an earlier inference (kept); this one goes to {out_dir}")
    (out_dir / "overlays").mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    n_overlays = 0

    def flush(batch: list[tuple[str, int, np.ndarray]]) -> None:
        nonlocal n_overlays
        faces = _faces([f for _, _, f in batch], aligner, size)
        found = [i for i, f in enumerate(faces) if f is not None]
        probs = np.zeros((0, len(keys)))
        if found:
            images = torch.from_numpy(np.stack([faces[i] for i in found])).permute(0, 3, 1, 2)
            x = prepare_batch(images.to(next(model.parameters()).device), crop, train=False)
            with torch.no_grad():
                probs = torch.sigmoid(model(x).logits.float()).cpu().numpy()
        by_pos = {i: k for k, i in enumerate(found)}
        for i, (name, frame, _) in enumerate(batch):
            row = dict(source=name, frame=frame, face_found=i in by_pos)
            if i in by_pos:
                p = probs[by_pos[i]]
                row.update({k: round(float(v), 4) for k, v in zip(keys, p, strict=True)})
                row["active"] = " ".join(k for k, v in zip(keys, p, strict=True)
                                         if v >= threshold)
            rows.append(row)
        todo = [i for i in found if n_overlays + found.index(i) < max_overlays] if overlays else []
        if todo:
            o = (size - crop) // 2
            views = [faces[i][o:o + crop, o:o + crop] for i in todo]
            sel = [by_pos[i] for i in todo]
            maps, titles = _maps_for_overlay(model, x[sel], probs[sel], top_aus)
            for k, i in enumerate(todo):
                name, frame, _ = batch[i]
                active = rows[len(rows) - len(batch) + i]["active"] or "none"
                path = overlay_path(out_dir, name, frame)
                path.parent.mkdir(parents=True, exist_ok=True)
                _save_overlay(path, views[k], maps[k], titles[k],
                              f"{name} frame {frame}: {active}")
            n_overlays += len(todo)

    batch: list[tuple[str, int, np.ndarray]] = []
    with cached_text(model):  # the descriptions are fixed: encode them once, not per batch
        for item in iter_frames(source, every, max_frames):
            batch.append(item)
            if len(batch) == batch_size:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
    table = pd.DataFrame(rows, columns=["source", "frame", "face_found", *keys, "active"])
    atomic_write_text(table.to_csv(index=False), out_dir / "au_probabilities.csv")
    table.attrs["out_dir"] = str(out_dir)
    return table
