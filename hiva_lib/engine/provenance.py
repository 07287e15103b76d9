"""What a result depends on besides its config: the code commit (git), library versions, the
data set's version; and folders written relative to the project root (results are committed
and read on other machines)."""
from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import torch

from hiva_lib.project import project_root


def portable_path(path: str | Path) -> str:
    """``path`` relative to the project root when it lies inside it, else as it is."""
    path, root = Path(path), project_root()
    return str(path.relative_to(root)) if path.is_absolute() and path.is_relative_to(root) \
        else str(path)


def checkpoint_record(checkpoint: str | Path, runs_root: str | Path) -> str:
    """How metrics.json names its checkpoint: relative to the runs root (``<dataset>/<preset>/
    <variant>/seed<s>/fold<k>/final.pt``), so that committed results name no folder of the
    machine that trained them; a checkpoint outside the runs root as :func:`portable_path`."""
    checkpoint, root = Path(checkpoint).resolve(), Path(runs_root).resolve()
    return str(checkpoint.relative_to(root)) if checkpoint.is_relative_to(root) \
        else portable_path(checkpoint)


def recorded_checkpoint(metrics: dict) -> Path:
    """The checkpoint a metrics.json names, as a path here: a relative name under the runs
    root its config records (itself relative to the project, or absolute), an absolute one (a
    result written before checkpoints were recorded relative) as it is."""
    recorded = Path(metrics.get("checkpoint") or "")
    if recorded.is_absolute():
        return recorded
    runs_root = Path(metrics.get("config", {}).get("runs_root", ""))
    return (runs_root if runs_root.is_absolute() else project_root() / runs_root) / recorded


def portable_config(config: dict) -> dict:
    """A config with its folders relative to the project root when they lie inside it."""
    out = dict(config)
    for key in ("data_root", "runs_root", "results_root"):
        out[key] = portable_path(out[key])
    return out


def git(*args: str) -> str | None:
    """The output of ``git args`` in the project root, or None where git cannot tell."""
    try:
        out = subprocess.run(["git", *args], cwd=project_root(), capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


# training options that leave a run's meaning (and signature) alone but change the last digits
# of its numbers on a GPU: recorded with each result (docs/training.md)
NUMERICS_FIELDS = ("amp", "tf32", "compile", "cudnn_benchmark", "grad_accum_steps",
                   "micro_batch", "grad_checkpointing")


def provenance(data_meta: dict, train_config: dict | None = None) -> dict:
    """What else a result depends on: code commit, library versions, the data set's version,
    and (given the config that trained it) the options that change its last digits."""
    import numpy
    import timm
    import transformers

    from hiva_lib import __version__

    status = git("status", "--porcelain", "--untracked-files=no", "--", "hiva_lib")
    return dict(hiva_lib=__version__, git_commit=git("rev-parse", "HEAD"),
                hiva_lib_modified=None if status is None else bool(status),
                python=platform.python_version(), torch=torch.__version__,
                torch_threads=torch.get_num_threads(),
                timm=timm.__version__, transformers=transformers.__version__,
                numpy=numpy.__version__,  # with torch, timm, transformers: the last digits
                data={k: data_meta[k] for k in ("dataset", "source", "seed", "image_size",
                                                 "n_subjects", "frames_per_subject")
                      if k in data_meta},
                **({} if train_config is None else {"numerics": {
                    k: train_config.get(k) for k in NUMERICS_FIELDS}}))
