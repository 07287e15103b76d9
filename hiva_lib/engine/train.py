"""Two-stage training and evaluation (Sec. III-E, Alg. 1; Eq. 4 and Eq. 7).

Stage 1 trains (a) visual encoding + (c) AU branches and graph with L_au (Eq. 4). Its
checkpoint depends on neither the text branch nor the variant, so it is trained once per
(data set, model preset, seed, fold) and shared by every stage-2 variant. Stage 2 starts from it
and trains the full model with L_au + lambda L_diff (Eq. 7). The vision-only Baseline is the
stage-1 model itself, evaluated as is.

Folders (``cfg.runs_root`` / ``cfg.results_root``)::

    runs/<dataset>/<model_preset>/stage1/seed<s>/fold<k>/         final.pt, last.pt, log.csv, DONE
    runs/<dataset>/<model_preset>/<variant>/seed<s>/fold<k>/      the same, + text_emb/epochNNN.pt
    results/<dataset>/<variant>/seed<s>/fold<k>/                  metrics.json, f1.csv,
                                                                  predictions.npz, config.json

A killed run resumes from ``last.pt`` (saved at every epoch end, and every
``cfg.checkpoint_every`` steps) and reaches the same weights as an uninterrupted run: the data
order, the augmentation and the description sampling are all functions of (seed, epoch, step).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from hiva_lib import variants
from hiva_lib.data.au import au_keys
from hiva_lib.data.loader import FrameDataset, load_size_for, prepare_batch
from hiva_lib.data.prepared import DatasetError, PreparedDataset, load_prepared, prepare_hint
from hiva_lib.engine.checkpoint import (
    CheckpointError,
    atomic_save,
    atomic_write_json,
    atomic_write_text,
    file_sha256,
    find_finished,
    finished_versions,
    first_free,
    latest_versions,
    load_checkpoint,
    resolve_run_dir,
)
from hiva_lib.engine.config import TrainConfig, project_root
from hiva_lib.engine.fold_guard import check_held_out, trained_on
from hiva_lib.losses import au_loss, inverse_frequency_weights, total_loss
from hiva_lib.metrics import all_positive_f1, f1_per_au
from hiva_lib.model import hiva
from hiva_lib.model.config import ModelConfig, config_from_dict
from hiva_lib.presets import MODEL_PRESETS
from hiva_lib.progress import progress


@dataclass
class RunResult:
    run_dir: Path
    checkpoint: Path
    metrics: dict | None = None
    results_dir: Path | None = None
    skipped: bool = False


# ----------------------------------------------------------------------------- helpers
def _dist() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _is_main() -> bool:
    return _dist()[0] == 0


def _barrier() -> None:
    """Let the other ranks wait until rank 0 has written what they read next."""
    if _dist()[1] > 1:
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
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={name!r} asked for, but CUDA is not available; use 'cpu'")
    return device


def _autocast(device: torch.device, enabled: bool):
    # bf16 autocast on CUDA only: on CPU it is slower and changes numerics of the reference.
    return torch.autocast(device.type, dtype=torch.bfloat16,
                          enabled=enabled and device.type == "cuda")


def load_data(cfg: TrainConfig) -> PreparedDataset:
    root = Path(cfg.data_root) / cfg.dataset
    if not (root / "index.csv").exists():
        raise DatasetError(f"{root}: data set {cfg.dataset!r} is not prepared. "
                           + prepare_hint(cfg.dataset))
    return load_prepared(root)


def model_config(cfg: TrainConfig, variant: str) -> ModelConfig:
    if cfg.model_preset not in MODEL_PRESETS:
        raise ValueError(f"unknown model preset {cfg.model_preset!r}; "
                         f"choose one of {list(MODEL_PRESETS)}")
    base = MODEL_PRESETS[cfg.model_preset]
    base = dataclasses.replace(base, **cfg.model_overrides)
    return variants.apply_variant(base, variant)


def stage1_dir(cfg: TrainConfig) -> Path:
    return (Path(cfg.runs_root) / cfg.dataset / cfg.model_preset / "stage1"
            / f"seed{cfg.seed}" / f"fold{cfg.fold}")


def stage2_dir(cfg: TrainConfig) -> Path:
    return (Path(cfg.runs_root) / cfg.dataset / cfg.model_preset / cfg.variant
            / f"seed{cfg.seed}" / f"fold{cfg.fold}")


def finished_run(cfg: TrainConfig, stage: int) -> Path | None:
    """The finished run of ``cfg`` (stage 1, or the stage 2 of ``cfg.variant``) that
    ``if_exists="skip"`` reuses: the newest version saved with the same settings."""
    return find_finished(stage1_dir(cfg) if stage == 1 else stage2_dir(cfg),
                         _signature(cfg, stage))


def results_dir(cfg: TrainConfig, run_dir: Path) -> Path:
    # a versioned run (fold1-v2) gets a versioned results folder of the same name
    return (Path(cfg.results_root) / cfg.dataset / cfg.variant / f"seed{cfg.seed}"
            / run_dir.name)


# The model fields that define the stage-1 model (a)+(c): a stage-2-only switch (ddca_mode,
# fusion, descriptions...) reuses the same stage-1 checkpoint.
STAGE1_MODEL_FIELDS = ("backbone", "backbone_kwargs", "pretrained", "img_size", "input_mean",
                       "input_std", "backbone_trainable", "dim", "graph_k")


def _signature(cfg: TrainConfig, stage: int) -> dict:
    """The config values that must match for a checkpoint to be resumed or reused."""
    keys = ["dataset", "fold", "seed", "model_preset", "batch_size",
            "au_loss_reduction", "weight_decay", "schedule", "max_steps_per_epoch"]
    keys += (["epochs_stage1", "lr_stage1"] if stage == 1
             else ["variant", "epochs_stage2", "lr_stage2", "lambda_diff"])
    d = cfg.to_dict()
    sig = {k: d[k] for k in keys}
    model = dataclasses.asdict(model_config(cfg, "baseline" if stage == 1 else cfg.variant))
    sig["model"] = ({k: model[k] for k in STAGE1_MODEL_FIELDS} if stage == 1
                    else {**model, "stage1": _signature(cfg, 1)})
    return json.loads(json.dumps(sig))  # as saved: tuples become lists


def _mismatch(saved: dict, wanted: dict) -> list[str]:
    return [f"{k}: checkpoint {saved.get(k)!r} vs now {v!r}" for k, v in wanted.items()
            if saved.get(k) != v]


# ----------------------------------------------------------------------------- training
def _fit(model: torch.nn.Module, stage: int, cfg: TrainConfig, data: PreparedDataset,
         train_rows: np.ndarray, run_dir: Path, device: torch.device) -> list[dict]:
    """Train one stage, resuming from ``run_dir/last.pt``; returns the epoch log."""
    core = model.module if hasattr(model, "module") else model
    rank, world = _dist()
    epochs = cfg.epochs_stage1 if stage == 1 else cfg.epochs_stage2
    lr = cfg.lr_stage1 if stage == 1 else cfg.lr_stage2
    crop = core.cfg.img_size
    weights = torch.tensor(inverse_frequency_weights(data.labels(train_rows)),
                           dtype=torch.float32, device=device)
    dataset = FrameDataset(data, train_rows, load_size_for(crop),
                           cache=cfg.num_workers == 0)
    n_batches = len(_shard_batches(np.arange(len(train_rows)), cfg.batch_size, rank, world))
    if cfg.max_steps_per_epoch:
        n_batches = min(n_batches, cfg.max_steps_per_epoch)
    total = max(1, epochs * n_batches)

    # fused AdamW: one kernel for all parameters (CPU and CUDA); same maths as the loop version
    optimizer = torch.optim.AdamW(core.param_groups(stage, lr), weight_decay=cfg.weight_decay,
                                  fused=True)
    if cfg.schedule == "cosine":
        lr_at = lambda s: 0.5 * (1 + math.cos(math.pi * s / total))  # noqa: E731
    elif cfg.schedule == "constant":
        lr_at = lambda s: 1.0  # noqa: E731
    else:
        raise ValueError(f"schedule must be 'cosine' or 'constant', not {cfg.schedule!r}")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)

    signature = _signature(cfg, stage)
    epoch, batch, step, history = 0, 0, 0, []
    aug = torch.Generator()
    last = run_dir / "last.pt"
    if last.exists():
        state = load_checkpoint(last, "resume checkpoint", "Delete it to start this run afresh.")
        diff = _mismatch(state["signature"], signature)
        if diff:
            raise CheckpointError(f"{last}: cannot resume, the config changed ({'; '.join(diff)}). "
                                  "Delete the run folder or restore the config.")
        core.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        epoch, batch, step = state["epoch"], state["batch"], state["step"]
        history = state["history"]
        aug.set_state(state["aug_rng"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], device)
        if _is_main():
            print(f"resuming {run_dir} at epoch {epoch + 1}, batch {batch}")

    def save(epoch: int, batch: int) -> None:
        if _is_main():
            atomic_save(dict(model=core.state_dict(), optimizer=optimizer.state_dict(),
                             scheduler=scheduler.state_dict(), epoch=epoch, batch=batch,
                             step=step, history=history, aug_rng=aug.get_state(),
                             torch_rng=torch.get_rng_state(), signature=signature,
                             cuda_rng=(torch.cuda.get_rng_state(device)
                                       if device.type == "cuda" else None)), last)
        _barrier()

    text_dir = run_dir / "text_emb"
    if stage == 2 and cfg.save_text_embeddings and epoch == 0 and batch == 0 and _is_main():
        _save_text_embeddings(core, text_dir / "epoch000.pt")

    model.train()
    while epoch < epochs:
        if batch == 0:  # epoch-level randomness is a function of (seed, stage, epoch, rank)
            seed = cfg.seed * 1_000_003 + stage * 1009 + epoch + rank * 7919
            aug.manual_seed(seed)
            torch.manual_seed(seed)
        order = np.random.default_rng([cfg.seed, stage, epoch]).permutation(len(train_rows))
        batches = _shard_batches(order, cfg.batch_size, rank, world)[:n_batches]
        # the loader's own generator: creating its iterator must not draw from the global
        # RNG, which a resumed run has just restored (dropout, drop-path use it)
        loader = DataLoader(dataset, batch_sampler=batches[batch:], num_workers=cfg.num_workers,
                            pin_memory=device.type == "cuda", generator=torch.Generator())
        sums = {"loss": 0.0, "l_au": 0.0, "l_diff": 0.0}
        first, t0 = batch, time.time()
        bar = progress(loader, total=n_batches, initial=batch,
                       desc=f"stage {stage} epoch {epoch + 1}/{epochs}")
        for images, labels, _ in bar:
            x = prepare_batch(images.to(device, non_blocking=True), crop, True, aug)
            y = labels.to(device)
            with _autocast(device, cfg.amp):
                out = model(x, step=step)
            l_au = au_loss(out.logits.float(), y, weights, cfg.au_loss_reduction)
            lam = cfg.lambda_diff if core.cfg.lambda_diff is None else core.cfg.lambda_diff
            loss = total_loss(l_au, out.l_diff if stage == 2 else None, lam)  # sweep: model's
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            batch += 1
            sums["loss"] += loss.item()
            sums["l_au"] += l_au.item()
            sums["l_diff"] += 0.0 if out.l_diff is None else out.l_diff.item()
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and batch < n_batches:
                save(epoch, batch)
        bar.close()
        done = max(1, batch - first)  # batches run in this process (a resumed epoch: fewer)
        history.append(dict(epoch=epoch + 1, seconds=round(time.time() - t0, 2),
                            lr=scheduler.get_last_lr()[0],
                            **{k: v / done for k, v in sums.items()}))
        epoch, batch = epoch + 1, 0
        save(epoch, 0)
        if _is_main():
            pd.DataFrame(history).to_csv(run_dir / "log.csv", index=False)
            if stage == 2 and cfg.save_text_embeddings:
                _save_text_embeddings(core, text_dir / f"epoch{epoch:03d}.pt")
    return history


def _shard_batches(order: np.ndarray, batch_size: int, rank: int, world: int
                   ) -> list[np.ndarray]:
    """This rank's share of each batch of ``order``. Under DDP a last batch smaller than the
    number of ranks is dropped: every rank must run every step (an empty share would stall)."""
    chunks = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return [c[rank::world] for c in chunks if len(c) >= world]


def _save_text_embeddings(core: hiva.HiVA, path: Path) -> None:
    if not getattr(core.cfg, "use_text", False):
        return
    h, z = core.text_embeddings()
    atomic_save({"H": h.detach().cpu(), "Z": z.detach().cpu(), "au_ids": list(core.au_ids)}, path)


@torch.no_grad()
def predict(model: torch.nn.Module, data: PreparedDataset, rows: np.ndarray, cfg: TrainConfig,
            device: torch.device) -> np.ndarray:
    """AU probabilities (n, N) for ``rows``: centre crop, eval descriptions."""
    core = model.module if hasattr(model, "module") else model
    core.eval()
    crop = core.cfg.img_size
    ds = FrameDataset(data, rows, load_size_for(crop), cache=cfg.num_workers == 0)
    loader = DataLoader(ds, batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    out = []
    for images, _, _ in progress(loader, desc="evaluating"):
        x = prepare_batch(images.to(device), crop, train=False)
        with _autocast(device, cfg.amp):
            out.append(torch.sigmoid(core(x).logits.float()).cpu())
    return torch.cat(out).numpy()


def _build(cfg: TrainConfig, data: PreparedDataset, variant: str, device: torch.device,
           backbone_weights: bool = True) -> hiva.HiVA:
    """The model of ``variant``; ``backbone_weights=False`` skips the ImageNet weights when a
    checkpoint's weights replace them anyway (no download needed)."""
    torch.manual_seed(cfg.seed)  # identical initialisation for a given seed
    mcfg = model_config(cfg, variant)
    if not backbone_weights:
        mcfg = dataclasses.replace(mcfg, pretrained=False)
    return hiva.HiVA(mcfg, data.au_ids).to(device)


