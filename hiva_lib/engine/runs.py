"""Where runs and results live: every runs/ and results/ path, run versions and signatures,
and the prepared data set a config names (:func:`load_data`).

Folders (``cfg.runs_root`` / ``cfg.results_root``)::

    runs/<dataset>/<model_preset>/stage1/seed<s>/fold<k>/         final.pt, final.pt.sha256,
                                                                  last.pt, log.csv, DONE
    runs/<dataset>/<model_preset>/<variant>/seed<s>/fold<k>/      the same, + text_emb/epochNNN.pt
    results/<dataset>/<variant>/seed<s>/fold<k>/                  metrics.json, f1.csv,
                                                                  predictions.npz, config.json
    results/<dataset>/<variant>/seed<s>/aggregate.json            mean over the folds
    results/<dataset>/ablation_status.csv, results/<dataset>/report/

A run that is done again never overwrites a finished one: it goes to a versioned sibling
(``fold1-v2``, ``fold1-v3``...; files: ``name-v2.csv``). A finished run is reused only when
its signature (the config values that define it, and the version of the prepared data it was
trained on: :func:`hiva_lib.data.prepared.data_fingerprint`) equals the one asked for. An
interrupted run (``last.pt``) is kept for resuming with its own settings: a run with other
settings goes to the next free version. A run folder being trained holds ``LOCK`` (the pid),
so a second identical run refuses instead of training the same folder
(:mod:`hiva_lib.engine.run_lock`).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from hiva_lib.data.prepared import (
    DatasetError,
    PreparedDataset,
    data_fingerprint,
    image_content,
    load_prepared,
    prepare_hint,
)
from hiva_lib.engine.checkpoint import load_checkpoint
from hiva_lib.engine.config import TrainConfig, model_config
from hiva_lib.errors import CheckpointError
from hiva_lib.integrity import (
    finished_versions,
    latest_versions,
    read_json,
    run_version,
    symlink_loop,
    versioned,
    versions,
)


# ----------------------------------------------------------------------------- paths
def data_dir(cfg: TrainConfig) -> Path:
    """data/prepared/<dataset>/: the prepared data set of ``cfg``."""
    return Path(cfg.data_root) / cfg.dataset


def load_data(cfg: TrainConfig) -> PreparedDataset:
    """The prepared data set of ``cfg``, or one error saying how to prepare it."""
    root = data_dir(cfg)
    loop = symlink_loop(cfg.data_root, "data_root")
    if loop:
        raise DatasetError(f"{loop} {prepare_hint(cfg.dataset)}")
    if not (root / "index.csv").exists():
        raise DatasetError(f"{root}: data set {cfg.dataset!r} is not prepared. "
                           + prepare_hint(cfg.dataset))
    return load_prepared(root)


def fold_name(fold: int) -> str:
    return f"fold{fold}"


def seed_name(seed: int) -> str:
    return f"seed{seed}"


def stage1_dir(cfg: TrainConfig) -> Path:
    """The stage-1 run of ``cfg`` (shared by every variant of its data set, preset, seed, fold)."""
    return (Path(cfg.runs_root) / cfg.dataset / cfg.model_preset / "stage1"
            / seed_name(cfg.seed) / fold_name(cfg.fold))


def stage2_dir(cfg: TrainConfig) -> Path:
    return (Path(cfg.runs_root) / cfg.dataset / cfg.model_preset / cfg.variant
            / seed_name(cfg.seed) / fold_name(cfg.fold))


def run_dir(cfg: TrainConfig, stage: int) -> Path:
    return stage1_dir(cfg) if stage == 1 else stage2_dir(cfg)


def dataset_results(results_root: str | Path, dataset: str) -> Path:
    """results/<dataset>/: every variant's results of one data set."""
    return Path(results_root) / dataset


def seed_results(results_root: str | Path, dataset: str, variant: str, seed: int) -> Path:
    """results/<dataset>/<variant>/seed<s>/: the fold folders and aggregate.json."""
    return dataset_results(results_root, dataset) / variant / seed_name(seed)


def fold_results(results_root: str | Path, dataset: str, variant: str, seed: int,
                 fold: int) -> Path:
    """results/<dataset>/<variant>/seed<s>/fold<k>/ (unversioned)."""
    return seed_results(results_root, dataset, variant, seed) / fold_name(fold)


