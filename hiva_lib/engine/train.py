"""Two-stage training (Sec. III-E, Alg. 1; Eq. 4 and Eq. 7): the entry points.

Stage 1 trains (a) visual encoding + (c) AU branches and graph with L_au (Eq. 4). Its
checkpoint depends on neither the text branch nor the variant, so it is trained once per
(data set, model preset, seed, fold) and shared by every stage-2 variant. Stage 2 starts from it
and trains the full model with L_au + lambda L_diff (Eq. 7). The vision-only Baseline is the
stage-1 model itself, evaluated as is.

The engine's other jobs live beside this module: the folders, versions and signatures of runs
and results in :mod:`~hiva_lib.engine.runs`, the loop in :mod:`~hiva_lib.engine.loop`,
evaluation in :mod:`~hiva_lib.engine.evaluate`, DDP and devices in
:mod:`~hiva_lib.engine.distributed`, provenance in :mod:`~hiva_lib.engine.provenance`.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from hiva_lib import create_model, variants
from hiva_lib.data.prepared import PreparedDataset
from hiva_lib.engine import performance
from hiva_lib.engine.checkpoint import atomic_save, check_finished, load_checkpoint
from hiva_lib.engine.config import TrainConfig, model_config
from hiva_lib.engine.distributed import (
    barrier,
    is_main,
    resolve_device,
    setup_distributed,
    wrap,
)
from hiva_lib.engine.evaluate import evaluate_run
from hiva_lib.engine.fold_guard import trained_on
from hiva_lib.engine.loop import fit_stage
from hiva_lib.engine.notebook_hints import notebook_hint
from hiva_lib.engine.run_lock import run_lock
from hiva_lib.engine.runs import (
    describe_data,
    finished_run,
    load_data,
    resolve_run_dir,
    run_dir,
    run_signature,
    same_signature,
    signature,
    stage1_dir,
    stage2_dir,
)
from hiva_lib.engine.validate import check_writable
from hiva_lib.errors import CheckpointError
from hiva_lib.integrity import atomic_write_json, atomic_write_text, write_checksum
from hiva_lib.model import hiva
from hiva_lib.model.pretrained import LITE0, PretrainedUnavailableError, lite0_weights_path
from hiva_lib.progress import say


@dataclass
class RunResult:
    run_dir: Path
    checkpoint: Path
    metrics: dict | None = None
    results_dir: Path | None = None
    skipped: bool = False


def _build(cfg: TrainConfig, data: PreparedDataset, variant: str, device: torch.device,
           backbone_weights: bool = True) -> hiva.HiVA:
    """The model of ``variant``; ``backbone_weights=False`` skips the ImageNet weights when a
    checkpoint's weights replace them anyway (no download needed)."""
    torch.manual_seed(cfg.seed)  # identical initialisation for a given seed
    weights = {} if backbone_weights else {"pretrained": False}
    model = create_model(cfg.model_preset, variant, cfg.dataset, au_ids=data.au_ids,
                         **{**cfg.model_overrides, **weights}).to(device)
    # grad_checkpointing / compile / tf32 / cudnn_benchmark, before any DDP wrapping
    performance.set_backend_flags(cfg, device)
    performance.prepare_model(model, cfg)
    return model


def _finish(model: hiva.HiVA, stage: int, cfg: TrainConfig, data: PreparedDataset,
            run_dir: Path) -> Path:
    """final.pt, config.json, signature.json and DONE; last.pt removed only then."""
    final = run_dir / "final.pt"
    if is_main():
        sig = signature(cfg, stage)
        atomic_save(dict(model=model.state_dict(), stage=stage, au_ids=list(data.au_ids),
                         model_config=dataclasses.asdict(model.cfg), train_config=cfg.to_dict(),
                         signature=sig, trained_on=trained_on(data, cfg.fold)), final)
        write_checksum(final)  # final.pt.sha256: every later load checks it
        atomic_write_json(cfg.to_dict(), run_dir / "config.json")
        atomic_write_json(sig, run_dir / "signature.json")
        atomic_write_text(time.strftime("%Y-%m-%d %H:%M:%S\n"), run_dir / "DONE")
        # only now: a kill before DONE leaves last.pt to resume from
        (run_dir / "last.pt").unlink(missing_ok=True)
    barrier()
    return final


def check_outputs(cfg: TrainConfig) -> None:
    """The folders a run writes, checked writable before any training."""
    check_writable(dict(runs_root=cfg.runs_root, results_root=cfg.results_root))


