"""The controls: shuffled descriptions, no language model, the lambda sweep."""
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
                                      "lambda_100", "full_au_id", "full_ldiff_z"}
    assert _changed_fields("shuffled_text") == {"text_control": "shuffled"}
    assert _changed_fields("no_language") == {"text_control": "learned"}
    assert _changed_fields("full_au_id") == {"au_distinction": "identity"}
    assert _changed_fields("full_ldiff_z") == {"au_distinction": "ldiff_z", "lambda_diff": 1.0}
    for lam in variants.LAMBDA_SWEEP:
        assert _changed_fields(variants.lambda_slug(lam)) == {"lambda_diff": lam}
    assert variants.TABLE_ROWS.keys() | variants.CONTROLS.keys() == variants.VARIANTS.keys()
    assert not any(v.control for v in variants.TABLE_ROWS.values())
    # a control's fields do not leak into "full" when applied on top of a control's config
    cfg = variants.apply_variant(variants.apply_variant(TINY, "no_language"), "full")
    assert cfg.text_control == "none" and cfg.lambda_diff is None
    cfg = variants.apply_variant(variants.apply_variant(TINY, "full_ldiff_z"), "full")
    assert cfg.au_distinction == "ldiff_h" and cfg.lambda_diff is None


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
    loss = F.binary_cross_entropy_with_logits(out.logits, y.float()) + out.l_diff
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
