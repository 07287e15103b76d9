"""The notebook that trains a config again, for the hints of errors: the papermill command
and the parameters cell of notebook 02 or 03 that rebuild a :class:`TrainConfig`."""
from __future__ import annotations

from hiva_lib import hints
from hiva_lib.engine.config import TrainConfig, make_config

SPEED_PARAMS = ("num_workers", "grad_accum_steps", "micro_batch", "grad_checkpointing", "compile",
                "tf32", "cudnn_benchmark")  # notebooks 02-03 take them under the field's name
NOTEBOOK_PARAMS = {  # notebook parameter -> TrainConfig field, for the commands of hints
    "02_train_stage1": dict(fold="fold", seed="seed", epochs="epochs_stage1",
                            batch_size="batch_size", lr="lr_stage1", data_root="data_root",
                            runs_root="runs_root", results_root="results_root",
                            device="device", model_overrides="model_overrides",
                            **{f: f for f in SPEED_PARAMS}),
    "03_train_stage2": dict(fold="fold", seed="seed", variant="variant", epochs="epochs_stage2",
                            batch_size="batch_size", lr="lr_stage2", data_root="data_root",
                            runs_root="runs_root", results_root="results_root",
                            device="device", model_overrides="model_overrides",
                            **{f: f for f in SPEED_PARAMS}),
}


def _notebook_params(cfg: TrainConfig, notebook: str) -> tuple[dict, str]:
    """The parameters that rebuild ``cfg`` in ``notebook`` (every one that differs from the
    default of ``cfg.dataset`` and smoke size, and fold and seed), and a note on the fields
    that the notebook does not take."""
    smoke = bool(cfg.smoke)
    default = make_config(cfg.dataset, smoke=smoke)
    params: dict = {"dataset": cfg.dataset}
    for param, field in NOTEBOOK_PARAMS[notebook].items():
        value = getattr(cfg, field)
        if param in ("fold", "seed") or value != getattr(default, field):
            params[param] = value
    if smoke:
        params["smoke"] = True
    others = [f for f in ("model_preset", "max_steps_per_epoch", "weight_decay", "schedule",
                          "au_loss_reduction", "lambda_diff")
              if getattr(cfg, f) != getattr(default, f)]
    note = (f" (and {', '.join(f'{f}={getattr(cfg, f)!r}' for f in others)}, which the "
            "notebook does not take: call hiva_lib.engine.train with that config)") if others \
        else ""
    return params, note


def notebook_command(cfg: TrainConfig, notebook: str = "02_train_stage1") -> str:
    """The papermill command that runs ``notebook`` with ``cfg``: every parameter that
    differs from the default of ``cfg.dataset`` (and smoke size) is given."""
    params, note = _notebook_params(cfg, notebook)
    return hints.papermill_command(notebook, params) + note


def notebook_hint(cfg: TrainConfig, notebook: str = "02_train_stage1") -> str:
    """:func:`notebook_command` beside the same values for the notebook's parameters cell."""
    params, note = _notebook_params(cfg, notebook)
    return hints.run_hint(notebook, params) + note
