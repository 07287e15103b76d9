"""Model cost: parameters, multiply-adds, FLOPs and latency, beside the paper's Sec. IV-A.

The paper (Sec. IV-A) reports 156.08M parameters, 19.09 GFLOPs per inference, "an average
runtime of 63.1 ms per inference on an NVIDIA RTX 3090 GPU ... with a batch size of 32" and
215.8 ms per inference on a Xeon CPU, without saying what is counted. We read the latencies as
the time of one forward pass: 63.1 ms for a batch of 32 images (1.97 ms per image) and
215.8 ms for one image on the CPU. Read per image, the GPU number would mean 2 s per batch of
32, over ten times slower than Swin-B alone runs on an older V100 (278 images/s, 3.6 ms per
image, in the Swin paper's Table 1), so we do not take that reading. The per-batch reading is
used everywhere (:data:`PAPER`, :func:`comparison`, docs/figures.md).

We measure architectures with random weights and without any download: the Swin is built with
``pretrained=False``; BERT-large from its published configuration kept here
(:data:`BERT_LARGE`; the hub's config only with ``hub=True``) with MiniLM's tokenizer (the same
uncased 30522-token WordPiece vocabulary). Only the BERT layers the model keeps are built; the
frozen rest (embeddings + the first 22 layers, run once per description at construction, then
discarded) is counted on PyTorch's ``meta`` device, which allocates nothing. Each number states
its counting:

* parameters (``parameter_counts``): (i) the model object as built, every module including the
  stage-1 graph and heads, which the evaluated stage-2 model does not run (ambiguity 2);
  (ii) the paper's most likely counting: the modules of the evaluated forward pass plus
  BERT-large's trainable word embeddings (Sec. III-B: "trainable word embeddings"), which
  gives 156.06M against the paper's 156.08M; (iii) with the whole frozen BERT;
* multiply-adds and FLOPs (``flop_counts``): ``torch.utils.flop_counter.FlopCounterMode``
  counts matmuls and convolutions at 2 FLOPs per multiply-add; we report both. The paper's
  19.09 "GFLOPs" can only be multiply-adds of the image path: Swin-B alone is 15.4 G
  multiply-adds at 224 px (quoted as "15.4G FLOPs" in the Swin paper). The text path (last
  BERT layers + Eq. 2 over the N descriptions) does not depend on the image: at inference it
  is computed once and cached, so it is reported apart;
* latency: the median wall time of a forward pass (eval mode, no grad), batch 32 on the chosen
  device and batch 1 on the CPU, with the text path run every pass and cached. At batch 32 the
  pass is timed once, with the text path cached; the pass that runs it adds the text path's
  own median time (it runs once per pass whatever the batch size: :func:`text_path_ms`).
"""
from __future__ import annotations

import contextlib
import copy
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
from hiva_lib.presets import preset_config

# The paper's numbers; latencies as we read them: one forward pass of a batch of 32 (GPU),
# of one image (CPU). Per image in the GPU batch: 63.1 / 32 = 1.97 ms.
PAPER = {"params_M": 156.08, "GFLOPs": 19.09, "gpu_ms_per_batch32": 63.1,
         "cpu_ms_per_image_b1": 215.8}
# bert-large-uncased's published configuration (Devlin et al. 2019: L=24, H=1024, A=16; the
# config.json of google-bert/bert-large-uncased): enough to build it with random weights.
BERT_LARGE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                  intermediate_size=4096, vocab_size=30522, max_position_embeddings=512,
                  type_vocab_size=2, hidden_act="gelu", hidden_dropout_prob=0.1,
                  attention_probs_dropout_prob=0.1, initializer_range=0.02,
                  layer_norm_eps=1e-12, pad_token_id=0, position_embedding_type="absolute")
PUBLISHED_TEXT_CONFIGS = {"bert-large-uncased": BERT_LARGE,
                          "google-bert/bert-large-uncased": BERT_LARGE}


