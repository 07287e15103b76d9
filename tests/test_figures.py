"""Figures 4-7, attention scoring, efficiency and inference: notebooks 06-08 at smoke size."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import run_notebook
from PIL import Image

from hiva_lib import attention_scoring as S


# ----------------------------------------------------------------------------- scoring
def _region() -> np.ndarray:
    mask = np.zeros((32, 32), bool)
    mask[8:16, 4:20] = True
    return mask


def test_planted_map_inside_the_region_scores_one():
    mask = _region()
    inside = np.zeros((32, 32))
    inside[10:14, 6:18] = np.linspace(0.2, 1.0, 12)  # a graded blob, all inside
    assert S.pointing_game(inside, mask) == 1.0
    assert S.energy_inside(inside, mask) == pytest.approx(1.0)


def test_planted_map_outside_the_region_scores_zero():
    mask = _region()
    outside = np.zeros((32, 32))
    outside[20:30, 22:30] = 1.0
    assert S.pointing_game(outside, mask) == 0.0
    assert S.energy_inside(outside, mask) == 0.0


def test_low_resolution_map_is_upsampled_to_the_mask():
    mask = _region()  # 8x8 cells of 4 px: rows 2-3, columns 1-4 are the region
    cells = np.zeros((8, 8))
    cells[2:4, 1:5] = 1.0
    assert S.energy_inside(cells, mask, mode="nearest") == pytest.approx(1.0)
    assert S.pointing_game(cells, mask, mode="nearest") == 1.0
    half = cells.copy()
    half[6, 6] = 8.0  # as much mass outside as inside (8 cells x 1 vs 1 cell x 8)
    assert S.energy_inside(half, mask, mode="nearest") == pytest.approx(0.5)
    assert S.pointing_game(half, mask, mode="nearest") == 0.0
    # bilinear: the blob's edges blur, but most of its mass and its peak stay inside
    assert 0.6 < S.energy_inside(cells, mask) < 1.0
    assert S.pointing_game(cells, mask) == 1.0


def test_uniform_map_scores_the_area_and_score_maps_is_pairwise():
    mask = _region()
    area = mask.mean()
    flat = np.ones((7, 7))
    assert S.energy_inside(flat, mask) == pytest.approx(area)
    assert S.pointing_game(flat, mask) == pytest.approx(area)
    inside = np.zeros((32, 32))
    inside[12, 10] = 1.0
    out = S.score_maps(np.stack([inside, inside]), np.stack([mask, np.zeros_like(mask)]))
    assert out["pointing"][0] == 1.0 and out["energy"][0] == 1.0
    assert out["area"][0] == pytest.approx(area)
    assert np.isnan(out["pointing"][1])  # empty region: not scored


def test_masks_are_cut_to_the_models_centre_crop():
    masks = np.zeros((1, 32, 32), bool)
    masks[0, 0:4, :] = True  # a band at the very top of the image
    masks[0, 14:18, 14:18] = True  # and a square in the middle
    view = S.masks_in_view(masks, load_size=64, crop=56)  # crop drops 4 px of 64 per side
    assert view.shape == (1, 56, 56)
    # independent: nearest x2 resize, then [4:60]
    expected = np.repeat(np.repeat(masks[0], 2, 0), 2, 1)[4:60, 4:60]
    np.testing.assert_array_equal(view[0], expected)


# ----------------------------------------------------------------------------- Grad-CAM
@pytest.mark.parametrize("preset, stage_name, nhwc", [("cpu-small", "layer4", False),
                                                     ("test-tiny", "layers.1", True)])
def test_gradcam_targets_the_last_backbone_stage(preset, stage_name, nhwc):
    """CNN (NCHW, no reshape) and Swin (NHWC, reshape transform) backbones both give maps."""
    import torch

    from hiva_lib.figures import gradcam, gradcam_layer
    from hiva_lib.hiva import MODEL_PRESETS, HiVA

    torch.manual_seed(0)
    cfg = dataclasses.replace(MODEL_PRESETS[preset], use_text=False)
    model = HiVA(cfg, ("AU1", "AU2", "AU4"))
    layer, is_nhwc = gradcam_layer(model)
    assert layer is model.backbone.body.get_submodule(stage_name) and is_nhwc == nhwc
    x = torch.randn(2, 3, cfg.img_size, cfg.img_size)
    maps = gradcam(model, x, [0, 2])
    assert maps.shape == (2, cfg.img_size, cfg.img_size)
    assert maps.min() >= 0 and maps.max() <= 1 and maps.std() > 0


# ----------------------------------------------------------------------------- the study
@pytest.fixture(scope="module")
def study(tmp_path_factory, smoke_data_root):
    """A smoke study: Baseline (stage 1), HiVA and HiVA w/o L_diff on synth-disfa, fold 1."""
    from hiva_lib.config import make_config
    from hiva_lib.train import run_variant

    base = tmp_path_factory.mktemp("figstudy")
    roots = dict(data_root=str(smoke_data_root), runs_root=str(base / "runs"),
                 results_root=str(base / "results"))
    for v in ("baseline", "full", "wo_ldiff"):
        run_variant(make_config("synth-disfa", smoke=True, variant=v, **roots))
    return roots, base


def _check_png(path: Path, min_std: float = 8.0) -> None:
    assert path.exists() and path.with_suffix(".pdf").exists(), path
    assert path.stat().st_size > 10_000, f"{path} is suspiciously small"
    pixels = np.asarray(Image.open(path).convert("L"), np.float64)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 200
    assert pixels.std() > min_std, f"{path} looks blank (pixel std {pixels.std():.1f})"


def test_06_figures_notebook(study):
    roots, base = study
    figs = base / "figures"
    run_notebook("06_figures", base, dataset="synth-disfa", smoke=True, figures_root=str(figs),
         max_frames=16, **roots)
    out = figs / "synth-disfa"
    for name in ("fig4_f1_gain", "fig5_text_similarity", "fig6_attention", "fig7_au_graphs",
                 "attention_scores"):
        _check_png(out / f"{name}.png")

    # Fig. 4's table agrees with the metrics files it was drawn from
    gains = pd.read_csv(out / "fig4_f1_gain.csv")
    res = Path(roots["results_root"]) / "synth-disfa"
    full = json.loads((res / "full/seed0/fold1/metrics.json").read_text())["f1"]
    basel = json.loads((res / "baseline/seed0/fold1/metrics.json").read_text())["f1"]
    expected = [100 * (full[k] - basel[k]) for k in gains["au"]]
    np.testing.assert_allclose(gains["gain"], expected, atol=1e-9)
    from hiva_lib.datasets import load_prepared

    data = load_prepared(Path(roots["data_root"]) / "synth-disfa")
    train_rows, _ = data.split(1)
    np.testing.assert_allclose(gains["frequency"], 100 * data.labels(train_rows).mean(0))

    scores = pd.read_csv(res / "attention_scores.csv")
    assert {"full", "wo_ldiff", "baseline"} <= set(scores.variant)
    assert set(scores[scores.variant == "full"].method) == {"ddca", "cdca", "gradcam"}
    assert set(scores[scores.variant == "baseline"].method) == {"gradcam"}  # no text branch
    per_au = scores[scores.au != "mean"].dropna(subset=["energy"])
    assert len(per_au) and per_au[["pointing", "energy", "chance"]].stack().between(0, 1).all()


def test_07_efficiency_notebook(study):
    from transformers import AutoModel

    from hiva_lib.pretrained import minilm_path

    roots, base = study
    run_notebook("07_efficiency", base, smoke=True, results_root=roots["results_root"])
    table = pd.read_csv(Path(roots["results_root"]) / "efficiency.csv")
    row = table.iloc[0]
    assert row.preset == "test-tiny"
    # kept BERT layers + the frozen part == the whole MiniLM, counted independently
    minilm = sum(p.numel() for p in AutoModel.from_pretrained(str(minilm_path())).parameters())
    assert row.params_text_trainable_bert + row.params_frozen_bert == minilm
    assert row.params_trainable_stage1 < row.params_trainable_stage2 <= row.params_total
    assert row.GFLOPs_total > row.GFLOPs_text > 0 and row.ms_per_batch > 0


def test_efficiency_table_never_overwrites_a_measurement(tmp_path):
    from hiva_lib.efficiency import efficiency_table

    out = tmp_path / "efficiency.csv"
    first, path1 = efficiency_table(["test-tiny"], "disfa", "cpu", 2, 1, 1, out)
    before = out.read_text()
    _, path2 = efficiency_table(["test-tiny"], "disfa", "cpu", 2, 1, 1, out)
    assert (path1, path2) == (out, tmp_path / "efficiency-v2.csv")
    assert out.read_text() == before and path2.exists()
    assert first.loc[0, "n_aus"] == 8 and first.loc[0, "params_total"] > 0


def test_08_inference_notebook_on_a_video(study):
    roots, base = study
    from hiva_lib.datasets import load_prepared

    data = load_prepared(Path(roots["data_root"]) / "synth-disfa")
    _, test_rows = data.split(1)
    frames = [cv2.imread(str(data.image_path(int(r)))) for r in test_rows[:5]]
    video = base / "clip.avi"
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (w, h))
    for f in frames:
        writer.write(f)
    writer.release()
    out_dir = base / "inference"
    run_notebook("08_inference", base, dataset="synth-disfa", smoke=True, source=str(video),
         out_dir=str(out_dir), align="skip", **roots)
    table = pd.read_csv(out_dir / "au_probabilities.csv")
    assert list(table.frame) == [0, 1, 2, 3, 4] and table.face_found.all()
    probs = table[[c for c in table.columns if c.startswith("AU")]].to_numpy()
    assert probs.shape == (5, 8) and ((probs >= 0) & (probs <= 1)).all()
    overlays = sorted((out_dir / "overlays").glob("*.png"))
    assert len(overlays) == 5
    assert overlays[0].stat().st_size > 10_000
    assert np.asarray(Image.open(overlays[0]).convert("L"), np.float64).std() > 5.0


def test_infer_matches_the_evaluation_path_and_rejects_bad_input(study, tmp_path):
    import torch

    from hiva_lib.datasets import load_prepared
    from hiva_lib.figures import Study
    from hiva_lib.inference import InferenceError, infer
    from hiva_lib.loader import FrameDataset, load_size_for, prepare_batch
    from hiva_lib.train import load_trained

    roots, _ = study
    st = Study.open("synth-disfa", smoke=True, **roots)
    ckpt = st.checkpoint("full")
    data = load_prepared(Path(roots["data_root"]) / "synth-disfa")
    rows = data.split(1)[1][:4]
    table = infer(ckpt, [data.image_path(int(r)) for r in rows], tmp_path / "a", align="skip",
                  overlays=False)
    model = load_trained(ckpt)
    crop = model.cfg.img_size
    ds = FrameDataset(data, rows, load_size_for(crop))
    with torch.no_grad():
        x = prepare_batch(torch.stack([ds[i][0] for i in range(len(rows))]), crop, False)
        expected = torch.sigmoid(model(x).logits).numpy()
    got = table[[f"AU{a}" for a in data.au_ids]].to_numpy()
    np.testing.assert_allclose(got, expected, atol=0.03)  # PIL vs OpenCV resizing only

    with pytest.raises(InferenceError, match="no such file"):
        infer(ckpt, tmp_path / "missing.mp4", tmp_path / "b", align="skip")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InferenceError, match="unsupported file type"):
        infer(ckpt, tmp_path / "notes.txt", tmp_path / "b", align="skip")
    assert not (tmp_path / "b").exists()  # bad input writes nothing


def test_frame_without_a_face_is_reported_not_guessed(study, tmp_path):
    pytest.importorskip("facenet_pytorch")
    from hiva_lib.figures import Study
    from hiva_lib.inference import infer

    roots, _ = study
    ckpt = Study.open("synth-disfa", smoke=True, **roots).checkpoint("full")
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((160, 160, 3), 128, np.uint8))
    table = infer(ckpt, blank, tmp_path / "out", align="auto")
    assert not table.face_found.iloc[0] and np.isnan(table["AU1"].iloc[0])
