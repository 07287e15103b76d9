"""Evaluation: AU probabilities of a trained model on the test fold, per-AU F1 written to
results/ with the config and provenance that made them, and the mean over folds."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from hiva_lib import variants
from hiva_lib.data.au import au_keys
from hiva_lib.data.loader import FrameDataset, load_size_for, prepare_batch
from hiva_lib.data.prepared import PreparedDataset
from hiva_lib.engine import distributed, performance, runs
from hiva_lib.engine.checkpoint import load_checkpoint
from hiva_lib.engine.config import TrainConfig
from hiva_lib.engine.fold_guard import check_held_out
from hiva_lib.engine.provenance import checkpoint_record, portable_config, provenance
from hiva_lib.engine.recorded import read_metrics
from hiva_lib.errors import CheckpointError
from hiva_lib.integrity import (
    atomic_write_json,
    file_sha256,
    finished_versions,
    first_free,
)
from hiva_lib.metrics import all_positive_f1, f1_per_au
from hiva_lib.model import hiva
from hiva_lib.model.config import config_from_dict
from hiva_lib.model.text import cached_text
from hiva_lib.progress import progress

TRAIN_FIRST = "Train the model first (notebooks 02/03)."


def predict(model: torch.nn.Module, data: PreparedDataset, rows: np.ndarray, cfg: TrainConfig,
            device: torch.device) -> np.ndarray:
    """AU probabilities (n, N) for ``rows``: centre crop, eval descriptions (their text
    branch computed once: :func:`hiva_lib.model.text.cached_text`), under inference_mode.

    Under DDP each rank predicts every world-th batch (the same batches as one process) and
    every rank gathers them all, in order (a few KB per frame set)."""
    core = distributed.unwrap(model)
    core.eval()
    crop = core.cfg.img_size
    rank, world = distributed.rank_world()
    batches = [np.arange(i, min(i + cfg.batch_size, len(rows)))
               for i in range(0, len(rows), cfg.batch_size)][rank::world]
    workers = performance.loader_workers(cfg)
    ds = FrameDataset(data, rows, load_size_for(crop), cache=workers == 0)
    loader = DataLoader(ds, batch_sampler=batches, num_workers=workers,
                        pin_memory=device.type == "cuda")
    out = []
    with (torch.inference_mode(), distributed.autocast(device, cfg.amp),
          cached_text(core) as cached):
        for images, _, _ in progress(loader, desc="evaluating"):
            x = prepare_batch(images.to(device, non_blocking=True), crop, train=False)
            out.append(torch.sigmoid(cached(x).logits.float()).cpu())
    mine = [t.numpy() for t in out]
    if world == 1:
        return np.concatenate(mine)
    gathered: list = [None] * world
    dist.all_gather_object(gathered, mine)
    # batch j was predicted by rank j % world, as its (j // world)-th
    return np.concatenate([gathered[j % world][j // world]
                           for j in range(sum(len(g) for g in gathered))])


def load_trained(checkpoint: str | Path, device: str = "cpu", state: dict | None = None
                 ) -> hiva.HiVA:
    """A trained model from a ``final.pt`` (stage 1 or 2; or its loaded ``state``), in eval
    mode. The backbone is built without its ImageNet weights: the checkpoint's replace them."""
    if state is None:
        state = load_checkpoint(checkpoint, "checkpoint", TRAIN_FIRST)
    check_model_checkpoint(state, checkpoint)
    cfg = dataclasses.replace(config_from_dict(state["model_config"]), pretrained=False)
    model = hiva.HiVA(cfg, tuple(state["au_ids"]))
    model.set_stage(state["stage"])
    model.load_state_dict(state["model"])
    return model.to(distributed.resolve_device(device)).eval()


MODEL_KEYS = ("model", "model_config", "au_ids", "stage")