def _wrap(model: hiva.HiVA, device: torch.device) -> torch.nn.Module:
    if _dist()[1] > 1:
        ids = [device.index] if device.type == "cuda" else None
        # every trainable parameter takes part in every step; the buffers (the cached frozen
        # BERT states, tens of MB for BERT-large) are identical on all ranks: not re-sent
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids,
                                                         broadcast_buffers=False)
    return model


def _finish(model: hiva.HiVA, stage: int, cfg: TrainConfig, data: PreparedDataset,
            run_dir: Path) -> Path:
    final = run_dir / "final.pt"
    if _is_main():
        signature = _signature(cfg, stage)
        atomic_save(dict(model=model.state_dict(), stage=stage, au_ids=list(data.au_ids),
                         model_config=dataclasses.asdict(model.cfg), train_config=cfg.to_dict(),
                         signature=signature, trained_on=trained_on(data, cfg.fold)), final)
        atomic_write_json(cfg.to_dict(), run_dir / "config.json")
        atomic_write_json(signature, run_dir / "signature.json")
        atomic_write_text(time.strftime("%Y-%m-%d %H:%M:%S\n"), run_dir / "DONE")
        # only now: a kill before DONE leaves last.pt to resume from
        (run_dir / "last.pt").unlink(missing_ok=True)
    _barrier()
    return final


