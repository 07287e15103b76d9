"""The first command to run on a GPU: can this machine train the paper's model?

    python scripts/check_gpu.py                       # paper size on CUDA, smoke size on a CPU
    python scripts/check_gpu.py --smoke               # smoke size anywhere (seconds)
    python scripts/check_gpu.py --weights random --out results/gpu_check_3090.csv

One table, printed and written to ``results/gpu_check.csv`` (smoke size:
``results/_smoke/gpu_check.csv``; an earlier table is kept and the new one goes to
``gpu_check-v2.csv``, ``-v3`` ..., or name one with ``--out``). Its rows:

- device: name, memory (total, free), torch / CUDA versions, bf16 support;
- parity: bf16 autocast against fp32, relative differences of the stage-2 forward (logits)
  and of one training step (its loss, and the fp32 loss after the step);
- memory: peak of one stage-2 training step (bf16 autocast on CUDA, as training runs) at batch
  32, 64, 128, with and without activation checkpointing (timm's ``set_grad_checkpointing`` of
  the backbone); beside it the bytes saved for backward, counted by autograd hooks on any
  device, plus parameters, gradients and AdamW state (the CPU's only memory figure);
- speed: training throughput (images/s) and inference latency at batch 32, beside the paper's
  63.1 ms (RTX 3090);
- ddp: one 2-process DDP step when two GPUs are there (skipped with the reason otherwise);
- learning: 20 steps on one SynthFACS batch (synth-bp4d) must lower its loss (pass / FAIL).

The paper model (Swin-B + BERT-large) needs hub weights. ``--weights auto`` uses them when the
local hub cache has them (nothing is downloaded) and otherwise random initialisation of the
same architecture (BERT-large from its published sizes: hiva_lib.study.efficiency); the
``weights`` row says which. The model uses one description per AU (the base one).
On a machine without CUDA (or with ``--smoke``) every check runs at smoke size: the
``test-tiny`` model, batches 2/4/8, 20 steps. Figures at smoke size say nothing about a GPU.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from hiva_lib.engine.config import TrainConfig  # noqa: E402
from hiva_lib.losses import au_loss, total_loss  # noqa: E402
from hiva_lib.study.efficiency import PAPER  # noqa: E402

COLUMNS = ["check", "setting", "value", "unit", "paper", "status", "note"]
GIB = 2**30
PARITY_TOLERANCE = 0.02  # relative; bf16 keeps 8 bits of mantissa (~0.4% per rounding)
LOSS_DROP = 0.9  # the learning check passes when the loss falls below 90% of its start


@dataclass(frozen=True)
class Size:
    preset: str
    memory_batches: tuple[int, ...]
    batch: int  # throughput, latency, parity
    loss_batch: int  # the SynthFACS batch of the learning check
    lr: float  # of the learning check (from scratch, so larger than the paper's 1e-6)
    reps: int  # timed repetitions (median), after ``warmup`` untimed ones
    warmup: int
    steps: int = 20


FULL = Size("paper", (32, 64, 128), 32, 32, 1e-4, 10, 2)
SMOKE = Size("test-tiny", (2, 4, 8), 4, 8, 1e-3, 2, 1)


def _sig(value: float, digits: int = 4) -> float:
    return float(f"{value:.{digits}g}")


def row(check: str, setting: str, value, unit: str = "", paper=None, status: str = "",
        note: str = "") -> dict:
    return dict(zip(COLUMNS, [check, setting, value, unit, paper, status, note], strict=True))


# ----------------------------------------------------------------------------- device
def device_rows(dev: torch.device) -> list[dict]:
    rows = [row("device", "torch", torch.__version__,
                note=f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU build")]
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        free, total = torch.cuda.mem_get_info(dev)
        rows += [row("device", "name", props.name, note=f"{torch.cuda.device_count()} CUDA "
                     f"device(s), compute capability {props.major}.{props.minor}"),
                 row("device", "memory total", round(total / GIB, 2), "GiB"),
                 row("device", "memory free", round(free / GIB, 2), "GiB"),
                 row("device", "bf16 supported", torch.cuda.is_bf16_supported())]
    else:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
        rows += [row("device", "name", "cpu", note=f"{os.cpu_count()} cores, "
                     f"{torch.get_num_threads()} torch threads; no CUDA: smoke size"),
                 row("device", "memory total", round(ram, 2), "GiB", note="host RAM")]
    return rows


# ----------------------------------------------------------------------------- model
def _uses_hub(cfg) -> bool:
    return cfg.pretrained is True or (cfg.text_model != "minilm"
                                      and not Path(cfg.text_model).exists())


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    before = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"  # the local cache only: never a download here
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("HF_HUB_OFFLINE")
        else:
            os.environ["HF_HUB_OFFLINE"] = before


def build_model(preset: str, dataset: str, weights: str):
    """(HiVA in stage 2 on the CPU, what its weights are). ``weights``: 'hub' (the preset's
    pretrained weights, an error when they cannot be had), 'auto' (hub weights from the local
    cache, else random init), 'random' (random init of the same architecture)."""
    from hiva_lib.data.au import dataset_aus
    from hiva_lib.data.descriptions import all_descriptions
    from hiva_lib.model.hiva import HiVA
    from hiva_lib.presets import MODEL_PRESETS
    from hiva_lib.study import efficiency

    cfg = MODEL_PRESETS[preset]
    note = "random init (the preset has no hub weights)"
    if weights != "random" and _uses_hub(cfg):
        au_ids = dataset_aus(dataset)
        try:
            with _offline() if weights == "auto" else contextlib.nullcontext():
                torch.manual_seed(0)
                model = HiVA(cfg, au_ids, [d[:1] for d in all_descriptions(au_ids)])
            return model, f"hub weights ({cfg.backbone}, {cfg.text_model})"
        except (OSError, ValueError, RuntimeError) as err:
            if weights == "hub":
                raise
            note = (f"random init of the same architecture: hub weights not in the local cache "
                    f"({type(err).__name__}: {str(err)[:80]})")
    elif weights == "random":
        note = "random init of the same architecture (--weights random)"
    model, _ = efficiency.build_model(preset, dataset)
    return model, note


def _autocast(dev: torch.device, amp: bool):
    return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp)


def train_step(model, opt, x, y, amp: bool, step: int = 0,
               forward_context: contextlib.AbstractContextManager | None = None) -> torch.Tensor:
    """One stage-2 step as the engine takes it: Eq. 7 with the paper's lambda.
    ``forward_context`` wraps the forward pass only (not the backward's recomputation)."""
    cfg = TrainConfig()
    with forward_context or contextlib.nullcontext(), _autocast(x.device, amp):
        out = model(x, step=step)
    loss = total_loss(au_loss(out.logits.float(), y, reduction=cfg.au_loss_reduction),
                      out.l_diff, cfg.lambda_diff)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def optimizer(model, lr: float = 1e-6) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.param_groups(2, lr), weight_decay=TrainConfig().weight_decay,
                             fused=True)