# ----------------------------------------------------------------------------- model building
def text_config(name: str, hub: bool = False, record: dict | None = None):
    """The BertConfig of text model ``name``: the published values kept in the project, or
    with ``hub=True`` the hub's config (network). One clear error when neither is possible."""
    from transformers import AutoConfig, BertConfig

    record = {} if record is None else record
    if hub:
        from hiva_lib.model.pretrained import resolve_text_model

        record["text_config"] = f"{name} (config from the hub)"
        try:
            return AutoConfig.from_pretrained(resolve_text_model(name))
        except OSError as err:  # no network and no cached copy
            raise ValueError(
                f"cannot read {name!r}'s config from the hub ({str(err)[:200]}); connect to "
                "the network, or measure without hub=True (text_config_from_hub False) from "
                "the published sizes kept in hiva_lib") from err
    if name not in PUBLISHED_TEXT_CONFIGS:
        raise ValueError(
            f"no published configuration of text model {name!r} is kept in hiva_lib "
            f"(known: {sorted(PUBLISHED_TEXT_CONFIGS)}); pass hub=True (notebook 07: "
            "-p text_config_from_hub True) to read it from the hub, which needs network")
    record["text_config"] = f"{name} (published sizes kept in hiva_lib; no hub)"
    return BertConfig(**PUBLISHED_TEXT_CONFIGS[name])


def _bert_counts(bert: nn.Module) -> dict:
    """Whole-model parameter counts of a BERT (works on the meta device too)."""
    return {"bert_params": sum(p.numel() for p in bert.parameters()),
            "bert_layers": bert.config.num_hidden_layers,
            "bert_word_embeddings": bert.embeddings.word_embeddings.weight.numel()}


def _random_text_model(name: str, record: dict, hub: bool, kept_layers: int):
    """(tokenizer, random-init BERT of the last ``kept_layers`` layers only) with the
    architecture of ``name``; the whole BERT is counted on the meta device into ``record``."""
    from transformers import AutoTokenizer, BertModel

    from hiva_lib.model.pretrained import minilm_path, resolve_text_model

    config = text_config(name, hub, record)
    config._attn_implementation = "eager"
    with torch.device("meta"):  # no memory, no initialisation: parameter counts only
        record.update(_bert_counts(BertModel(config, add_pooling_layer=False)))
    kept = copy.deepcopy(config)
    kept.num_hidden_layers = kept_layers  # their input (the frozen part's output) is random
    tokenizer = AutoTokenizer.from_pretrained(resolve_text_model(name) if hub
                                              else str(minilm_path()))
    if len(tokenizer) != config.vocab_size:
        raise ValueError(f"tokenizer of {len(tokenizer)} tokens for a {name!r} vocabulary of "
                         f"{config.vocab_size}; pass hub=True to use {name}'s own tokenizer")
    return tokenizer, BertModel(kept, add_pooling_layer=False)


@contextlib.contextmanager
def _recording_text_loader(random_init: bool, record: dict, hub: bool = False,
                           kept_layers: int = 2) -> Iterator[None]:
    """Route TextEncoder's model loading through a recorder of the whole BERT's size."""
    real = te.load_text_model

    def load(name: str):
        if random_init:
            return _random_text_model(name, record, hub, kept_layers)
        tok, bert = real(name)
        record.update(_bert_counts(bert))
        return tok, bert

    te.load_text_model = load
    try:
        yield
    finally:
        te.load_text_model = real


def build_model(preset: str, dataset: str = "bp4d", variant: str = "full",
                random_text: bool | None = None, hub: bool = False) -> tuple[HiVA, dict]:
    """The ``preset`` architecture with random backbone weights for ``dataset``'s AU set.

    ``random_text``: build the text model randomly from its config (default: for hub ids; a
    local folder such as "minilm" is loaded as is). ``hub``: read a hub id's config and
    tokenizer from the hub instead of the published values kept here. One description per AU
    (the base one, used at inference) keeps construction cheap; parameter counts do not
    depend on it.
    """
    from hiva_lib.data.descriptions import all_descriptions

    cfg: ModelConfig = preset_config(preset, variant, pretrained=False)
    if random_text is None:
        random_text = cfg.text_model not in ("minilm",) and not Path(cfg.text_model).exists()
    au_ids = dataset_aus(dataset)
    record: dict = {}
    descriptions = [d[:1] for d in all_descriptions(au_ids)] if cfg.use_text else None
    with _recording_text_loader(random_text, record, hub, cfg.text_trainable_layers):
        torch.manual_seed(0)
        model = HiVA(cfg, au_ids, descriptions=descriptions)
    return model.eval(), record


