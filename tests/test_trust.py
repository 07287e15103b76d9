"""Runs you can trust: bad input refused before anything is written, image leakage,
cut videos, unwritable outputs, unreadable inference inputs; data versions, NaN stops, versions
and locks of runs."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from hiva_lib.data.prepared import DatasetError, data_fingerprint, load_prepared
from hiva_lib.engine.config import make_config
from hiva_lib.engine.notebook_hints import notebook_command
from hiva_lib.engine.validate import (
    ParameterError,
    check_ablation_values,
    check_notebook_parameters,
    check_writable,
)

sys.path.insert(0, str(Path(__file__).parent))
from conftest import own_data, smoke_cfg  # noqa: E402
from real_fixtures import write_video  # noqa: E402


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


# ----------------------------------------------------------------------------- bad input
BAD_INPUTS = [  # (make_config keyword arguments, the fragment the one error must hold)
    (dict(variant="fulll"), "variant='fulll': allowed: full, .*did you mean 'full'"),
    (dict(epochs_stage1="abc"), r"epochs \(epochs_stage1\)='abc': must be a whole number >= 1"),
    (dict(epochs_stage1=0), r"epochs \(epochs_stage1\)=0: must be a whole number >= 1"),
    (dict(epochs_stage2=2.5), r"epochs \(epochs_stage2\)=2.5: must be a whole number"),
    (dict(lr_stage1="abc"), r"lr \(lr_stage1\)='abc': must be a finite number > 0"),
    (dict(lr_stage2=float("nan")), r"lr \(lr_stage2\)=nan: must be a finite number > 0"),
    (dict(lr_stage1=-1e-3), r"lr \(lr_stage1\)=-0.001: must be a finite number > 0"),
    (dict(batch_size=0), "batch_size=0: must be a whole number >= 1"),
    (dict(batch_size=True), "batch_size=True: must be a whole number >= 1"),
    (dict(fold=7), r"fold=7: synth-disfa has test folds \[1, 2, 3\]"),
    (dict(fold="1"), "fold='1': must be a whole number"),
    (dict(seed=-1), "seed=-1: must be a whole number >= 0"),
    (dict(device="gpu"), "device='gpu': unknown device; allowed: auto, cpu, cuda"),
    (dict(if_exists="skp"), "if_exists='skp': allowed: skip, version, error .did you mean 'skip'"),
    (dict(schedule="cosin"), "schedule='cosin': .*did you mean 'cosine'"),
    (dict(lambda_diff=-1.0), "lambda_diff=-1.0: must be a finite number >= 0"),
    (dict(amp="yes"), "amp='yes': must be True or False"),
    (dict(epoch=3), "epoch=3: not a training parameter .did you mean 'epochs_stage1'"),
    (dict(model_preset="test-tiy"), "model_preset='test-tiy': .*did you mean 'test-tiny'"),
    (dict(model_overrides='{"dim": 64'), "model_overrides='{\"dim\": 64': not valid JSON"),
    (dict(model_overrides='{"dimm": 64}'), "'dimm' is not a ModelConfig field .did you mean 'dim'"),
    (dict(model_overrides="[1, 2]"), "model_overrides=.*: not a dict"),
    (dict(model_overrides={"ddca_mode": "x"}), "ModelConfig.ddca_mode='x': choose one of"),
    (dict(model_overrides={"dim": "big"}), r"model_overrides\['dim'\]='big': must be a whole "
                                           "number"),
    (dict(model_overrides={"dim": -4}), r"model_overrides\['dim'\]=-4: must be >= 1"),
    (dict(model_overrides={"stage2_new_module_lr_mult": 0.0}),
     r"model_overrides\['stage2_new_module_lr_mult'\]=0.0: must be > 0"),
    (dict(dataset="synth-disf"), "dataset='synth-disf': unknown data set; allowed: bp4d, .*"
                                 "did you mean 'synth-disfa'"),
    (dict(dataset="affwild"), "dataset='affwild': unknown data set; allowed: bp4d, disfa, gft"),
    (dict(smoke="yes"), "smoke='yes': must be True or False"),
]


@pytest.mark.parametrize("kwargs, fragment", BAD_INPUTS,
                         ids=[next(iter(k)) + "=" + repr(next(iter(k.values())))[:20]
                              for k, _ in BAD_INPUTS])
def test_bad_input_one_clear_error_and_nothing_written(tmp_path, smoke_data_root, kwargs,
                                                       fragment):
    """The notebooks' call (make_config, then training) stops at the parameters: one
    ParameterError naming the parameter, the value and what is allowed; no folder made."""
    from hiva_lib.engine.train import train_stage1

    kwargs = dict(kwargs)
    dataset = kwargs.pop("dataset", "synth-disfa")
    smoke = kwargs.pop("smoke", True)
    out = tmp_path / "out"
    with pytest.raises(ParameterError, match=fragment) as err:
        cfg = make_config(dataset, smoke=smoke, data_root=str(smoke_data_root),
                          runs_root=str(out / "runs"), results_root=str(out / "results"),
                          **kwargs)
        train_stage1(cfg)
    assert "nothing was written" in str(err.value)
    assert _tree(out) == []


def test_model_overrides_json_text_from_papermill_is_accepted():
    cfg = make_config("synth-disfa", smoke=True, model_overrides='{"dim": 64, "graph_k": 3}')
    assert cfg.model_overrides == {"dim": 64, "graph_k": 3}


def test_every_problem_of_a_call_is_listed_once():
    with pytest.raises(ParameterError) as err:
        make_config("synth-disfa", smoke=True, epochs_stage1="abc", lr_stage1="abc",
                    batch_size=0)
    lines = str(err.value).splitlines()[1:]
    assert len(lines) == 3 and {ln.split("=")[0].strip() for ln in lines} == {
        "epochs (epochs_stage1)", "lr (lr_stage1)", "batch_size"}


@pytest.mark.parametrize("notebook, params, fragment", [
    ("02_train_stage1", dict(variant="fulll"), "variant='fulll': not a parameter of "
                                               "02_train_stage1 .stage 1 has no variant"),
    ("03_train_stage2", dict(epoch=3), "epoch=3: not a parameter of 03_train_stage2 "
                                       ".did you mean 'epochs'"),
    ("04_ablations", dict(variant="full"), "did you mean 'variants'"),
])
def test_notebooks_refuse_parameters_they_do_not_declare(notebook, params, fragment):
    declared = dict(dataset="synth-disfa", smoke=True, In=[], _i1="", get_ipython=None)
    with pytest.raises(ParameterError, match=fragment):
        check_notebook_parameters(notebook, {**declared, **params})
    own = "cluster" if notebook == "04_ablations" else "cfg"  # a name the notebook binds
    check_notebook_parameters(notebook, {**declared, own: 1})


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(slugs=["fulll"]), "variants='fulll': unknown variant.*did you mean 'full'"),
    (dict(folds=[7]), r"folds=7: synth-disfa has test folds \[1, 2, 3\]"),
    (dict(seeds="0"), "seeds='0': must be a list of whole numbers"),
    (dict(workers=0), "workers=0: must be None or a whole number >= 1"),
])
def test_ablation_lists_are_checked(kwargs, fragment):
    args = {**dict(slugs=["full"], folds=None, seeds=[0], workers=None), **kwargs}
    with pytest.raises(ParameterError, match=fragment):
        check_ablation_values("synth-disfa", data_root="data/prepared", **args)


def test_stage1_hint_names_every_non_default_parameter(tmp_path):
    cfg = make_config("synth-disfa", smoke=True, fold=2, runs_root=str(tmp_path / "r x"),
                      model_overrides='{"dim": 64}')
    cmd = notebook_command(cfg)
    assert cmd.startswith("papermill notebooks/02_train_stage1.ipynb out.ipynb -p dataset "
                          "synth-disfa -p fold 2 -p seed 0")
    assert f"-p runs_root '{tmp_path / 'r x'}'" in cmd
    assert "-p model_overrides '{\"dim\": 64}'" in cmd and cmd.endswith("-p smoke True")
    assert "-p epochs" not in cmd and "-p lr" not in cmd  # the smoke defaults


def test_unwritable_output_folder_refused_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ParameterError, match="results_root=.*file is a file, not a folder"):
        check_writable(dict(results_root=blocker / "results"))
    check_writable(dict(runs_root=tmp_path / "new" / "runs"))
    assert not (tmp_path / "new").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(ParameterError, match="results_root=.*is not writable"):
            check_writable(dict(results_root=ro / "results"))
    finally:
        ro.chmod(0o755)


# ----------------------------------------------------------------------------- data
def test_same_images_under_a_new_subject_in_the_test_fold_are_leakage(tmp_path, smoke_data_root):
    root = tmp_path / "synth-disfa"
    shutil.copytree(smoke_data_root / "synth-disfa", root)
    index = pd.read_csv(root / "index.csv", dtype={"subject": str})
    subject = index.subject.iloc[0]
    rows = index[index.subject == subject].copy()
    other = next(f for f in (1, 2, 3) if f != rows.fold.iloc[0])
    for rel in rows.image:
        new = root / rel.replace(subject, "S99")
        new.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / rel, new)
    rows = rows.assign(subject="S99", fold=other,
                       image=rows.image.str.replace(subject, "S99"))
    before = data_fingerprint(root)
    pd.concat([index, rows]).to_csv(root / "index.csv", index=False)
    assert data_fingerprint(root) != before  # another data version
    with pytest.raises(DatasetError, match=f"image leakage, {len(rows)} image.*subject S99, "
                                           f"fold {other}"):
        load_prepared(root)


def test_a_video_cut_short_of_its_container_count_is_refused(tmp_path):
    from hiva_lib.data.real.common import RawSequence
    from hiva_lib.data.real.extract import read_frames

    rng = np.random.default_rng(0)
    video = tmp_path / "cut.avi"
    write_video(video, [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(12)])
    cap = cv2.VideoCapture(str(video))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    cap.release()
    whole = list(read_frames(RawSequence("S1", "T1", np.arange(2), np.zeros((2, 1)),
                                         video=video, positions=np.arange(2))))
    assert len(whole) == 2  # labels of the first two frames: the intact video is fine
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    seq = RawSequence("S1", "T1", np.arange(2), np.zeros((2, 1)), video=video,
                      positions=np.arange(2))
    with pytest.raises(DatasetError, match=r"cut\.avi: only \d of the 12 frames its container "
                                           "reports could be decoded"):
        list(read_frames(seq))


# ----------------------------------------------------------------------------- runs
_smoke_cfg, _own_data = smoke_cfg, own_data  # shared with test_integrity (conftest)


def _new_data_version(data_root: Path) -> None:
    meta = data_root / "synth-disfa" / "meta.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "note": "prepared again"}))


def test_a_run_of_another_data_version_is_never_reused(tmp_path, smoke_data_root, capsys):
    from hiva_lib.engine import runs
    from hiva_lib.engine.evaluate import evaluate_run
    from hiva_lib.engine.train import train_stage1
    from hiva_lib.errors import CheckpointError

    data_root = _own_data(tmp_path, smoke_data_root)
    cfg = _smoke_cfg(tmp_path, data_root)
    first = train_stage1(cfg)
    metrics, _ = evaluate_run(cfg, first.checkpoint, first.run_dir)
    old = data_fingerprint(data_root / "synth-disfa")
    assert metrics["data_fingerprint"] == old
    assert json.loads((first.run_dir / "signature.json").read_text())["data"] == old
    assert train_stage1(cfg).skipped  # same data: reused

    _new_data_version(data_root)
    capsys.readouterr()
    folder, finished = runs.resolve_run_dir(runs.stage1_dir(cfg), "skip", runs.signature(cfg, 1))
    assert (folder.name, finished) == ("fold1-v2", False)
    assert f"finished run of data version {old[:12]}" in capsys.readouterr().out
    with pytest.raises(CheckpointError, match=f"trained on data version {old[:12]}, but the "
                                              "prepared data is now data version"):
        evaluate_run(cfg, first.checkpoint, first.run_dir)


def _planted_result(root: Path, variant: str, fold: int, fingerprint: str | None) -> None:
    from hiva_lib.data.au import au_keys, dataset_aus

    folder = root / "synth-disfa" / variant / "seed0" / f"fold{fold}"
    folder.mkdir(parents=True)
    aus = dataset_aus("synth-disfa")
    metrics = dict(dataset="synth-disfa", variant=variant, seed=0, fold=fold, au_ids=list(aus),
                   f1={k: 0.5 for k in au_keys(aus)}, mean_f1=0.5, n_test=10)
    if fingerprint:
        metrics["data_fingerprint"] = fingerprint
    (folder / "metrics.json").write_text(json.dumps(metrics))


def test_report_and_aggregates_refuse_to_mix_data_versions(tmp_path, capsys):
    from hiva_lib.engine.evaluate import aggregate_folds
    from hiva_lib.study.report import ReportError, collect_results

    alone = tmp_path / "old"  # results made before fingerprints: used, with a note
    for fold in (1, 2):
        _planted_result(alone, "full", fold, None)
    assert len(collect_results(alone, "synth-disfa")) == 2
    assert "record no data version" in capsys.readouterr().out

    mixed = tmp_path / "mixed"
    _planted_result(mixed, "full", 1, "a" * 64)
    _planted_result(mixed, "full", 2, None)
    _planted_result(mixed, "baseline", 1, "b" * 64)
    with pytest.raises(ReportError, match=r"mix results of 3 versions(?=.*version a{12}: 1 "
                                          r"result)(?=.*version b{12})(?=.*unknown data version)"):
        collect_results(mixed, "synth-disfa")
    with pytest.raises(ValueError, match="aggregate of synth-disfa/full/seed0 would mix"):
        aggregate_folds(mixed, "synth-disfa", "full", 0)
    assert not (mixed / "synth-disfa" / "full" / "seed0" / "aggregate.json").exists()


def test_lr_1e6_stops_with_one_clear_error_and_no_finished_run(tmp_path, smoke_data_root):
    """The issue's `-p smoke True -p lr 1e6`: a NaN stops training, nothing is DONE."""
    from hiva_lib.engine.loop import NonFiniteLossError
    from hiva_lib.engine.runs import stage1_dir
    from hiva_lib.engine.train import run_variant

    cfg = _smoke_cfg(tmp_path, smoke_data_root, lr_stage1=1e6, variant="baseline")
    with pytest.raises(NonFiniteLossError, match=r"stage 1 stopped at step \d \(epoch 1, batch "
                                                 r"\d\): loss nan.*learning rate is too high "
                                                 r"\(lr=1e\+06"):
        run_variant(cfg)
    run = stage1_dir(cfg)
    assert not (run / "DONE").exists() and not (run / "final.pt").exists()
    assert not (run / "LOCK").exists() and not (tmp_path / "res").exists()