def train_stage1(cfg: TrainConfig, data: PreparedDataset | None = None) -> RunResult:
    """Stage 1: (a) + (c) with L_au. Reuses a finished run (per ``cfg.if_exists``)."""
    setup_distributed()
    data = data or load_data(cfg)
    run_dir, finished = resolve_run_dir(stage1_dir(cfg), cfg.if_exists, _signature(cfg, 1))
    if finished:
        print(f"stage 1 already finished: {run_dir} (reused; if_exists='version' reruns it)")
        return RunResult(run_dir, run_dir / "final.pt", skipped=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    model = _build(cfg, data, "baseline", device)
    model.set_stage(1)
    train_rows, _ = data.split(cfg.fold)
    _fit(_wrap(model, device), 1, cfg, data, train_rows, run_dir, device)
    return RunResult(run_dir, _finish(model, 1, cfg, data, run_dir))


def load_stage1_checkpoint(cfg: TrainConfig, data: PreparedDataset,
                           path: str | Path | None = None) -> dict:
    """The stage-1 weights for ``cfg``, checked against its AU set, backbone, fold and seed."""
    if path is None:  # the finished stage-1 run of this config (else the default folder)
        path = (finished_run(cfg, 1) or stage1_dir(cfg)) / "final.pt"
    path = Path(path)
    fix = ("Run stage 1 first: papermill notebooks/02_train_stage1.ipynb out.ipynb "
           f"-p dataset {cfg.dataset} -p fold {cfg.fold} -p seed {cfg.seed}"
           + (" -p smoke True" if cfg.model_preset == "test-tiny" else ""))
    state = load_checkpoint(path, "stage-1 checkpoint", fix)
    if state.get("stage") != 1:
        raise CheckpointError(
            f"{path}: not a stage-1 checkpoint (stage={state.get('stage')}). {fix}")
    problems = []
    if list(state["au_ids"]) != list(data.au_ids):
        problems.append(f"AU set {state['au_ids']} vs data set {list(data.au_ids)}")
    saved, wanted = state["signature"], _signature(cfg, 1)
    for key in ("dataset", "fold", "seed", "model_preset"):
        if saved.get(key) != wanted[key]:
            problems.append(f"{key}: checkpoint {saved.get(key)!r} vs now {wanted[key]!r}")
    saved_model = saved.get("model") or {}
    for key, value in wanted["model"].items():
        if saved_model.get(key) != value:
            problems.append(f"model {key}: checkpoint {saved_model.get(key)!r} vs now {value!r}")
    if problems:
        raise CheckpointError(f"{path}: stage-1 checkpoint does not match this run: "
                              + "; ".join(problems) + f". {fix}")
    return state


def train_stage2(cfg: TrainConfig, data: PreparedDataset | None = None,
                 stage1_checkpoint: str | Path | None = None) -> RunResult:
    """Stage 2: the full model (variant ``cfg.variant``) from the stage-1 weights, Eq. 7."""
    setup_distributed()
    data = data or load_data(cfg)
    if 2 not in variants.VARIANTS[cfg.variant].stages:
        raise ValueError(f"variant {cfg.variant!r} has no stage 2; evaluate its stage-1 model "
                         "with run_variant()")
    run_dir, finished = resolve_run_dir(stage2_dir(cfg), cfg.if_exists, _signature(cfg, 2))
    if finished:
        print(f"stage 2 already finished: {run_dir} (reused; if_exists='version' reruns it)")
        return RunResult(run_dir, run_dir / "final.pt", skipped=True)
    state = load_stage1_checkpoint(cfg, data, stage1_checkpoint)
    run_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    model = _build(cfg, data, cfg.variant, device, backbone_weights=False)
    model.load_stage1(state["model"])
    model.set_stage(2)
    train_rows, _ = data.split(cfg.fold)
    _fit(_wrap(model, device), 2, cfg, data, train_rows, run_dir, device)
    return RunResult(run_dir, _finish(model, 2, cfg, data, run_dir))


def load_trained(checkpoint: str | Path, device: str = "cpu", state: dict | None = None
                 ) -> hiva.HiVA:
    """A trained model from a ``final.pt`` (stage 1 or 2; or its loaded ``state``), in eval
    mode. The backbone is built without its ImageNet weights: the checkpoint's replace them."""
    if state is None:
        state = load_checkpoint(checkpoint, "checkpoint",
                                "Train the model first (notebooks 02/03).")
    cfg = dataclasses.replace(config_from_dict(state["model_config"]), pretrained=False)
    model = hiva.HiVA(cfg, tuple(state["au_ids"]))
    model.set_stage(state["stage"])
    model.load_state_dict(state["model"])
    return model.to(resolve_device(device)).eval()


def evaluate_run(cfg: TrainConfig, checkpoint: Path, run_dir: Path,
                 data: PreparedDataset | None = None) -> tuple[dict, Path]:
    """Per-AU F1 on the test fold, written to results/ beside the config that made it.

    Results already there from the same checkpoint (same SHA-256) are reused. Results of
    another checkpoint (the committed reference results on a fresh clone, or an earlier run)
    are kept: this evaluation goes to the first free versioned sibling (fold1-v2, -v3...)."""
    data = data or load_data(cfg)
    state = load_checkpoint(checkpoint, "checkpoint", "Train the model first (notebooks 02/03).")
    check_held_out(state.get("trained_on"), data, cfg.fold, checkpoint)  # before any reuse
    base = results_dir(cfg, run_dir)
    sha = file_sha256(checkpoint)
    for done in finished_versions(base, "metrics.json"):
        metrics = json.loads((done / "metrics.json").read_text())
        if metrics.get("checkpoint_sha256") == sha:
            return metrics, done
    out_dir = first_free(base, "metrics.json")
    if out_dir != base:
        print(f"{base} holds results of another checkpoint (kept); these go to {out_dir}")
    device = resolve_device(cfg.device)
    model = load_trained(checkpoint, str(device), state)
    trained_with = _portable(state["train_config"])  # the config that made the checkpoint
    _, test_rows = data.split(cfg.fold)
    probs = predict(model, data, test_rows, cfg, device)
    labels = data.labels(test_rows)
    f1 = f1_per_au(probs, labels)
    keys = au_keys(data.au_ids)
    metrics = dict(dataset=cfg.dataset, variant=cfg.variant,
                   row_name=variants.VARIANTS[cfg.variant].row_name, seed=cfg.seed,
                   fold=cfg.fold, au_ids=list(data.au_ids),
                   f1={k: float(v) for k, v in zip(keys, f1, strict=True)},
                   mean_f1=float(f1.mean()),
                   all_positive_mean_f1=float(all_positive_f1(labels).mean()),
                   n_test=int(len(test_rows)), checkpoint=_portable_path(checkpoint),
                   checkpoint_sha256=sha, config=trained_with,
                   provenance=provenance(data.meta))
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_dir / "predictions.npz", probs=probs, labels=labels, rows=test_rows)
    pd.DataFrame([metrics["f1"]]).assign(mean=metrics["mean_f1"]).to_csv(
        out_dir / "f1.csv", index=False)
    atomic_write_json(trained_with, out_dir / "config.json")
    atomic_write_json(metrics, out_dir / "metrics.json")  # last: its presence means complete
    return metrics, out_dir


