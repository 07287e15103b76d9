"""Devices and DDP: the process group under torchrun, each rank's device and its share of a
batch, the DDP wrapper, and the bf16 autocast of CUDA runs."""
from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as dist


def rank_world() -> tuple[int, int]:
    """(rank, world size) of this process; (0, 1) outside DDP."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return rank_world()[0] == 0


def barrier() -> None:
    """Let the other ranks wait until rank 0 has written what they read next."""
    if rank_world()[1] > 1:
        dist.barrier()


def launched_by_torchrun() -> bool:
    """Whether this process is one of several started by torchrun (WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup_distributed() -> None:
    """Join the process group when started by torchrun."""
    if launched_by_torchrun() and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(name: str) -> torch.device:
    """``"auto"``: this rank's GPU if CUDA is there, else the CPU; or the device named."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={name!r} asked for, but CUDA is not available; use 'cpu'")
    return device


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA only: on CPU it is slower and changes numerics of the reference."""
    return torch.autocast(device.type, dtype=torch.bfloat16,
                          enabled=enabled and device.type == "cuda")


def shard_batches(order: np.ndarray, batch_size: int, rank: int, world: int
                  ) -> list[np.ndarray]:
    """This rank's share of each batch of ``order``. Under DDP a last batch smaller than the
    number of ranks is dropped: every rank must run every step (an empty share would stall)."""
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return [c[rank::world] for c in chunks if len(c) >= world]


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` in DDP when there are several ranks, else as it is."""
    if rank_world()[1] > 1:
        ids = [device.index] if device.type == "cuda" else None
        # every trainable parameter takes part in every step; the buffers (the cached frozen
        # BERT states, tens of MB for BERT-large) are identical on all ranks: not re-sent
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids,
                                                         broadcast_buffers=False)
    return model


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP wrapper (or ``model``)."""
    return model.module if hasattr(model, "module") else model
