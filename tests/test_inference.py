"""Inference on your own faces (OpenFace / py-feat columns, every face, the hiva-detect command)
and the efficiency notebook offline. A tiny random-init checkpoint stands in for a trained one:
these tests check faces, rows and columns, never AU values."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
DISFA_AUS = (1, 2, 4, 6, 9, 12, 25, 26)
# written out by hand from OpenFace 2.2's CSV header (frame, face_id, timestamp, confidence,
# success), py-feat's face box and AU names, and OpenFace's AUxx_c occurrence columns
DISFA_COLUMNS = [
    "frame", "face_id", "timestamp", "confidence", "success",
    "FaceRectX", "FaceRectY", "FaceRectWidth", "FaceRectHeight",
    "AU01", "AU02", "AU04", "AU06", "AU09", "AU12", "AU25", "AU26",
    "AU01_c", "AU02_c", "AU04_c", "AU06_c", "AU09_c", "AU12_c", "AU25_c", "AU26_c",
    "source", "error",
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A random-init test-tiny HiVA (stage 2, DISFA's 8 AUs) saved as a final.pt."""
    import torch

    from hiva_lib.engine.checkpoint import atomic_save
    from hiva_lib.model.hiva import HiVA
    from hiva_lib.presets import MODEL_PRESETS

    cfg = MODEL_PRESETS["test-tiny"]
    torch.manual_seed(0)
    model = HiVA(cfg, DISFA_AUS)
    path = tmp_path_factory.mktemp("ckpt") / "final.pt"
    atomic_save(dict(model=model.state_dict(), stage=2, au_ids=list(DISFA_AUS),
                     model_config=dataclasses.asdict(cfg)), path)
    return path


def _face(seed: int, size: int) -> np.ndarray:
    from hiva_lib.data import synthfacs

    face, _ = synthfacs.render_face(synthfacs.sample_identity(seed), {12: 3.0, 25: 2.0},
                                    synthfacs.sample_nuisance(seed + 1), size)
    return face[..., :3]


@pytest.fixture(scope="module")
def two_face_video(tmp_path_factory) -> Path:
    """3 frames at 10 fps: a 160 px SynthFACS face on the left, a 128 px one on the right."""
    frame = np.zeros((240, 440, 3), np.uint8)
    frame[40:200, 20:180] = _face(3, 160)
    frame[56:184, 280:408] = _face(8, 128)
    path = tmp_path_factory.mktemp("video") / "pair.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (440, 240))
    for _ in range(3):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def test_columns_follow_openface_and_pyfeat_in_a_fixed_order():
    from hiva_lib.study.inference import au_column, output_columns

    assert output_columns(DISFA_AUS) == DISFA_COLUMNS
    assert [au_column(a) for a in (1, 12, 45)] == ["AU01", "AU12", "AU45"]


def test_real_photo_one_face_found_with_the_documented_columns(checkpoint, tmp_path):
    """scikit-image's public-domain astronaut photo through MTCNN, alignment and the model."""
    pytest.importorskip("facenet_pytorch")
    from skimage import data

    from hiva_lib.study.inference import infer

    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    table = infer(checkpoint, photo, tmp_path / "out.csv", align="auto", progress=False)
    written = pd.read_csv(tmp_path / "out.csv")
    assert list(written.columns) == DISFA_COLUMNS
    assert len(written) == 1 and written.success.tolist() == [1]
    row = written.iloc[0]
    assert (row.frame, row.face_id, row.timestamp, row.source) == (1, 0, 0.0, "astronaut.png")
    assert row.confidence > 0.9
    x, y, w, h = row[["FaceRectX", "FaceRectY", "FaceRectWidth", "FaceRectHeight"]]
    assert 0 <= x and x + w <= 512 and 0 <= y and y + h <= 512 and w > 40 and h > 40
    probs = row[DISFA_COLUMNS[9:17]].to_numpy(float)
    present = row[DISFA_COLUMNS[17:25]].to_numpy(int)
    assert ((probs >= 0) & (probs <= 1)).all()
    np.testing.assert_array_equal(present, (probs >= 0.5).astype(int))
    record = json.loads((tmp_path / "out.json").read_text())
    assert record["threshold"] == 0.5 and record["columns"] == DISFA_COLUMNS
    assert record["faces"] == 1 and table.attrs["overlays"] == str(tmp_path / "out_overlays")
    assert (tmp_path / "out_overlays" / "astronaut.png_000001_face0.png").exists()


