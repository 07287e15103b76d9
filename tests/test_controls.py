"""The controls: shuffled descriptions, no language model, the lambda sweep, the
matched-training control baseline_s2, and the causal tests of the collapse (L_diff's site x
weight, stop-gradients into Z, the text branch frozen in stage 2)."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import hiva_lib.engine.loop as loop
import hiva_lib.engine.runs as runs
import hiva_lib.engine.train as train
import hiva_lib.model.text as text_module
from hiva_lib import variants
from hiva_lib.data.descriptions import derangement
from hiva_lib.engine.config import make_config
from hiva_lib.model.hiva import HiVA
from hiva_lib.presets import MODEL_PRESETS
from hiva_lib.study import ldiff_balance

AUS = (1, 2, 4, 6, 9)
DESCS = [[f"Action unit {a} moves the face.", f"Unit {a} is active.", f"AU {a} variant."]
         for a in AUS]
TINY = MODEL_PRESETS["test-tiny"]


def build(slug: str) -> HiVA:
    torch.manual_seed(0)
    return HiVA(variants.apply_variant(TINY, slug), AUS, DESCS)


def _changed_fields(slug: str) -> dict:
    full = dataclasses.asdict(variants.apply_variant(TINY, "full"))
    other = dataclasses.asdict(variants.apply_variant(TINY, slug))
    return {k: v for k, v in other.items() if full[k] != v}


@pytest.mark.parametrize("n", range(2, 30))
def test_derangement_has_no_fixed_point(n):
    p = derangement(n)
    assert sorted(p) == list(range(n))  # a permutation
    assert all(p[i] != i for i in range(n))
    assert derangement(n) == p  # fixed
    with pytest.raises(ValueError, match="at least 2 AUs"):
        derangement(1)


def test_controls_change_exactly_what_their_name_says():
    assert set(variants.CONTROLS) == {"shuffled_text", "no_language", "lambda_0",
                                      "lambda_1e-05", "lambda_0.0001", "lambda_0.001",
                                      "lambda_0.01", "lambda_0.1", "lambda_1", "lambda_10",
                                      "lambda_100", "full_au_id", "full_ldiff_z",
                                      "baseline_s2", "ldiff_z_lambda_0.01", "stop_grad_cdca_z",
                                      "stop_grad_ddca_z", "text_frozen_s2"}
    assert _changed_fields("shuffled_text") == {"text_control": "shuffled"}
    assert _changed_fields("no_language") == {"text_control": "learned"}
    assert _changed_fields("full_au_id") == {"au_distinction": "identity"}
    assert _changed_fields("full_ldiff_z") == {"au_distinction": "ldiff_z", "lambda_diff": 1.0}
    assert _changed_fields("baseline_s2") == {"use_text": False, "vision_stage2": True}
    assert _changed_fields("ldiff_z_lambda_0.01") == {"au_distinction": "ldiff_z",
                                                      "lambda_diff": 0.01}
    assert _changed_fields("stop_grad_cdca_z") == {"cdca_stop_grad_z": True}
    assert _changed_fields("stop_grad_ddca_z") == {"ddca_stop_grad_z": True}
    assert _changed_fields("text_frozen_s2") == {"text_frozen_stage2": True}
    for lam in variants.LAMBDA_SWEEP:
        assert _changed_fields(variants.lambda_slug(lam)) == {"lambda_diff": lam}
    assert variants.TABLE_ROWS.keys() | variants.CONTROLS.keys() == variants.VARIANTS.keys()
    assert not any(v.control for v in variants.TABLE_ROWS.values())
    # a control's fields do not leak into "full" when applied on top of a control's config
    cfg = variants.apply_variant(variants.apply_variant(TINY, "no_language"), "full")
    assert cfg.text_control == "none" and cfg.lambda_diff is None
    cfg = variants.apply_variant(variants.apply_variant(TINY, "full_ldiff_z"), "full")
    assert cfg.au_distinction == "ldiff_h" and cfg.lambda_diff is None
    for slug in ("baseline_s2", *variants.CAUSAL):
        cfg = variants.apply_variant(variants.apply_variant(TINY, slug), "full")
        assert dataclasses.asdict(cfg) == dataclasses.asdict(variants.apply_variant(TINY, "full"))


def test_shuffled_text_gives_every_au_another_aus_descriptions():
    model, full = build("shuffled_text"), build("full")
    p = derangement(len(AUS))
    assert model.text.descriptions == [DESCS[j] for j in p]
    assert all(model.text.descriptions[i] != DESCS[i] for i in range(len(AUS)))
    assert full.text.descriptions == DESCS
    # everything else is the same model: the same parameter names and shapes
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in full.state_dict().items()}


def test_no_language_holds_no_language_model(monkeypatch):
    def refuse(name):
        raise AssertionError(f"no_language loaded the language model {name!r}")

    monkeypatch.setattr(text_module, "load_text_model", refuse)
    model = build("no_language")
    mods = [type(m).__module__ for m in model.modules()]
    assert not any(m.startswith("transformers") for m in mods)
    text_params = {n for n, _ in model.named_parameters() if n.startswith("text.")}
    assert not any(k in n for n in text_params for k in ("attention", "intermediate", "output."))
    assert {n for n in text_params if not n.startswith(("text.proj.", "text.context."))} == {
        "text.layers.0.states"}
    n, t = len(AUS), text_module.LEARNED_TOKENS
    assert model.text.layers[0].states.shape == (n, t, TINY.dim)
    # the same shapes downstream as with the text encoder
    out = model.text(None)
    assert out.h.shape == (n, TINY.dim) and out.z.shape == (n, TINY.dim)
    assert out.tokens.shape == (n, t, TINY.dim) and out.token_mask.all()
    assert not any(isinstance(b, torch.Tensor) and b.dtype.is_floating_point
                   for n_, b in model.named_buffers() if n_.startswith("text."))


def _train_step(model: HiVA, stage: int) -> dict:
    model.set_stage(stage)
    model.train()
    opt = torch.optim.AdamW(model.param_groups(stage, 1e-2))
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    x = torch.randn(3, 3, TINY.img_size, TINY.img_size,
                    generator=torch.Generator().manual_seed(1))
    out = model(x, step=0)
    y = torch.randint(0, 2, out.logits.shape, generator=torch.Generator().manual_seed(2))
    loss = F.binary_cross_entropy_with_logits(out.logits, y.float())
    loss = loss if out.l_diff is None else loss + out.l_diff
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert math.isfinite(loss.item())
    after = dict(model.named_parameters())
    return {n for n, p in before.items() if not torch.equal(p, after[n].detach())}, before


@pytest.mark.parametrize("slug", list(variants.CONTROLS))
def test_every_control_trains_one_step(slug):
    model = build(slug)
    changed, before = _train_step(model, 2)
    assert changed == set(before)  # every trained parameter moved
    if slug == "no_language":
        assert "text.layers.0.states" in changed


def test_the_engine_uses_the_sweeps_lambda(tmp_path, smoke_data_root, monkeypatch):
    seen = []
    real = loop.total_loss

    def record(l_au, l_diff, lam):
        if l_diff is not None:
            seen.append(lam)
        return real(l_au, l_diff, lam)

    monkeypatch.setattr(loop, "total_loss", record)
    cfg = make_config("synth-disfa", smoke=True, data_root=str(smoke_data_root),
                      runs_root=str(tmp_path / "runs"), results_root=str(tmp_path / "res"),
                      variant="lambda_0.1", save_text_embeddings=False)
    assert cfg.lambda_diff != 0.1
    res = train.run_variant(cfg)
    assert seen and set(seen) == {0.1}
    assert res.metrics["variant"] == "lambda_0.1"


def test_control_fields_at_their_defaults_leave_old_signatures_unchanged():
    # runs saved before text_control / lambda_diff existed stay found; a control is its own run
    full = make_config("synth-disfa", smoke=True, variant="full")
    model = runs.signature(full, 2)["model"]
    assert "text_control" not in model and "lambda_diff" not in model
    sweep = runs.signature(dataclasses.replace(full, variant="lambda_0.1"), 2)["model"]
    assert sweep["lambda_diff"] == 0.1
    shuffled = runs.signature(dataclasses.replace(full, variant="shuffled_text"), 2)["model"]
    assert shuffled["text_control"] == "shuffled"
    new_fields = ("vision_stage2", "cdca_stop_grad_z", "ddca_stop_grad_z", "text_frozen_stage2")
    assert not set(new_fields) & set(model)
    for slug, field in zip(("baseline_s2", *variants.CAUSAL), new_fields, strict=True):
        assert runs.signature(dataclasses.replace(full, variant=slug), 2)["model"][field] is True


def test_gradient_ratio_scales_with_lambda_and_matches_autograd():
    model = build("full")
    model.set_stage(2)
    x = torch.randn(4, 3, TINY.img_size, TINY.img_size,
                    generator=torch.Generator().manual_seed(3))
    y = torch.randint(0, 2, (4, len(AUS)), generator=torch.Generator().manual_seed(4))
    w = torch.ones(len(AUS))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    r1 = ldiff_balance.gradient_ratio(model, x, y, w, 1e-2)
    r2 = ldiff_balance.gradient_ratio(model, x, y, w, 1.0)
    assert r2["ratio"] == pytest.approx(100 * r1["ratio"], rel=1e-4)
    assert ldiff_balance.gradient_ratio(model, x, y, w, 0.0)["ratio"] == 0.0
    # L_diff by hand from H, and its gradient norm on the text layers by hand
    model.eval()  # as the measurement: no dropout
    h = model.text(None).h
    hn = h / h.norm(dim=1, keepdim=True)
    by_hand = ((hn @ hn.T - torch.eye(len(AUS))) ** 2).mean()
    assert r1["l_diff"] == pytest.approx(by_hand.item(), rel=1e-5)
    params = list(model.text.layers.parameters())
    grads = torch.autograd.grad(by_hand, params, allow_unused=True)
    norm = np.sqrt(sum(float((g ** 2).sum()) for g in grads if g is not None))
    assert r2["grad_ldiff"] == pytest.approx(norm, rel=1e-4)
    # the model's trainable set is unchanged by the measurement
    assert {n for n, p in model.named_parameters() if p.requires_grad} == trainable


# ----------------------------------------------------------------------------- baseline_s2
VISION = ("backbone.", "branches.", "graph.")


def _trainable(model: HiVA, stage: int = 2) -> set[str]:
    model.set_stage(stage)
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("switches", [{}, dict(graph_in_stage2=True),
                                      dict(stage2_train_branches=False),
                                      dict(graph_in_stage2=True, stage2_train_branches=False),
                                      dict(stage2_new_module_lr_mult=10.0)])
def test_baseline_s2_trains_the_vision_parameters_that_hivas_stage2_trains(switches):
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, **switches)
    full = HiVA(variants.apply_variant(cfg, "full"), AUS, DESCS)
    s2 = HiVA(variants.apply_variant(cfg, "baseline_s2"), AUS, DESCS)
    vision = {n for n in _trainable(full) if n.startswith(VISION)}
    assert vision and {n for n in _trainable(s2) if n.startswith(VISION)} == vision
    # beside them only a fresh head of HiVA's form on U_i alone: FC + ReLU, then per-AU FC
    assert {n.split(".")[0] for n in _trainable(s2) - vision} == {"fuse", "head"}
    assert s2.fuse[0].in_features == TINY.dim and s2.fuse[0].out_features == TINY.head_dim
    assert s2.head.weight.shape == full.head.weight.shape
    assert not any(n.startswith(("text.", "ddca.", "cdca.")) for n, _ in s2.named_parameters())
    assert {n for n in _trainable(s2, 1)} == {n for n in _trainable(full, 1)}  # stage 1: same
    # the same optimizer groups and learning rates, vision parameters in the same group
    groups = {g["name"]: (g["lr"], g["params"]) for g in s2.param_groups(2, 1e-3)}
    full_groups = {g["name"]: (g["lr"], g["params"]) for g in full.param_groups(2, 1e-3)}
    names = {id(p): n for n, p in s2.named_parameters()}
    full_names = {id(p): n for n, p in full.named_parameters()}
    assert {k: v[0] for k, v in groups.items()} == {k: v[0] for k, v in full_groups.items()}
    assert [names[id(p)] for p in groups["pretrained"][1]] == [
        full_names[id(p)] for p in full_groups["pretrained"][1]
        if full_names[id(p)].startswith(VISION)]
    assert {names[id(p)].split(".")[0] for p in groups["new"][1]} == {"fuse", "head"}


def test_baseline_s2_predicts_from_u_and_its_stage1_is_the_baselines():
    s2, base = build("baseline_s2"), build("baseline")
    s2.load_stage1({k: v for k, v in base.state_dict().items()})
    x = torch.randn(2, 3, TINY.img_size, TINY.img_size, generator=torch.Generator().manual_seed(1))
    s2.eval(), base.eval()
    with torch.no_grad():
        s2.set_stage(1)
        torch.testing.assert_close(s2(x).logits, base(x).logits, rtol=0, atol=0)
        s2.set_stage(2)
        out = s2(x)
        u = s2.branches(s2.backbone(x)).mean((-2, -1))  # U_i, no graph (ambiguity 2's default)
        torch.testing.assert_close(out.logits, s2.head(s2.fuse(u)), rtol=0, atol=0)
    assert out.l_diff is None and "ddca" not in out.maps and out.maps["graph"].shape[1:] == (5, 5)
    with pytest.raises(ValueError, match="no stage 2"):
        build("baseline").set_stage(2)


def test_text_switches_need_the_language_branch_and_vision_stage2_excludes_it():
    with pytest.raises(ValueError, match="vision_stage2=True .* use_text=False"):
        dataclasses.replace(TINY, vision_stage2=True)
    for key in ("cdca_stop_grad_z", "ddca_stop_grad_z", "text_frozen_stage2"):
        with pytest.raises(ValueError, match=f"{key}=True acts on the text branch"):
            dataclasses.replace(TINY, use_text=False, **{key: True})


def test_baseline_s2_trains_stage2_from_hivas_stage1_run(tmp_path, smoke_data_root):
    cfg = make_config("synth-disfa", smoke=True, data_root=str(smoke_data_root),
                      runs_root=str(tmp_path / "runs"), results_root=str(tmp_path / "res"),
                      variant="baseline_s2")
    s2 = train.run_variant(cfg)
    assert s2.metrics["variant"] == "baseline_s2" and s2.run_dir.parts[-3] == "baseline_s2"
    # its stage 1 is the run HiVA's stage 2 starts from (one shared run per seed and fold)
    full = dataclasses.replace(cfg, variant="full")
    stage1 = runs.finished_run(full, 1)
    assert stage1 is not None and list((tmp_path / "runs").rglob("stage1/*/*/DONE")) == [
        stage1 / "DONE"]
    assert runs.run_signature(s2.run_dir)["model"]["stage1"] == runs.signature(full, 1)
    state = torch.load(s2.checkpoint, map_location="cpu")
    assert state["stage"] == 2 and not any(k.startswith("text.") for k in state["model"])
    assert {k.split(".")[0] for k in state["model"]} == {"backbone", "branches", "graph",
                                                         "stage1_head", "fuse", "head"}
    assert not (s2.run_dir / "text_emb").exists()  # no text embeddings to save


# ----------------------------------------------------------------------------- causal tests
def test_ldiff_site_weight_cells_are_a_2x2_of_site_and_weight():
    cfg = make_config("synth-bp4d")  # the synth-cpu preset: lambda 0.01
    cells = variants.ldiff_site_weight_cells(cfg.lambda_diff)
    assert cells[("H", 0.01)] == "full"
    assert set(cells) == {(s, w) for s in ("H", "Z") for w in (0.01, 1.0)}
    for (site, weight), slug in cells.items():
        mcfg = variants.apply_variant(TINY, slug)
        lam = cfg.lambda_diff if mcfg.lambda_diff is None else mcfg.lambda_diff
        assert (mcfg.au_distinction, lam) == (variants.LDIFF_SITES[site], weight), slug
        assert _changed_fields(slug).keys() <= {"au_distinction", "lambda_diff"}
    assert variants.ldiff_site_weight_cells(1e-5)[("H", 0.01)] == "lambda_0.01"


def _z_gradients(slug: str, **switches) -> tuple[HiVA, torch.Tensor, torch.Tensor | None]:
    """(model, logits, dL/dZ) of one backward of a BCE loss (no L_diff)."""
    torch.manual_seed(0)
    model = HiVA(dataclasses.replace(variants.apply_variant(TINY, slug), use_ldiff=False,
                                     **switches), AUS, DESCS)
    model.set_stage(2)
    model.train()
    forward, caught = model.text.forward, {}

    def keep(step=None):
        out = forward(step)
        out.z.retain_grad()
        caught["z"] = out.z
        return out

    model.text.forward = keep
    torch.manual_seed(1)  # the same dropout draws in every model
    x = torch.randn(3, 3, TINY.img_size, TINY.img_size, generator=torch.Generator().manual_seed(1))
    logits = model(x, step=0).logits
    y = torch.randint(0, 2, logits.shape, generator=torch.Generator().manual_seed(2))
    F.binary_cross_entropy_with_logits(logits, y.float()).backward()
    return model, logits.detach(), caught["z"].grad


@pytest.mark.parametrize("slug, other", [("stop_grad_cdca_z", "use_ddca"),
                                         ("stop_grad_ddca_z", "use_cdca")])
def test_stop_gradient_blocks_the_gradient_into_z_and_nothing_else(slug, other):
    # with the other attention removed, the attention under test is Z's only reader
    plain, logits, z_grad = _z_gradients("full", **{other: False})
    model, stopped_logits, stopped_grad = _z_gradients(slug, **{other: False})
    assert z_grad is not None and z_grad.abs().sum() > 0
    assert stopped_grad is None or torch.count_nonzero(stopped_grad) == 0
    torch.testing.assert_close(stopped_logits, logits, rtol=0, atol=0)  # values unchanged
    # the Transformer of Eq. 2 feeds only Z: no gradient reaches it
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0
               for p in model.text.context.parameters())
    # DDCA's word tokens W_p h_t are not detached: W_p still learns from DDCA
    proj = model.text.proj.weight.grad
    assert (proj is not None and proj.abs().sum() > 0) == (slug == "stop_grad_ddca_z")
    # the attention's own weights and the vision side still learn
    attention = model.cdca if slug == "stop_grad_cdca_z" else model.ddca
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in attention.parameters())


def test_stop_gradients_split_the_gradient_into_z_between_the_attentions():
    # both attentions read Z: dL/dZ of HiVA is the sum of what reaches Z through DDCA (left
    # when CDCA's path is cut) and through CDCA (left when DDCA's is)
    _, _, both = _z_gradients("full")
    _, _, through_ddca = _z_gradients("stop_grad_cdca_z")
    _, _, through_cdca = _z_gradients("stop_grad_ddca_z")
    assert through_ddca.abs().sum() > 0 and through_cdca.abs().sum() > 0
    torch.testing.assert_close(through_ddca + through_cdca, both, rtol=1e-5, atol=1e-9)


def test_text_frozen_in_stage2_trains_everything_but_the_text_branch():
    full, frozen = build("full"), build("text_frozen_s2")
    assert _trainable(frozen) == {n for n in _trainable(full) if not n.startswith("text.")}
    h0, z0 = frozen.text_embeddings()
    changed, before = _train_step(frozen, 2)
    assert changed == set(before) and not any(n.startswith("text.") for n in changed)
    h1, z1 = frozen.text_embeddings()
    torch.testing.assert_close((h1, z1), (h0, z0), rtol=0, atol=0)
