"""The training loop of one stage (Alg. 1): build the optimizer, resume, then epochs of steps,
each step minimising L = L_au + lambda L_diff (Eq. 7, :func:`hiva_lib.losses.total_loss`).

A killed run resumes from ``last.pt`` (saved at every epoch end, and every
``cfg.checkpoint_every`` steps) and reaches the same weights as an uninterrupted run: the data
order, the augmentation and the description sampling are all functions of (seed, epoch, step).

A non-finite loss or gradient stops the stage before the optimizer applies it
(:class:`NonFiniteLossError`, naming the step and the likely cause): the run is not marked
finished and its last good ``last.pt`` stays to resume from.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from hiva_lib.data.loader import (
    FrameDataset,
    apply_augmentation,
    draw_augmentation,
    load_size_for,
)
from hiva_lib.data.prepared import PreparedDataset
from hiva_lib.engine import distributed, performance, stop
from hiva_lib.engine.checkpoint import atomic_save, load_checkpoint
from hiva_lib.engine.config import TrainConfig
from hiva_lib.engine.runs import mismatch, signature
from hiva_lib.errors import CheckpointError
from hiva_lib.losses import au_loss, inverse_frequency_weights, total_loss
from hiva_lib.progress import progress


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss or gradient; nothing of that step was applied."""


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
    micro: int | None = None  # images per micro-batch (None: cfg.grad_accum_steps parts)
    saved: tuple[int, int] = (0, 0)  # (epoch, batch) of the last saved last.pt
    trouble: torch.Tensor | None = None  # first non-finite step: (step, loss, norm) on device
    step_count: torch.Tensor | None = None  # fit.step, counted on the device
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
                              f"Restore the config, or move {fit.run_dir} away (it resumes "
                              "with its own config).")
    fit.core.load_state_dict(state["model"])
    fit.optimizer.load_state_dict(state["optimizer"])
    fit.scheduler.load_state_dict(state["scheduler"])
    fit.epoch, fit.batch, fit.step = state["epoch"], state["batch"], state["step"]
    fit.saved = (fit.epoch, fit.batch)
    fit.history = state["history"]
    fit.aug.set_state(state["aug_rng"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") is not None and fit.device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], fit.device)
    if distributed.is_main():
        print(f"resuming {fit.run_dir} at epoch {fit.epoch + 1}, batch {fit.batch}")


def save(fit: Fit) -> None:
    """``last.pt``: everything :func:`resume` needs to continue at (epoch, batch); never
    after a non-finite step (:func:`raise_if_nonfinite`)."""
    raise_if_nonfinite(fit)
    if distributed.is_main():
        cuda_rng = torch.cuda.get_rng_state(fit.device) if fit.device.type == "cuda" else None
        atomic_save(dict(model=fit.core.state_dict(), optimizer=fit.optimizer.state_dict(),
                         scheduler=fit.scheduler.state_dict(), epoch=fit.epoch,
                         batch=fit.batch, step=fit.step, history=fit.history,
                         aug_rng=fit.aug.get_state(), torch_rng=torch.get_rng_state(),
                         signature=signature(fit.cfg, fit.stage), cuda_rng=cuda_rng),
                    fit.run_dir / "last.pt")
    fit.saved = (fit.epoch, fit.batch)
    distributed.barrier()


def save_text_embeddings(core: torch.nn.Module, path: Path) -> None:
    """The text branch's H and Z (Eq. 1-2) of this moment, for Fig. 5."""
    if not getattr(core.cfg, "use_text", False):
        return
    h, z = core.text_embeddings()
    atomic_save({"H": h.detach().cpu(), "Z": z.detach().cpu(), "au_ids": list(core.au_ids)}, path)


# ----------------------------------------------------------------------------- Alg. 1
def batch_loss(fit: Fit, x: torch.Tensor, y: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(L, L_au, L_diff) of images ``x`` with labels ``y``: Eq. 7 over Eq. 4 and Eq. 1."""
    with distributed.autocast(fit.device, fit.cfg.amp):
        out = fit.model(x, step=fit.step)
    l_au = au_loss(out.logits.float(), y, fit.weights, fit.cfg.au_loss_reduction)
    lam = fit.cfg.lambda_diff if fit.core.cfg.lambda_diff is None else fit.core.cfg.lambda_diff
    loss = total_loss(l_au, out.l_diff if fit.stage == 2 else None, lam)  # the lambda sweep
    return loss, l_au, out.l_diff  # sets the model's own lambda


def accumulate_gradients(fit: Fit, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Backward of the batch's loss in micro-batches: each micro-batch's loss weighted by
    its share of the batch, so the gradients sum to those of the whole batch (DDP
    all-reduces once, on the last). Returns (L, L_au, L_diff) of the batch, detached."""
    parts = performance.micro_batches(len(x), fit.micro, fit.cfg.grad_accum_steps)
    size = math.ceil(len(x) / parts)
    chunks = list(zip(x.split(size), y.split(size), strict=True))
    logged = []
    for i, (xi, yi) in enumerate(chunks):
        last = i == len(chunks) - 1
        sync = fit.model.no_sync() if hasattr(fit.model, "no_sync") and not last \
            else contextlib.nullcontext()
        with sync:
            loss, l_au, l_diff = batch_loss(fit, xi, yi)
            share = len(xi) / len(x)
            (loss if len(chunks) == 1 else loss * share).backward()
        l_diff = l_au.new_zeros(()) if l_diff is None else l_diff
        logged.append(torch.stack([loss.detach(), l_au.detach(), l_diff.detach()]).double()
                      * (1.0 if len(chunks) == 1 else share))
    return logged[0] if len(logged) == 1 else torch.stack(logged).sum(0)


def device_step(fit: Fit, images: torch.Tensor, labels: torch.Tensor, off: list[int],
                flip: torch.Tensor) -> torch.Tensor:
    """One optimizer step on the device, with the augmentation drawn beforehand: no
    host-device sync (tests/test_engine_speed.py counts them). Returns (L, L_au, L_diff)."""
    crop = fit.core.cfg.img_size
    x = apply_augmentation(images.to(fit.device, non_blocking=True), crop, off, flip)
    y = labels.to(fit.device, non_blocking=True)
    fit.optimizer.zero_grad(set_to_none=True)
    losses = accumulate_gradients(fit, x, y)
    guard_finite(fit, losses[0])  # before the step: the weights stay the last good ones
    fit.optimizer.step()
    fit.scheduler.step()
    return losses


def guard_finite(fit: Fit, loss: torch.Tensor) -> None:
    """Withhold the optimizer step when the loss or the gradient norm is NaN or infinite, with
    no host-device sync: fused AdamW skips its update on the device when its ``found_inf`` is
    1 (as under a GradScaler), and so does every later step of the stage. The first bad step's
    number, loss and gradient norm are kept on the device; :func:`raise_if_nonfinite` reads
    them every ``cfg.log_every`` steps and before every save. Under DDP the gradients are
    all-reduced, so every rank withholds the same steps. An optimizer that is not fused (tests
    with SGD) is checked on the host at once."""
    grads = [p.grad for p in fit.core.parameters() if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads) if grads else loss.new_zeros(())
    if fit.trouble is None:
        fit.trouble = torch.zeros(3, dtype=torch.float64, device=loss.device)
        fit.step_count = torch.full((), float(fit.step), dtype=torch.float64, device=loss.device)
    fit.step_count += 1
    bad = ~(torch.isfinite(loss) & torch.isfinite(norm))
    first = bad & (fit.trouble[0] == 0)
    found = torch.stack([fit.step_count, loss.detach().double(), norm.detach().double()])
    fit.trouble = torch.where(first, found, fit.trouble)
    if fit.optimizer.defaults.get("fused"):
        fit.optimizer.found_inf = (fit.trouble[0] > 0).float()  # this step and every later one
    else:
        raise_if_nonfinite(fit)


def raise_if_nonfinite(fit: Fit) -> None:
    """Stop with one clear error when a step of this stage had a NaN or infinite loss or
    gradient norm (:func:`guard_finite`; nothing of it or later was applied). One read of a
    small device tensor: a sync, so only every ``cfg.log_every`` steps and before saving."""
    if fit.trouble is None:
        return
    step, loss, norm = fit.trouble.tolist()
    if step == 0:
        return
    step = int(step)
    lr = fit.cfg.lr_stage1 if fit.stage == 1 else fit.cfg.lr_stage2
    last = fit.run_dir / "last.pt"
    kept = (f"{last} (epoch {fit.saved[0]}, batch {fit.saved[1]} done) is kept and resumes with "
            "these settings" if last.exists() else "no checkpoint of this run was saved yet")
    epoch, batch = divmod(step - 1, fit.n_batches)
    raise NonFiniteLossError(
        f"{fit.run_dir}: stage {fit.stage} stopped at step {step} (epoch "
        f"{epoch + 1}, batch {batch + 1}): loss {loss:.4g}, gradient norm "
        f"{norm:.4g}. Likely cause: the learning rate is too high (lr={lr:g}; try "
        f"10-100x lower, e.g. lr = {lr / 100:g} in the parameters cell, -p lr {lr / 100:g} with "
        "papermill), or a NaN in the input. Nothing of this step "
        f"was applied and the run is not marked finished; {kept}. A run with another lr "
        "goes to the next free version of the run folder.")


def train_step(fit: Fit, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One step of Alg. 1: draw the augmentation on the host, then the device step."""
    b, _, s, _ = images.shape
    off, flip = draw_augmentation(b, s, fit.core.cfg.img_size, fit.aug)
    losses = device_step(fit, images, labels, off, flip)
    fit.step += 1
    fit.batch += 1
    return losses


class EpochBatches:
    """The loader's batch sampler: this epoch's batches from ``start`` (set each epoch, so one
    loader, and its persistent workers, serves every epoch)."""

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def make_loader(fit: Fit, dataset: FrameDataset, sampler: EpochBatches) -> DataLoader:
    workers = performance.loader_workers(fit.cfg)
    more = dict(persistent_workers=True, prefetch_factor=fit.cfg.prefetch_factor) \
        if workers > 0 else {}
    if workers > 0 and stop.installed():  # a cluster job: the workers outlive its signals
        more["worker_init_fn"] = stop.ignore_in_loader_worker
    # the loader's own generator: creating its iterator must not draw from the global
    # RNG, which a resumed run has just restored (dropout, drop-path use it)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                      pin_memory=fit.device.type == "cuda", generator=torch.Generator(), **more)


def start_epoch(fit: Fit, n_rows: int, sampler: EpochBatches) -> None:
    """Seed the epoch and give the sampler the rest of its batches (all unless resumed)."""
    cfg, rank, world = fit.cfg, *distributed.rank_world()
    if fit.batch == 0:  # epoch-level randomness is a function of (seed, stage, epoch, rank)
        seed = cfg.seed * 1_000_003 + fit.stage * 1009 + fit.epoch + rank * 7919
        fit.aug.manual_seed(seed)
        torch.manual_seed(seed)
    order = np.random.default_rng([cfg.seed, fit.stage, fit.epoch]).permutation(n_rows)
    batches = distributed.shard_batches(order, cfg.batch_size, rank, world)[:fit.n_batches]
    sampler.batches = batches[fit.batch:]


def run_epoch(fit: Fit, loader: DataLoader) -> None:
    """The steps of one epoch, then its log row and the epoch-end checkpoint. The losses
    stay on the device, read every ``cfg.log_every`` steps for the progress bar. The row's
    ``lr`` is the learning rate of the epoch's last step (after it, the schedule's next
    value, 0 at the end of a cosine schedule, is used by no step)."""
    sums = torch.zeros(3, dtype=torch.float64, device=fit.device)
    first, t0 = fit.batch, time.time()
    bar = progress(loader, total=fit.n_batches, initial=fit.batch,
                   desc=f"stage {fit.stage} epoch {fit.epoch + 1}/{fit.epochs}")
    lr = fit.scheduler.get_last_lr()[0]
    for images, labels, _ in bar:
        lr = fit.scheduler.get_last_lr()[0]  # the rate this step uses
        losses = train_step(fit, images, labels)
        sums += losses
        if stop_requested(fit):
            bar.close()
            stop_here(fit)
        if fit.cfg.log_every and fit.step % fit.cfg.log_every == 0:
            raise_if_nonfinite(fit)
            bar.set_postfix(loss=f"{losses[0].item():.3f}", refresh=False)
        every = fit.cfg.checkpoint_every
        if every and fit.step % every == 0 and fit.batch < fit.n_batches:
            save(fit)
    bar.close()
    done = max(1, fit.batch - first)  # batches run in this process (a resumed epoch: fewer)
    means = dict(zip(("loss", "l_au", "l_diff"), (sums / done).tolist(), strict=True))
    fit.history.append(dict(epoch=fit.epoch + 1, seconds=round(time.time() - t0, 2),
                            lr=lr, **means))
    fit.epoch, fit.batch = fit.epoch + 1, 0
    save(fit)


def stop_requested(fit: Fit) -> bool:
    """Whether a stop signal arrived (:mod:`hiva_lib.engine.stop`); under DDP read every
    ``log_every`` steps and agreed by all ranks (one all-reduce), so they stop at one step."""
    if not stop.installed():
        return False
    if distributed.rank_world()[1] == 1:
        return stop.requested() is not None
    if not fit.cfg.log_every or fit.step % fit.cfg.log_every:
        return False
    flag = torch.tensor([float(stop.requested() is not None)], device=fit.device)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    return bool(flag.item())


def stop_here(fit: Fit) -> None:
    """Save ``last.pt`` at this step and raise :class:`~hiva_lib.engine.stop.TrainingStopped`."""
    save(fit)
    signum = stop.requested() or stop.STOP_SIGNALS[0]  # another rank's signal under DDP
    raise stop.TrainingStopped(
        f"{fit.run_dir}: stage {fit.stage} stopped by {stop.signal_name(signum)} at epoch "
        f"{fit.epoch + 1}, batch {fit.batch} (step {fit.step}); {fit.run_dir / 'last.pt'} "
        "saved: submitting or running it again resumes from there.", signum)


def choose_micro_batch(fit: Fit, dataset: FrameDataset) -> int | None:
    """``cfg.micro_batch`` as a size; "auto": the largest that fits the free GPU memory,
    probed on the first images (model buffers such as BN statistics restored after)."""
    fixed = performance.fixed_micro_batch(fit.cfg)
    if fit.cfg.micro_batch != "auto":
        return fixed
    share = math.ceil(fit.cfg.batch_size / distributed.rank_world()[1])
    if fit.device.type != "cuda":
        return share
    saved = {k: v.clone() for k, v in fit.core.named_buffers()}

    def peak(m: int) -> int:
        images = torch.stack([dataset[i][0] for i in range(min(m, len(dataset)))])
        labels = torch.stack([torch.as_tensor(dataset[i][1]) for i in range(len(images))])
        torch.cuda.synchronize(fit.device)
        torch.cuda.reset_peak_memory_stats(fit.device)
        before = torch.cuda.memory_allocated(fit.device)
        x = apply_augmentation(images.to(fit.device), fit.core.cfg.img_size, [0, 0],
                               torch.zeros(len(images), dtype=torch.bool))
        batch_loss(fit, x, labels.to(fit.device).float())[0].backward()
        fit.optimizer.zero_grad(set_to_none=True)
        return torch.cuda.max_memory_allocated(fit.device) - before

    micro = performance.auto_micro_batch(peak, share, fit.device)
    with torch.no_grad():
        for k, v in fit.core.named_buffers():
            v.copy_(saved[k])
    print(f"micro_batch='auto': {micro} of {share} images per step on this rank")
    return micro


def fit_stage(model: torch.nn.Module, stage: int, cfg: TrainConfig, data: PreparedDataset,
              train_rows: np.ndarray, run_dir: Path, device: torch.device) -> list[dict]:
    """Alg. 1 for one stage, resuming from ``run_dir/last.pt``; returns the epoch log."""
    core = distributed.unwrap(model)
    rank, world = distributed.rank_world()
    weights = torch.tensor(inverse_frequency_weights(data.labels(train_rows)),
                           dtype=torch.float32, device=device)
    dataset = FrameDataset(data, train_rows, load_size_for(core.cfg.img_size),
                           cache=performance.loader_workers(cfg) == 0)
    n_batches = len(distributed.shard_batches(np.arange(len(train_rows)), cfg.batch_size,
                                              rank, world))
    if cfg.max_steps_per_epoch:
        n_batches = min(n_batches, cfg.max_steps_per_epoch)
    epochs = cfg.epochs_stage1 if stage == 1 else cfg.epochs_stage2
    optimizer, scheduler = build_optimizer(core, stage, cfg, max(1, epochs * n_batches))
    fit = Fit(model, stage, cfg, device, run_dir, optimizer, scheduler, weights, n_batches)
    fit.micro = choose_micro_batch(fit, dataset)  # before resume: it restores the RNG
    resume(fit)
    text_dir = run_dir / "text_emb"
    save_text = stage == 2 and cfg.save_text_embeddings and distributed.is_main()
    if save_text and fit.epoch == 0 and fit.batch == 0:
        save_text_embeddings(core, text_dir / "epoch000.pt")
    sampler = EpochBatches()
    loader = make_loader(fit, dataset, sampler)
    model.train()
    while fit.epoch < fit.epochs:
        start_epoch(fit, len(train_rows), sampler)
        run_epoch(fit, loader)
        if distributed.is_main():
            pd.DataFrame(fit.history).to_csv(run_dir / "log.csv", index=False)
            if save_text:
                save_text_embeddings(core, text_dir / f"epoch{fit.epoch:03d}.pt")
    return fit.history