def test_console_command_one_row_per_frame_and_face(checkpoint, two_face_video, tmp_path):
    """hiva-detect on a video of two faces side by side, run as a user runs it."""
    pytest.importorskip("facenet_pytorch")
    out = tmp_path / "pair.csv"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "hiva_lib.study.cli", str(two_face_video), "--checkpoint",
         str(checkpoint), "--out", str(out), "--device", "cpu", "--batch-size", "2",
         "--threshold", "0.6"], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "6 faces in 3 frames" in done.stdout and "100%" in done.stdout  # the progress bar
    table = pd.read_csv(out)
    assert list(table.columns) == DISFA_COLUMNS
    pairs = list(zip(table.frame, table.face_id, strict=True))
    assert pairs == [(f, i) for f in (1, 2, 3) for i in (0, 1)]
    np.testing.assert_allclose(table.timestamp, [0, 0, 0.1, 0.1, 0.2, 0.2], atol=1e-6)
    assert (table.success == 1).all() and (table.source == "pair.avi").all()
    centre = table.FaceRectX + table.FaceRectWidth / 2
    assert (centre[table.face_id == 0] < 220).all() and (centre[table.face_id == 1] > 220).all()
    probs = table[DISFA_COLUMNS[9:17]].to_numpy(float)
    np.testing.assert_array_equal(table[DISFA_COLUMNS[17:25]].to_numpy(int),
                                  (probs >= 0.6).astype(int))
    assert json.loads(out.with_suffix(".json").read_text())["threshold"] == 0.6
    assert not out.with_name("pair_overlays").exists()  # overlays only when asked


def test_largest_only_keeps_one_face_per_frame(checkpoint, two_face_video, tmp_path):
    pytest.importorskip("facenet_pytorch")
    from hiva_lib.study.inference import infer

    table = infer(checkpoint, two_face_video, tmp_path / "out", faces="largest",
                  overlays=False, progress=False)
    assert list(table.frame) == [1, 2, 3] and (table.face_id == 0).all()
    assert (table.FaceRectX < 220).all()  # the 160 px face on the left, not the 128 px one


