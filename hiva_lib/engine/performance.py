"""GPU memory and speed options of a run, all off by default where they change
numerics: micro-batches (gradient accumulation, with the micro-batch chosen from the free GPU
memory on request), activation checkpointing of the backbone, ``torch.compile``, TF32,
``cudnn.benchmark``, and the loader workers per rank."""
from __future__ import annotations

import math
import os

import torch

from hiva_lib.engine.config import TrainConfig

AUTO_MEMORY_FRACTION = 0.85  # of the free GPU memory that "auto" micro-batches may fill


def set_backend_flags(cfg: TrainConfig, device: torch.device) -> None:
    """TF32 and cudnn.benchmark as ``cfg`` asks (CUDA only; both off by default). With
    ``tf32=False`` convolutions are full fp32 too (PyTorch's own default lets cuDNN use TF32
    for them); bf16 autocast (``amp``) is separate and on by default."""
    if device.type != "cuda":
        return
    precision = "tf32" if cfg.tf32 else "ieee"
    torch.backends.cuda.matmul.fp32_precision = precision
    torch.backends.cudnn.conv.fp32_precision = precision
    torch.backends.cudnn.benchmark = cfg.cudnn_benchmark


def prepare_model(core: torch.nn.Module, cfg: TrainConfig) -> None:
    """Activation checkpointing (timm's ``set_grad_checkpointing``) and ``torch.compile`` of
    the backbone's body, as ``cfg`` asks. Compiled in place (``nn.Module.compile``), so the
    parameter names, and the checkpoints, are those of the plain model."""
    body = core.backbone.body
    if cfg.grad_checkpointing:
        if not hasattr(body, "set_grad_checkpointing"):
            from hiva_lib.engine.validate import ParameterError

            raise ParameterError(
                f"grad_checkpointing=True: the backbone {type(body).__name__} has no "
                "set_grad_checkpointing(). Pass -p grad_checkpointing False, or choose a "
                "model preset whose backbone is a timm model that has one")
        body.set_grad_checkpointing(True)
    if cfg.compile:
        body.compile()


def cores_per_rank() -> int:
    """The CPU cores this process may use, shared among the ranks on this machine."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def loader_workers(cfg: TrainConfig) -> int:
    """Loader processes of this rank: ``cfg.num_workers``, or for "auto" one core of this
    rank's share left to the training process (at most 8)."""
    if cfg.num_workers == "auto":
        return min(8, cores_per_rank() - 1)
    if not isinstance(cfg.num_workers, int) or cfg.num_workers < 0:
        raise ValueError(f"num_workers={cfg.num_workers!r}: give a count >= 0 or 'auto'")
    return cfg.num_workers


def micro_batches(batch: int, micro: int | None, accum_steps: int) -> int:
    """How many micro-batches a (per-rank) batch of ``batch`` images is split into: enough
    for micro-batches of at most ``micro`` images, and at least ``accum_steps``."""
    if accum_steps < 1:
        raise ValueError(f"grad_accum_steps={accum_steps}: give 1 or more")
    k = math.ceil(batch / micro) if micro else 1
    return max(1, min(batch, max(k, accum_steps)))


def fixed_micro_batch(cfg: TrainConfig) -> int | None:
    """``cfg.micro_batch`` as a size (None: whole batches, or "auto" decided later)."""
    if cfg.micro_batch in (None, "auto"):
        return None
    if not isinstance(cfg.micro_batch, int) or cfg.micro_batch < 1:
        raise ValueError(f"micro_batch={cfg.micro_batch!r}: give a size >= 1, 'auto' or None")
    return cfg.micro_batch


def auto_micro_batch(step_peak, batch: int, device: torch.device) -> int:
    """The largest micro-batch that fits the free GPU memory: ``step_peak(m)`` runs one
    forward and backward of ``m`` images and returns the peak memory it took (bytes); the
    per-image cost is measured between m = 1 and m = 2. The whole batch on a CPU."""
    if device.type != "cuda":
        return batch
    one, two = step_peak(1), step_peak(min(2, batch))
    per_image = max(1, two - one)
    free = torch.cuda.mem_get_info(device)[0]
    fits = int((AUTO_MEMORY_FRACTION * free - one) // per_image) + 1
    return max(1, min(batch, fits))