def _portable_path(path: str | Path) -> str:
    """``path`` relative to the project root when it lies inside it (results are committed and
    read on other machines), else as it is."""
    path, root = Path(path), project_root()
    return str(path.relative_to(root)) if path.is_absolute() and path.is_relative_to(root) \
        else str(path)


def _portable(config: dict) -> dict:
    """A config with its folders relative to the project root when they lie inside it."""
    out = dict(config)
    for key in ("data_root", "runs_root", "results_root"):
        out[key] = _portable_path(out[key])
    return out


def provenance(data_meta: dict) -> dict:
    """What else a result depends on: code commit, library versions, the data set's version."""
    import platform
    import subprocess

    import timm
    import transformers

    from hiva_lib import __version__

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=project_root(), capture_output=True,
                                 text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    status = git("status", "--porcelain", "--untracked-files=no", "--", "hiva_lib")
    return dict(hiva_lib=__version__, git_commit=git("rev-parse", "HEAD"),
                hiva_lib_modified=None if status is None else bool(status),
                python=platform.python_version(), torch=torch.__version__,
                torch_threads=torch.get_num_threads(),
                timm=timm.__version__, transformers=transformers.__version__,
                data={k: data_meta[k] for k in ("dataset", "source", "seed", "image_size",
                                                 "n_subjects", "frames_per_subject")
                      if k in data_meta})


