"""The assembled HiVA model: shapes, stages and their gradients, the ablation variants of
Tables IV-VI, stage-1 loading, and checkpoint round trips (tiny configs, MiniLM offline)."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from hiva_lib import variants
from hiva_lib.errors import CheckpointError
from hiva_lib.model.config import ModelConfig, config_from_dict
from hiva_lib.model.hiva import HiVA
from hiva_lib.presets import MODEL_PRESETS

AUS = (1, 2, 4, 6, 9)
DESCS = [[f"Action unit {a} moves the face.", f"Unit {a} is active.", f"AU {a} variant."]
         for a in AUS]
TINY = MODEL_PRESETS["test-tiny"]
STAGE1 = ("backbone.", "branches.", "graph.", "stage1_head.")


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # everything here must run without network


def build(slug: str = "full", **overrides) -> HiVA:
    torch.manual_seed(0)
    cfg = variants.apply_variant(dataclasses.replace(TINY, **overrides), slug)
    return HiVA(cfg, AUS, DESCS)


def images(b: int = 3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(b, 3, TINY.img_size, TINY.img_size, generator=gen)


def train_step(model: HiVA, stage: int, step: int = 0) -> tuple[float, dict]:
    """One optimizer step; returns the loss and the parameters before it."""
    model.set_stage(stage)
    model.train()
    opt = torch.optim.AdamW(model.param_groups(stage, 1e-2))
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    out = model(images(), step=step)
    y = torch.randint(0, 2, out.logits.shape, generator=torch.Generator().manual_seed(2))
    loss = F.binary_cross_entropy_with_logits(out.logits, y.float())
    if out.l_diff is not None:
        loss = loss + out.l_diff
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item(), before


# ----------------------------------------------------------------------------- shapes
def test_shapes_stage2_and_stage1():
    model = build()
    out = model(images(), step=0)
    n, hw = len(AUS), 49
    assert out.logits.shape == (3, n) and out.l_diff.ndim == 0
    assert out.maps["x_g_hw"] == (7, 7)
    assert out.maps["ddca"].shape == (3, n, hw) and out.maps["cdca"].shape == (3, n, hw)
    assert out.maps["graph"].shape == (3, n, n)
    torch.testing.assert_close(out.maps["ddca"].sum(-1), torch.ones(3, n))
    torch.testing.assert_close(out.maps["cdca"].sum(-1), torch.ones(3, n))
    assert torch.all(out.maps["graph"].sum(-1) == TINY.graph_k)
    h, z = model.text_embeddings()
    assert h.shape == (n, 384) and z.shape == (n, TINY.dim)  # MiniLM width d' = 384
    model.set_stage(1)
    out1 = model(images())
    assert out1.logits.shape == (3, n) and out1.l_diff is None and "ddca" not in out1.maps


def test_literal_ddca_runs_and_its_map_is_all_ones():
    out = build(ddca_mode="literal")(images(), step=0)
    assert out.maps["ddca"].shape == (3, len(AUS), 1) and torch.all(out.maps["ddca"] == 1)


def test_fusion_without_attention_add():
    model = build("wo_cdca_wo_ddca", fusion_without_attention="add")
    assert model.fuse[0].in_features == TINY.dim
    assert model(images(), step=0).logits.shape == (3, len(AUS))


def test_eval_uses_fixed_descriptions_and_bf16_autocast_runs():
    model = build().eval()
    with torch.no_grad():
        a, b = model(images()).logits, model(images()).logits
        torch.testing.assert_close(a, b)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            c = model(images(), step=3)
    assert torch.isfinite(c.logits.float()).all() and torch.isfinite(c.l_diff)


# ----------------------------------------------------------------------------- stages
def _grad_names(model: HiVA, stage: int) -> set[str]:
    model.set_stage(stage)
    model.zero_grad(set_to_none=True)
    out = model(images(), step=0)
    (out.logits.sum() + (out.l_diff if out.l_diff is not None else 0)).backward()
    return {n for n, p in model.named_parameters() if p.grad is not None}


def test_gradients_reach_only_the_modules_of_each_stage():
    model = build()
    names = {n for n, _ in model.named_parameters()}
    stage1 = {n for n in names if n.startswith(STAGE1)}
    assert _grad_names(model, 1) == stage1  # (a) + (c) only, the text branch is not called
    assert {n for n, p in model.named_parameters() if p.requires_grad} == stage1
    model.set_stage(2)
    trainable2 = {n for n, p in model.named_parameters() if p.requires_grad}
    expected2 = {n for n in names if n.startswith(("backbone.", "branches.", "text.", "ddca.",
                                                    "cdca.", "fuse.", "head."))}
    assert trainable2 == expected2
    got2 = _grad_names(model, 2)
    assert got2 == expected2  # graph and stage-1 FC are not part of the stage-2 model
    assert not any(n.startswith(("graph.", "stage1_head.")) for n in got2)
    # the text branch holds only the trainable BERT layers: the frozen ones are not parameters
    bert = {n.split(".")[2] for n in got2 if n.startswith("text.layers.")}
    assert bert == {"0", "1"} and not any("embeddings" in n for n in names)


def test_stage_switches_graph_in_stage2_and_frozen_branches():
    model = build(graph_in_stage2=True)
    assert {n for n in _grad_names(model, 2) if n.startswith("graph.")}
    model = build(stage2_train_branches=False)
    got = _grad_names(model, 2)
    assert not any(n.startswith(("branches.", "graph.")) for n in got)


def test_param_groups_lr_multiplier():
    model = build(stage2_new_module_lr_mult=10.0)
    groups = {g["name"]: g for g in model.param_groups(2, 1e-6)}
    assert groups["pretrained"]["lr"] == 1e-6 and groups["new"]["lr"] == pytest.approx(1e-5)
    in_groups = {id(p) for g in groups.values() for p in g["params"]}
    model.set_stage(2)
    assert in_groups == {id(p) for p in model.parameters() if p.requires_grad}
    assert [g["name"] for g in model.param_groups(1, 1e-5)] == ["pretrained"]


# ----------------------------------------------------------------------------- variants
def _names(model: HiVA) -> set[str]:
    return {n for n, _ in model.named_parameters()}


def test_each_variant_removes_exactly_what_its_name_says():
    models = {s: build(s) for s in ("full", "wo_ddca", "wo_cdca", "wo_cdca_wo_ddca", "baseline")}
    full = models["full"]
    names = _names(full)
    removed = {"wo_ddca": ("ddca.",), "wo_cdca": ("cdca.",),
               "wo_cdca_wo_ddca": ("ddca.", "cdca."),
               "baseline": ("text.", "ddca.", "cdca.", "fuse.", "head.")}
    for slug, prefixes in removed.items():
        assert _names(models[slug]) == {n for n in names if not n.startswith(prefixes)}, slug
    # the fusion FC sees concat(U, D, C), concat(U, C), concat(U, D), concat(U, Z)
    widths = {s: m.fuse[0].in_features for s, m in models.items() if s != "baseline"}
    d = TINY.dim
    assert widths == {"full": 3 * d, "wo_ddca": 2 * d, "wo_cdca": 2 * d, "wo_cdca_wo_ddca": 2 * d}
    # w/o AUG: same parameters, only the base descriptions (in training too)
    wo_aug = build("wo_aug")
    assert _names(wo_aug) == names and wo_aug.text.counts == [1] * len(AUS)
    assert full.text.counts == [3] * len(AUS)
    # w/o L_diff: same parameters, no L_diff term
    wo_ldiff = build("wo_ldiff")
    assert _names(wo_ldiff) == names and wo_ldiff(images(), step=0).l_diff is None
    assert build("wo_aug_wo_ldiff").text.counts == [1] * len(AUS)
    with pytest.raises(ValueError, match="no stage 2"):
        build("baseline").set_stage(2)


@pytest.mark.parametrize("slug", list(variants.TABLE_ROWS))  # controls: test_controls.py
def test_every_variant_trains_one_step(slug):
    model = build(slug)
    stage = max(variants.VARIANTS[slug].stages)
    loss, before = train_step(model, stage)
    assert math.isfinite(loss)
    after = dict(model.named_parameters())
    changed = [n for n, p in before.items() if not torch.equal(p, after[n].detach())]
    assert set(changed) == set(before)  # every trained parameter moved
    frozen = [n for n, p in after.items() if n not in before]
    assert all(not after[n].requires_grad for n in frozen)


def test_variant_table_matches_the_paper_rows():
    assert set(variants.TABLE_ROWS) == {"full", "wo_aug", "wo_ldiff", "wo_aug_wo_ldiff",
                                      "baseline", "wo_ddca", "wo_cdca", "wo_cdca_wo_ddca"}
    tables = Path(__file__).resolve().parents[1] / "hiva_lib" / "assets" / "paper"
    for name in ("table4_bp4d_ablation.csv", "table5_disfa_ablation.csv",
                 "table6_gft_ablation.csv"):
        if not (tables / name).exists():
            pytest.skip(f"{name} not present")
        rows = pd.read_csv(tables / name)["method"]
        slugs = {variants.variant_from_row_name(r).slug for r in rows}
        assert slugs == set(variants.TABLE_ROWS), name
    assert variants.variant_from_row_name("VLU").slug == "baseline"
    assert variants.VARIANTS["baseline"].stages == (1,)
    # a preset's own flag (e.g. use_aug=False) does not leak into "full"
    cfg = variants.apply_variant(dataclasses.replace(TINY, use_aug=False), "full")
    assert cfg.use_aug and cfg.use_text and cfg.dim == TINY.dim
    with pytest.raises(ValueError, match="unknown variant"):
        variants.apply_variant(TINY, "wo_everything")


# ----------------------------------------------------------------------------- checkpoints
def test_load_stage1_into_stage2_model():
    stage1 = build("baseline")
    train_step(stage1, 1)
    full = build()
    full.load_stage1(stage1.state_dict())
    for k, v in stage1.state_dict().items():
        torch.testing.assert_close(full.state_dict()[k], v)
    with pytest.raises(CheckpointError, match="AU count 5 in the checkpoint vs 4"):
        HiVA(TINY, AUS[:4], DESCS[:4]).load_stage1(stage1.state_dict())
    other = dataclasses.replace(variants.apply_variant(TINY, "baseline"), backbone_kwargs=dict(
        TINY.backbone_kwargs, embed_dim=24))
    with pytest.raises(CheckpointError, match="shape mismatch.*backbone"):
        full.load_stage1(HiVA(other, AUS).state_dict())
    with pytest.raises(CheckpointError, match="unexpected"):
        full.load_stage1({**stage1.state_dict(), "foo.weight": torch.zeros(1)})


def test_state_dict_round_trip_and_description_check(tmp_path):
    model = build()
    train_step(model, 2)
    path = tmp_path / "m.pt"
    torch.save(dict(model=model.state_dict(), cfg=dataclasses.asdict(model.cfg)), path)
    state = torch.load(path, weights_only=False)
    again = HiVA(config_from_dict(state["cfg"]), AUS, DESCS)
    again.load_state_dict(state["model"])
    model.eval(), again.eval()
    with torch.no_grad():
        torch.testing.assert_close(again(images()).logits, model(images()).logits)
    other = [[d[0] + " Changed."] + d[1:] for d in DESCS]
    with pytest.raises(ValueError, match="other AU descriptions"):
        HiVA(config_from_dict(state["cfg"]), AUS, other).load_state_dict(state["model"])


def test_config_validation_and_presets():
    with pytest.raises(ValueError, match="ddca_mode"):
        ModelConfig(ddca_mode="both")
    with pytest.raises(ValueError, match="eval_descriptions"):
        ModelConfig(eval_descriptions="random")
    with pytest.raises(ValueError, match="unknown ModelConfig keys"):
        config_from_dict({"dimm": 3})
    assert set(MODEL_PRESETS) == {"paper", "cpu-lite0", "cpu-small", "cpu-swin", "test-tiny"}
    paper = MODEL_PRESETS["paper"]
    assert (paper.backbone, paper.text_model, paper.pretrained, paper.img_size, paper.dim) == (
        "swin_base_patch4_window7_224", "bert-large-uncased", True, 224, 512)
    assert (paper.text_trainable_layers, paper.text_layers, paper.text_heads) == (2, 3, 8)
    assert MODEL_PRESETS["cpu-small"].text_model == "minilm"