def check_before_writing(cfg: TrainConfig, stage: int) -> torch.device:
    """What would otherwise fail only after the run folder is made: the device, and (stage
    1, which loads them) the backbone's pretrained weight file. Returns the device."""
    device = resolve_device(cfg.device)
    pretrained = model_config(cfg, "baseline").pretrained
    if stage == 1 and isinstance(pretrained, str):
        if pretrained.strip().lower() == LITE0:
            lite0_weights_path()
        elif not Path(pretrained).expanduser().is_file():
            raise PretrainedUnavailableError(
                f"{pretrained}: backbone weight file not found (model_overrides / model preset "
                "'pretrained'); set it to an existing .safetensors/.pth file, True (download "
                "from the hub) or False. Nothing was written.")
    return device


def _start(run_dir: Path, cfg: TrainConfig, stage: int) -> None:
    """The run folder with its signature.json written at the start: an interrupted run says
    which settings it resumes with (a run with other settings takes the next version)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if is_main():
        atomic_write_json(signature(cfg, stage), run_dir / "signature.json")


def _reused(run_dir: Path, stage: int, how: str) -> RunResult:
    """A finished run, reused after its checkpoint is checked (a damaged one never is)."""
    say(f"stage {stage} {how}: {run_dir} (reused; if_exists='version' reruns it)")
    return RunResult(run_dir, check_finished(run_dir), skipped=True)


def _train(cfg: TrainConfig, stage: int, fit) -> RunResult:
    """Resolve the run folder of ``cfg``'s ``stage``, reuse it when finished, else lock it and
    ``fit(run_dir, device)``. A run another process finished while this one waited for the
    lock is reused only when its settings (signature) are these; else the folder is resolved
    again (the run goes to the next free version)."""
    device = check_before_writing(cfg, stage)
    wanted = signature(cfg, stage)
    while True:
        folder, finished = resolve_run_dir(run_dir(cfg, stage), cfg.if_exists, wanted)
        if finished:
            return _reused(folder, stage, "already finished")
        made = [p for p in (folder, *folder.parents) if not p.exists()]
        folder.mkdir(parents=True, exist_ok=True)
        try:
            with run_lock(folder, enabled=is_main()):
                if not (folder / "DONE").exists():
                    try:
                        _start(folder, cfg, stage)
                        fit(folder, device)
                    except BaseException:  # under the lock: no other run is in the folder
                        _forget_unsaved(folder)
                        raise
                    return RunResult(folder, folder / "final.pt")
                if same_signature(run_signature(folder), wanted):
                    return _reused(folder, stage, "finished meanwhile by another process")
        except BaseException:
            _remove_empty(made)
            raise
        print(f"{folder}: finished meanwhile by another process with other settings (kept); "
              "looking for this run's folder again")


def _forget_unsaved(folder: Path) -> None:
    """A run that stopped before it saved anything to resume from leaves no signature.json
    (alone, it is no run)."""
    if is_main() and not any(folder.glob("*.pt")):
        (folder / "signature.json").unlink(missing_ok=True)


def _remove_empty(made: list[Path]) -> None:
    """The folders a refused run made (deepest first), while empty: a refusal leaves no
    empty run folder behind; anything written there stays."""
    for folder in made if is_main() else []:
        try:
            folder.rmdir()
        except OSError:
            return


def train_stage1(cfg: TrainConfig, data: PreparedDataset | None = None) -> RunResult:
    """Stage 1: (a) + (c) with L_au. Reuses a finished run (per ``cfg.if_exists``)."""
    setup_distributed()
    check_outputs(cfg)
    data = data or load_data(cfg)

    def fit(folder: Path, device: torch.device) -> None:
        model = _build(cfg, data, "baseline", device)
        model.set_stage(1)
        train_rows, _ = data.split(cfg.fold)
        fit_stage(wrap(model, device), 1, cfg, data, train_rows, folder, device)
        _finish(model, 1, cfg, data, folder)

    return _train(cfg, 1, fit)


def _checkpoint_data_version(state: dict, path: Path) -> str | None:
    """The data version a checkpoint was trained on: its own record, else its run folder's
    ``signature.json`` (where ``engine.adopt`` records it, after checks, for runs saved
    before data fingerprints; the checkpoint file itself is never rewritten)."""
    if state["signature"].get("data"):
        return state["signature"]["data"]
    return (run_signature(path.parent) or {}).get("data")


def _stage1_problems(state: dict, cfg: TrainConfig, data: PreparedDataset,
                     path: Path) -> list[str]:
    """How a stage-1 checkpoint differs from what ``cfg`` and ``data`` need."""
    problems = []
    if list(state["au_ids"]) != list(data.au_ids):
        problems.append(f"AU set {state['au_ids']} vs data set {list(data.au_ids)}")
    saved, wanted = state["signature"], signature(cfg, 1)
    for key in ("dataset", "fold", "seed", "model_preset"):
        if saved.get(key) != wanted[key]:
            problems.append(f"{key}: checkpoint {saved.get(key)!r} vs now {wanted[key]!r}")
    trained_on = _checkpoint_data_version(state, path)
    if trained_on != wanted["data"]:  # another version of the prepared data
        problems.append(f"trained on {describe_data(trained_on)}, the data is now "
                        f"{describe_data(wanted['data'])}")
    if "images" in saved and saved["images"] != wanted.get("images"):  # changed in place
        problems.append(f"trained on images of content {str(saved['images'])[:12]} "
                        f"(images.sha256), the images are now {str(wanted.get('images'))[:12]}")
    saved_model = saved.get("model") or {}
    for key, value in wanted["model"].items():
        if saved_model.get(key) != value:
            problems.append(f"model {key}: checkpoint {saved_model.get(key)!r} vs now {value!r}")
    return problems


def load_stage1_checkpoint(cfg: TrainConfig, data: PreparedDataset,
                           path: str | Path | None = None) -> dict:
    """The stage-1 weights for ``cfg``, checked against its AU set, backbone, fold and seed."""
    if path is None:  # the finished stage-1 run of this config (else the default folder)
        path = (finished_run(cfg, 1) or stage1_dir(cfg)) / "final.pt"
    path = Path(path)
    state = load_checkpoint(path, "stage-1 checkpoint",
                            f"Run stage 1 first: {notebook_hint(cfg)}")
    if state.get("stage") != 1:
        raise CheckpointError(f"{path}: not a stage-1 checkpoint (stage={state.get('stage')}). "
                              + _foreign_stage1_fix(cfg, path))
    problems = _stage1_problems(state, cfg, data, path)
    if problems:
        raise CheckpointError(f"{path}: stage-1 checkpoint does not match this run: "
                              + "; ".join(problems) + ". " + _foreign_stage1_fix(cfg, path))
    return state


def _foreign_stage1_fix(cfg: TrainConfig, path: Path) -> str:
    """How to get past a stage-1 checkpoint of another run in this run's folder: stage 1
    itself would reuse (or refuse) that folder, so the way out is a folder of its own."""
    return (f"Move {path.parent} away, or train stage 1 for this run into a new version folder "
            f"(add -p if_exists version): {notebook_hint(cfg)}")


def train_stage2(cfg: TrainConfig, data: PreparedDataset | None = None,
                 stage1_checkpoint: str | Path | None = None) -> RunResult:
    """Stage 2: the full model (variant ``cfg.variant``) from the stage-1 weights, Eq. 7."""
    setup_distributed()
    check_outputs(cfg)
    data = data or load_data(cfg)
    if 2 not in variants.VARIANTS[cfg.variant].stages:
        raise ValueError(f"variant {cfg.variant!r} has no stage 2; evaluate its stage-1 model "
                         "with run_variant()")
    state: dict = {}

    def fit(folder: Path, device: torch.device) -> None:
        if not state:  # the folder was finished when first looked at, and no longer is
            state.update(load_stage1_checkpoint(cfg, data, stage1_checkpoint))
        model = _build(cfg, data, cfg.variant, device, backbone_weights=False)
        model.load_stage1(state["model"])
        model.set_stage(2)
        train_rows, _ = data.split(cfg.fold)
        fit_stage(wrap(model, device), 2, cfg, data, train_rows, folder, device)
        _finish(model, 2, cfg, data, folder)

    folder, finished = resolve_run_dir(stage2_dir(cfg), cfg.if_exists, signature(cfg, 2))
    if not finished:  # checked (and loaded) before any folder is made
        check_before_writing(cfg, 2)
        state.update(load_stage1_checkpoint(cfg, data, stage1_checkpoint))
    return _train(cfg, 2, fit)


def run_variant(cfg: TrainConfig, data: PreparedDataset | None = None,
                stage1_if_exists: str | None = None) -> RunResult:
    """Stage 1 (shared), then stage 2 of ``cfg.variant`` unless it is vision-only; evaluate.
    ``stage1_if_exists`` overrides ``cfg.if_exists`` for stage 1 (an ablation that reruns
    every variant with "version" shares one new stage-1 run: "skip" after the first)."""
    if cfg.variant not in variants.VARIANTS:
        raise ValueError(f"unknown variant {cfg.variant!r}; "
                         f"choose one of {list(variants.VARIANTS)}")
    check_outputs(cfg)
    data = data or load_data(cfg)
    result = train_stage1(dataclasses.replace(cfg, if_exists=stage1_if_exists or cfg.if_exists),
                          data)
    if 2 in variants.VARIANTS[cfg.variant].stages:  # from the stage-1 run just made or reused
        result = train_stage2(cfg, data, stage1_checkpoint=result.checkpoint)
    # every rank predicts its share of the test fold; rank 0 writes the results
    result.metrics, result.results_dir = evaluate_run(cfg, result.checkpoint, result.run_dir,
                                                      data)
    return result
