"""Face detection, 5-landmark similarity alignment and cropping for BP4D / DISFA / GFT frames.

The AU literature feeds aligned face crops to the backbone (the paper's Sec. IV-A works on
224 x 224 face images; crops are stored at 256 px and the loader takes 224 from them, as
ME-GraphAU does). We detect five landmarks (eye centres, nose tip, mouth corners) with
the MTCNN whose weights ship inside the ``facenet-pytorch`` wheel (so it works offline), fit
the least-squares similarity transform (rotation, uniform scale, translation; Umeyama 1991)
that maps them onto a fixed template, and warp the frame with it.

``align="skip"`` is for frames that are already face crops: they are centre-cropped to a
square and resized. ``align="auto"`` uses MTCNN when facenet-pytorch is installed and raises
one clear error (with the install line) when it is not.

Data preparation keeps the largest face of a frame (:meth:`FaceAligner.landmarks`); inference
on your own videos keeps every face (:meth:`FaceAligner.faces`, ``keep="all"``), ordered left
to right, or only the largest (``keep="largest"``).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from hiva_lib.data.prepared import DatasetError

ALIGN_MODES = ("auto", "mtcnn", "skip")
FACE_MODES = ("all", "largest")  # which faces of a frame inference keeps
MTCNN_INSTALL = "pip install --no-deps facenet-pytorch"

# Canonical positions of (left eye, right eye, nose tip, left mouth corner, right mouth corner)
# as fractions of the crop side ("left" = image left). Wider than face-recognition templates:
# the eyes sit at 40% height so the forehead (AU1/AU2) and the chin (AU17) stay in the crop.
TEMPLATE_5PTS = np.array(
    [[0.345, 0.400], [0.655, 0.400], [0.500, 0.560], [0.375, 0.720], [0.625, 0.720]]
)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 matrix of the least-squares similarity transform mapping ``src`` points to ``dst``.

    Umeyama's closed form: centre both point sets, take the SVD of their cross-covariance,
    force a proper rotation (no reflection), and read scale and translation off it.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need two matching (n>=2, 2) point arrays, got {src.shape}, {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s_c, d_c = src - mu_s, dst - mu_d
    var_s = (s_c**2).sum(1).mean()
    if var_s <= 0:
        raise ValueError("source landmarks coincide; no transform is defined")
    cov = d_c.T @ s_c / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # reflection: flip the weakest axis
        d[-1] = -1
    rot = u @ np.diag(d) @ vt
    scale = (sig * d).sum() / var_s
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]])


def template_points(image_size: int) -> np.ndarray:
    """The 5-point template in pixel coordinates of an ``image_size`` crop."""
    return TEMPLATE_5PTS * image_size


def align_face(image: np.ndarray, landmarks: np.ndarray, image_size: int) -> np.ndarray:
    """Warp ``image`` so that its five ``landmarks`` land on the template; returns the crop."""
    m = similarity_transform(landmarks, template_points(image_size))
    return cv2.warpAffine(image, m, (image_size, image_size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def square_resize(image: np.ndarray, image_size: int) -> np.ndarray:
    """Centre square crop then resize: for frames that are already face crops."""
    h, w = image.shape[:2]
    s = min(h, w)
    y, x = (h - s) // 2, (w - s) // 2
    crop = image[y:y + s, x:x + s]
    interp = cv2.INTER_AREA if s > image_size else cv2.INTER_LINEAR
    return cv2.resize(crop, (image_size, image_size), interpolation=interp)


@dataclass
class DetectedFace:
    """One face in a frame: its box (x, y, width, height) in pixels, the detector's confidence
    (MTCNN's face probability; NaN where no detector ran) and five landmarks (None likewise)."""

    box: tuple[float, float, float, float]
    confidence: float
    landmarks: np.ndarray | None


def _keep_faces(boxes: np.ndarray | None, probs, points, keep: str) -> list[DetectedFace]:
    """MTCNN's detections of one image as faces, left to right, or the largest alone."""
    if boxes is None or points is None or len(boxes) == 0:
        return []
    faces = [DetectedFace((float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])),
                          float(p), np.asarray(lm, np.float64))
             for b, p, lm in zip(boxes, probs, points, strict=True)]
    if keep == "largest":
        return [max(faces, key=lambda f: f.box[2] * f.box[3])]
    return sorted(faces, key=lambda f: f.box[0] + f.box[2] / 2)


