"""Image decode time of the training loader, ms per image (one thread, median of rounds):
PIL vs OpenCV vs torchvision.io, JPEG (quality 95, as data preparation writes) and PNG, at
256 px, and the former path (PIL decode of a 224 px JPEG + bilinear resize to 256).

    python scripts/bench_decode.py [--n 200] [--rounds 5] [--image face.jpg]

The test image is a SynthFACS face rendered at 224 and 256 px (or ``--image``), so its entropy
is that of a face crop, not of noise. Printed, not asserted (docs/data.md).
"""
from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ[_v] = "1"  # one core, set before numpy is imported

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

JPEG_QUALITY = 95  # hiva_lib.data.prepared.JPEG_QUALITY, repeated so the script runs alone


def face_image(size: int, source: str | None) -> np.ndarray:
    """An RGB face of ``size`` px: ``source``, else one SynthFACS rendering (no PNG written)."""
    if source:
        img = cv2.imread(source, cv2.IMREAD_COLOR)
        if img is None:
            raise SystemExit(f"{source}: not an image OpenCV can read; pass another --image")
        rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    else:
        from hiva_lib.data import synthfacs as sf

        labels = sf.sample_labels("synth-bp4d", n_subjects=3, frames_per_subject=1)
        inten = labels[[f"I{a}" for a in sf.ALL_AU_IDS]].to_numpy(np.float32)[0]
        rgb, _ = sf.render_face(sf.sample_identity(0), inten, sf.sample_nuisance(0), size)
    if rgb.shape[:2] != (size, size):
        rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(rgb)


def pil_decode(path: str, size: int) -> np.ndarray:
    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.size != (size, size):
            im = im.resize((size, size), Image.BILINEAR)
        return np.asarray(im)


def cv2_decode(path: str, size: int) -> np.ndarray:
    bgr = cv2.imread(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def torchvision_decode(path: str, size: int):
    from torchvision.io import ImageReadMode, decode_image, read_file

    return decode_image(read_file(path), mode=ImageReadMode.RGB)


def time_ms(fn: Callable[[str, int], object], path: str, size: int, n: int,
            rounds: int) -> float:
    """Median over ``rounds`` of the mean time of ``n`` decodes, in ms per image."""
    for _ in range(10):  # warm-up (file cache, library initialisation)
        fn(path, size)
    per_round = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn(path, size)
        per_round.append((time.perf_counter() - t0) / n * 1000)
    return statistics.median(per_round)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="decodes per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--image", default=None, help="a face crop to use instead of SynthFACS")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for size in (224, 256):
            bgr = cv2.cvtColor(face_image(size, args.image), cv2.COLOR_RGB2BGR)
            files[f"jpg{size}"] = str(Path(tmp) / f"face{size}.jpg")
            cv2.imwrite(files[f"jpg{size}"], bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            files[f"png{size}"] = str(Path(tmp) / f"face{size}.png")
            cv2.imwrite(files[f"png{size}"], bgr)
        same = {k: np.array_equal(pil_decode(f, 256), cv2_decode(f, 256))
                for k, f in files.items() if k.endswith("256")}
        cases = [("PIL, JPEG 224 px + resize to 256 (former default)", pil_decode, "jpg224"),
                 ("PIL, JPEG 256 px", pil_decode, "jpg256"),
                 ("OpenCV, JPEG 256 px", cv2_decode, "jpg256"),
                 ("torchvision.io, JPEG 256 px", torchvision_decode, "jpg256"),
                 ("PIL, PNG 256 px", pil_decode, "png256"),
                 ("OpenCV, PNG 256 px", cv2_decode, "png256"),
                 ("torchvision.io, PNG 256 px", torchvision_decode, "png256")]
        print(f"decode time, ms per image (1 thread, median of {args.rounds} rounds of {args.n}); "
              f"file sizes: JPEG {os.path.getsize(files['jpg256']) / 1024:.1f} KiB, "
              f"PNG {os.path.getsize(files['png256']) / 1024:.1f} KiB at 256 px")
        for label, fn, key in cases:
            ms = time_ms(fn, files[key], 256, args.n, args.rounds)
            print(f"  {label:<52} {ms:6.3f} ms")
        print("OpenCV == PIL, every pixel: " + ", ".join(f"{k}: {v}" for k, v in same.items()))


if __name__ == "__main__":
    main()
