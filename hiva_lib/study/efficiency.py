"""Model cost: parameters, FLOPs and latency, beside the paper's Sec. IV-A numbers.

The paper (Sec. IV-A) reports 156.08M parameters, 19.09 GFLOPs per inference, "an average
runtime of 63.1 ms per inference on an NVIDIA RTX 3090 GPU ... with a batch size of 32" and
215.8 ms per inference on a Xeon CPU, without saying what is counted. We read the latencies as
the time of one forward pass: 63.1 ms for a batch of 32 images (1.97 ms per image) and
215.8 ms for one image on the CPU. Read per image, the GPU number would mean 2 s per batch of
32, over ten times slower than Swin-B alone runs on an older V100 (278 images/s, 3.6 ms per
image, in the Swin paper's Table 1), so we do not take that reading. The per-batch reading is
used everywhere (:data:`PAPER`, :func:`comparison`, docs/figures.md).

We measure architectures with random weights (no download: the Swin is built with
``pretrained=False``; BERT-large is built from its config, fetched from the hub when possible
and otherwise from BERT-large's published sizes, with MiniLM's tokenizer, which has the same
uncased WordPiece vocabulary) and state what each number covers:

* parameters: the model object (backbone, AU branches and graph, the two trained BERT layers,
  text projection and Transformer, DDCA, CDCA, head), trainable per stage, and separately the
  frozen BERT part (embeddings + first 22 layers), which :class:`TextEncoder` runs once per
  description at construction and then discards;
* FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and convolutions, 2 FLOPs per
  multiply-add; many papers quote multiply-adds, i.e. half of this) for one image, split into
  the image path and the text path (last BERT layers + Eq. 2 over the N descriptions). The text
  path does not depend on the image, so at inference it can be computed once and cached;
* latency: the median wall time of a forward pass (eval mode, no grad), batch 32 on the chosen
  device and batch 1 on the CPU, with the text path run every pass and cached.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from hiva_lib.data.au import dataset_aus
from hiva_lib.model import text as te
from hiva_lib.model.config import ModelConfig
from hiva_lib.model.hiva import HiVA
from hiva_lib.model.text import cached_text
from hiva_lib.presets import MODEL_PRESETS

# The paper's numbers; latencies as we read them: one forward pass of a batch of 32 (GPU),
# of one image (CPU). Per image in the GPU batch: 63.1 / 32 = 1.97 ms.
PAPER = {"params_M": 156.08, "GFLOPs": 19.09, "gpu_ms_per_batch32": 63.1,
         "cpu_ms_per_image_b1": 215.8}
BERT_LARGE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                  intermediate_size=4096, vocab_size=30522, max_position_embeddings=512,
                  type_vocab_size=2)


# ----------------------------------------------------------------------------- model building
def _random_text_model(name: str, record: dict):
    """(tokenizer, random-init BERT) with the architecture of ``name``; no weight download."""
    from transformers import AutoConfig, AutoTokenizer, BertConfig, BertModel

    from hiva_lib.model.pretrained import minilm_path, resolve_text_model

    try:
        config = AutoConfig.from_pretrained(resolve_text_model(name))
        record["text_config"] = f"{name} (its config)"
    except Exception:  # offline: BERT-large's published sizes
        config = BertConfig(**BERT_LARGE)
        record["text_config"] = "BertConfig with BERT-large sizes (config not reachable)"
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve_text_model(name))
    except Exception:
        tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    config._attn_implementation = "eager"
    return tokenizer, BertModel(config, add_pooling_layer=False)


@contextlib.contextmanager
def _recording_text_loader(random_init: bool, record: dict) -> Iterator[None]:
    """Route TextEncoder's model loading through a recorder of the whole BERT's size."""
    real = te.load_text_model

    def load(name: str):
        tok, bert = _random_text_model(name, record) if random_init else real(name)
        record["bert_params"] = sum(p.numel() for p in bert.parameters())
        record["bert_layers"] = bert.config.num_hidden_layers
        return tok, bert

    te.load_text_model = load
    try:
        yield
    finally:
        te.load_text_model = real


def build_model(preset: str, dataset: str = "bp4d", variant: str = "full",
                random_text: bool | None = None) -> tuple[HiVA, dict]:
    """The ``preset`` architecture with random backbone weights for ``dataset``'s AU set.

    ``random_text``: build the text model randomly from its config (default: for hub ids; a
    local folder such as "minilm" is loaded as is). One description per AU (the base one, used
    at inference) keeps construction cheap; parameter counts do not depend on it.
    """
    from hiva_lib.data.descriptions import all_descriptions
    from hiva_lib.variants import apply_variant

    if preset not in MODEL_PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose one of {list(MODEL_PRESETS)}")
    cfg: ModelConfig = apply_variant(dataclasses.replace(MODEL_PRESETS[preset],
                                                         pretrained=False), variant)
    if random_text is None:
        random_text = cfg.text_model not in ("minilm",) and not Path(cfg.text_model).exists()
    au_ids = dataset_aus(dataset)
    record: dict = {}
    descriptions = [d[:1] for d in all_descriptions(au_ids)] if cfg.use_text else None
    with _recording_text_loader(random_text, record):
        torch.manual_seed(0)
        model = HiVA(cfg, au_ids, descriptions=descriptions)
    return model.eval(), record


# ----------------------------------------------------------------------------- measuring
def parameter_counts(model: HiVA, record: dict) -> dict:
    """Parameters (in units) of the model, per module, trainable per stage, frozen BERT."""
    parts = {"backbone": model.backbone, "au_branches_graph": [model.branches, model.graph,
                                                               model.stage1_head]}
    if model.text is not None:
        parts.update(text_trainable_bert=model.text.layers,
                     text_proj_transformer=[model.text.proj, model.text.context],
                     ddca=model.ddca, cdca=model.cdca, fuse_head=[model.fuse, model.head])
    out = {}
    for name, mods in parts.items():
        mods = [m for m in (mods if isinstance(mods, list) else [mods]) if m is not None]
        out[f"params_{name}"] = sum(p.numel() for m in mods for p in m.parameters())
    out["params_total"] = sum(p.numel() for p in model.parameters())
    stage = model.stage
    for s in ((1, 2) if model.text is not None else (1,)):
        model.set_stage(s)
        out[f"params_trainable_stage{s}"] = sum(p.numel() for p in model.parameters()
                                                if p.requires_grad)
    model.set_stage(stage)
    kept = out.get("params_text_trainable_bert", 0)
    out["params_frozen_bert"] = record.get("bert_params", kept) - kept if model.text else 0
    return out


def _flops(fn, *args) -> int:
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        fn(*args)
    return int(counter.get_total_flops())


def flop_counts(model: HiVA) -> dict:
    """FLOPs of one image (FlopCounterMode: 2 per multiply-add): total, image path, text path."""
    x = torch.randn(1, 3, model.cfg.img_size, model.cfg.img_size)
    total = _flops(model, x)
    text = _flops(model.text, None) if model.text is not None else 0
    return {"GFLOPs_total": total / 1e9, "GFLOPs_text": text / 1e9,
            "GFLOPs_image_path": (total - text) / 1e9, "GMACs_total": total / 2e9}


@torch.no_grad()
def latency_ms(model: nn.Module, batch: int, device: torch.device, reps: int = 5,
               warmup: int = 1) -> float:
    """Median wall time (ms) of a forward pass of ``batch`` random images on ``device``
    (the median: robust to a pass slowed down by other processes on a shared machine)."""
    x = torch.randn(batch, 3, model.cfg.img_size, model.cfg.img_size, device=device)
    for _ in range(warmup):
        model(x)
    times = []
    for _ in range(max(1, reps)):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1000


def measure(preset: str, dataset: str = "bp4d", device: str = "auto", batch_size: int = 32,
            reps: int = 3, cpu_reps: int = 5) -> dict:
    """One row of the efficiency table for ``preset`` (see the module docstring)."""
    from hiva_lib.engine.train import resolve_device

    dev = resolve_device(device)
    model, record = build_model(preset, dataset)
    row: dict = {"preset": preset, "backbone": model.cfg.backbone, "img_size": model.cfg.img_size,
                 "text_model": model.cfg.text_model, "text_config": record.get("text_config", ""),
                 "n_aus": len(model.au_ids), "threads": torch.get_num_threads()}
    row.update(parameter_counts(model, record))
    row.update(flop_counts(model))
    with cached_text(model):
        row["cpu_ms_per_image_b1_text_cached"] = latency_ms(model, 1, torch.device("cpu"),
                                                            cpu_reps)
    row["cpu_ms_per_image_b1"] = latency_ms(model, 1, torch.device("cpu"), cpu_reps)
    model.to(dev)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    row["device_b32"] = name
    row["batch_size"] = batch_size
    ms = latency_ms(model, batch_size, dev, reps)
    row["ms_per_batch"] = ms
    row["ms_per_image_in_batch"] = ms / batch_size
    with cached_text(model):
        row["ms_per_batch_text_cached"] = latency_ms(model, batch_size, dev, reps)
    model.to("cpu")
    return row


def efficiency_table(presets: list[str] | tuple[str, ...] = ("paper", "cpu-small"),
                     dataset: str = "bp4d", device: str = "auto", batch_size: int = 32,
                     reps: int = 3, cpu_reps: int = 5, out_csv: str | Path | None = None
                     ) -> tuple[pd.DataFrame, Path | None]:
    """Measure every preset; write the table (one row per preset) to ``out_csv``, or, when a
    table is already there, to the first free ``<name>-v2.csv``, ``-v3``... (a finished
    measurement is never overwritten). Returns (table, the path written)."""
    rows = [measure(p, dataset, device, batch_size, reps, cpu_reps) for p in presets]
    table = pd.DataFrame(rows)
    if out_csv is None:
        return table, None
    from hiva_lib.engine.checkpoint import atomic_write_text, free_version

    path = free_version(out_csv)
    atomic_write_text(table.to_csv(index=False, float_format="%.4g"), path)
    return table, path


def comparison(table: pd.DataFrame) -> pd.DataFrame:
    """The paper's four numbers beside ours, one column per measured preset. The paper's
    "63.1 ms per inference with a batch size of 32" is read as per batch of 32 (module
    docstring); its per-image share (63.1 / 32) is set beside our per-image time in the
    batch, the same quantity under the same reading."""
    quantities = [
        ("parameters in the model (M)", PAPER["params_M"],
         lambda r: r.params_total / 1e6),
        ("  incl. the frozen BERT part (M)", None,
         lambda r: (r.params_total + r.params_frozen_bert) / 1e6),
        ("GFLOPs per image (FlopCounterMode, 2 per MAC)", PAPER["GFLOPs"],
         lambda r: r.GFLOPs_total),
        ("  image path only (text cached)", None, lambda r: r.GFLOPs_image_path),
        ("GMACs per image", None, lambda r: r.GMACs_total),
        ("ms per batch of 32 (device)", PAPER["gpu_ms_per_batch32"],
         lambda r: r.ms_per_batch),
        ("  text cached", None, lambda r: r.ms_per_batch_text_cached),
        ("ms per image within the batch", PAPER["gpu_ms_per_batch32"] / 32,
         lambda r: r.ms_per_image_in_batch),
        ("ms per image, CPU, batch 1", PAPER["cpu_ms_per_image_b1"],
         lambda r: r.cpu_ms_per_image_b1),
        ("  text cached", None, lambda r: r.cpu_ms_per_image_b1_text_cached),
    ]
    out = pd.DataFrame({"quantity": [q for q, _, _ in quantities],
                        "paper": [p for _, p, _ in quantities]})
    for _, r in table.iterrows():
        out[f"{r.preset} ({r.device_b32})"] = [round(float(f(r)), 2) for _, _, f in quantities]
    return out.set_index("quantity")