def check_model_checkpoint(state: object, checkpoint: str | Path) -> None:
    """A trained HiVA checkpoint (final.pt of notebooks 02/03) holds :data:`MODEL_KEYS`; any
    other torch file is one clear error."""
    missing = [k for k in MODEL_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        what = f"keys {sorted(state)[:8]}" if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{checkpoint}: not a trained HiVA checkpoint (no {', '.join(missing)}; it holds "
            f"{what}). Pass the final.pt of a run of notebooks 02/03 "
            "(runs/<dataset>/<preset>/<variant>/seed<s>/fold<k>/final.pt).")


def reused_results(base: Path, sha: str, fingerprint: str, content: str | None = None
                   ) -> tuple[dict, Path] | None:
    """Results already in a version of ``base`` from the checkpoint with SHA-256 ``sha``,
    computed on the data version ``fingerprint`` (results that record none are not reused)
    and, where they record it, on the images' content ``content``."""
    for done in finished_versions(base, "metrics.json"):
        metrics = read_metrics(done, f"Restore it, or move {done} away (the evaluation is "
                               "then made again into a new version).")
        if (metrics.get("checkpoint_sha256") == sha
                and metrics.get("data_fingerprint") == fingerprint
                and metrics.get("image_content", content) == content):
            return metrics, done
    return None


def check_data_version(state: dict, fingerprint: str, checkpoint: Path) -> None:
    """Refuse to evaluate a checkpoint trained on another version of the prepared data (its
    test fold may hold frames it trained on, and its scores would not be of this data)."""
    trained = (state.get("signature") or {}).get("data")
    if trained is not None and trained != fingerprint:
        raise CheckpointError(
            f"{checkpoint}: trained on {runs.describe_data(trained)}, but the prepared data is "
            f"now {runs.describe_data(fingerprint)} (prepared again since). Train again on "
            "this data (the run goes to a new version), or evaluate on the data it was "
            "trained on.")


def evaluate_run(cfg: TrainConfig, checkpoint: Path, run_dir: Path,
                 data: PreparedDataset | None = None) -> tuple[dict, Path]:
    """Per-AU F1 on the test fold, written to results/ beside the config that made it.
    Under DDP every rank calls it and predicts its share; rank 0 writes and returns the
    metrics (the other ranks: an empty dict).

    Results already there from the same checkpoint (same SHA-256) are reused. Results of
    another checkpoint (the committed reference results on a fresh clone, or an earlier run)
    are kept: this evaluation goes to the first free versioned sibling (fold1-v2, -v3...)."""
    if data is None:
        data = runs.load_data(cfg)
    state = load_checkpoint(checkpoint, "checkpoint", TRAIN_FIRST)
    check_held_out(state.get("trained_on"), data, cfg.fold, checkpoint)  # before any reuse
    fingerprint = data.fingerprint
    check_data_version(state, fingerprint, checkpoint)
    base = runs.results_dir(cfg, run_dir)
    sha = file_sha256(checkpoint)
    reused = reused_results(base, sha, fingerprint, data.content)
    distributed.barrier()  # every rank has decided before rank 0 may write
    if reused:
        return reused
    out_dir = first_free(base, "metrics.json")
    if out_dir != base and distributed.is_main():
        print(f"{base} holds results of another checkpoint or data version (kept); these go "
              f"to {out_dir}")
    device = distributed.resolve_device(cfg.device)
    model = load_trained(checkpoint, str(device), state)
    _, test_rows = data.split(cfg.fold)
    probs = predict(model, data, test_rows, cfg, device)  # every rank its share, gathered
    if not np.isfinite(probs).all():  # every rank holds them all: all stop together
        raise FloatingPointError(
            f"{checkpoint}: the model gives non-finite probabilities on {cfg.dataset} fold "
            f"{cfg.fold} (diverged weights); no results written. Train again with a lower lr.")
    if not distributed.is_main():
        distributed.barrier()  # rank 0 writes the results
        return {}, out_dir
    labels = data.labels(test_rows)
    trained_with = portable_config(state["train_config"])  # the config that made the checkpoint
    metrics = _metrics(cfg, data, probs, labels, checkpoint, sha, trained_with)
    out_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out_dir / "predictions.npz", probs=probs, labels=labels, rows=test_rows)
    pd.DataFrame([metrics["f1"]]).assign(mean=metrics["mean_f1"]).to_csv(
        out_dir / "f1.csv", index=False)
    atomic_write_json(trained_with, out_dir / "config.json")
    atomic_write_json(metrics, out_dir / "metrics.json")  # last: its presence means complete
    distributed.barrier()
    return metrics, out_dir


def _metrics(cfg: TrainConfig, data: PreparedDataset, probs: np.ndarray, labels: np.ndarray,
             checkpoint: Path, sha: str, trained_with: dict) -> dict:
    """metrics.json: per-AU F1, its mean, the all-positive reference, and what made them."""
    f1 = f1_per_au(probs, labels)
    keys = au_keys(data.au_ids)
    return dict(dataset=cfg.dataset, variant=cfg.variant,
                row_name=variants.VARIANTS[cfg.variant].row_name, seed=cfg.seed,
                fold=cfg.fold, au_ids=list(data.au_ids),
                f1={k: float(v) for k, v in zip(keys, f1, strict=True)},
                mean_f1=float(f1.mean()),
                all_positive_mean_f1=float(all_positive_f1(labels).mean()),
                n_test=int(len(labels)), checkpoint=checkpoint_record(checkpoint, cfg.runs_root),
                checkpoint_sha256=sha, data_fingerprint=data.fingerprint,
                image_content=data.content,
                config=trained_with, provenance=provenance(data.meta, trained_with))


def aggregate_folds(results_root: str | Path, dataset: str, variant: str, seed: int) -> dict:
    """Mean per-AU F1 over the folds found for (dataset, variant, seed), written beside them."""
    folds = runs.newest_fold_results(results_root, dataset, variant, seed)
    if not folds:
        raise FileNotFoundError(f"{runs.seed_results(results_root, dataset, variant, seed)}: "
                                "no fold results; run notebooks 02/03 first")
    per_fold = [read_metrics(d, f"Restore it, or move {d} away and evaluate that fold again "
                             "(notebooks 02/03).") for d in folds]
    runs.check_one_data_version([(d, m.get("data_fingerprint")) for d, m in
                                 zip(folds, per_fold, strict=True)],
                                f"aggregate of {dataset}/{variant}/seed{seed}")
    keys = list(per_fold[0]["f1"])
    f1 = {k: float(np.mean([m["f1"][k] for m in per_fold])) for k in keys}
    summary = dict(dataset=dataset, variant=variant, seed=seed,
                   folds=[m["fold"] for m in per_fold], f1=f1,
                   mean_f1=float(np.mean(list(f1.values()))))
    atomic_write_json(summary, runs.aggregate_path(results_root, dataset, variant, seed))
    return summary