# ----------------------------------------------------------------------------- measuring
def _evaluated_modules(model: HiVA) -> list[nn.Module]:
    """The modules the evaluated model's forward pass runs: stage 2 without the graph (unless
    ``graph_in_stage2``) and without the stage-1 head; stage 1 for a vision-only model."""
    if model.text is None:
        return [model.backbone, model.branches, model.graph, model.stage1_head]
    mods = [model.backbone, model.branches, model.text, model.ddca, model.cdca, model.fuse,
            model.head]
    if model.cfg.graph_in_stage2:
        mods.append(model.graph)
    return [m for m in mods if m is not None]


def _count(mods: nn.Module | list) -> int:
    mods = [m for m in (mods if isinstance(mods, list) else [mods]) if m is not None]
    return sum(p.numel() for m in mods for p in m.parameters())


def parameter_counts(model: HiVA, record: dict) -> dict:
    """Parameters (in units): per module; the model object (``params_total``); the evaluated
    forward pass (``params_evaluated``); the paper's likely counting (``params_paper_counting``
    = evaluated + the text model's word embeddings); trainable per stage; the frozen BERT."""
    parts = {"backbone": model.backbone, "au_branches": model.branches, "graph": model.graph,
             "stage1_head": model.stage1_head}
    if model.text is not None:
        parts.update(text_trainable_bert=model.text.layers,
                     text_proj_transformer=[model.text.proj, model.text.context],
                     ddca=model.ddca, cdca=model.cdca, fuse_head=[model.fuse, model.head])
    out = {f"params_{name}": _count(mods) for name, mods in parts.items()}
    out["params_total"] = _count(model)
    out["params_evaluated"] = _count(_evaluated_modules(model))
    out["params_word_embeddings"] = record.get("bert_word_embeddings", 0) if model.text else 0
    out["params_paper_counting"] = out["params_evaluated"] + out["params_word_embeddings"]
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
    """Multiply-adds and FLOPs of one image (FlopCounterMode counts matmuls and convolutions,
    2 FLOPs per multiply-add): total, image path (text cached), text path."""
    x = torch.randn(1, 3, model.cfg.img_size, model.cfg.img_size)
    total = _flops(model, x)
    text = _flops(model.text, None) if model.text is not None else 0
    out = {}
    for name, flops in (("total", total), ("image_path", total - text), ("text", text)):
        out[f"GMACs_{name}"] = flops / 2e9
        out[f"GFLOPs_{name}"] = flops / 1e9
    return out


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


@torch.no_grad()
def text_path_ms(model: HiVA, device: torch.device, reps: int = 5) -> float:
    """Median wall time (ms) of the text path alone (last language-model layers + Eq. 2 over
    the N descriptions), which a forward pass without the cache runs once, whatever its batch;
    0 for a model without a text branch."""
    if model.text is None:
        return 0.0
    model.text(None)  # warm-up
    times = []
    for _ in range(max(1, reps)):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        model.text(None)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1000


def measure(preset: str, dataset: str = "bp4d", device: str = "auto", batch_size: int = 32,
            reps: int = 3, cpu_reps: int = 5, hub: bool = False) -> dict:
    """One row of the efficiency table for ``preset`` (see the module docstring)."""
    from hiva_lib.engine.distributed import resolve_device

    dev = resolve_device(device)
    model, record = build_model(preset, dataset, hub=hub)
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
    with cached_text(model):
        cached = latency_ms(model, batch_size, dev, reps)
    # The text path does not depend on the batch: a pass that runs it costs the cached pass plus
    # the text path alone, so the batch is timed once (on a CPU, a batch of 32 Swin-B images
    # is most of notebook 07's time).
    ms = cached + text_path_ms(model, dev, reps)
    row["ms_per_batch"] = ms
    row["ms_per_image_in_batch"] = ms / batch_size
    row["ms_per_batch_text_cached"] = cached
    model.to("cpu")
    return row


