"""The fault matrix, part two: non-finite weights, checkpoints that verify themselves,
hand-edited results, the Baseline in the reproduction check, and the last raw errors. Each
case is what a hostile user or a flaky machine does, and the one clear error (or the right
behaviour) it must get. The cases that train are in the slow tier."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import own_data, smoke_cfg
from PIL import Image

from hiva_lib.engine.checkpoint import (
    CONTENT_KEY,
    NonFiniteWeightsError,
    atomic_save,
    content_sha256,
    load_checkpoint,
)
from hiva_lib.integrity import DamagedFileError, write_checksum

ROOT = Path(__file__).resolve().parents[1]
DISFA_AUS = (1, 2, 4, 6, 9, 12, 25, 26)


@pytest.fixture(scope="module")
def tiny_model():
    """A random-init test-tiny HiVA (DISFA's 8 AUs), built once (a build takes seconds)."""
    from hiva_lib.model.hiva import HiVA
    from hiva_lib.presets import MODEL_PRESETS

    torch.manual_seed(0)
    return HiVA(MODEL_PRESETS["test-tiny"], DISFA_AUS).eval()


@pytest.fixture
def tiny(tiny_model):
    """``_tiny_state`` of the module's model: a final.pt's contents (a fresh dict)."""
    return lambda stage=2: _tiny_state(tiny_model, stage)


@pytest.fixture
def loaded(tiny_model, monkeypatch, tmp_path) -> Path:
    """``tmp_path/final.pt`` of the module's model, which inference uses as it is instead of
    building it again (these cases are about inputs and outputs, not the load)."""
    from hiva_lib.engine import evaluate

    atomic_save(_tiny_state(tiny_model), tmp_path / "final.pt")
    monkeypatch.setattr(evaluate, "load_trained", lambda checkpoint, device: tiny_model)
    return tmp_path / "final.pt"


def _tiny_state(model, stage: int = 2) -> dict:
    """A final.pt's contents: the weights of ``model`` and what they need to be rebuilt."""
    return dict(model={k: v.clone() for k, v in model.state_dict().items()}, stage=stage,
                au_ids=list(DISFA_AUS), model_config=dataclasses.asdict(model.cfg))


def _image(path: Path, size: tuple[int, int] = (64, 64)) -> Path:
    Image.fromarray(np.full((size[1], size[0], 3), 128, np.uint8)).save(path)
    return path


def _detect(image: Path, checkpoint: Path, out: Path, *extra: str) -> int:
    from hiva_lib.study.cli import main

    return main([str(image), "--checkpoint", str(checkpoint), "--out", str(out),
                 "--align", "skip", "--no-progress", *extra])


def _nan_checkpoint(state: dict, path: Path) -> Path:
    """``state`` with NaN weights, saved and recorded as training would save them (the record
    made after the damage: the checksums cannot tell)."""
    name = next(k for k, v in state["model"].items() if v.is_floating_point())
    state["model"][name] = torch.full_like(state["model"][name], float("nan"))
    atomic_save(state, path)
    write_checksum(path)
    return path


# ----------------------------------------------------------------------------- 1, 8: NaN
def test_non_finite_weights_are_refused_by_hiva_detect(tmp_path, capsys, tiny):
    ckpt = _nan_checkpoint(tiny(), tmp_path / "final.pt")
    out = tmp_path / "det.csv"
    assert _detect(_image(tmp_path / "face.png"), ckpt, out) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "weights of this checkpoint are not finite" in err
    assert "lower learning rate" in err and not out.exists()  # no CSV of "absent" AUs


def test_non_finite_probabilities_never_reach_the_csv(tmp_path, capsys, monkeypatch, loaded):
    """Finite weights that still give NaN (e.g. an overflow): an error, not empty cells."""
    from hiva_lib.study import inference

    real = inference._predict

    def nan_predict(run, crops):
        probs, x = real(run, crops)
        return np.full_like(probs, np.nan), x

    monkeypatch.setattr(inference, "_predict", nan_predict)
    assert _detect(_image(tmp_path / "face.png"), tmp_path / "final.pt",
                   tmp_path / "det.csv") == 2
    assert "non-finite probabilities" in capsys.readouterr().err
    assert not (tmp_path / "det.csv").exists()


def test_a_non_finite_stage1_checkpoint_is_named_at_load(tmp_path, smoke_data_root, tiny):
    """Stage 2 from a diverged stage 1: the load says so (not a learning-rate advice of a
    non-finite loss later)."""
    from hiva_lib.engine.runs import load_data
    from hiva_lib.engine.train import load_stage1_checkpoint

    cfg = smoke_cfg(tmp_path, smoke_data_root, variant="full")
    path = tmp_path / "stage1" / "final.pt"
    path.parent.mkdir()
    _nan_checkpoint(tiny(stage=1), path)
    with pytest.raises(NonFiniteWeightsError, match=r"stage-1 checkpoint are not finite"):
        load_stage1_checkpoint(cfg, load_data(cfg), path)


def test_every_torch_load_goes_through_the_checked_load():
    """One load path (engine/checkpoint.py) for every checkpoint: training, evaluation,
    figures and inference all get the checksum and finiteness checks. The backbone's
    ImageNet weights (model/pretrained.py) are not a checkpoint of ours."""
    users = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "hiva_lib").rglob("*.py")
                   if "torch.load(" in p.read_text())
    assert users == ["hiva_lib/engine/checkpoint.py", "hiva_lib/model/pretrained.py"]


