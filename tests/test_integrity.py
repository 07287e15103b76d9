"""Integrity end to end: damaged checkpoints and changed images never pass
silently, versions never nest, locks hold under races, a full disk gets one clear error, and
every other bad input is one error before anything is written."""
from __future__ import annotations

import ast
import dataclasses
import errno
import hashlib
import json
import multiprocessing
import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import own_data, smoke_cfg
from PIL import Image

from hiva_lib import integrity
from hiva_lib.data.prepared import IMAGE_MANIFEST, DatasetError, data_fingerprint, load_prepared
from hiva_lib.integrity import DamagedFileError, OutOfSpaceError

ROOT = Path(__file__).resolve().parents[1]


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


_cfg, _own_data = smoke_cfg, own_data  # shared with test_trust (conftest)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, smoke_data_root) -> Path:
    """A finished, evaluated smoke Baseline (stage 1): <base>/runs and <base>/res."""
    from hiva_lib.engine.train import run_variant

    base = tmp_path_factory.mktemp("trained")
    run_variant(_cfg(base, smoke_data_root, variant="baseline"))
    return base


def _copy(trained: Path, tmp_path: Path) -> Path:
    for part in ("runs", "res"):
        shutil.copytree(trained / part, tmp_path / part)
    return tmp_path


def _flip(path: Path) -> None:
    """Flip bytes in the middle of the file (inside the largest tensor: torch.load does not
    notice)."""
    data = bytearray(path.read_bytes())
    for k in range(len(data) // 2, len(data) // 2 + 64):
        data[k] ^= 0xFF
    path.write_bytes(bytes(data))


# ----------------------------------------------------------------------------- 1. checkpoints
def test_final_checkpoint_records_its_sha256_in_sha256sum_format(trained):
    from hiva_lib.engine.runs import stage1_dir

    run = stage1_dir(_cfg(trained, Path("unused")))
    record = (run / "final.pt.sha256").read_text()
    assert record == f"{_sha(run / 'final.pt')}  final.pt\n"


def test_a_byte_flipped_checkpoint_is_refused_everywhere(trained, tmp_path, smoke_data_root):
    from hiva_lib.engine.evaluate import evaluate_run, load_trained
    from hiva_lib.engine.runs import stage1_dir
    from hiva_lib.engine.train import load_stage1_checkpoint, train_stage1
    from hiva_lib.study.cli import main
    from hiva_lib.study.study import Study

    base = _copy(trained, tmp_path)
    cfg = _cfg(base, smoke_data_root)
    final = stage1_dir(cfg) / "final.pt"
    good = _sha(final)
    _flip(final)
    bad = _sha(final)
    before = _tree(base / "runs") + _tree(base / "res")
    expected = f"final.pt: SHA-256 {bad} differs from the {good} recorded in .*final.pt.sha256"
    with pytest.raises(DamagedFileError, match=expected + ".*if_exists version"):
        train_stage1(dataclasses.replace(cfg, variant="baseline"))  # training reuse
    with pytest.raises(DamagedFileError, match=expected):
        evaluate_run(dataclasses.replace(cfg, variant="baseline"), final, final.parent)
    data = load_prepared(smoke_data_root / "synth-disfa")
    with pytest.raises(DamagedFileError, match=expected):
        load_stage1_checkpoint(cfg, data)  # stage 2 starts from it
    with pytest.raises(DamagedFileError, match=expected):
        load_trained(final)
    study = Study.open("synth-disfa", smoke=True, data_root=str(smoke_data_root),
                       runs_root=str(base / "runs"), results_root=str(base / "res"))
    with pytest.raises(DamagedFileError, match=f"SHA-256 {bad} differs from the {good} "
                                               "recorded in .*metrics.json"):
        study.checkpoint("baseline")  # figures
    image = tmp_path / "in" / "face.png"
    image.parent.mkdir()
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(image)
    assert main([str(image), "--checkpoint", str(final), "--out", str(tmp_path / "o.csv"),
                 "--align", "skip", "--no-progress"]) == 2  # inference, the CLI
    assert _tree(base / "runs") + _tree(base / "res") == before  # no new run, no new result


def test_a_truncated_final_of_a_finished_run_names_the_way_out(trained, tmp_path,
                                                               smoke_data_root, capsys):
    from hiva_lib.engine.runs import stage1_dir
    from hiva_lib.engine.train import train_stage1

    base = _copy(trained, tmp_path)
    cfg = _cfg(base, smoke_data_root)
    final = stage1_dir(cfg) / "final.pt"
    (final.parent / "final.pt.sha256").unlink()  # a run saved before SHA-256 records
    final.write_bytes(final.read_bytes()[:1000])
    with pytest.raises(DamagedFileError, match=r"checkpoint of a finished run is unreadable.*"
                                               r"-p if_exists version.*or move .*fold1 away"):
        train_stage1(cfg)
    assert not (final.parent / "final.pt.sha256").exists()  # a damaged file is never recorded


def test_a_run_saved_before_records_gets_one_on_its_first_load(trained, tmp_path,
                                                               smoke_data_root, capsys):
    from hiva_lib.engine.runs import stage1_dir
    from hiva_lib.engine.train import train_stage1

    base = _copy(trained, tmp_path)
    final = stage1_dir(_cfg(base, smoke_data_root)) / "final.pt"
    (final.parent / "final.pt.sha256").unlink()
    assert train_stage1(_cfg(base, smoke_data_root)).skipped  # still reused
    assert "saved before SHA-256 records" in capsys.readouterr().out
    assert (final.parent / "final.pt.sha256").read_text().split()[0] == _sha(final)


def test_hash_cache_follows_size_and_mtime(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"a" * 100)
    assert integrity.file_sha256(path) == hashlib.sha256(b"a" * 100).hexdigest()
    path.write_bytes(b"b" * 101)
    assert integrity.file_sha256(path) == hashlib.sha256(b"b" * 101).hexdigest()


# ----------------------------------------------------------------------------- 2. images
def test_preparation_writes_the_image_manifest(smoke_data_root):
    root = smoke_data_root / "synth-disfa"
    index = pd.read_csv(root / "index.csv", dtype={"image": str})
    lines = (root / IMAGE_MANIFEST).read_text().splitlines()
    assert lines == [f"{_sha(root / rel)}  {rel}" for rel in index["image"]]
    # the data version stays SHA-256 of meta.json and index.csv only (results keep matching)
    digest = hashlib.sha256()
    for name in ("meta.json", "index.csv"):
        digest.update(name.encode() + b"\0" + (root / name).read_bytes() + b"\0")
    assert data_fingerprint(root) == digest.hexdigest()


def test_images_changed_in_place_are_refused_before_any_reuse(trained, tmp_path,
                                                              smoke_data_root):
    from hiva_lib.engine.train import train_stage1

    data_root = _own_data(tmp_path, smoke_data_root)
    root = data_root / "synth-disfa"
    index = pd.read_csv(root / "index.csv", dtype={"image": str})
    before = data_fingerprint(root)
    target = root / index["image"].iat[3]
    with Image.open(target) as im:
        im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(target)  # mirrored
    assert data_fingerprint(root) == before  # the data version alone does not see it
    with pytest.raises(DatasetError, match=rf"{index['image'].iat[3]}: 1 of {len(index)} images "
                                           "differ from the SHA-256 recorded in .*images.sha256"):
        load_prepared(root)
    base = _copy(trained, tmp_path / "out")
    with pytest.raises(DatasetError, match="changed after preparation"):
        train_stage1(_cfg(base, data_root))


def test_full_rehash_sees_what_size_and_mtime_hide(tmp_path, smoke_data_root):
    from hiva_lib.data.prepared import verify_image_content

    root = _own_data(tmp_path, smoke_data_root) / "synth-disfa"
    load_prepared(root)  # fills the size/mtime cache
    target = root / pd.read_csv(root / "index.csv", dtype={"image": str})["image"].iat[0]
    st = target.stat()
    data = bytearray(target.read_bytes())
    data[-20] ^= 0xFF  # same size
    target.write_bytes(bytes(data))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime
    verify_image_content(root)  # the fast path trusts size and mtime
    with pytest.raises(DatasetError, match="1 of .* images differ"):
        verify_image_content(root, full=True)


def test_data_prepared_before_manifests_gets_one(tmp_path, smoke_data_root, capsys):
    root = _own_data(tmp_path, smoke_data_root) / "synth-disfa"
    manifest = root / IMAGE_MANIFEST
    expected = manifest.read_text()
    manifest.unlink()
    load_prepared(root)
    assert manifest.read_text() == expected
    assert "prepared before image manifests" in capsys.readouterr().out
    manifest.write_text(expected[: len(expected) // 2])  # truncated
    with pytest.raises(DatasetError, match="images.sha256: (line .* is not|lists other images)"):
        load_prepared(root)


def test_results_of_other_image_content_are_not_reused(tmp_path):
    from hiva_lib.engine.evaluate import reused_results

    base = tmp_path / "fold1"
    base.mkdir()
    metrics = dict(checkpoint_sha256="c" * 64, data_fingerprint="d" * 64)
    (base / "metrics.json").write_text(json.dumps(metrics))  # recorded before image content
    assert reused_results(base, "c" * 64, "d" * 64, "e" * 64)[1] == base
    (base / "metrics.json").write_text(json.dumps({**metrics, "image_content": "f" * 64}))
    assert reused_results(base, "c" * 64, "d" * 64, "e" * 64) is None
    assert reused_results(base, "c" * 64, "d" * 64, "f" * 64)[1] == base


# ----------------------------------------------------------------------------- 3. versions
def test_a_version_of_a_version_is_never_made(tmp_path):
    from hiva_lib.integrity import first_free, latest_versions

    for name in ("fold1", "fold1-v2"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text("{}")
    assert first_free(tmp_path / "fold1-v2", "metrics.json") == tmp_path / "fold1-v3"
    assert first_free(tmp_path / "fold1", "metrics.json") == tmp_path / "fold1-v3"
    (tmp_path / "fold1-v3").mkdir()
    assert latest_versions(tmp_path.glob("fold1*")) == [tmp_path / "fold1-v3"]


def test_study_resolves_recorded_checkpoints_under_its_runs_root(trained, tmp_path,
                                                                 smoke_data_root):
    from hiva_lib.study.study import Study

    moved = _copy(trained, tmp_path)  # the metrics name checkpoints relative to a runs root
    recorded = json.loads(next((moved / "res").rglob("metrics.json")).read_text())["checkpoint"]
    assert not Path(recorded).is_absolute() and recorded.startswith("synth-disfa/")
    study = Study.open("synth-disfa", smoke=True, data_root=str(smoke_data_root),
                       runs_root=str(moved / "runs"), results_root=str(moved / "res"))
    assert study.checkpoint("baseline") == moved / "runs" / recorded


# ----------------------------------------------------------------------------- 4. locks
def _dead_pid() -> int:
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1  # no process has it


def _taker(folder: str, barrier, results, trials: int) -> None:
    from hiva_lib.engine.run_lock import RunLockedError, run_lock

    for _ in range(trials):
        barrier.wait()  # the stale LOCK is in place
        try:
            with run_lock(Path(folder)):
                results.put(("won", os.getpid()))
                time.sleep(0.05)  # held while the other tries
        except RunLockedError:
            results.put(("refused", os.getpid()))
        barrier.wait()  # both done: the next trial


def test_two_processes_taking_over_a_stale_lock_exactly_one_wins(tmp_path, capsys):
    ctx = multiprocessing.get_context("fork")
    trials, barrier, results = 40, ctx.Barrier(3), ctx.Queue()
    takers = [ctx.Process(target=_taker, args=(str(tmp_path), barrier, results, trials))
              for _ in range(2)]
    for p in takers:
        p.start()
    outcomes = []
    for _ in range(trials):
        (tmp_path / "LOCK").write_text(json.dumps(dict(pid=_dead_pid(),
                                                       host=socket.gethostname())))
        barrier.wait()
        barrier.wait()
        outcomes.append(sorted(results.get(timeout=10)[0] for _ in range(2)))
    for p in takers:
        p.join(timeout=10)
    assert outcomes == [["refused", "won"]] * trials
    assert not (tmp_path / "LOCK").exists()


def test_a_lock_from_before_boot_is_stale_even_with_a_live_pid(tmp_path, capsys):
    from hiva_lib.engine.run_lock import boot_time, run_lock

    boot = boot_time()
    if boot is None:
        pytest.skip("no boot time on this system")
    lock = tmp_path / "LOCK"
    lock.write_text(json.dumps(dict(pid=os.getpid(), host=socket.gethostname())))
    os.utime(lock, (boot - 100, boot - 100))
    with run_lock(tmp_path):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert "from before this machine booted: taken over" in capsys.readouterr().out


def test_an_empty_lock_is_handled(tmp_path, capsys):
    from hiva_lib.engine.run_lock import RunLockedError, run_lock

    lock = tmp_path / "LOCK"
    lock.write_text("")  # a process between creating and writing it
    with pytest.raises(RunLockedError, match="just starting in this folder"):
        with run_lock(tmp_path):
            pass
    os.utime(lock, (time.time() - 120, time.time() - 120))  # left by a failed write
    with run_lock(tmp_path):
        pass
    assert "empty or unreadable LOCK, 120 s old" in capsys.readouterr().out
    assert not lock.exists()


def test_a_lock_that_cannot_be_written_is_removed(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from hiva_lib.engine import run_lock

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run_lock, "json", SimpleNamespace(dump=full, loads=json.loads,
                                                      dumps=json.dumps))
    with pytest.raises(OutOfSpaceError, match=f"{tmp_path}: the disk is full; writing LOCK"):
        with run_lock.run_lock(tmp_path):
            pass
    assert not (tmp_path / "LOCK").exists()  # nothing blocks the next run
    monkeypatch.undo()
    with run_lock.run_lock(tmp_path):
        pass


def test_finished_meanwhile_with_other_settings_is_not_reused(tmp_path, smoke_data_root,
                                                              monkeypatch, capsys):
    """Another process finished this folder with another lr while this one waited for its
    lock: this run goes to the next version instead of reusing it."""
    from hiva_lib.engine import train

    cfg = _cfg(tmp_path, smoke_data_root)
    real = train.resolve_run_dir
    calls = []

    def raced(base, if_exists, wanted):
        calls.append(1)
        if len(calls) == 1:  # resolved while free; then the other process finishes it
            base.mkdir(parents=True)
            (base / "DONE").write_text("x")
            (base / "signature.json").write_text(json.dumps({**wanted, "lr_stage1": 9.0}))
            return base, False
        return real(base, if_exists, wanted)

    monkeypatch.setattr(train, "resolve_run_dir", raced)
    result = train.train_stage1(cfg)
    assert result.run_dir.name == "fold1-v2" and not result.skipped
    assert "finished meanwhile by another process with other settings" in capsys.readouterr().out
    assert sorted(p.name for p in (result.run_dir.parent / "fold1").iterdir()) == [
        "DONE", "signature.json"]


# ----------------------------------------------------------------------------- 5. full disk
def test_a_full_disk_during_a_checkpoint_save(tmp_path, smoke_data_root, monkeypatch):
    import torch

    from hiva_lib.engine.runs import stage1_dir
    from hiva_lib.engine.train import train_stage1

    real = torch.save

    def full_at_final(obj, f, *args, **kwargs):
        if ".final.pt.tmp" in str(f):
            Path(f).write_bytes(b"\0" * 4096)  # a part was written
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_at_final)
    monkeypatch.setattr(integrity.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(
        10**9, 10**9, 0))
    cfg = _cfg(tmp_path, smoke_data_root)
    run = stage1_dir(cfg)
    with pytest.raises(OutOfSpaceError, match=rf"{run}: the disk is full; writing final.pt "
                                              r"needs about \d+\.\d [MK]iB, 0 bytes free"):
        train_stage1(cfg)
    assert [p.name for p in run.iterdir() if p.name.startswith(".") or p.name in (
        "LOCK", "final.pt", "DONE")] == []  # no temporary file, no lock, nothing finished
    monkeypatch.undo()
    result = train_stage1(cfg)  # the next run resumes and finishes
    assert (result.run_dir / "DONE").exists() and result.run_dir == run


def test_atomic_text_write_on_a_full_disk_leaves_nothing(tmp_path, monkeypatch):
    def full(self, data):
        with open(self, "wb") as f:
            f.write(data[:3])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    # a small file's size in bytes, never "0.0 MiB"
    with pytest.raises(OutOfSpaceError, match=f"{tmp_path}: the disk is full; writing a.json "
                                              r"needs about 12 bytes"):
        integrity.atomic_write_json({"a": 1}, tmp_path / "a.json")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- 6. bad input
def _bad_data(tmp_path: Path, smoke_data_root: Path, edit) -> Path:
    data_root = _own_data(tmp_path, smoke_data_root)
    root = data_root / "synth-disfa"
    index = pd.read_csv(root / "index.csv", dtype={"subject": str, "sequence": str,
                                                   "image": str})
    meta = json.loads((root / "meta.json").read_text())
    index, meta = edit(index, meta)
    index.to_csv(root / "index.csv", index=False)
    (root / "meta.json").write_text(json.dumps(meta))
    return data_root


def _yes_in_row_13(index, meta):
    index["AU1"] = index["AU1"].astype(object)
    index.loc[11, "AU1"] = "yes"
    return index, meta


BAD_DATA = [
    (lambda i, m: (pd.concat([i, i.iloc[[4]]], ignore_index=True), m),
     r"rows repeat one image \(e.g. .* in rows \[6, \d+\]\)"),
    (_yes_in_row_13, "label 'yes' in row 13, column AU1 is not 0/1"),
    (lambda i, m: (i.assign(image=i.image.where(i.index != 2, "../../outside.png")), m),
     r"image path '../../outside.png' in row 4 is not inside the data set's folder"),
    (lambda i, m: (i, {**m, "au_ids": m["au_ids"][:7]}),
     r"au_ids \[1, 2, 4, 6, 9, 12, 25\] are not the AU set of synth-disfa"),
]


@pytest.mark.parametrize("edit, fragment", BAD_DATA, ids=["duplicate", "yes", "escape", "aus"])
def test_bad_data_is_one_error_before_a_run_folder(tmp_path, smoke_data_root, edit, fragment):
    from hiva_lib.engine.train import train_stage1

    data_root = _bad_data(tmp_path, smoke_data_root, edit)
    with pytest.raises(DatasetError, match=fragment):
        train_stage1(_cfg(tmp_path, data_root))
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("overrides, fragment", [
    (dict(device="cuda"), "CUDA is not available"),
    (dict(model_overrides={"pretrained": "/no/such/weights.pth"}),
     "weights.pth: backbone weight file not found"),
])
def test_device_and_weights_are_checked_before_a_run_folder(tmp_path, smoke_data_root,
                                                            overrides, fragment):
    import torch

    from hiva_lib.engine.train import train_stage1

    if "device" in overrides and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(Exception, match=fragment):
        train_stage1(_cfg(tmp_path, smoke_data_root, **overrides))
    assert not (tmp_path / "runs").exists()


def test_truncated_records_name_the_file_and_the_fix(trained, tmp_path, smoke_data_root):
    from hiva_lib.engine.evaluate import evaluate_run
    from hiva_lib.engine.runs import resolve_run_dir, signature, stage1_dir

    base = _copy(trained, tmp_path)
    cfg = _cfg(base, smoke_data_root, variant="baseline")
    run = stage1_dir(cfg)
    metrics = next((base / "res").rglob("metrics.json"))
    metrics.write_text(metrics.read_text()[:50])
    with pytest.raises(DamagedFileError, match=f"{metrics}: unreadable.*truncated or damaged. "
                                               "Restore it, or move"):
        evaluate_run(cfg, run / "final.pt", run)
    sig = run / "signature.json"
    sig.write_text(sig.read_text()[:30])
    with pytest.raises(DamagedFileError, match=f"{sig}: unreadable.*if_exists version"):
        resolve_run_dir(run, "skip", signature(cfg, 1))


def test_hiva_detect_refuses_a_torch_file_that_is_no_checkpoint(tmp_path, capsys):
    import torch

    from hiva_lib.study.cli import main

    image = tmp_path / "face.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(image)
    torch.save({"weights": torch.ones(3)}, tmp_path / "other.pt")
    assert main([str(image), "--checkpoint", str(tmp_path / "other.pt"), "--out",
                 str(tmp_path / "o.csv"), "--align", "skip", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a trained HiVA checkpoint (no model, " \
        "model_config, au_ids, stage" in err


def test_hiva_detect_checks_its_output_before_inference(tmp_path, capsys, monkeypatch):
    from hiva_lib.engine import evaluate
    from hiva_lib.study.cli import main

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(evaluate, "load_trained", never)
    image = tmp_path / "face.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(image)
    (tmp_path / "blocker").write_text("a file")
    assert main([str(image), "--checkpoint", str(tmp_path / "x.pt"), "--out",
                 str(tmp_path / "blocker" / "out"), "--no-progress"]) == 2
    assert "blocker: is a file" in capsys.readouterr().err
    if os.geteuid() != 0:  # root writes into read-only folders
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        assert main([str(image), "--checkpoint", str(tmp_path / "x.pt"), "--out",
                     str(ro / "o.csv"), "--no-progress"]) == 2
        assert "not writable" in capsys.readouterr().err


# ----------------------------------------------------------------------------- 7. layers
def test_the_data_package_imports_neither_engine_nor_study():
    """hiva_lib/data/ sits below the engine: what it needs of integrity and paths comes from
    the base layer (hiva_lib.integrity, hiva_lib.project)."""
    leaks = []
    for path in (ROOT / "hiva_lib" / "data").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            leaks += [f"{path.relative_to(ROOT)}: {n}" for n in names
                      if n.startswith(("hiva_lib.engine", "hiva_lib.study"))]
    assert leaks == []


def test_ground_floor_modules_import_no_room():
    for name in ("integrity.py", "project.py", "errors.py"):
        tree = ast.parse((ROOT / "hiva_lib" / name).read_text())
        modules = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not [m for m in modules if m and m.startswith(("hiva_lib.data", "hiva_lib.engine",
                                                              "hiva_lib.study",
                                                              "hiva_lib.model"))], name