def results_dir(cfg: TrainConfig, run: Path) -> Path:
    """The results folder of ``run``: a versioned run (fold1-v2) gets a versioned results
    folder of the same name."""
    return seed_results(cfg.results_root, cfg.dataset, cfg.variant, cfg.seed) / run.name


def aggregate_path(results_root: str | Path, dataset: str, variant: str, seed: int) -> Path:
    return seed_results(results_root, dataset, variant, seed) / "aggregate.json"


def ablation_status_path(results_root: str | Path, dataset: str) -> Path:
    return dataset_results(results_root, dataset) / "ablation_status.csv"


def report_dir(results_root: str | Path, dataset: str) -> Path:
    return dataset_results(results_root, dataset) / "report"


def fold_of(folder_name: str) -> int | None:
    """``fold3`` / ``fold3-v2`` -> 3; None for a folder that is not a fold run."""
    digits = run_version(folder_name)[0].removeprefix("fold")
    return int(digits) if digits.isdigit() and folder_name.startswith("fold") else None


def finished_results(results_root: str | Path, dataset: str) -> list[Path]:
    """Every results folder of ``dataset`` holding metrics.json (every version), any
    variant/seed/fold."""
    base = dataset_results(results_root, dataset)
    return [p.parent for p in base.glob("*/seed*/fold*/metrics.json")
            if fold_of(p.parent.name) is not None]


def newest_fold_results(results_root: str | Path, dataset: str, variant: str, seed: int,
                        fold: int | None = None) -> list[Path]:
    """The newest version of each fold's results of (dataset, variant, seed) that holds
    metrics.json; of ``fold`` only (fold1, fold1-v2; not fold10) when given."""
    base = seed_results(results_root, dataset, variant, seed)
    runs = [p.parent for p in base.glob("fold*/metrics.json")
            if fold is None or run_version(p.parent.name)[0] == fold_name(fold)]
    return latest_versions(runs)


# ----------------------------------------------------------------------------- signatures
# The model fields that define the stage-1 model (a)+(c): a stage-2-only switch (ddca_mode,
# fusion, descriptions...) reuses the same stage-1 checkpoint.
STAGE1_MODEL_FIELDS = ("backbone", "backbone_kwargs", "pretrained", "img_size", "input_mean",
                       "input_std", "backbone_trainable", "dim", "graph_k")

# The TrainConfig fields that define a run. Anything else (smoke, devices, workers, folders,
# speed options) leaves a finished run reusable, and adding such a field to TrainConfig keeps
# the signatures of every earlier run.
SIGNATURE_FIELDS = ("dataset", "fold", "seed", "model_preset", "batch_size",
                    "au_loss_reduction", "weight_decay", "schedule", "max_steps_per_epoch")
STAGE_FIELDS = {1: ("epochs_stage1", "lr_stage1"),
                2: ("variant", "epochs_stage2", "lr_stage2", "lambda_diff")}
# Model fields added after finished runs were saved: at these values they are left out of the
# signature, so runs saved before the field existed are still found; any other value is part
# of the run's identity.
LATER_MODEL_DEFAULTS: dict[str, Any] = {"text_control": "none", "lambda_diff": None,
                                        "au_distinction": "ldiff_h", "vision_stage2": False,
                                        "cdca_stop_grad_z": False, "ddca_stop_grad_z": False,
                                        "text_frozen_stage2": False}


def _model_signature(model: dict) -> dict:
    return {k: v for k, v in model.items()
            if k not in LATER_MODEL_DEFAULTS or v != LATER_MODEL_DEFAULTS[k]}


_FINGERPRINTS: dict[tuple, str] = {}


def data_version(cfg: TrainConfig) -> str | None:
    """The fingerprint of ``cfg``'s prepared data set (None while it is not prepared);
    cached by the size and modification time of index.csv and meta.json."""
    root = data_dir(cfg)
    try:
        key = (str(root), *((p.stat().st_size, p.stat().st_mtime_ns)
                            for p in (root / "index.csv", root / "meta.json")))
    except OSError:
        return None
    if key not in _FINGERPRINTS:
        _FINGERPRINTS[key] = data_fingerprint(root)
    return _FINGERPRINTS[key]


