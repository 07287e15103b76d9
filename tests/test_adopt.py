"""Adopting the data version of results saved before data fingerprints (hiva_lib.engine.adopt)."""
from __future__ import annotations

import hashlib
import json

import pandas as pd
import pytest

from hiva_lib.data.prepared import data_fingerprint
from hiva_lib.data.synthfacs import generate
from hiva_lib.engine.adopt import adopt_data_version, relative_checkpoints
from hiva_lib.engine.provenance import checkpoint_record, recorded_checkpoint

META_KEYS = ("dataset", "source", "seed", "image_size", "n_subjects", "frames_per_subject")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    generate("synth-disfa", root / "synth-disfa", n_subjects=6, frames_per_subject=8,
             image_size=64, progress=False)
    return root


def _old_result(results, runs, data, fold=1, **change):
    """A result and its run as saved before fingerprints: no data version anywhere."""
    meta = json.loads((data / "synth-disfa" / "meta.json").read_text())
    n_test = int((pd.read_csv(data / "synth-disfa" / "index.csv")["fold"] == fold).sum())
    run = runs / f"full{len(list(runs.glob('*')))}" / "seed0" / f"fold{fold}"
    run.mkdir(parents=True)
    (run / "final.pt").write_bytes(b"weights")
    (run / "signature.json").write_text(json.dumps(
        {"fold": fold, "model": {"stage1": {"fold": fold}}}))
    metrics = dict(fold=fold, n_test=n_test, checkpoint=str(run / "final.pt"),
                   checkpoint_sha256=hashlib.sha256(b"weights").hexdigest(),
                   provenance={"data": {k: meta[k] for k in META_KEYS}})
    metrics.update(change)
    out = results / "synth-disfa" / run.parts[-3] / "seed0" / f"fold{fold}"
    out.mkdir(parents=True)
    (out / "metrics.json").write_text(json.dumps(metrics))
    return out, run


def test_matching_result_gets_the_version_in_metrics_and_both_signatures(data, tmp_path):
    out, run = _old_result(tmp_path / "results", tmp_path / "runs", data)
    [a] = adopt_data_version("synth-disfa", data, tmp_path / "results")
    fingerprint = data_fingerprint(data / "synth-disfa")
    assert a.adopted and json.loads((out / "metrics.json").read_text())["data_fingerprint"] \
        == fingerprint
    sig = json.loads((run / "signature.json").read_text())
    assert sig["data"] == sig["model"]["stage1"]["data"] == fingerprint
    [again] = adopt_data_version("synth-disfa", data, tmp_path / "results")
    assert not again.adopted and again.reason == "records this data version"


@pytest.mark.parametrize("change, fragment", [
    (dict(n_test=3), "n_test 3"),  # e.g. a smoke-size data set
    (dict(provenance={"data": {"dataset": "synth-disfa", "frames_per_subject": 240}}),
     "provenance.data"),
    (dict(checkpoint_sha256="0" * 64), "not the checkpoint that made it"),
])
def test_mismatching_result_is_left_as_it_is(data, tmp_path, change, fragment):
    out, run = _old_result(tmp_path / "results", tmp_path / "runs", data, **change)
    before = (out / "metrics.json").read_text(), (run / "signature.json").read_text()
    [a] = adopt_data_version("synth-disfa", data, tmp_path / "results")
    assert not a.adopted and fragment in a.reason
    assert ((out / "metrics.json").read_text(), (run / "signature.json").read_text()) == before


def test_stage2_reads_an_adopted_stage1_data_version_from_the_run_record(tmp_path):
    from hiva_lib.engine.train import _checkpoint_data_version
    final = tmp_path / "final.pt"
    assert _checkpoint_data_version({"signature": {}}, final) is None
    (tmp_path / "signature.json").write_text(json.dumps({"data": "abc"}))
    assert _checkpoint_data_version({"signature": {}}, final) == "abc"  # adopted
    assert _checkpoint_data_version({"signature": {"data": "own"}}, final) == "own"


def test_figures_refuse_a_model_of_another_data_version(data, tmp_path):
    from hiva_lib.study.study import FigureError, Study
    out, run = _old_result(tmp_path / "results", tmp_path / "runs", data)
    metrics = json.loads((out / "metrics.json").read_text())
    study = Study.open("synth-disfa", data_root=str(data), runs_root=str(tmp_path / "runs"),
                       results_root=str(tmp_path / "results"))
    variant = out.parts[-3]
    (out / "metrics.json").write_text(json.dumps({**metrics, "data_fingerprint": "0" * 64}))
    with pytest.raises(FigureError, match="another|prepared data is now"):
        study.checkpoint(variant)
    (out / "metrics.json").write_text(json.dumps(
        {**metrics, "data_fingerprint": data_fingerprint(data / "synth-disfa")}))
    assert study.checkpoint(variant) == run / "final.pt"


def test_checkpoints_are_named_relative_to_the_runs_root(tmp_path):
    runs = tmp_path / "runs"
    inside = runs / "synth-disfa" / "cpu-lite0" / "full" / "seed0" / "fold1" / "final.pt"
    assert checkpoint_record(inside, runs) == "synth-disfa/cpu-lite0/full/seed0/fold1/final.pt"
    assert checkpoint_record(tmp_path / "elsewhere.pt", runs) == str(tmp_path / "elsewhere.pt")
    metrics = {"checkpoint": "synth-disfa/cpu-lite0/full/seed0/fold1/final.pt",
               "config": {"runs_root": str(runs)}}
    assert recorded_checkpoint(metrics) == inside
    assert recorded_checkpoint({"checkpoint": str(inside)}) == inside  # older results


def test_relative_checkpoints_rewrites_only_names_under_the_recorded_runs_root(tmp_path):
    other = {"a": 1}
    rows = {"in": ("/machine/runs", "/machine/runs/synth-gft/p/full/seed0/fold1/final.pt"),
            "out": ("/machine/runs", "/elsewhere/final.pt"),
            "rel": ("/machine/runs", "synth-gft/p/full/seed1/fold1/final.pt"),
            # a run saved before names were relative: the project-relative path of its root
            "proj": ("out/runs", "out/runs/synth-gft/p/full/seed2/fold1/final.pt"),
            "done": ("out/runs", "synth-gft/p/full/seed2/fold1/final.pt")}
    paths = {}
    for variant, (root, ckpt) in rows.items():
        out = tmp_path / "synth-gft" / variant / "seed0" / "fold1"
        out.mkdir(parents=True)
        (out / "metrics.json").write_text(json.dumps(
            {"checkpoint": ckpt, "config": {"runs_root": root}, "other": other}))
        paths[variant] = out / "metrics.json"
    assert relative_checkpoints(tmp_path) == [paths["in"], paths["proj"]]
    assert json.loads(paths["proj"].read_text())["checkpoint"] == \
        json.loads(paths["done"].read_text())["checkpoint"]
    rewritten = json.loads(paths["in"].read_text())
    assert rewritten == {"checkpoint": "synth-gft/p/full/seed0/fold1/final.pt",
                         "config": {"runs_root": "/machine/runs"}, "other": other}
    assert json.loads(paths["out"].read_text())["checkpoint"] == "/elsewhere/final.pt"


def test_committed_results_name_checkpoints_relative_to_their_runs_root():
    from hiva_lib.project import project_root

    named = [(p, m["checkpoint"], m["config"]["runs_root"]) for p in
             (project_root() / "results").glob("*/*/seed*/fold*/metrics.json")
             if (m := json.loads(p.read_text()))]
    assert named and not [p for p, c, root in named
                          if c.startswith("/") or c.startswith(root.rstrip("/") + "/")]