def test_nan_keeps_the_last_good_checkpoint_which_resumes(tmp_path, smoke_data_root,
                                                         monkeypatch, capsys):
    from hiva_lib.engine import loop
    from hiva_lib.engine.train import train_stage1

    cfg = _smoke_cfg(tmp_path, smoke_data_root, epochs_stage1=2)
    real, calls = loop.au_loss, []

    def nan_at_third(*args, **kwargs):
        calls.append(1)
        loss = real(*args, **kwargs)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(loop, "au_loss", nan_at_third)
    with pytest.raises(loop.NonFiniteLossError, match=r"step 3 \(epoch 2, batch 1\).*last\.pt "
                                                      r"\(epoch 1, batch 0 done\) is kept"):
        train_stage1(cfg)
    monkeypatch.setattr(loop, "au_loss", real)
    capsys.readouterr()
    result = train_stage1(cfg)
    assert "at epoch 2, batch 0" in capsys.readouterr().out
    assert (result.run_dir / "DONE").exists() and result.run_dir.name == "fold1"


def test_interrupted_run_kept_and_other_settings_take_the_next_version(tmp_path, capsys):
    from hiva_lib.engine.runs import resolve_run_dir

    base = tmp_path / "fold1"
    for folder, lr, state in ((base, 1, "DONE"), (tmp_path / "fold1-v2", 2, "last.pt")):
        folder.mkdir()
        (folder / state).write_text("x")
        (folder / "signature.json").write_text(json.dumps({"lr": lr}))
    assert resolve_run_dir(base, "skip", {"lr": 1}) == (base, True)
    assert resolve_run_dir(base, "skip", {"lr": 2}) == (tmp_path / "fold1-v2", False)  # resume
    capsys.readouterr()
    assert resolve_run_dir(base, "skip", {"lr": 3}) == (tmp_path / "fold1-v3", False)
    assert "fold1-v2: interrupted run(s) with other settings, kept" in capsys.readouterr().out
    assert (tmp_path / "fold1-v2" / "last.pt").exists()


