"""``hiva-detect``: AU detection from the command line (a terminal, a cluster job).

    hiva-detect PATH --checkpoint runs/.../final.pt --out out.csv [--device auto]
                [--batch-size 16] [--threshold 0.5] [--faces all|largest] [--overlays]

PATH is an image, a folder of images or a video. It runs :func:`hiva_lib.study.inference.infer`,
the function of notebook 08, and writes the same CSV (one row per (frame, face), OpenFace /
py-feat column names; docs/figures.md). Installed with the project (``[project.scripts]`` in
pyproject.toml); ``python -m hiva_lib.study.cli`` runs it without the install. Bad input ends
with one line on stderr saying what is wrong and how to fix it, and exit status 2.
"""
from __future__ import annotations

import argparse
import sys


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="hiva-detect", description="Facial action units of every face in an image, a "
        "folder of images or a video, with a trained HiVA checkpoint (final.pt).")
    ap.add_argument("path", help="an image, a folder of images (searched recursively) or a video")
    ap.add_argument("--checkpoint", required=True, help="a final.pt of notebook 02/03")
    ap.add_argument("--out", required=True,
                    help="a .csv file, or a folder (au_probabilities.csv inside); an existing "
                    "result is kept and this one goes to <name>-v2")
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda:0 ...")
    ap.add_argument("--batch-size", type=int, default=16, help="frames per forward pass")
    ap.add_argument("--threshold", type=float, default=0.5,
                    help="probability at which an AU counts as present (the AUxx_c columns)")
    ap.add_argument("--faces", choices=("all", "largest"), default="all",
                    help="every detected face (default) or the largest of each frame")
    ap.add_argument("--align", choices=("auto", "mtcnn", "skip"), default="auto",
                    help="skip: the inputs are already aligned face crops")
    ap.add_argument("--every", type=int, default=1, help="video: every n-th frame")
    ap.add_argument("--max-frames", type=int, default=None)
    ap.add_argument("--overlays", action="store_true",
                    help="also draw attention overlays (PNG) of the first faces")
    ap.add_argument("--max-overlays", type=int, default=50)
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap


def main(argv: list[str] | None = None) -> int:
    from hiva_lib.data.prepared import DatasetError
    from hiva_lib.errors import CheckpointError
    from hiva_lib.integrity import OutOfSpaceError
    from hiva_lib.model.pretrained import PretrainedUnavailableError
    from hiva_lib.study.inference import InferenceError, infer

    args = parser().parse_args(argv)
    try:
        table = infer(args.checkpoint, args.path, args.out, align=args.align, faces=args.faces,
                      device=args.device, batch_size=args.batch_size, every=args.every,
                      max_frames=args.max_frames, overlays=args.overlays,
                      max_overlays=args.max_overlays, threshold=args.threshold,
                      progress=not args.no_progress)
    except (InferenceError, CheckpointError, DatasetError, PretrainedUnavailableError,
            OutOfSpaceError) as err:
        print(f"hiva-detect: error: {err}", file=sys.stderr)
        return 2
    frames = len(table[["source", "frame"]].drop_duplicates())
    print(f"{int(table.success.sum())} faces in {frames} frames; written to "
          f"{table.attrs['csv']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