# ----------------------------------------------------------------------------- 2: copies
def _flip_inside_a_tensor(path: Path, tensor: torch.Tensor) -> None:
    """Change one value of ``tensor`` inside the file (torch.load does not notice)."""
    data = bytearray(path.read_bytes())
    raw = tensor.contiguous().numpy().tobytes()
    at = data.find(raw[:64])
    assert at > 0
    data[at + 3] ^= 0x40
    path.write_bytes(bytes(data))


def test_a_copied_checkpoint_verifies_itself(tmp_path, capsys, tiny):
    state = tiny()
    run = tmp_path / "run"
    run.mkdir()
    atomic_save(state, run / "final.pt")
    write_checksum(run / "final.pt")
    shared = tmp_path / "downloads" / "copy.pt"  # no .sha256 beside it
    shared.parent.mkdir()
    shutil.copy(run / "final.pt", shared)
    assert load_checkpoint(shared, "checkpoint", "fix").keys() == state.keys()
    big = max(state["model"].values(), key=lambda t: t.numel())
    _flip_inside_a_tensor(shared, big)
    with pytest.raises(DamagedFileError, match="recorded inside it when it was saved"):
        load_checkpoint(shared, "checkpoint", "fix")
    assert _detect(_image(tmp_path / "face.png"), shared, tmp_path / "det.csv") == 2
    assert "recorded inside it" in capsys.readouterr().err


def test_a_checkpoint_saved_before_embedded_checksums_still_loads(tmp_path, tiny):
    state = tiny()
    torch.save(state, tmp_path / "old.pt")  # as the committed runs' checkpoints were saved
    loaded = load_checkpoint(tmp_path / "old.pt", "checkpoint", "fix")
    assert CONTENT_KEY not in loaded and loaded.keys() == state.keys()


def test_the_content_checksum_covers_every_value_and_the_structure(tiny):
    state = tiny()
    digest = content_sha256(state)
    assert content_sha256({**state, CONTENT_KEY: "x"}) == digest  # itself left out
    name = next(iter(state["model"]))
    changed = {**state, "model": {**state["model"], name: state["model"][name] + 1}}
    assert content_sha256(changed) != digest
    assert content_sha256({**state, "stage": 1}) != digest
    bf16 = {"w": torch.ones(3, dtype=torch.bfloat16)}
    assert content_sha256(bf16) != content_sha256({"w": torch.ones(3)})


# ----------------------------------------------------------------------------- 3: edits
DS = "synth-disfa"


