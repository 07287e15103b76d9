"""What integrity costs: hashing a checkpoint, and checking a prepared data set's images
against images.sha256 (fast path: size/mtime cache; full: every file reread); with
``--paper-checkpoint``, saving and loading a checkpoint of the paper preset's size with and
without its own content checksum and the finiteness check of every load.

    python scripts/bench_integrity.py --data data/prepared/synth-bp4d [--rows 150000]
    python scripts/bench_integrity.py --paper-checkpoint [--repeat 3]

``--rows`` also times a synthetic index of that many images (BP4D has about 150k frames) in
a temporary folder: files of ``--image-kb`` KiB (BP4D's stored 256 px JPEG is about 25 KiB).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from hiva_lib.data.prepared import (
    HASH_CACHE,
    check_image_content,
    image_hashes,
    load_prepared,
    write_image_manifest,
)
from hiva_lib.integrity import file_sha256


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_checkpoint(mib: int = 30) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "final.pt"
        path.write_bytes(os.urandom(mib << 20))
        first = _timed(lambda: file_sha256(path))
        again = _timed(lambda: file_sha256(path))  # the per-process cache
    return {"what": f"SHA-256 of a {mib} MiB checkpoint", "first_s": first, "cached_s": again}


def paper_state(optimizer: bool = False) -> dict:
    """The contents of a final.pt of the paper preset (Swin-B; built without downloads: no
    ImageNet weights, the offline MiniLM as text encoder, whose outputs are not saved), or of
    a last.pt (``optimizer``: AdamW's two moments per weight as well)."""
    import dataclasses

    import torch

    from hiva_lib.data.au import dataset_aus
    from hiva_lib.model.hiva import HiVA
    from hiva_lib.presets import MODEL_PRESETS

    cfg = dataclasses.replace(MODEL_PRESETS["paper"], pretrained=False, text_model="minilm")
    model = HiVA(cfg, dataset_aus("bp4d"))
    state = dict(model=model.state_dict(), stage=2, au_ids=list(model.au_ids),
                 model_config=dataclasses.asdict(cfg))
    if optimizer:
        state["optimizer"] = {"state": {i: {"exp_avg": torch.randn_like(p),
                                            "exp_avg_sq": torch.rand_like(p)}
                                        for i, p in enumerate(model.parameters())}}
    return state


def _save_load_times(state: dict, path: Path, repeat: int) -> dict:
    """Best-of-``repeat`` seconds: plain torch.save / torch.load (atomic, as before), then
    atomic_save / load_checkpoint, and their parts (content hash, finiteness)."""
    import torch

    from hiva_lib.engine.checkpoint import (
        atomic_save,
        check_finite,
        content_sha256,
        load_checkpoint,
    )
    from hiva_lib.integrity import atomic_write

    steps = {
        "plain_save": lambda: atomic_write(path, lambda tmp: torch.save(state, tmp)),
        "plain_load": lambda: torch.load(path, map_location="cpu", weights_only=False),
        "save": lambda: atomic_save(state, path),
        "load": lambda: load_checkpoint(path, "checkpoint", ""),
        "hash": lambda: content_sha256(state),
        "finite": lambda: check_finite(state, path, "checkpoint"),
    }
    return {name: min(_timed(step) for _ in range(repeat)) for name, step in steps.items()}


def bench_paper_checkpoint(repeat: int = 3) -> list[dict]:
    """Save + load of the paper preset's final.pt and last.pt: plain ``torch.save`` /
    ``torch.load`` beside ``atomic_save`` / ``load_checkpoint`` (content checksum computed
    on save, verified on load, weights checked finite); the best of ``repeat``."""
    import torch

    rows = []
    for name, state in (("final.pt", paper_state()), ("last.pt", paper_state(True))):
        nbytes = sum(t.numel() * t.element_size() for t in _tensors(state))
        with tempfile.TemporaryDirectory() as tmp:
            times = _save_load_times(state, Path(tmp) / name, repeat)
        rows.append({"what": f"paper preset {name}, {nbytes / 2**20:.0f} MiB of tensors",
                     **times, "threads": torch.get_num_threads()})
    return rows


def _tensors(obj):
    import torch

    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors(value)


def bench_images(root: Path, label: str) -> list[dict]:
    index = load_prepared(root, check_images=False).index
    (root / HASH_CACHE).unlink(missing_ok=True)
    cold = _timed(lambda: image_hashes(root, index["image"]))  # hashes every file, fills cache
    sha = image_hashes(root, index["image"])
    fast = _timed(lambda: check_image_content(root, index, image_hashes(root, index["image"])))
    full = _timed(lambda: check_image_content(
        root, index, image_hashes(root, index["image"], full=True)))
    return [{"what": f"{label}: {len(index)} images, {step}", "first_s": t, "cached_s": None}
            for step, t in (("hash all (no cache)", cold),
                            ("check, size/mtime fast path", fast),
                            ("check, full rehash", full))] if len(sha) else []


def synthetic(rows: int, kib: int, folder: Path) -> Path:
    """A prepared-like folder: ``rows`` random files and an index naming them."""
    rng = np.random.default_rng(0)
    images = [f"images/S{i // 5000:03d}/{i:06d}.jpg" for i in range(rows)]
    block = rng.integers(0, 256, kib << 10, dtype=np.uint8).tobytes()
    for i, rel in enumerate(images):
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(i.to_bytes(8, "little") + block)
    index = pd.DataFrame({"image": images, "fold": 1})
    index.to_csv(folder / "index.csv", index=False)
    write_image_manifest(folder, index)
    return folder


def bench_synthetic(rows: int, kib: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        root = synthetic(rows, kib, Path(tmp))
        index = pd.read_csv(root / "index.csv", dtype={"image": str})
        (root / HASH_CACHE).unlink(missing_ok=True)
        cold = _timed(lambda: image_hashes(root, index["image"]))
        fast = _timed(lambda: check_image_content(root, index,
                                                  image_hashes(root, index["image"])))
    label = f"synthetic index: {rows} images of {kib} KiB"
    return [{"what": f"{label}, hash all (no cache)", "first_s": cold, "cached_s": None},
            {"what": f"{label}, check, size/mtime fast path", "first_s": fast,
             "cached_s": None}]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", action="append", default=[], help="a prepared data set")
    ap.add_argument("--rows", type=int, default=0, help="rows of a synthetic index")
    ap.add_argument("--image-kb", type=int, default=25)
    ap.add_argument("--paper-checkpoint", action="store_true",
                    help="save + load of a paper-preset checkpoint, with and without checks")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if args.paper_checkpoint:
        print(pd.DataFrame(bench_paper_checkpoint(args.repeat)).to_string(
            index=False, float_format="%.2f"))
        return
    rows = [bench_checkpoint()]
    for data in args.data:
        rows += bench_images(Path(data), Path(data).name)
    if args.rows:
        rows += bench_synthetic(args.rows, args.image_kb)
    print(pd.DataFrame(rows).to_string(index=False, float_format="%.3f"))


if __name__ == "__main__":
    main()