def test_a_second_identical_run_refuses_and_a_stale_lock_is_taken_over(tmp_path,
                                                                      smoke_data_root, capsys):
    import socket
    import subprocess

    from hiva_lib.engine.run_lock import RunLockedError, run_lock
    from hiva_lib.engine.runs import stage1_dir
    from hiva_lib.engine.train import train_stage1

    folder = tmp_path / "run"
    folder.mkdir()
    with run_lock(folder):
        with pytest.raises(RunLockedError, match=f"another run is training this folder "
                                                 f"\\(pid {os.getpid()} on"):
            with run_lock(folder):
                pass
    assert not (folder / "LOCK").exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (folder / "LOCK").write_text(json.dumps(dict(pid=dead.pid, host=socket.gethostname())))
    with run_lock(folder):
        assert json.loads((folder / "LOCK").read_text())["pid"] == os.getpid()
    assert f"stale lock of process {dead.pid}" in capsys.readouterr().out

    cfg = _smoke_cfg(tmp_path, smoke_data_root)  # a live run holds the folder: refused
    stage1_dir(cfg).mkdir(parents=True)
    (stage1_dir(cfg) / "LOCK").write_text(json.dumps(dict(pid=os.getppid(),
                                                          host=socket.gethostname())))
    with pytest.raises(RunLockedError, match="Wait for it to finish"):
        train_stage1(cfg)
    assert sorted(p.name for p in stage1_dir(cfg).iterdir()) == ["LOCK"]


def test_unwritable_results_root_refused_before_training(tmp_path, smoke_data_root):
    from hiva_lib.engine.train import run_variant

    (tmp_path / "res").write_text("a file")
    cfg = _smoke_cfg(tmp_path, smoke_data_root)
    with pytest.raises(ParameterError, match="results_root=.*is a file, not a folder"):
        run_variant(cfg)
    assert not (tmp_path / "runs").exists()


def test_notebook_02_fails_in_its_first_code_cell_on_bad_parameters(tmp_path):
    """The issue's `-p variant fulll` through papermill (only warned about by papermill): one
    error from the first code cell, before any data is read or any folder made."""
    import papermill as pm
    from conftest import run_notebook

    out = tmp_path / "out"
    with pytest.raises(pm.PapermillExecutionError) as err:
        run_notebook("02_train_stage1", tmp_path, dataset="synth-disfa", smoke=True,
                     variant="fulll", runs_root=str(out / "runs"),
                     results_root=str(out / "res"))
    assert "variant='fulll': not a parameter of 02_train_stage1" in str(err.value)
    assert err.value.exec_count == 3  # the parameters cell, the injected one, then this one
    assert _tree(out) == []