def _planted_run(root: Path, variant: str = "baseline", seed: int = 0, fold: int = 1) -> Path:
    """A results folder as evaluation writes it: predictions.npz and the metrics of them."""
    from hiva_lib.data.au import au_keys
    from hiva_lib.metrics import f1_per_au

    rng = np.random.default_rng(seed + 10 * fold)
    probs = rng.random((40, len(DISFA_AUS))).astype(np.float32)
    labels = (rng.random((40, len(DISFA_AUS))) < 0.4).astype(np.float32)
    f1 = f1_per_au(probs, labels)
    out = root / DS / variant / f"seed{seed}" / f"fold{fold}"
    out.mkdir(parents=True)
    np.savez_compressed(out / "predictions.npz", probs=probs, labels=labels,
                        rows=np.arange(40))
    (out / "metrics.json").write_text(json.dumps(dict(
        dataset=DS, variant=variant, seed=seed, fold=fold, au_ids=list(DISFA_AUS),
        f1={k: float(v) for k, v in zip(au_keys(DISFA_AUS), f1, strict=True)},
        mean_f1=float(f1.mean()), n_test=40, data_fingerprint="abc")))
    return out


def _edit(folder: Path, **changes) -> None:
    path = folder / "metrics.json"
    m = json.loads(path.read_text())
    for key, value in changes.items():
        if key.startswith("AU"):
            m["f1"][key] = value
        else:
            m[key] = value
    path.write_text(json.dumps(m))


def test_a_hand_edited_metrics_file_is_refused_by_report_ledger_and_aggregate(tmp_path):
    from hiva_lib.engine.evaluate import aggregate_folds
    from hiva_lib.engine.recorded import RecordedNumbersError
    from hiva_lib.study import claims
    from hiva_lib.study.report import collect_results

    for fold in (1, 2):
        _planted_run(tmp_path, fold=fold)
    assert len(collect_results(tmp_path, DS)) == 2  # the planted numbers are their own
    edited = tmp_path / DS / "baseline" / "seed0" / "fold2"
    _edit(edited, mean_f1=0.9, AU1=0.95)
    named = rf"{edited / 'metrics.json'}: its numbers are not those of the predictions"
    with pytest.raises(RecordedNumbersError, match=named) as err:
        collect_results(tmp_path, DS)
    assert "AU1 F1 0.95 recorded" in str(err.value) and "Restore" in str(err.value)
    with pytest.raises(RecordedNumbersError, match=named):  # never "no results"
        claims.ClaimInputs(DS, tmp_path).runs()
    with pytest.raises(RecordedNumbersError, match=named):
        aggregate_folds(tmp_path, DS, "baseline", 0)


def test_a_mean_that_is_not_its_per_au_mean_is_refused_without_predictions(tmp_path):
    from hiva_lib.engine.recorded import RecordedNumbersError, check_recorded_numbers

    folder = _planted_run(tmp_path)
    (folder / "predictions.npz").unlink()
    metrics = json.loads((folder / "metrics.json").read_text())
    check_recorded_numbers(folder, metrics)
    with pytest.raises(RecordedNumbersError, match="is not the mean of its per-AU F1"):
        check_recorded_numbers(folder, {**metrics, "mean_f1": 0.9})


def test_every_committed_metrics_file_is_the_f1_of_its_predictions():
    from hiva_lib.engine.recorded import check_recorded_numbers

    found = sorted((ROOT / "results").glob("*/*/seed*/fold*/metrics.json"))
    assert len(found) >= 100 and all((p.parent / "predictions.npz").exists() for p in found)
    for path in found:
        check_recorded_numbers(path.parent, json.loads(path.read_text()))


def test_a_truncated_metrics_file_says_move_the_results_folder(tmp_path):
    from hiva_lib.study.report import ReportError, collect_results

    folder = _planted_run(tmp_path)
    (folder / "metrics.json").write_text('{"dataset": "synth-di')
    with pytest.raises(ReportError, match=f"Move the results folder {folder} away") as err:
        collect_results(tmp_path, DS)
    assert "Delete" not in str(err.value)  # a run folder holds the checkpoint


