"""Figures 4-7, attention scoring, efficiency and inference: notebooks 06-08 at smoke size."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import run_notebook
from PIL import Image

from hiva_lib.study import attention_scoring as S
from hiva_lib.study.figures import FigureError


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


def test_planted_flat_maps_are_flagged_and_scored_at_chance():
    mask = _region()
    area = mask.mean()
    zeros, const, negative = np.zeros((7, 7)), np.full((7, 7), 0.3), -np.ones((7, 7))
    negative[3, 3] = -0.5  # has a maximum, but no positive mass
    peaked = np.zeros((7, 7))
    peaked[2, 2] = 1.0  # centre at pixel ~(11, 11) of 32: inside the region
    assert S.is_flat(zeros) and S.is_flat(const) and S.is_flat(negative)
    assert not S.is_flat(peaked)
    out = S.score_maps(np.stack([zeros, const, negative, peaked]), np.stack([mask] * 4))
    np.testing.assert_array_equal(out["flat"], [True, True, True, False])
    assert out["pointing"][3] == 1.0
    # every flat map scores the area fraction on both scores, by construction
    np.testing.assert_allclose(out["pointing"][:2], area)
    np.testing.assert_allclose(out["energy"][:3], area)


def test_flat_map_panel_is_labelled():
    import matplotlib.pyplot as plt

    from hiva_lib.study.drawing import overlay

    face = np.full((56, 56, 3), 120, np.uint8)
    peaked = np.zeros((7, 7))
    peaked[2, 3] = 1.0
    fig, axes = plt.subplots(1, 3)
    overlay(axes[0], face, np.zeros((7, 7)), "Grad-CAM")
    overlay(axes[1], face, peaked, "DDCA")
    overlay(axes[2], face, None, "no map")
    labels = [[t.get_text() for t in ax.texts] for ax in axes]
    plt.close(fig)
    assert labels == [["flat map"], [], ["n/a"]]


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

    from hiva_lib.model.hiva import HiVA
    from hiva_lib.presets import MODEL_PRESETS
    from hiva_lib.study.maps import gradcam, gradcam_layer

    torch.manual_seed(0)
    cfg = dataclasses.replace(MODEL_PRESETS[preset], use_text=False)
    model = HiVA(cfg, ("AU1", "AU2", "AU4"))
    layer, is_nhwc = gradcam_layer(model)
    assert layer is model.backbone.body.get_submodule(stage_name) and is_nhwc == nhwc
    x = torch.randn(2, 3, cfg.img_size, cfg.img_size)
    maps = gradcam(model, x, [0, 2])
    assert maps.shape == (2, cfg.img_size, cfg.img_size)
    assert maps.min() >= 0 and maps.max() <= 1 and maps.std() > 0


@pytest.mark.parametrize("preset, use_text", [("cpu-small", False), ("test-tiny", True)])
def test_every_au_gradcam_of_one_pass_equals_pytorch_grad_cam_per_au(preset, use_text):
    """maps_with_gradcam (one forward, gradients above the target layer) against the library's
    GradCAM run once per AU (a forward and a full backward each), CNN and Swin with text."""
    import torch

    from hiva_lib.model.hiva import HiVA
    from hiva_lib.presets import MODEL_PRESETS
    from hiva_lib.study.maps import gradcam, maps_with_gradcam, model_maps

    torch.manual_seed(0)
    cfg = dataclasses.replace(MODEL_PRESETS[preset], use_text=use_text)
    model = HiVA(cfg, (1, 2, 4)).eval()
    x = torch.rand(3, 3, cfg.img_size, cfg.img_size)
    got = maps_with_gradcam(model, x)
    assert got["gradcam"].shape == (3, 3, cfg.img_size, cfg.img_size)
    for j in range(3):
        np.testing.assert_allclose(got["gradcam"][:, j], gradcam(model, x, j), atol=1e-5)
    assert got["gradcam"].std() > 0
    plain = model_maps(model, x)
    for key in ("probs", "ddca", "cdca", "graph"):
        assert (plain[key] is None) == (got[key] is None)
        if plain[key] is not None:
            np.testing.assert_allclose(got[key], plain[key], atol=1e-6)


# ----------------------------------------------------------------------------- versions
def test_checkpoint_is_this_folds_newest_version(tmp_path):
    from hiva_lib.study.figures import Study

    st = Study.open("synth-disfa", smoke=True, data_root=str(tmp_path / "data"),
                    runs_root=str(tmp_path / "runs"), results_root=str(tmp_path / "results"))
    base = tmp_path / "results" / "synth-disfa" / "full" / "seed0"
    for run in ("fold1", "fold1-v2", "fold1-v10", "fold10"):
        ckpt = tmp_path / f"{run}.pt"
        ckpt.write_bytes(b"weights")
        (base / run).mkdir(parents=True)
        (base / run / "metrics.json").write_text(json.dumps({"checkpoint": str(ckpt)}))
    assert st.checkpoint("full") == tmp_path / "fold1-v10.pt"  # not fold10, not v2


def test_fig5_inputs_are_versioned_not_overwritten(tmp_path):
    from types import SimpleNamespace

    from hiva_lib.study.figures import load_fig5_inputs, save_fig5_inputs

    study = SimpleNamespace(dataset="synth-disfa", cfg=SimpleNamespace(
        results_root=str(tmp_path), seed=0, fold=2))
    rng = np.random.default_rng(0)

    def embs(scale):
        return {v: {e: {"H": scale * rng.normal(size=(3, 5)), "Z": rng.normal(size=(3, 4))}
                    for e in (0, 1, 2)} for v in ("wo_ldiff", "full")}

    first, second = embs(1.0), embs(2.0)
    p1 = save_fig5_inputs(study, first, [1, 2, 4])
    assert p1.name == "fig5_text_embeddings_seed0_fold2.npz"
    assert save_fig5_inputs(study, first, [1, 2, 4]) == p1  # same arrays: no new copy
    before = p1.read_bytes()
    p2 = save_fig5_inputs(study, second, [1, 2, 4])
    assert p2.name == "fig5_text_embeddings_seed0_fold2-v2.npz" and p1.read_bytes() == before
    loaded, au_ids, path = load_fig5_inputs(study, ("wo_ldiff", "full"))
    assert path == p2 and au_ids == [1, 2, 4]
    np.testing.assert_array_equal(loaded["full"][2]["H"], second["full"][2]["H"])
    study.cfg.fold = 1  # another run's copy is not used for this one
    with pytest.raises(FigureError, match="no saved Fig. 5 inputs"):
        load_fig5_inputs(study, ("wo_ldiff", "full"))


def test_fig4_relative_panel_first_and_undefined_gains_left_out():
    from hiva_lib.study.figures import plot_f1_gain

    gains = pd.DataFrame({"au": ["AU1", "AU2", "AU4"], "frequency": [5.0, 20.0, 40.0],
                          "gain": [4.0, 1.0, 2.0], "relative_gain": [40.0, 2.0, np.nan],
                          "n_runs": 3})
    fig = plot_f1_gain(gains, "synth-disfa")
    rel, ab = fig.axes[:2]
    assert "relative" in rel.get_ylabel() and "points" in ab.get_ylabel()
    assert len(rel.collections[0].get_offsets()) == 2  # AU4: Baseline F1 0, no ratio
    assert "left out" in rel.get_title() and "AU4" in rel.get_title()
    assert len(ab.collections[0].get_offsets()) == 3
    with pytest.raises(ValueError, match="kinds"):
        plot_f1_gain(gains, "synth-disfa", kinds=("ratio",))


# ----------------------------------------------------------------------------- the study
@pytest.fixture(scope="module")
def study(tmp_path_factory, smoke_data_root):
    """A smoke study: Baseline (stage 1), HiVA and HiVA w/o L_diff on synth-disfa, fold 1."""
    from hiva_lib.engine.config import make_config
    from hiva_lib.engine.train import run_variant

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


@pytest.mark.slow
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
    relative = [100 * (full[k] - basel[k]) / basel[k] if basel[k] > 0 else np.nan
                for k in gains["au"]]
    np.testing.assert_allclose(gains["relative_gain"], relative, atol=1e-9)
    from hiva_lib.data.prepared import load_prepared

    data = load_prepared(Path(roots["data_root"]) / "synth-disfa")
    train_rows, _ = data.split(1)
    np.testing.assert_allclose(gains["frequency"], 100 * data.labels(train_rows).mean(0))

    scores = pd.read_csv(res / "attention_scores.csv")
    assert {"full", "wo_ldiff", "baseline"} <= set(scores.variant)
    assert set(scores[scores.variant == "full"].method) == {"ddca", "cdca", "gradcam"}
    assert set(scores[scores.variant == "baseline"].method) == {"gradcam"}  # no text branch
    per_au = scores[scores.au != "mean"].dropna(subset=["energy"])
    assert len(per_au) and per_au[["pointing", "energy", "chance"]].stack().between(0, 1).all()
    assert (per_au["n_flat"] <= per_au["n_frames"]).all() and (per_au["n_flat"] >= 0).all()

    # Fig. 5's inputs were copied beside the results: the same arrays as the runs' files
    import torch

    copy = np.load(res / "fig5_text_embeddings_seed0_fold1.npz")
    from hiva_lib.study.figures import Study

    text_emb = Study.open("synth-disfa", smoke=True, **roots).checkpoint("full").parent / \
        "text_emb"
    last = sorted(text_emb.glob("epoch*.pt"))[-1]
    np.testing.assert_array_equal(copy["full.H"][-1], torch.load(last)["H"].float().numpy())
    assert list(copy["full.epochs"]) == [int(p.stem[5:]) for p in sorted(
        text_emb.glob("epoch*.pt"))]


def test_flat_maps_are_counted_in_the_scores(study, tmp_path, monkeypatch):
    """Planted: every DDCA map of HiVA is all-zero; the CDCA maps are left as they are."""
    from hiva_lib.study import fig6_attention
    from hiva_lib.study import figures as F

    roots, _ = study
    real = F.model_maps

    def flat_ddca(model, x):
        out = real(model, x)
        out["ddca"] = np.zeros_like(out["ddca"])
        return out

    monkeypatch.setattr(fig6_attention, "model_maps", flat_ddca)  # score_attention's caller
    st = F.Study.open("synth-disfa", smoke=True, **{**roots, "results_root": str(tmp_path)})
    monkeypatch.setattr(st, "checkpoint", F.Study.open("synth-disfa", smoke=True,
                                                       **roots).checkpoint)
    table = F.score_attention(st, ["full"], max_frames=16, gradcam_maps=False)
    per_au = table[(table.au != "mean") & (table.n_frames > 0)].set_index("method")
    ddca, cdca = per_au.loc["ddca"], per_au.loc["cdca"]
    assert (ddca["n_flat"] == ddca["n_frames"]).all()
    np.testing.assert_allclose(ddca["pointing"], ddca["chance"])
    np.testing.assert_allclose(ddca["energy"], ddca["chance"])
    assert (cdca["n_flat"] < cdca["n_frames"]).all()  # real softmax maps are not flat
    assert "n_flat" in pd.read_csv(tmp_path / "synth-disfa" / "attention_scores.csv")


def test_fig5_is_redrawn_from_the_saved_copy_without_runs(study):
    from hiva_lib.study.figures import Study, fig5

    roots, base = study
    fig_root = base / "figures_fig5"
    kw = dict(smoke=True, figures_root=str(fig_root), **roots)
    from_runs = fig5(Study.open("synth-disfa", **kw))  # writes or reuses the copy
    runs = Path(roots["runs_root"])
    away = runs.with_name("runs_moved_away")
    runs.rename(away)  # a fresh clone: no runs/
    try:
        from_copy = fig5(Study.open("synth-disfa", **kw))
    finally:
        away.rename(runs)
    assert list(from_copy) == list(from_runs)
    for label in from_runs:
        assert list(from_copy[label]) == list(from_runs[label])
        for epoch, sim in from_runs[label].items():
            np.testing.assert_allclose(from_copy[label][epoch], sim)
    _check_png(fig_root / "synth-disfa" / "fig5_text_similarity.png", min_std=5.0)
    copies = list((Path(roots["results_root"]) / "synth-disfa").glob("fig5_text_embeddings*"))
    assert len(copies) == 1  # drawn twice from the same runs: one copy


@pytest.mark.slow
def test_07_efficiency_notebook(study):
    from transformers import AutoModel

    from hiva_lib.model.pretrained import minilm_path

    roots, base = study
    run_notebook("07_efficiency", base, smoke=True, results_root=roots["results_root"])
    table = pd.read_csv(Path(roots["results_root"]) / "efficiency.csv")
    row = table.iloc[0]
    assert row.preset == "test-tiny"
    # kept BERT layers + the frozen part == the whole MiniLM, counted independently
    bert = AutoModel.from_pretrained(str(minilm_path()))
    minilm = sum(p.numel() for p in bert.parameters())
    assert row.params_text_trainable_bert + row.params_frozen_bert == minilm
    # the paper's counting: the evaluated model (no graph, no stage-1 head) + word embeddings
    assert row.params_word_embeddings == bert.config.vocab_size * bert.config.hidden_size
    assert row.params_evaluated == row.params_total - row.params_graph - row.params_stage1_head
    assert row.params_paper_counting == row.params_evaluated + row.params_word_embeddings
    assert row.params_trainable_stage1 < row.params_trainable_stage2 <= row.params_total
    assert row.GFLOPs_total > row.GFLOPs_text > 0 and row.ms_per_batch > 0


def test_efficiency_table_never_overwrites_a_measurement(tmp_path):
    from hiva_lib.study.efficiency import efficiency_table

    out = tmp_path / "efficiency.csv"
    first, path1 = efficiency_table(["test-tiny"], "disfa", "cpu", 2, 1, 1, out)
    before = out.read_text()
    _, path2 = efficiency_table(["test-tiny"], "disfa", "cpu", 2, 1, 1, out)
    assert (path1, path2) == (out, tmp_path / "efficiency-v2.csv")
    assert out.read_text() == before and path2.exists()
    assert first.loc[0, "n_aus"] == 8 and first.loc[0, "params_total"] > 0


def test_batch_latency_is_the_cached_pass_plus_the_text_path(monkeypatch):
    """The batch is timed once (text cached); the pass that runs the text path adds the text
    path's own time, which a planted delay in the text branch shows."""
    import time as _time

    import torch

    from hiva_lib.study import efficiency as E

    model, _ = E.build_model("test-tiny", "disfa")
    assert E.text_path_ms(model, torch.device("cpu"), 1) > 0
    real = model.text.forward

    def slow(step=None):
        _time.sleep(0.05)
        return real(step)

    monkeypatch.setattr(model.text, "forward", slow)
    assert E.text_path_ms(model, torch.device("cpu"), 3) >= 50
    monkeypatch.setattr(E, "build_model", lambda *a, **k: (model, {}))
    row = E.measure("test-tiny", "disfa", "cpu", 2, 1, 1)
    assert row["ms_per_batch"] - row["ms_per_batch_text_cached"] >= 50
    assert row["ms_per_image_in_batch"] == row["ms_per_batch"] / 2