def describe_data(fingerprint: str | None) -> str:
    """A data version for messages: its first 12 hex digits, or 'unknown data version'."""
    return f"data version {fingerprint[:12]}" if fingerprint else \
        "unknown data version (recorded before data fingerprints)"


def images_version(cfg: TrainConfig) -> str | None:
    """The content of ``cfg``'s training images: the SHA-256 of the prepared data set's
    ``images.sha256`` (:func:`hiva_lib.data.prepared.image_content`, as results record it);
    None without one."""
    try:
        return image_content(data_dir(cfg))
    except OSError:
        return None


def signature(cfg: TrainConfig, stage: int) -> dict:
    """The config values that must match for a checkpoint to be resumed or reused, with the
    fingerprint of the prepared data (``data``) and of its images' content (``images``, where
    the data set has an image manifest): images changed in place, with their manifest made
    again, are another training set."""
    d = cfg.to_dict()
    sig = {k: d[k] for k in (*SIGNATURE_FIELDS, *STAGE_FIELDS[stage])}
    sig["data"] = data_version(cfg)
    images = images_version(cfg)
    if images is not None:
        sig["images"] = images
    model = _model_signature(
        dataclasses.asdict(model_config(cfg, "baseline" if stage == 1 else cfg.variant)))
    sig["model"] = ({k: model[k] for k in STAGE1_MODEL_FIELDS} if stage == 1
                    else {**model, "stage1": signature(cfg, 1)})
    return json.loads(json.dumps(sig))  # as saved: tuples become lists


def as_saved(wanted: dict, saved: dict | None) -> dict:
    """``wanted`` as a run saved before signatures recorded the images' content would have
    recorded it: without ``images`` (also in the stage-1 part of a stage-2 signature) where
    ``saved`` has none. Such runs stay reusable; a run that recorded its images must match."""
    if not isinstance(saved, dict):
        return wanted
    out = dict(wanted)
    if "images" not in saved:
        out.pop("images", None)
    model, saved_model = out.get("model"), saved.get("model")
    if isinstance(model, dict) and isinstance(model.get("stage1"), dict):
        saved_stage1 = saved_model.get("stage1") if isinstance(saved_model, dict) else None
        out["model"] = {**model, "stage1": as_saved(model["stage1"], saved_stage1)}
    return out


def same_signature(saved: dict | None, wanted: dict) -> bool:
    """A saved signature is the one wanted (:func:`as_saved` for runs saved before image
    content was recorded)."""
    return _canonical(saved) == _canonical(as_saved(wanted, saved))


def mismatch(saved: dict, wanted: dict) -> list[str]:
    """``key: checkpoint X vs now Y`` for each value of ``wanted`` that ``saved`` differs in."""
    return [f"{k}: checkpoint {saved.get(k)!r} vs now {v!r}"
            for k, v in as_saved(wanted, saved).items() if saved.get(k) != v]


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def run_signature(run: Path) -> dict | None:
    """The signature (the config values that define the run) a finished run was saved with."""
    path = run / "signature.json"
    if path.exists():
        return read_json(path, f"Restore it, or move the run folder {run} away and run again "
                         "(or train into a new version: -p if_exists version).")
    final = run / "final.pt"  # runs finished before signature.json existed
    if final.exists():
        return load_checkpoint(final, "checkpoint", f"Move the run folder {run} away."
                               ).get("signature")
    return None


def find_finished(base: Path, wanted: dict | None = None) -> Path | None:
    """The newest finished version of ``base`` saved with signature ``wanted`` (any if None)."""
    same = [v for v in finished_versions(base) if wanted is None
            or same_signature(run_signature(v), wanted)]
    return same[-1] if same else None


def finished_run(cfg: TrainConfig, stage: int) -> Path | None:
    """The finished run of ``cfg`` (stage 1, or the stage 2 of ``cfg.variant``) that
    ``if_exists="skip"`` reuses: the newest version saved with the same settings."""
    return find_finished(run_dir(cfg, stage), signature(cfg, stage))