# ----------------------------------------------------------------------------- 5: images
def test_stage1_signature_sees_the_images_and_old_runs_stay_reusable(tmp_path,
                                                                     smoke_data_root):
    from hiva_lib.data.prepared import image_content
    from hiva_lib.engine.runs import data_dir, mismatch, same_signature, signature

    cfg = smoke_cfg(tmp_path, smoke_data_root, variant="full")
    sig1, sig2 = signature(cfg, 1), signature(cfg, 2)
    assert sig1["images"] == image_content(data_dir(cfg))  # the results' fingerprint
    assert sig2["model"]["stage1"]["images"] == sig1["images"]
    other = {**sig1, "images": "0" * 64}
    assert not same_signature(other, sig1) and mismatch(other, sig1)
    old = {k: v for k, v in sig1.items() if k != "images"}  # saved before the field
    assert same_signature(old, sig1) and mismatch(old, sig1) == []
    old2 = json.loads(json.dumps(sig2))
    del old2["images"], old2["model"]["stage1"]["images"]
    assert same_signature(old2, sig2)


@pytest.mark.slow
def test_images_changed_in_place_with_a_new_manifest_train_stage1_again(tmp_path,
                                                                        smoke_data_root):
    from hiva_lib.data.prepared import load_prepared, write_image_manifest
    from hiva_lib.engine.train import train_stage1

    data_root = own_data(tmp_path, smoke_data_root)
    cfg = smoke_cfg(tmp_path, data_root)
    first = train_stage1(cfg)
    root = data_root / DS
    index = load_prepared(root).index
    image = root / index["image"].iloc[0]
    pixels = np.asarray(Image.open(image)).copy()
    pixels[:8] = 255 - pixels[:8]
    Image.fromarray(pixels).save(image)
    write_image_manifest(root, index)  # "regenerated by hand"
    second = train_stage1(cfg)
    assert not second.skipped and second.run_dir != first.run_dir  # not the old model


# ----------------------------------------------------------------------------- 6: locks
def test_a_lock_whose_pid_now_belongs_to_a_newer_process_is_taken_over(tmp_path, capsys):
    from hiva_lib.engine.run_lock import run_lock

    newer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = tmp_path / "LOCK"
        lock.write_text(json.dumps(dict(pid=newer.pid, host=os.uname().nodename,
                                        started="earlier")))
        os.utime(lock, (time.time() - 600, time.time() - 600))  # written 10 min ago
        with run_lock(tmp_path):
            assert json.loads(lock.read_text())["pid"] == os.getpid()
        assert "now belongs to another process" in capsys.readouterr().out
    finally:
        newer.kill()
        newer.wait()


def test_a_lock_of_its_own_live_process_still_holds(tmp_path):
    from hiva_lib.engine.run_lock import RunLockedError, run_lock

    with run_lock(tmp_path), pytest.raises(RunLockedError, match="another run is training"):
        with run_lock(tmp_path):
            pass


# ----------------------------------------------------------------------------- 7: labels
def test_a_word_in_a_bp4d_label_file_is_named_with_its_line(tmp_path):
    from hiva_lib.data.prepared import DatasetError
    from hiva_lib.data.real.common import occurrence, read_label_csv

    rows = [[f, 1, 0, 1] for f in range(1, 13)]
    rows[11][3] = "yes"  # line 13 of the file (line 1: the header)
    csv = tmp_path / "F001_T1.csv"
    pd.DataFrame(rows, columns=["0", "1", "2", "4"]).to_csv(csv, index=False)
    df = read_label_csv(csv)
    with pytest.raises(DatasetError, match=r"value 'yes' in line 13 \(data row 12\), "
                                           r"column 4 is not an occurrence code"):
        occurrence(df[["1", "2", "4"]].to_numpy(), csv, ["1", "2", "4"])
    fine = pd.DataFrame([[1, 0, 9], [0, 1, 1]]).to_numpy()
    assert occurrence(fine, csv, ["1", "2", "4"]).tolist() == [False, True]