@pytest.mark.slow
def test_08_inference_notebook_on_a_video(study):
    roots, base = study
    from hiva_lib.data.prepared import load_prepared

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
    assert list(table.frame) == [1, 2, 3, 4, 5] and (table.success == 1).all()
    probs = table[[c for c in table.columns if re.fullmatch(r"AU\d\d", c)]].to_numpy()
    assert probs.shape == (5, 8) and ((probs >= 0) & (probs <= 1)).all()
    overlays = sorted((out_dir / "overlays").glob("*.png"))
    assert len(overlays) == 5
    assert overlays[0].stat().st_size > 10_000
    assert np.asarray(Image.open(overlays[0]).convert("L"), np.float64).std() > 5.0


def test_infer_matches_the_evaluation_path_and_rejects_bad_input(study, tmp_path):
    import torch

    from hiva_lib.data.loader import FrameDataset, load_size_for, prepare_batch
    from hiva_lib.data.prepared import load_prepared
    from hiva_lib.engine.evaluate import load_trained
    from hiva_lib.study.figures import Study
    from hiva_lib.study.inference import InferenceError, infer

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
    got = table[[f"AU{a:02d}" for a in data.au_ids]].to_numpy(float)
    np.testing.assert_allclose(got, expected, atol=0.03)  # PIL vs OpenCV resizing only
    # a second inference into the same folder keeps the first one
    first = (tmp_path / "a" / "au_probabilities.csv").read_text()
    again = infer(ckpt, [data.image_path(int(r)) for r in rows], tmp_path / "a", align="skip",
                  overlays=False)
    assert again.attrs["out_dir"] == str(tmp_path / "a-v2")
    assert (tmp_path / "a" / "au_probabilities.csv").read_text() == first
    assert (tmp_path / "a-v2" / "au_probabilities.csv").exists()

    with pytest.raises(InferenceError, match="no such file"):
        infer(ckpt, tmp_path / "missing.mp4", tmp_path / "b", align="skip")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InferenceError, match="unsupported file type"):
        infer(ckpt, tmp_path / "notes.txt", tmp_path / "b", align="skip")
    assert not (tmp_path / "b").exists()  # bad input writes nothing