class MTCNNDetector:
    """Five-landmark face detector: facenet-pytorch's MTCNN (weights inside the wheel)."""

    def __init__(self, device: str | None = None, min_face_size: int = 40) -> None:
        try:
            from facenet_pytorch import MTCNN
        except ImportError as e:
            raise DatasetError(
                f"face alignment needs facenet-pytorch ({e}). Install it with "
                f"`{MTCNN_INSTALL}` (its weights ship inside the wheel, no download), or pass "
                "align='skip' if your frames are already aligned face crops."
            ) from e
        import torch

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.mtcnn = MTCNN(keep_all=True, device=device, min_face_size=min_face_size)

    def faces(self, images: Sequence[np.ndarray], keep: str = "all") -> list[list[DetectedFace]]:
        """The faces of each RGB image (``keep``: "all", left to right, or "largest")."""
        if keep not in FACE_MODES:
            raise ValueError(f"keep must be one of {FACE_MODES}, not {keep!r}")
        if not images:
            return []
        same = all(im.shape == images[0].shape for im in images)
        batches = [list(images)] if same else [[im] for im in images]  # MTCNN batches need one size
        out: list[list[DetectedFace]] = []
        for batch in batches:
            boxes, probs, points = self.mtcnn.detect(np.stack(batch), landmarks=True)
            out += [_keep_faces(b, pr, pt, keep) for b, pr, pt in zip(boxes, probs, points,
                                                                      strict=True)]
        return out

    def landmarks(self, images: Sequence[np.ndarray]) -> list[np.ndarray | None]:
        """(5, 2) landmarks of the largest face in each RGB image, or None where none is found."""
        return [found[0].landmarks if found else None
                for found in self.faces(images, keep="largest")]


def resolve_align(align: str) -> str:
    """'auto' -> 'mtcnn' when facenet-pytorch is importable, else one clear error."""
    if align not in ALIGN_MODES:
        raise ValueError(f"align must be one of {ALIGN_MODES}, not {align!r}")
    if align != "auto":
        return align
    try:
        import facenet_pytorch  # noqa: F401
    except ImportError as e:
        raise DatasetError(
            f"align='auto' found no face detector ({e}). Install one with `{MTCNN_INSTALL}`, "
            "or pass align='skip' (papermill ... -p align skip) if the frames are already "
            "aligned face crops."
        ) from e
    return "mtcnn"


class FaceAligner:
    """Turns raw RGB frames into ``image_size`` face crops (``align`` = 'mtcnn' or 'skip')."""

    def __init__(self, align: str, image_size: int, device: str | None = None) -> None:
        self.mode = resolve_align(align)
        self.image_size = image_size
        self.detector = MTCNNDetector(device) if self.mode == "mtcnn" else None

    def landmarks(self, frames: Sequence[np.ndarray]) -> list[np.ndarray | None]:
        if self.detector is None:
            return [None] * len(frames)
        return self.detector.landmarks(frames)

    def faces(self, frames: Sequence[np.ndarray], keep: str = "all") -> list[list[DetectedFace]]:
        """Detected faces per frame; with align='skip' the frame itself is the one face (its
        centre square as the box, no confidence: no detector ran)."""
        if self.detector is not None:
            return self.detector.faces(frames, keep)
        out = []
        for frame in frames:
            h, w = frame.shape[:2]
            s = min(h, w)
            box = (float((w - s) // 2), float((h - s) // 2), float(s), float(s))
            out.append([DetectedFace(box, float("nan"), None)])
        return out

    def crop(self, frame: np.ndarray, landmarks: np.ndarray | None) -> np.ndarray:
        if self.mode == "skip":
            return square_resize(frame, self.image_size)
        if landmarks is None:
            raise ValueError("alignment needs landmarks")
        return align_face(frame, landmarks, self.image_size)