def run_variant(cfg: TrainConfig, data: PreparedDataset | None = None,
                stage1_if_exists: str | None = None) -> RunResult:
    """Stage 1 (shared), then stage 2 of ``cfg.variant`` unless it is vision-only; evaluate.
    ``stage1_if_exists`` overrides ``cfg.if_exists`` for stage 1 (an ablation that reruns
    every variant with "version" shares one new stage-1 run: "skip" after the first)."""
    if cfg.variant not in variants.VARIANTS:
        raise ValueError(f"unknown variant {cfg.variant!r}; "
                         f"choose one of {list(variants.VARIANTS)}")
    data = data or load_data(cfg)
    result = train_stage1(dataclasses.replace(cfg, if_exists=stage1_if_exists or cfg.if_exists),
                          data)
    if 2 in variants.VARIANTS[cfg.variant].stages:  # from the stage-1 run just made or reused
        result = train_stage2(cfg, data, stage1_checkpoint=result.checkpoint)
    if _is_main():
        result.metrics, result.results_dir = evaluate_run(cfg, result.checkpoint,
                                                          result.run_dir, data)
    _barrier()
    return result


def aggregate_folds(results_root: str | Path, dataset: str, variant: str, seed: int) -> dict:
    """Mean per-AU F1 over the folds found for (dataset, variant, seed), written beside them."""
    base = Path(results_root) / dataset / variant / f"seed{seed}"
    runs = [d / "metrics.json" for d in latest_versions(p.parent for p in
                                                       base.glob("fold*/metrics.json"))]
    if not runs:
        raise FileNotFoundError(f"{base}: no fold results; run notebooks 02/03 first")
    per_fold = [json.loads(p.read_text()) for p in runs]
    keys = list(per_fold[0]["f1"])
    f1 = {k: float(np.mean([m["f1"][k] for m in per_fold])) for k in keys}
    summary = dict(dataset=dataset, variant=variant, seed=seed,
                   folds=[m["fold"] for m in per_fold], f1=f1,
                   mean_f1=float(np.mean(list(f1.values()))))
    atomic_write_json(summary, base / "aggregate.json")
    return summary
