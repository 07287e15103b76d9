"""Training configurations: the paper's hyper-parameters and the embedded CPU preset.

``paper`` holds Sec. IV's values (lr 1e-5 / 1e-6, lambda 1e-5, batch 128, 30 epochs, 224 px,
Swin-B, BERT-large) and is the default for BP4D, DISFA and GFT. ``synth-cpu`` is the documented
small preset with which the SynthFACS study runs on a laptop CPU in minutes: a random-init
ResNet-10-T at 80 px and MiniLM, so larger learning rates and few epochs (see docs/training.md).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from hiva_lib.engine.validate import check_train_values
from hiva_lib.model.config import ModelConfig
from hiva_lib.presets import SMOKE, TRAIN_PRESETS, default_preset, preset_config
from hiva_lib.project import OUTPUT_ROOT, default_roots, project_root


@dataclass
class TrainConfig:
    dataset: str = "synth-disfa"
    fold: int = 1
    variant: str = "full"  # a slug of hiva_lib.variants.VARIANTS
    seed: int = 0
    model_preset: str = "paper"  # a key of hiva_lib.presets.MODEL_PRESETS (it sets the image size)
    model_overrides: dict = field(default_factory=dict)
    epochs_stage1: int = 30
    epochs_stage2: int = 30
    batch_size: int = 128
    lr_stage1: float = 1e-5
    lr_stage2: float = 1e-6
    lambda_diff: float = 1e-5  # Eq. 7
    au_loss_reduction: str = "sum"  # Eq. 4 sums over AUs (ambiguity 4)
    weight_decay: float = 5e-4  # unstated in the paper; ME-GraphAU's AdamW value
    schedule: str = "cosine"  # unstated in the paper: "cosine" or "constant"
    num_workers: int | str = 4  # loader processes per rank; "auto": the cores per rank - 1
    device: str = "auto"  # "auto" -> cuda if available, else cpu
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    data_root: str = "data/prepared"  # an input cache, shared by every output root
    runs_root: str = f"{OUTPUT_ROOT}/runs"
    results_root: str = f"{OUTPUT_ROOT}/results"
    if_exists: str = "skip"  # finished runs: "skip" (reuse), "version" (new folder), "error"
    checkpoint_every: int = 0  # steps between mid-epoch checkpoints (0: epoch ends only)
    max_steps_per_epoch: int | None = None  # smoke runs
    save_text_embeddings: bool = True  # per-epoch H/Z for Fig. 5
    smoke: bool = False  # a smoke-size run (set by make_config(smoke=True)); not in signatures
    # GPU memory and speed (docs/training.md); none is part of a run's signature
    grad_accum_steps: int = 1  # micro-batches per optimizer step (the same update, less memory)
    micro_batch: int | str | None = None  # images per micro-batch; "auto": from free GPU memory
    grad_checkpointing: bool = False  # recompute the backbone's activations in the backward
    compile: bool = False  # torch.compile the backbone (changes the last digits)
    tf32: bool = False  # TF32 matmuls and convolutions on Ampere+ GPUs (changes numerics)
    cudnn_benchmark: bool = False  # let cuDNN pick its fastest kernels (not bit-reproducible)
    prefetch_factor: int = 2  # batches each loader worker prepares ahead (num_workers > 0)
    log_every: int = 20  # steps between reads of the losses from the GPU (the progress bar)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def make_config(dataset: str, preset: str | None = None, smoke: bool = False,
                **overrides) -> TrainConfig:
    """The config for ``dataset``: its default preset, then smoke size, then overrides.

    ``None`` overrides are ignored so notebook parameters can leave a value to the preset.
    Every value is checked first (:mod:`hiva_lib.engine.validate`): one ParameterError lists
    each bad one; ``model_overrides`` may be the JSON text papermill's ``-p`` passes.
    """
    preset = preset or (default_preset(dataset) if isinstance(dataset, str) else "paper")
    folders = {k: v for k, v in default_roots(smoke).items() if k != "figures_root"}
    values = {**folders, **TRAIN_PRESETS.get(preset, {}), **(SMOKE if smoke is True else {}),
              "smoke": smoke}
    values.update({k: v for k, v in overrides.items() if v is not None})
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    values = check_train_values(dataset, preset, smoke, values, fields)
    return resolve_paths(TrainConfig(dataset=dataset, **values))


def model_config(cfg: TrainConfig, variant: str) -> ModelConfig:
    """The model of ``variant`` under ``cfg``: its model preset, overrides, then the variant."""
    return preset_config(cfg.model_preset, variant, **cfg.model_overrides)


def resolve_paths(cfg: TrainConfig) -> TrainConfig:
    """Relative data/runs/results folders are taken relative to :func:`project_root`."""
    root = project_root()
    for key in ("data_root", "runs_root", "results_root"):
        path = Path(getattr(cfg, key))
        if not path.is_absolute():
            setattr(cfg, key, str(root / path))
    return cfg