# ----------------------------------------------------------------------------- 9, 10: inputs
def test_hiva_detect_exits_non_zero_when_every_input_failed(tmp_path, capsys, loaded):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "empty.png").write_bytes(b"")  # a zero-byte image
    (folder / "notes.jpg").write_text("just some text\n")  # a text file
    assert _detect(folder, tmp_path / "final.pt", tmp_path / "det.csv") == 2
    err = capsys.readouterr().err
    assert "not one input could be read" in err and "empty.png" in err and "notes.jpg" in err
    assert not (tmp_path / "det.csv").exists()
    _image(folder / "face.png")  # one good input: rows for all, the bad ones flagged
    assert _detect(folder, tmp_path / "final.pt", tmp_path / "det.csv") == 0
    table = pd.read_csv(tmp_path / "det.csv")
    assert list(table.success) == [0, 1, 0]


def test_a_huge_image_is_downscaled_and_a_giant_one_refused(tmp_path, monkeypatch, loaded):
    from hiva_lib.study import inference

    monkeypatch.setattr(inference, "MAX_SIDE", 100)
    seen = []
    real = inference._score_batch

    def spy(run, batch):
        seen.extend(f.image.shape[:2] for f in batch if f.image is not None)
        return real(run, batch)

    monkeypatch.setattr(inference, "_score_batch", spy)
    big = _image(tmp_path / "big.png", (400, 300))
    assert _detect(big, tmp_path / "final.pt", tmp_path / "det.csv") == 0
    assert seen == [(75, 100)]  # detected on a 100 px copy ...
    row = pd.read_csv(tmp_path / "det.csv").iloc[0]  # ... the box in the photo's pixels:
    # the centre square of the 100 x 75 copy, (100 - 75) // 2 = 12 px in, times 4
    assert (row.FaceRectX, row.FaceRectWidth, row.FaceRectHeight) == (48.0, 300.0, 300.0)
    monkeypatch.setattr(inference, "MAX_PIXELS", 100_000)  # 400 x 300 = 120 000: not decoded
    monkeypatch.setattr(inference.cv2, "imread", lambda *a: pytest.fail("decoded"))
    frame = next(inference.iter_frames(big))
    assert frame.image is None and "400 x 300 px" in frame.error
    assert "downscale it first" in frame.error


# ----------------------------------------------------------------------------- 11: foreign
def test_another_presets_stage1_checkpoint_advises_a_folder_of_its_own(tmp_path,
                                                                      smoke_data_root, tiny):
    from hiva_lib.engine.runs import load_data, signature, stage1_dir
    from hiva_lib.engine.train import load_stage1_checkpoint
    from hiva_lib.errors import CheckpointError

    cfg = smoke_cfg(tmp_path, smoke_data_root, variant="full")
    data = load_data(cfg)
    path = stage1_dir(cfg) / "final.pt"
    path.parent.mkdir(parents=True)
    atomic_save(dict(tiny(stage=1), signature={**signature(cfg, 1),
                                                       "model_preset": "cpu-lite0"}), path)
    with pytest.raises(CheckpointError, match="model_preset: checkpoint 'cpu-lite0'") as err:
        load_stage1_checkpoint(cfg, data, path)
    assert f"Move {path.parent} away, or" in str(err.value)
    assert "-p if_exists version" in str(err.value) and "Run stage 1 first" not in str(err.value)


# ----------------------------------------------------------------------------- 12: links
def test_a_data_root_that_is_a_symlink_loop_is_named(tmp_path):
    from hiva_lib.data.prepare import prepare_dataset
    from hiva_lib.data.prepared import DatasetError
    from hiva_lib.engine.runs import load_data

    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    with pytest.raises(DatasetError, match="data_root=.*: a symbolic link loop"):
        prepare_dataset(DS, tmp_path / "a", smoke=True, progress=False)
    with pytest.raises(DatasetError, match="a symbolic link loop"):
        load_data(smoke_cfg(tmp_path, tmp_path / "a"))