def batch(model, n: int, dev: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    s = model.cfg.img_size
    x = torch.rand(n, 3, s, s, generator=g)
    y = (torch.rand(n, len(model.au_ids), generator=g) < 0.3).float()
    return x.to(dev), y.to(dev)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _free(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.empty_cache()


# ----------------------------------------------------------------------------- parity
def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / a.norm().clamp_min(1e-12))


def parity_rows(base, dev: torch.device, size: Size) -> list[dict]:
    """bf16 autocast vs fp32 on one batch: the forward's logits (eval), one training step's
    loss (train mode, the same dropout draws), and the fp32 loss after that step."""
    x, y = batch(base, size.batch, dev)
    models = {amp: copy.deepcopy(base).to(dev) for amp in (False, True)}
    logits, step_loss, after = {}, {}, {}
    for amp, m in models.items():
        m.eval()
        with torch.no_grad(), _autocast(dev, amp):
            logits[amp] = m(x).logits.float()
        m.train()
        torch.manual_seed(0)
        step_loss[amp] = train_step(m, optimizer(m, 1e-5), x, y, amp)
        m.eval()
        with torch.no_grad():
            after[amp] = au_loss(m(x).logits.float(), y)
    del models
    _free(dev)
    out = []
    for setting, (a, b) in (("forward logits, eval", (logits[False], logits[True])),
                            ("loss of one training step", (step_loss[False], step_loss[True])),
                            ("fp32 loss after that step", (after[False], after[True]))):
        rel = _rel(a, b)
        out.append(row("parity bf16/fp32", f"{setting}, batch {size.batch}", f"{rel:.2e}",
                       "relative difference", status="ok" if rel < PARITY_TOLERANCE else "LARGE",
                       note=f"fp32 {float(a.norm()):.4g}, tolerance {PARITY_TOLERANCE}"))
    return out


# ----------------------------------------------------------------------------- memory
class saved_for_backward(torch.autograd.graph.saved_tensors_hooks):  # noqa: N801
    """Within it, the storages autograd saves for backward are recorded in ``seen`` (data
    pointer -> bytes; a storage saved twice counts once), parameters (``params``) excluded."""

    def __init__(self, params: set[int]) -> None:
        self.seen: dict[int, int] = {}
        super().__init__(self._pack, lambda t: t)
        self.params = params

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        with contextlib.suppress(RuntimeError, NotImplementedError):  # sparse, meta tensors
            storage = t.untyped_storage()
            if storage.data_ptr() not in self.params:
                self.seen[storage.data_ptr()] = storage.nbytes()
        return t


def _state_bytes(model) -> int:
    """Parameters (all) + gradients and AdamW's two moments (trainable ones), fp32."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return total + 3 * trainable


def memory_of_step(model, n: int, dev: torch.device, amp: bool) -> tuple[float | None, float]:
    """(peak GiB of one training step on CUDA (None elsewhere), saved activations GiB)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    x, y = batch(model, n, dev)
    opt = optimizer(model)
    _free(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    counter = saved_for_backward(params)
    train_step(model, opt, x, y, amp, forward_context=counter)
    saved = sum(counter.seen.values())
    _sync(dev)
    peak = torch.cuda.max_memory_allocated(dev) / GIB if dev.type == "cuda" else None
    model.zero_grad(set_to_none=True)
    del opt
    return peak, saved / GIB


@contextlib.contextmanager
def reentrant_checkpoints() -> Iterator[None]:
    """timm's re-entrant checkpointing: it keeps each block's input with save_for_backward,
    where the count sees it (the default, non-re-entrant one keeps it out of autograd's sight;
    both keep the same tensors)."""
    from timm.layers.config import set_reentrant_ckpt, use_reentrant_ckpt

    before = use_reentrant_ckpt()
    set_reentrant_ckpt(True)
    try:
        yield
    finally:
        set_reentrant_ckpt(before)


def memory_rows(base, dev: torch.device, size: Size, amp: bool) -> list[dict]:
    with reentrant_checkpoints():
        return _memory_rows(base, dev, size, amp)


def _memory_rows(base, dev: torch.device, size: Size, amp: bool) -> list[dict]:
    model = copy.deepcopy(base).to(dev).train()
    state = _state_bytes(model) / GIB
    out = []
    for n in size.memory_batches:
        for ckpt in (False, True):
            model.backbone.body.set_grad_checkpointing(ckpt)
            setting = f"stage-2 step, batch {n}, checkpointing {'on' if ckpt else 'off'}"
            try:
                peak, acts = memory_of_step(model, n, dev, amp)
            except torch.cuda.OutOfMemoryError:
                model.zero_grad(set_to_none=True)
                _free(dev)
                out.append(row("memory", setting, "OOM", "GiB", status="does not fit"))
                continue
            note = (f"saved activations {acts:.4g} GiB + parameters, gradients, AdamW "
                    f"{state:.4g} GiB = {acts + state:.4g} GiB")
            if peak is None:
                out.append(row("memory", setting, _sig(acts + state), "GiB (counted)",
                               status="counted", note=note + "; no CUDA: no peak to measure"))
            else:
                out.append(row("memory", setting, _sig(peak), "GiB peak",
                               status="measured", note=note))
    model.backbone.body.set_grad_checkpointing(False)
    del model
    _free(dev)
    return out


# ----------------------------------------------------------------------------- speed
def _median_ms(fn, dev: torch.device, reps: int, warmup: int) -> float:
    for _ in range(warmup):  # kernels, allocator, autotuning
        fn()
    times = []
    for _ in range(reps):
        _sync(dev)
        t0 = time.perf_counter()
        fn()
        _sync(dev)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def speed_rows(base, dev: torch.device, size: Size, amp: bool) -> list[dict]:
    model = copy.deepcopy(base).to(dev).train()
    x, y = batch(model, size.batch, dev)
    opt = optimizer(model)
    ms = _median_ms(lambda: train_step(model, opt, x, y, amp), dev, size.reps, size.warmup)
    precision = "bf16 autocast" if amp else "fp32"
    out = [row("speed", f"training throughput, stage 2, batch {size.batch}, {precision}",
               _sig(size.batch / ms * 1000), "images/s",
               status="measured", note=f"{ms:.1f} ms per step, median of {size.reps}")]
    opt.state.clear()  # the AdamW moments and the gradients are not needed for inference
    model.zero_grad(set_to_none=True)
    model.eval()
    comparable = dev.type == "cuda" and size.batch == 32
    for use_amp in (False, True):
        with torch.no_grad(), _autocast(dev, use_amp):
            ms = _median_ms(lambda: model(x), dev, size.reps, size.warmup)
        out.append(row("speed", f"inference, batch {size.batch}, text path run, "
                       f"{'bf16 autocast' if use_amp else 'fp32'}", _sig(ms), "ms per batch",
                       PAPER["gpu_ms_per_batch32"], "measured" if comparable else
                       "not comparable", note="paper: RTX 3090, batch 32, one forward pass"))
    return out


# ----------------------------------------------------------------------------- learning
def synth_batch(dataset: str, data_root: Path | None, n: int, crop: int, dev: torch.device,
                tmp: Path) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The first ``n`` training images (fold 1) of SynthFACS for ``dataset``'s AUs
    (synth-bp4d, ...), centre-cropped: from ``data_root`` when prepared there, else a
    smoke-size set made in ``tmp`` (8 s)."""
    from hiva_lib.data.loader import FrameDataset, load_size_for, prepare_batch
    from hiva_lib.data.prepare import prepare_dataset
    from hiva_lib.data.prepared import load_prepared

    name = f"synth-{dataset}"
    if data_root is not None and (data_root / name / "index.csv").exists():
        data, where = load_prepared(data_root / name), str(data_root / name)
    else:
        data = prepare_dataset(name, tmp, smoke=True, progress=False)
        where = f"a smoke-size {name} made for this check"
    rows = data.split(1)[0][:n]
    ds = FrameDataset(data, rows, load_size_for(crop))
    images = torch.stack([ds[i][0] for i in range(len(rows))])
    x = prepare_batch(images.to(dev), crop, train=False)
    return x, ds.labels.to(dev), f"{len(rows)} images of {where}"


def learning_rows(base, dev: torch.device, size: Size, amp: bool, dataset: str,
                  data_root: Path | None, tmp: Path) -> list[dict]:
    """``size.steps`` AdamW steps on one SynthFACS batch: its fp32 eval loss must fall below
    LOSS_DROP x its start (a model that cannot fit one batch has a broken step)."""
    model = copy.deepcopy(base).to(dev)
    x, y, where = synth_batch(dataset, data_root, size.loss_batch, model.cfg.img_size, dev,
                              tmp)

    def eval_loss() -> float:
        model.eval()
        with torch.no_grad():
            return float(au_loss(model(x).logits.float(), y))

    before = eval_loss()
    model.train()
    opt = optimizer(model, size.lr)
    for step in range(size.steps):
        train_step(model, opt, x, y, amp, step)
    after = eval_loss()
    ok = after < LOSS_DROP * before
    return [row("learning", f"{size.steps} steps on one SynthFACS batch, lr {size.lr:g}",
                f"{before:.4g} -> {after:.4g}", "L_au (fp32, eval)", status="pass" if ok
                else "FAIL", note=f"{after / before:.2f} of the start (pass: < {LOSS_DROP}); "
                f"{where}")]


# ----------------------------------------------------------------------------- ddp
def ddp_worker(rank: int, world: int, backend: str, preset: str, dataset: str, port: int,
               out: str) -> None:
    """One DDP training step on ``world`` processes; rank 0 writes whether the parameters
    agree on every rank afterwards (gradients averaged) and the step time."""
    import torch.distributed as dist

    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        dev = torch.device(f"cuda:{rank}") if backend == "nccl" else torch.device("cpu")
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        base, _ = build_model(preset, dataset, "random")
        model = torch.nn.parallel.DistributedDataParallel(
            base.to(dev).train(), device_ids=[rank] if dev.type == "cuda" else None,
            broadcast_buffers=False)
        x, y = batch(base, 4, dev, seed=rank)  # each rank its own data
        t0 = time.perf_counter()
        train_step(model, optimizer(base, 1e-4), x, y, dev.type == "cuda")
        _sync(dev)
        ms = (time.perf_counter() - t0) * 1000
        flat = torch.cat([p.detach().float().flatten() for p in base.parameters()])
        gathered = [torch.zeros_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat)
        if rank == 0:
            diff = max(float((g - flat).abs().max()) for g in gathered)
            Path(out).write_text(json.dumps({"max_param_diff": diff, "ms": ms}))
    finally:
        dist.destroy_process_group()


def ddp_check(world: int, backend: str, preset: str, dataset: str) -> dict:
    """Run :func:`ddp_worker` on ``world`` spawned processes; their result."""
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "ddp.json")
        mp.spawn(ddp_worker, args=(world, backend, preset, dataset, port, out), nprocs=world,
                 join=True)
        return json.loads(Path(out).read_text())


def ddp_rows(dev: torch.device, size: Size, dataset: str) -> list[dict]:
    n = torch.cuda.device_count() if dev.type == "cuda" else 0
    setting = "2-process DDP stage-2 step (NCCL), batch 4 per GPU"
    if n < 2:
        why = "no CUDA" if dev.type != "cuda" else f"{n} CUDA device (2 needed)"
        return [row("ddp", setting, "", status="skipped", note=why)]
    res = ddp_check(2, "nccl", size.preset, dataset)
    ok = res["max_param_diff"] == 0.0
    return [row("ddp", setting, round(res["ms"], 1), "ms (first step)",
                status="pass" if ok else "FAIL",
                note=f"largest parameter difference between ranks after the step "
                     f"{res['max_param_diff']:.3g} (pass: 0)")]


# ----------------------------------------------------------------------------- main
def run_checks(dev: torch.device, size: Size, weights: str, dataset: str,
               data_root: Path | None) -> pd.DataFrame:
    amp = dev.type == "cuda"  # the engine's bf16 autocast runs on CUDA only
    torch.manual_seed(0)
    base, weights_note = build_model(size.preset, dataset, weights)
    base.set_stage(2)
    rows = device_rows(dev)
    rows.append(row("model", size.preset, f"{base.cfg.backbone} + {base.cfg.text_model}",
                    note=f"{len(base.au_ids)} AUs ({dataset}), {base.cfg.img_size} px; "
                         f"{weights_note}"))
    with tempfile.TemporaryDirectory() as tmp:
        for name, check in (
                ("parity", lambda: parity_rows(base, dev, size)),
                ("memory", lambda: memory_rows(base, dev, size, amp)),
                ("speed", lambda: speed_rows(base, dev, size, amp)),
                ("ddp", lambda: ddp_rows(dev, size, dataset)),
                ("learning", lambda: learning_rows(base, dev, size, amp, dataset, data_root,
                                                   Path(tmp)))):
            t0 = time.perf_counter()
            print(f"check_gpu: {name} ...", end=" ", file=sys.stderr, flush=True)
            rows += check()
            _free(dev)  # the check's model copy is gone with its frame
            print(f"{time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return pd.DataFrame(rows, columns=COLUMNS)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="smoke size (automatic without CUDA)")
    ap.add_argument("--device", default="auto", help="auto (cuda when there), cuda, cuda:1, cpu")
    ap.add_argument("--weights", default="auto", choices=("auto", "hub", "random"))
    ap.add_argument("--preset", default=None, help="model preset (default: paper; smoke: "
                    "test-tiny)")
    ap.add_argument("--dataset", default="bp4d", help="AU set of the model (bp4d, disfa, gft); "
                    "the learning check uses synth-<dataset>")
    ap.add_argument("--data-root", default=None, help="where synth-<dataset> is prepared "
                    "(default data/prepared; a smoke-size one is made when it is not there)")
    ap.add_argument("--out", default=None, help="CSV path (default results/gpu_check.csv, "
                    "smoke: results/_smoke/gpu_check.csv; never overwritten: -v2, -v3 ...)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                       else "cpu" if args.device == "auto" else args.device)
    smoke = args.smoke or dev.type != "cuda"
    size = SMOKE if smoke else FULL
    if args.preset:
        size = dataclasses.replace(size, preset=args.preset)
    data_root = Path(args.data_root) if args.data_root else ROOT / "data" / "prepared"
    table = run_checks(dev, size, args.weights, args.dataset, data_root)
    from hiva_lib.integrity import atomic_write_text, free_version

    out = Path(args.out) if args.out else ROOT / "results" / (
        "_smoke/gpu_check.csv" if smoke else "gpu_check.csv")
    path = free_version(out)
    atomic_write_text(table.to_csv(index=False), path)
    with pd.option_context("display.max_colwidth", 90, "display.width", 250):
        print(table.to_string(index=False, na_rep=""))
    print(f"\n{'smoke size (' + size.preset + ')' if smoke else size.preset}: written to {path}")
    return path


if __name__ == "__main__":
    main()