def efficiency_table(presets: list[str] | tuple[str, ...] = ("paper", "cpu-lite0"),
                     dataset: str = "bp4d", device: str = "auto", batch_size: int = 32,
                     reps: int = 3, cpu_reps: int = 5, out_csv: str | Path | None = None,
                     hub: bool = False, threads: int | None = None
                     ) -> tuple[pd.DataFrame, Path | None]:
    """Measure every preset; write the table (one row per preset) to ``out_csv``, or, when a
    table is already there, to the first free ``<name>-v2.csv``, ``-v3``... (a finished
    measurement is never overwritten). ``hub``: text configs from the hub (network) instead
    of the published values kept here. ``threads``: torch's CPU threads while measuring
    (None: torch's default); on a machine whose cores other jobs share, one thread avoids
    the threads waiting on each other and gives stable latencies. Returns (table, path)."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        rows = [measure(p, dataset, device, batch_size, reps, cpu_reps, hub) for p in presets]
    finally:
        torch.set_num_threads(before)
    table = pd.DataFrame(rows)
    if out_csv is None:
        return table, None
    from hiva_lib.integrity import atomic_write_text, free_version

    path = free_version(out_csv)
    atomic_write_text(table.to_csv(index=False, float_format="%.4g"), path)
    return table, path


# (quantity, how it is counted, the paper's value or None, our value from a table row)
_COMPARED = [
    ("parameters (M)", "model object as built: every module, incl. the stage-1 graph and head",
     None, lambda r: r.params_total / 1e6),
    ("parameters (M)", "paper's likely counting: evaluated (stage-2) forward pass + the text "
     "model's trainable word embeddings", PAPER["params_M"],
     lambda r: r.params_paper_counting / 1e6),
    ("parameters (M)", "model object + the whole frozen BERT (run once per description)",
     None, lambda r: (r.params_total + r.params_frozen_bert) / 1e6),
    ("G multiply-adds per image", "image path (text path cached)", PAPER["GFLOPs"],
     lambda r: r.GMACs_image_path),
    ("G multiply-adds per image", "text path (once per forward pass, cacheable)", None,
     lambda r: r.GMACs_text),
    ("G multiply-adds per image", "total at batch 1, text path run", None,
     lambda r: r.GMACs_total),
    ("GFLOPs per image", "image path, 2 FLOPs per multiply-add", None,
     lambda r: r.GFLOPs_image_path),
    ("GFLOPs per image", "total at batch 1, 2 FLOPs per multiply-add", None,
     lambda r: r.GFLOPs_total),
    ("ms per batch (paper: 32 images)", "one forward pass of batch_size images, text path run "
     "(device)", PAPER["gpu_ms_per_batch32"], lambda r: r.ms_per_batch),
    ("ms per batch (paper: 32 images)", "one forward pass of batch_size images, text path "
     "cached (device)", None, lambda r: r.ms_per_batch_text_cached),
    ("ms per image within the batch", "the batch's time / batch_size (device)",
     PAPER["gpu_ms_per_batch32"] / 32, lambda r: r.ms_per_image_in_batch),
    ("ms per image, CPU, batch 1", "one forward pass, text path run",
     PAPER["cpu_ms_per_image_b1"], lambda r: r.cpu_ms_per_image_b1),
    ("ms per image, CPU, batch 1", "one forward pass, text path cached", None,
     lambda r: r.cpu_ms_per_image_b1_text_cached),
]


def comparison(table: pd.DataFrame) -> pd.DataFrame:
    """The paper's numbers beside ours, each quantity with the counting it uses, one column
    per measured preset. The paper's value stands beside the counting it most likely used:
    its 19.09 "GFLOPs" beside our image path's multiply-adds, its 156.08M beside the evaluated
    model + word embeddings, its "63.1 ms per inference with a batch size of 32" beside one
    forward pass of 32 images (module docstring)."""
    out = pd.DataFrame({"quantity": [q for q, _, _, _ in _COMPARED],
                        "counting": [c for _, c, _, _ in _COMPARED],
                        "paper": [p for _, _, p, _ in _COMPARED]})
    for _, r in table.iterrows():
        out[f"{r.preset} ({r.device_b32})"] = [round(float(f(r)), 2) for *_, f in _COMPARED]
    return out.set_index(["quantity", "counting"])