def started_signature(folder: Path) -> dict | None:
    """The signature of an interrupted run in ``folder`` (one with ``last.pt`` to resume
    from), or None when there is nothing to resume."""
    if not (folder / "last.pt").exists():
        return None
    record = folder / "signature.json"  # written when the run started
    if record.exists():
        return read_json(record, f"Restore it, or move the run folder {folder} away.")
    return load_checkpoint(folder / "last.pt", "resume checkpoint",
                           "Move the run folder away.").get("signature")


def _other_settings_note(kept: Path, wanted: dict | None) -> str:
    saved = run_signature(kept) or {}
    if wanted and saved.get("data") != wanted.get("data"):
        return (f"{kept} holds a finished run of {describe_data(saved.get('data'))}, not of "
                f"this {describe_data(wanted.get('data'))}: it is kept, never reused")
    if wanted and saved.get("images", wanted.get("images")) != wanted.get("images"):
        return (f"{kept} holds a finished run trained on other image content (images.sha256 "
                f"{str(saved.get('images'))[:12]}, now {str(wanted.get('images'))[:12]}): "
                "it is kept, never reused")
    return f"{kept} holds a finished run with other settings (kept)"


def resolve_run_dir(base: Path, if_exists: str, wanted: dict | None = None
                    ) -> tuple[Path, bool]:
    """Pick the folder of a run among ``base``, ``base-v2``, ``base-v3``... Returns
    (folder, finished).

    A finished run (``DONE`` marker present) whose saved signature equals ``wanted`` (any
    finished run if ``wanted`` is None) is reused with ``if_exists="skip"``, refused with
    ``"error"``; ``"version"`` runs it again into the next free versioned sibling. A finished
    run with another signature (other settings, or another version of the data) is never
    reused nor overwritten, and an interrupted run with other settings is kept for resuming:
    the run goes to the first version that is free or holds its own interrupted run (resumed).
    Nothing is deleted.
    """
    if if_exists not in ("skip", "version", "error"):
        raise ValueError(f"if_exists must be 'skip', 'version' or 'error', not {if_exists!r}")
    reuse = find_finished(base, wanted)
    if reuse and if_exists == "skip":
        return reuse, True
    if reuse and if_exists == "error":
        raise CheckpointError(
            f"{reuse}: this run already finished. Pass if_exists='skip' to reuse it or "
            "'version' to run it again into a new folder.")
    candidates = versions(base)
    candidates.append(versioned(base, run_version(candidates[-1].name)[1] + 1))  # a new one
    kept = []
    for folder in candidates:
        if (folder / "DONE").exists():
            continue
        started = started_signature(folder)
        if started is None or wanted is None or same_signature(started, wanted):
            break
        kept.append(folder)
    done = finished_versions(base)
    if done and not reuse:
        print(f"{_other_settings_note(done[-1], wanted)}; this run goes to {folder}")
    if kept:
        print(f"{', '.join(map(str, kept))}: interrupted run(s) with other settings, kept for "
              f"resuming (run them again with their own settings); this run goes to {folder}")
    return folder, False


def check_one_data_version(results: list[tuple[str | Path, str | None]], what: str,
                           error: type[Exception] = ValueError) -> str | None:
    """The one data version of ``results`` ((where, fingerprint) pairs); ``error`` naming
    each version and its results when they mix versions. Results recorded before data
    fingerprints count as one "unknown data version": alone they are used with a note."""
    versions: dict[str | None, list[str]] = {}
    for where, fingerprint in results:
        fingerprint = fingerprint if isinstance(fingerprint, str) else None  # NaN in tables
        versions.setdefault(fingerprint, []).append(str(where))
    if len(versions) > 1:
        parts = [f"{describe_data(v)}: {len(w)} result(s), e.g. {w[0]}"
                 for v, w in versions.items()]
        raise error(f"{what} would mix results of {len(versions)} versions of the prepared "
                    f"data ({'; '.join(parts)}). Rerun the older results on the current data "
                    "(notebooks 02-04), or move them away, so that one data version remains.")
    only = next(iter(versions), None)
    if versions and only is None:
        print(f"{what}: {len(results)} result(s) record no data version (made before data "
              "fingerprints); used as they are, which cannot show that they share one data "
              "version.")
    return only