def test_console_command_errors_are_one_clear_line(checkpoint, tmp_path, capsys):
    from hiva_lib.study.cli import main

    assert main([str(tmp_path / "missing.mp4"), "--checkpoint", str(checkpoint),
                 "--out", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("hiva-detect: error:") and "no such file" in err
    assert len(err.splitlines()) == 1
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    assert main([str(image), "--checkpoint", str(tmp_path / "none.pt"),
                 "--out", str(tmp_path / "o.csv")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main([str(image), "--checkpoint", str(checkpoint), "--threshold", "1.5",
                 "--out", str(tmp_path / "o.csv")]) == 2
    assert "threshold=1.5" in capsys.readouterr().err
    assert not (tmp_path / "o.csv").exists()  # bad input writes nothing


def test_an_unreadable_image_in_a_folder_is_a_flagged_row(checkpoint, tmp_path, capsys):
    """One corrupt file does not stop the folder: its row says why, the others are scored,
    and the end of the run names it."""
    from hiva_lib.study.inference import infer

    folder = tmp_path / "faces"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), cv2.cvtColor(_face(3, 96), cv2.COLOR_RGB2BGR))
    (folder / "b.jpg").write_bytes(b"not a jpeg")
    table = infer(checkpoint, folder, tmp_path / "out", align="skip", overlays=False,
                  progress=False)
    rows = table.set_index("source")
    assert rows.loc["a.png", "success"] == 1 and pd.isna(rows.loc["a.png", "error"])
    assert rows.loc["b.jpg", "success"] == 0 and "unreadable image" in rows.loc["b.jpg", "error"]
    assert "1 unreadable file(s) skipped" in capsys.readouterr().out
    record = json.loads(Path(table.attrs["record"]).read_text())
    assert record["unreadable"] == ["b.jpg"]


def test_console_command_is_installed_with_the_project():
    import importlib

    text = (ROOT / "pyproject.toml").read_text()  # tomllib is Python 3.11+; we support 3.10
    section = text.split("[project.scripts]", 1)[1].split("\n[", 1)[0]
    module, func = re.search(r'^hiva-detect = "([\w.]+):(\w+)"', section, re.M).groups()
    from hiva_lib.study.cli import main

    assert getattr(importlib.import_module(module), func) is main


# ----------------------------------------------------------------------------- efficiency
def _bert_params(vocab: int, hidden: int, layers: int, ff: int, positions: int = 512,
                 types: int = 2) -> int:
    """BERT's parameter count from its sizes (embeddings + LayerNorm, per layer: Q, K, V, O,
    LayerNorm, feed-forward in and out, LayerNorm; no pooler)."""
    embeddings = (vocab + positions + types) * hidden + 2 * hidden
    layer = 4 * (hidden * hidden + hidden) + 2 * hidden + (hidden * ff + ff) + (ff * hidden
                                                                                + hidden)
    return embeddings + layers * (layer + 2 * hidden)


def test_unknown_text_model_needs_the_hub_explicitly():
    from hiva_lib.study.efficiency import text_config

    with pytest.raises(ValueError, match="hub=True"):
        text_config("bert-base-uncased")


_NET_GUARD = '''
import os, socket
_log = os.environ["HIVA_NET_LOG"]
_local = ("127.0.0.1", "::1", "localhost", "0.0.0.0")
def _note(host):
    with open(_log, "a") as f:
        f.write(f"{os.getpid()} {host}\\n")
    raise OSError(101, "network guard of the test: no network here")
_connect, _gai = socket.socket.connect, socket.getaddrinfo
def connect(self, address):
    if isinstance(address, tuple) and address[0] not in _local:
        _note(address)
    return _connect(self, address)
def getaddrinfo(host, *args, **kw):
    if host not in _local and host is not None:
        _note(host)
    return _gai(host, *args, **kw)
socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo
'''


@pytest.mark.slow
def test_notebook_07_paper_preset_offline_without_hub_or_wait(tmp_path):
    """As a newcomer runs it on a machine without network: no HF_HUB_OFFLINE set, every
    connection attempt recorded by a guard in every Python process (the kernel too)."""
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(_NET_GUARD)
    log = tmp_path / "net.log"
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(PYTHONPATH=f"{guard}{os.pathsep}{ROOT}", HIVA_NET_LOG=str(log))
    params = ["-y", "presets: [paper]", "-p", "device", "cpu", "-p", "batch_size", "2",
              "-p", "reps", "1", "-p", "cpu_reps", "1", "-p", "results_root", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-m", "papermill", str(ROOT / "notebooks" / "07_efficiency.ipynb"),
         str(tmp_path / "07.ipynb"), "--log-output", "-k", "python3", *params],
        capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert not log.exists(), f"network attempts: {log.read_text()}"
    assert not re.search(r"retr(y|ying)|huggingface\.co|IProgress", output, re.IGNORECASE)
    row = pd.read_csv(tmp_path / "efficiency.csv").iloc[0]
    assert "no hub" in row.text_config
    # BERT-large counted from its published sizes, independently of transformers
    bert = _bert_params(30522, 1024, 24, 4096)
    assert row.params_text_trainable_bert + row.params_frozen_bert == bert == 334_092_288
    assert row.params_word_embeddings == 30522 * 1024
    assert row.params_paper_counting == row.params_evaluated + 30522 * 1024
    assert abs(row.params_paper_counting / 1e6 - 156.08) < 0.05  # the paper's count
    # Swin-B at 224 px: 15.4 G multiply-adds (Swin paper, Table 1); the image path adds the
    # branches and attention on a 7x7 map, the text path is apart
    assert 15.4 < row.GMACs_image_path < 17 and row.GMACs_text > 1
    assert row.GFLOPs_total == pytest.approx(2 * row.GMACs_total, rel=1e-3)


@pytest.mark.slow
def test_the_counter_reproduces_swin_b_published_multiply_adds():
    """Swin-B at 224 px: 15.4 G multiply-adds in the Swin paper's Table 1 (there called
    FLOPs); our counter (FlopCounterMode / 2) on timm's Swin-B must agree."""
    import timm
    import torch

    from hiva_lib.study.efficiency import _flops

    swin = timm.create_model("swin_base_patch4_window7_224", pretrained=False,
                             num_classes=0).eval()
    macs = _flops(swin.forward_features, torch.randn(1, 3, 224, 224)) / 2e9
    assert macs == pytest.approx(15.4, abs=0.1)