def test_frame_without_a_face_is_reported_not_guessed(study, tmp_path):
    pytest.importorskip("facenet_pytorch")
    from hiva_lib.study.figures import Study
    from hiva_lib.study.inference import infer

    roots, _ = study
    ckpt = Study.open("synth-disfa", smoke=True, **roots).checkpoint("full")
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((160, 160, 3), 128, np.uint8))
    table = infer(ckpt, blank, tmp_path / "out", align="auto")
    assert table.success.tolist() == [0] and pd.isna(table["AU01"].iloc[0])
    assert pd.isna(table["AU01_c"].iloc[0]) and pd.isna(table["confidence"].iloc[0])


def test_same_named_files_in_subfolders_stay_apart(study, tmp_path):
    """BP4D-style F001/T1/0001.jpg and F002/T1/0001.jpg: two rows, two overlays, each with
    the probabilities of its own image (checked against one-image calls)."""
    from hiva_lib.data.prepared import load_prepared
    from hiva_lib.study.figures import Study
    from hiva_lib.study.inference import infer

    roots, _ = study
    ckpt = Study.open("synth-disfa", smoke=True, **roots).checkpoint("full")
    data = load_prepared(Path(roots["data_root"]) / "synth-disfa")
    rows = data.split(1)[1]
    folder = tmp_path / "frames"
    for subject, row in (("F001", rows[0]), ("F002", rows[-1])):
        (folder / subject / "T1").mkdir(parents=True)
        (folder / subject / "T1" / "0001.jpg").write_bytes(data.image_path(int(row)).read_bytes())
    table = infer(ckpt, folder, tmp_path / "out", align="skip")
    assert list(table.source) == ["F001/T1/0001.jpg", "F002/T1/0001.jpg"]
    aus = [f"AU{a:02d}" for a in data.au_ids]
    for i, subject in enumerate(("F001", "F002")):
        alone = infer(ckpt, folder / subject / "T1" / "0001.jpg", tmp_path / f"alone{i}",
                      align="skip", overlays=False)
        np.testing.assert_allclose(table.loc[i, aus].to_numpy(float),
                                   alone.loc[0, aus].to_numpy(float), atol=1e-6)
    assert not np.allclose(table.loc[0, aus].to_numpy(float), table.loc[1, aus].to_numpy(float))
    for subject in ("F001", "F002"):
        assert (tmp_path / "out" / "overlays" / subject / "T1" / "0001.jpg_000001_face0.png"
                ).exists()


