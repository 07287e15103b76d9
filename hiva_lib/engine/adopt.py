"""Runs and results saved before data fingerprints existed: record the data version they were
made on, after checking it (runs you can trust).

A run or result recorded before data fingerprints has an "unknown data version" and is never
reused. When the prepared data set it was made on is still there, :func:`adopt_data_version`
records that data set's fingerprint into each result's ``metrics.json`` and its run's
``signature.json``, but only for a result whose evidence matches the data as it is now:

- its ``provenance.data`` (data set, source and version, seed, image size, subjects and
  frames per subject) equals the same fields of the data's ``meta.json``;
- its ``n_test`` equals the number of frames of its test fold in the data's ``index.csv``;
- its ``checkpoint_sha256`` equals the SHA-256 of the run's ``final.pt`` (the run is the one
  that made the result).

Anything else is left as it is and listed with the reason. Nothing else is rewritten.

Results written before checkpoints were named relative to the runs root name them by the
absolute path of the machine that trained them; :func:`relative_checkpoints` rewrites that name
(only it) to the runs-root-relative form that :func:`hiva_lib.engine.provenance.recorded_checkpoint`
reads, where the path lies under the runs root the result's config records.

    python scripts/adopt_data_version.py synth-bp4d --data-root data/prepared --results-root results
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hiva_lib.data.prepared import data_fingerprint, load_prepared
from hiva_lib.engine.provenance import recorded_checkpoint
from hiva_lib.integrity import atomic_write_json, file_sha256, read_json
from hiva_lib.project import project_root

META_FIELDS = ("dataset", "source", "seed", "image_size", "n_subjects", "frames_per_subject")


@dataclass
class Adoption:
    metrics: Path
    adopted: bool
    reason: str


def _evidence_problem(metrics: dict, meta: dict, test_frames: dict[int, int]) -> str:
    """Why ``metrics`` may not be of the data described by ``meta`` ('' when it is)."""
    recorded = (metrics.get("provenance") or {}).get("data") or {}
    for key in META_FIELDS:
        if key in meta and recorded.get(key) != meta.get(key):
            return f"provenance.data.{key} {recorded.get(key)!r} vs the data's {meta.get(key)!r}"
    fold = int(metrics.get("fold", -1))
    if metrics.get("n_test") != test_frames.get(fold):
        return (f"n_test {metrics.get('n_test')} vs {test_frames.get(fold)} frames in fold "
                f"{fold} of the data")
    checkpoint = recorded_checkpoint(metrics)
    if not checkpoint.is_file():
        return f"its checkpoint {checkpoint} is not there"
    if file_sha256(checkpoint) != metrics.get("checkpoint_sha256"):
        return f"{checkpoint} is not the checkpoint that made it (SHA-256 differs)"
    return ""


def _record_in_run(run_dir: Path, fingerprint: str) -> None:
    path = run_dir / "signature.json"
    signature = read_json(path, f"Restore it, or delete the run folder {run_dir}.")
    stage1 = signature.get("model", {}).get("stage1")  # a stage-2 run's stage-1 signature
    for part in (signature, stage1):
        if isinstance(part, dict) and part.get("data") is None:
            part["data"] = fingerprint
    atomic_write_json(signature, path)


def adopt_data_version(dataset: str, data_root: str | Path, results_root: str | Path
                       ) -> list[Adoption]:
    """Record the fingerprint of ``data_root/dataset`` into every result of ``dataset`` under
    ``results_root`` (and its run) that records none and whose evidence matches the data."""
    data = load_prepared(Path(data_root) / dataset, check_images=False)
    fingerprint = data_fingerprint(data.root)
    test_frames = data.index["fold"].value_counts().to_dict()
    out = []
    for path in sorted((Path(results_root) / dataset).glob("*/seed*/fold*/metrics.json")):
        metrics = read_json(path, f"Restore it, or move {path.parent} away.")
        if metrics.get("data_fingerprint"):
            same = metrics["data_fingerprint"] == fingerprint
            out.append(Adoption(path, False, "records this data version" if same else
                                "records another data version"))
            continue
        problem = _evidence_problem(metrics, data.meta, test_frames)
        if problem:
            out.append(Adoption(path, False, problem))
            continue
        _record_in_run(recorded_checkpoint(metrics).parent, fingerprint)
        metrics["data_fingerprint"] = fingerprint
        atomic_write_json(metrics, path)
        out.append(Adoption(path, True, f"data version {fingerprint[:12]} recorded"))
    return out


def relative_checkpoints(results_root: str | Path) -> list[Path]:
    """Rewrite every ``checkpoint`` under ``results_root`` named by a path that lies under
    its config's ``runs_root`` (absolute, or relative to the project like the root itself) to
    the path relative to that root; the metrics.json rewritten."""
    out = []
    for path in sorted(Path(results_root).glob("*/*/seed*/fold*/metrics.json")):
        metrics = read_json(path, f"Restore it, or move {path.parent} away.")
        recorded = metrics.get("checkpoint") or ""
        root = metrics.get("config", {}).get("runs_root") or ""
        if not (recorded and root):
            continue
        checkpoint, runs_root = (p if p.is_absolute() else project_root() / p
                                 for p in (Path(recorded), Path(root)))
        if checkpoint.is_relative_to(runs_root) \
                and (relative := str(checkpoint.relative_to(runs_root))) != recorded:
            metrics["checkpoint"] = relative
            atomic_write_json(metrics, path)
            out.append(path)
    return out
