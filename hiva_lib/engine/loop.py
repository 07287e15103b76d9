"""The training loop of one stage (Alg. 1): build the optimizer, resume, then epochs of steps,
each step minimising L = L_au + lambda L_diff (Eq. 7, :func:`hiva_lib.losses.total_loss`).

A killed run resumes from ``last.pt`` (saved at every epoch end, and every
``cfg.checkpoint_every`` steps) and reaches the same weights as an uninterrupted run: the data
order, the augmentation and the description sampling are all functions of (seed, epoch, step).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from hiva_lib.data.loader import FrameDataset, load_size_for, prepare_batch
from hiva_lib.data.prepared import PreparedDataset
from hiva_lib.engine import distributed
from hiva_lib.engine.checkpoint import CheckpointError, atomic_save, load_checkpoint
from hiva_lib.engine.config import TrainConfig
from hiva_lib.engine.runs import mismatch, signature
from hiva_lib.losses import au_loss, inverse_frequency_weights, total_loss
from hiva_lib.progress import progress


@dataclass
class Fit:
    """One stage being trained: the model and optimizer, and where in Alg. 1 it is (the
    position and RNG saved in ``last.pt``)."""

    model: torch.nn.Module  # as trained (DDP-wrapped under torchrun)
    stage: int
    cfg: TrainConfig
    device: torch.device
    run_dir: Path
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    weights: torch.Tensor  # Eq. 4's inverse-frequency AU weights
    n_batches: int  # steps per epoch on this rank
    epoch: int = 0
    batch: int = 0
    step: int = 0
    history: list[dict] = field(default_factory=list)
    aug: torch.Generator = field(default_factory=torch.Generator)

    @property
    def core(self) -> torch.nn.Module:
        return distributed.unwrap(self.model)

    @property
    def epochs(self) -> int:
        return self.cfg.epochs_stage1 if self.stage == 1 else self.cfg.epochs_stage2


# ----------------------------------------------------------------------------- set-up
def build_optimizer(core: torch.nn.Module, stage: int, cfg: TrainConfig, total_steps: int
                    ) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the stage's parameter groups, with the cosine (or constant) schedule."""
    lr = cfg.lr_stage1 if stage == 1 else cfg.lr_stage2
    # fused AdamW: one kernel for all parameters (CPU and CUDA); same maths as the loop version
    optimizer = torch.optim.AdamW(core.param_groups(stage, lr), weight_decay=cfg.weight_decay,
                                  fused=True)
    if cfg.schedule == "cosine":
        def lr_at(s: int) -> float:
            return 0.5 * (1 + math.cos(math.pi * s / total_steps))
    elif cfg.schedule == "constant":
        def lr_at(s: int) -> float:
            return 1.0
    else:
        raise ValueError(f"schedule must be 'cosine' or 'constant', not {cfg.schedule!r}")
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)