# ----------------------------------------------------------------------------- 13, 14: outputs
def _read_only(monkeypatch, folder: Path) -> None:
    """``folder`` read-only as a read-only mount is (root writes into any folder here)."""
    from hiva_lib.engine import validate

    real = validate._can_write
    monkeypatch.setattr(validate, "_can_write",
                        lambda p: False if Path(p) == folder else real(p))


def test_the_report_checks_its_folder_before_any_work(tmp_path, monkeypatch):
    from hiva_lib.engine.validate import ParameterError
    from hiva_lib.study import report

    _planted_run(tmp_path)
    _read_only(monkeypatch, tmp_path / DS)  # where report/ would be made
    monkeypatch.setattr(report, "collect_results", lambda *a: pytest.fail("worked first"))
    with pytest.raises(ParameterError, match="is not writable"):
        report.write_report(tmp_path, DS)
    assert not (tmp_path / DS / "report").exists()


@pytest.mark.parametrize("problem", ["read-only", "cuda"])
def test_figures_check_device_and_folders_before_the_first_figure(tmp_path, monkeypatch,
                                                                   problem):
    from hiva_lib.engine.validate import ParameterError
    from hiva_lib.study.study import Study, run_figure

    if problem == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    study = Study.open(DS, results_root=str(tmp_path / "res"),
                       figures_root=str(tmp_path / "fig"),
                       device="cuda" if problem == "cuda" else "cpu")
    if problem == "read-only":
        _read_only(monkeypatch, tmp_path)
    with pytest.raises(ParameterError, match="CUDA is not available" if problem == "cuda"
                       else "is not writable"):
        run_figure(lambda s: pytest.fail("drawn before the check"), study)
    assert not (tmp_path / "fig").exists()


def test_a_refused_run_leaves_no_empty_folder(tmp_path, smoke_data_root, monkeypatch):
    from hiva_lib.engine import train

    def refuse(*args, **kwargs):
        raise ValueError("refused")

    monkeypatch.setattr(train, "_build", refuse)
    cfg = smoke_cfg(tmp_path, smoke_data_root)
    with pytest.raises(ValueError, match="refused"):
        train.train_stage1(cfg)
    assert not (tmp_path / "runs").exists()


def _die_or_finish(cfg, stage1_if_exists):
    """``run_one`` in a pool worker: the wo_ddca run kills its own worker (as the kernel's
    out-of-memory killer would); full is still running then; the others finish at once."""
    import signal

    if cfg.variant == "wo_ddca":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60 if cfg.variant == "full" else 0)
    return False, 0.5


@pytest.mark.slow  # spawns two process pools
def test_a_killed_pool_worker_fails_its_runs_and_the_others_go_on(tmp_path, smoke_data_root,
                                                                  monkeypatch):
    import threading

    from hiva_lib.engine import ablation
    from hiva_lib.engine.config import make_config
    from hiva_lib.engine.status import StatusFile

    monkeypatch.setattr(ablation, "run_one", _die_or_finish)
    cfg = make_config("synth-disfa", smoke=True, data_root=str(smoke_data_root),
                      runs_root=str(tmp_path / "runs"), results_root=str(tmp_path / "res"))
    jobs = [(0, 1, slug) for slug in ("baseline", "full", "wo_ddca", "wo_cdca")]
    status = StatusFile.open(tmp_path / "res" / "ablation_status.csv")
    out = {}
    call = threading.Thread(target=lambda: out.update(
        table=ablation.run_locally(jobs, cfg, None, status, workers=2)), daemon=True)
    call.start()
    call.join(timeout=300)
    assert not call.is_alive(), "the call waits forever for the dead worker's run"
    table = out["table"].set_index("variant")
    assert table.loc["baseline", "status"] == table.loc["wo_cdca", "status"] == "done"
    for slug in ("wo_ddca", "full"):  # full was in flight in the pool that broke
        assert table.loc[slug, "status"] == "failed"
        assert table.loc[slug, "error"] == ablation.WORKER_DIED
    on_disk = pd.read_csv(status.path).set_index("variant")
    assert on_disk.loc["wo_ddca", "status"] == "failed"