def test_infer_detects_a_rendered_face_with_mtcnn(study, tmp_path):
    """The MTCNN path end to end: a SynthFACS face (160 px, big enough for MTCNN's 40 px
    minimum) off-centre in a larger frame is found, aligned, and scored exactly like the
    model on the aligner's crop."""
    pytest.importorskip("facenet_pytorch")
    import torch

    from hiva_lib.data import synthfacs
    from hiva_lib.data.loader import load_size_for, prepare_batch
    from hiva_lib.data.real.face_align import FaceAligner
    from hiva_lib.engine.evaluate import load_trained
    from hiva_lib.study.figures import Study
    from hiva_lib.study.inference import au_column, infer

    roots, _ = study
    ckpt = Study.open("synth-disfa", smoke=True, **roots).checkpoint("full")
    face, _ = synthfacs.render_face(synthfacs.sample_identity(3), {12: 3.0, 25: 2.0},
                                    synthfacs.sample_nuisance(5), 160)
    frame = np.zeros((240, 300, 3), np.uint8)
    frame[50:210, 100:260] = face[..., :3]
    path = tmp_path / "me.png"
    cv2.imwrite(str(path), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    table = infer(ckpt, path, tmp_path / "out", align="mtcnn")
    assert table.success.tolist() == [1] and table.confidence.iloc[0] > 0.9

    model = load_trained(ckpt)
    size = load_size_for(model.cfg.img_size)
    aligner = FaceAligner("mtcnn", size, device="cpu")
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)  # as infer reads it
    crop = aligner.crop(rgb, aligner.landmarks([rgb])[0])
    x = prepare_batch(torch.from_numpy(crop[None]).permute(0, 3, 1, 2), model.cfg.img_size,
                      train=False)
    with torch.no_grad():
        expected = torch.sigmoid(model(x).logits).numpy()[0]
    aus = [au_column(a) for a in model.au_ids]
    np.testing.assert_allclose(table.loc[0, aus].to_numpy(float), expected, atol=1e-3)
    assert (tmp_path / "out" / "overlays" / "me.png_000001_face0.png").exists()