def resume(fit: Fit) -> None:
    """Continue from ``run_dir/last.pt`` if there is one (same signature only)."""
    last = fit.run_dir / "last.pt"
    if not last.exists():
        return
    state = load_checkpoint(last, "resume checkpoint", "Delete it to start this run afresh.")
    diff = mismatch(state["signature"], signature(fit.cfg, fit.stage))
    if diff:
        raise CheckpointError(f"{last}: cannot resume, the config changed ({'; '.join(diff)}). "
                              "Delete the run folder or restore the config.")
    fit.core.load_state_dict(state["model"])
    fit.optimizer.load_state_dict(state["optimizer"])
    fit.scheduler.load_state_dict(state["scheduler"])
    fit.epoch, fit.batch, fit.step = state["epoch"], state["batch"], state["step"]
    fit.history = state["history"]
    fit.aug.set_state(state["aug_rng"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") is not None and fit.device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], fit.device)
    if distributed.is_main():
        print(f"resuming {fit.run_dir} at epoch {fit.epoch + 1}, batch {fit.batch}")


def save(fit: Fit) -> None:
    """``last.pt``: everything :func:`resume` needs to continue at (epoch, batch)."""
    if distributed.is_main():
        cuda_rng = torch.cuda.get_rng_state(fit.device) if fit.device.type == "cuda" else None
        atomic_save(dict(model=fit.core.state_dict(), optimizer=fit.optimizer.state_dict(),
                         scheduler=fit.scheduler.state_dict(), epoch=fit.epoch,
                         batch=fit.batch, step=fit.step, history=fit.history,
                         aug_rng=fit.aug.get_state(), torch_rng=torch.get_rng_state(),
                         signature=signature(fit.cfg, fit.stage), cuda_rng=cuda_rng),
                    fit.run_dir / "last.pt")
    distributed.barrier()


def save_text_embeddings(core: torch.nn.Module, path: Path) -> None:
    """The text branch's H and Z (Eq. 1-2) of this moment, for Fig. 5."""
    if not getattr(core.cfg, "use_text", False):
        return
    h, z = core.text_embeddings()
    atomic_save({"H": h.detach().cpu(), "Z": z.detach().cpu(), "au_ids": list(core.au_ids)}, path)


# ----------------------------------------------------------------------------- Alg. 1
def train_step(fit: Fit, images: torch.Tensor, labels: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One optimizer step on a batch; returns (L, L_au, L_diff) (Eq. 7, Eq. 4)."""
    crop = fit.core.cfg.img_size
    x = prepare_batch(images.to(fit.device, non_blocking=True), crop, True, fit.aug)
    y = labels.to(fit.device)
    with distributed.autocast(fit.device, fit.cfg.amp):
        out = fit.model(x, step=fit.step)
    l_au = au_loss(out.logits.float(), y, fit.weights, fit.cfg.au_loss_reduction)
    l_diff = out.l_diff if fit.stage == 2 else None
    lam = fit.cfg.lambda_diff if fit.core.cfg.lambda_diff is None else fit.core.cfg.lambda_diff
    loss = total_loss(l_au, l_diff, lam)  # the lambda sweep sets the model's own
    fit.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    fit.optimizer.step()
    fit.scheduler.step()
    fit.step += 1
    fit.batch += 1
    return loss, l_au, out.l_diff


def epoch_loader(fit: Fit, dataset: FrameDataset) -> DataLoader:
    """The rest of this epoch's batches (all of them unless resumed mid-epoch)."""
    cfg, rank, world = fit.cfg, *distributed.rank_world()
    if fit.batch == 0:  # epoch-level randomness is a function of (seed, stage, epoch, rank)
        seed = cfg.seed * 1_000_003 + fit.stage * 1009 + fit.epoch + rank * 7919
        fit.aug.manual_seed(seed)
        torch.manual_seed(seed)
    order = np.random.default_rng([cfg.seed, fit.stage, fit.epoch]).permutation(len(dataset))
    batches = distributed.shard_batches(order, cfg.batch_size, rank, world)[:fit.n_batches]
    # the loader's own generator: creating its iterator must not draw from the global
    # RNG, which a resumed run has just restored (dropout, drop-path use it)
    return DataLoader(dataset, batch_sampler=batches[fit.batch:], num_workers=cfg.num_workers,
                      pin_memory=fit.device.type == "cuda", generator=torch.Generator())


def run_epoch(fit: Fit, dataset: FrameDataset) -> None:
    """The steps of one epoch, then its log row and the epoch-end checkpoint."""
    loader = epoch_loader(fit, dataset)
    sums = {"loss": 0.0, "l_au": 0.0, "l_diff": 0.0}
    first, t0 = fit.batch, time.time()
    bar = progress(loader, total=fit.n_batches, initial=fit.batch,
                   desc=f"stage {fit.stage} epoch {fit.epoch + 1}/{fit.epochs}")
    for images, labels, _ in bar:
        loss, l_au, l_diff = train_step(fit, images, labels)
        sums["loss"] += loss.item()
        sums["l_au"] += l_au.item()
        sums["l_diff"] += 0.0 if l_diff is None else l_diff.item()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        every = fit.cfg.checkpoint_every
        if every and fit.step % every == 0 and fit.batch < fit.n_batches:
            save(fit)
    bar.close()
    done = max(1, fit.batch - first)  # batches run in this process (a resumed epoch: fewer)
    fit.history.append(dict(epoch=fit.epoch + 1, seconds=round(time.time() - t0, 2),
                            lr=fit.scheduler.get_last_lr()[0],
                            **{k: v / done for k, v in sums.items()}))
    fit.epoch, fit.batch = fit.epoch + 1, 0
    save(fit)


def fit_stage(model: torch.nn.Module, stage: int, cfg: TrainConfig, data: PreparedDataset,
              train_rows: np.ndarray, run_dir: Path, device: torch.device) -> list[dict]:
    """Alg. 1 for one stage, resuming from ``run_dir/last.pt``; returns the epoch log."""
    core = distributed.unwrap(model)
    rank, world = distributed.rank_world()
    weights = torch.tensor(inverse_frequency_weights(data.labels(train_rows)),
                           dtype=torch.float32, device=device)
    dataset = FrameDataset(data, train_rows, load_size_for(core.cfg.img_size),
                           cache=cfg.num_workers == 0)
    n_batches = len(distributed.shard_batches(np.arange(len(train_rows)), cfg.batch_size,
                                              rank, world))
    if cfg.max_steps_per_epoch:
        n_batches = min(n_batches, cfg.max_steps_per_epoch)
    epochs = cfg.epochs_stage1 if stage == 1 else cfg.epochs_stage2
    optimizer, scheduler = build_optimizer(core, stage, cfg, max(1, epochs * n_batches))
    fit = Fit(model, stage, cfg, device, run_dir, optimizer, scheduler, weights, n_batches)
    resume(fit)
    text_dir = run_dir / "text_emb"
    save_text = stage == 2 and cfg.save_text_embeddings and distributed.is_main()
    if save_text and fit.epoch == 0 and fit.batch == 0:
        save_text_embeddings(core, text_dir / "epoch000.pt")
    model.train()
    while fit.epoch < fit.epochs:
        run_epoch(fit, dataset)
        if distributed.is_main():
            pd.DataFrame(fit.history).to_csv(run_dir / "log.csv", index=False)
            if save_text:
                save_text_embeddings(core, text_dir / f"epoch{fit.epoch:03d}.pt")
    return fit.history
