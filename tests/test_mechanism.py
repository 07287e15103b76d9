"""Why the language branch does little: the mechanism diagnostics on planted embeddings
and maps, and ambiguity 7's switches (they change only what they say; the default path is
unchanged)."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from hiva_lib import variants
from hiva_lib.engine import runs
from hiva_lib.engine.config import make_config
from hiva_lib.model.hiva import HiVA
from hiva_lib.model.text import l_diff
from hiva_lib.presets import MODEL_PRESETS
from hiva_lib.study import mechanism as M

AUS = (1, 2, 4, 6, 9)
DESCS = [[f"Action unit {a} moves the face.", f"Unit {a} is active."] for a in AUS]
TINY = MODEL_PRESETS["test-tiny"]


# ----------------------------------------------------------------------------- embeddings
def test_collapsed_embeddings_have_cosine_one_and_no_au_specific_part():
    rows = np.tile(np.array([3.0, -1.0, 2.0, 0.5]), (6, 1))
    assert M.off_diagonal_cosine(rows) == pytest.approx(1.0)
    assert M.au_specific_part(rows) == pytest.approx(0.0, abs=1e-12)


def test_orthonormal_embeddings_are_spread():
    n = 5
    # cosines 0; mean (1/n) 1 of norm 1/sqrt(n); each row is sqrt((n-1)/n) from it
    assert M.off_diagonal_cosine(np.eye(n)) == pytest.approx(0.0)
    assert M.au_specific_part(np.eye(n)) == pytest.approx(math.sqrt(n - 1))


@pytest.mark.parametrize("b", [0.05, 0.3, 2.0])
def test_shared_vector_plus_au_parts_by_hand(b):
    # row i = u + b e_i, u a unit vector orthogonal to every e_i
    n = 6
    rows = np.hstack([np.ones((n, 1)), b * np.eye(n)])
    assert M.off_diagonal_cosine(rows) == pytest.approx(1 / (1 + b**2))
    expected = b * math.sqrt((n - 1) / n) / math.sqrt(1 + b**2 / n)
    assert M.au_specific_part(rows) == pytest.approx(expected)


@pytest.mark.parametrize("scale", [1.0, 10.0, 1000.0])
def test_a_growing_shared_part_reads_as_collapse_only_in_the_ratios(scale):
    # row i = scale * u + b e_i (u orthogonal to every e_i): by hand, the AU-specific part's
    # spread is b sqrt((n-1)/n) whatever the shared part; the shared norm is
    # sqrt(scale^2 + b^2/n); the centred rows b (e_i - 1/n) span n - 1 equal directions
    n, b = 6, 0.5
    rows = np.hstack([scale * np.ones((n, 1)), b * np.eye(n)])
    spread, shared = M.specific_spread(rows)
    assert spread == pytest.approx(b * math.sqrt((n - 1) / n))
    assert shared == pytest.approx(math.sqrt(scale**2 + b**2 / n))
    assert M.specific_rank(rows) == pytest.approx(1.0)
    assert M.off_diagonal_cosine(rows) == pytest.approx(scale**2 / (scale**2 + b**2))
    # rescaling everything changes neither the rank nor the ratio
    assert M.specific_rank(7.0 * rows) == pytest.approx(1.0)
    assert M.au_specific_part(7.0 * rows) == pytest.approx(M.au_specific_part(rows))


def test_specific_rank_of_parts_on_one_line_and_of_two_directions_by_hand():
    n = 5
    shared = np.array([2.0, -1.0, 0.0, 0.0])
    a = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])  # sums to 0: the centred rows are a_i v
    line = shared + a[:, None] * np.array([0.0, 0.0, 1.0, 0.0])
    assert M.specific_rank(line) == pytest.approx(1 / (n - 1))
    assert M.specific_spread(line)[0] == pytest.approx(math.sqrt((a**2).mean()))
    # two orthogonal directions, Gram eigenvalues 10 and 2.5: (12.5)^2 / (100 + 6.25) / 4
    c = np.array([1.0, -1.0, 0.0, -1.0, 1.0])  # sums to 0, orthogonal to a
    two = line + c[:, None] * np.array([0.0, 0.0, 0.0, 1.0]) * math.sqrt(2.5 / (c**2).sum())
    assert M.specific_rank(two) == pytest.approx(12.5**2 / (100 + 6.25) / (n - 1))
    assert M.specific_rank(np.tile(shared, (n, 1))) == 0.0  # every AU the same vector


def test_embedding_rows_write_every_measure_of_h_and_z(tmp_path):
    gen = torch.Generator().manual_seed(5)
    h, z = torch.randn(4, 6, generator=gen), torch.randn(4, 3, generator=gen)
    (tmp_path / "text_emb").mkdir()
    for epoch in (0, 1):
        torch.save({"H": h * (epoch + 1), "Z": z + epoch, "au_ids": [1, 2, 4, 6]},
                   tmp_path / "text_emb" / f"epoch{epoch:03d}.pt")
    rows = M.embedding_rows(tmp_path)
    assert [r["epoch"] for r in rows] == [0, 1]
    assert list(rows[0])[:5] == ["epoch", "h_cosine", "z_cosine", "h_specific", "z_specific"]
    for r, (hh, zz) in zip(rows, ((h, z), (2 * h, z + 1)), strict=True):
        for prefix, emb in (("h", hh), ("z", zz)):
            got = (r[f"{prefix}_spread"], r[f"{prefix}_shared_norm"])
            assert got == pytest.approx(M.specific_spread(emb.numpy()))
            assert r[f"{prefix}_specific_rank"] == pytest.approx(M.specific_rank(emb))
            assert r[f"{prefix}_cosine"] == pytest.approx(M.off_diagonal_cosine(emb))
    # adding 1 to every entry moves the shared part only
    assert rows[1]["z_spread"] == pytest.approx(rows[0]["z_spread"])
    assert rows[1]["z_shared_norm"] != pytest.approx(rows[0]["z_shared_norm"])


def test_measured_variants_are_those_with_a_language_branch():
    measured = M.text_variants()
    assert "baseline_s2" not in measured and "baseline" not in measured
    assert {"full", "no_language", *variants.CAUSAL} <= set(measured)


def test_shared_share_by_hand():
    g = np.array([[1.0, 2.0, -1.0]] * 4)
    assert M.shared_share(g) == pytest.approx(1.0)  # every AU pulled the same way
    assert M.shared_share(np.eye(4)) == pytest.approx(1 / 4)  # orthogonal pulls
    assert M.shared_share(np.array([[1.0, 0.0], [-1.0, 0.0]])) == pytest.approx(0.0)


def test_gradient_sharing_reads_the_text_gradients():
    model = build()
    x = torch.rand(2, 3, TINY.img_size, TINY.img_size, generator=torch.Generator().manual_seed(3))
    y = torch.randint(0, 2, (2, len(AUS)), generator=torch.Generator().manual_seed(4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = M.gradient_sharing(model, x, y)
    assert 0 < out["z_grad_shared"] <= 1 and 0 < out["h_grad_shared"] <= 1
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert "forward" not in vars(model.text)  # the hook is removed


def test_gradient_sharing_of_a_frozen_text_branch_equals_the_trained_ones():
    # the pull on Z and H does not depend on whether the text branch trains
    x = torch.rand(2, 3, TINY.img_size, TINY.img_size, generator=torch.Generator().manual_seed(3))
    y = torch.randint(0, 2, (2, len(AUS)), generator=torch.Generator().manual_seed(4))
    trained_model = build()
    torch.manual_seed(5)  # the same dropout draws in both
    trained = M.gradient_sharing(trained_model, x, y)
    frozen = build(text_frozen_stage2=True)
    frozen.set_stage(2)
    trainable = {n for n, p in frozen.named_parameters() if p.requires_grad}
    torch.manual_seed(5)
    assert M.gradient_sharing(frozen, x, y) == pytest.approx(trained, rel=1e-6)
    assert {n for n, p in frozen.named_parameters() if p.requires_grad} == trainable
    assert not any(n.startswith("text.") for n in trainable)


# ----------------------------------------------------------------------------- attention maps
def test_entropy_of_known_maps():
    t = 8
    maps = np.zeros((2, 3, t))
    maps[0, 0] = 1 / t  # uniform: log T
    maps[0, 1, 3] = 1.0  # one-hot: 0
    maps[0, 2, :2] = 0.5  # two tokens: log 2
    maps[1] = 2 / t  # unnormalised uniform rows are renormalised
    ent = M.map_entropy(maps)
    np.testing.assert_allclose(ent, [[math.log(t), 0.0, math.log(2)], [math.log(t)] * 3])
    stats = M.attention_stats(maps, "ddca")
    assert stats["ddca_entropy"] == pytest.approx(ent.mean())
    assert stats["ddca_entropy_norm"] == pytest.approx(ent.mean() / math.log(t))


def test_argmax_sharing_by_hand():
    t = 4
    peaks = np.array([[0, 0, 1], [2, 2, 2], [0, 1, 3]])  # 3 frames, 3 AUs
    maps = np.full((3, 3, t), 0.1)
    for f, row in enumerate(peaks):
        for j, p in enumerate(row):
            maps[f, j, p] = 0.7
    out = M.argmax_sharing(maps)
    # frame 0: one pair of three; frame 1: all three pairs; frame 2: none
    assert out["argmax_pairs"] == pytest.approx((1 / 3 + 1 + 0) / 3)
    assert out["argmax_frames"] == pytest.approx(2 / 3)
    assert out["argmax_all"] == pytest.approx(1 / 3)


def test_peak_at_largest_by_hand():
    maps = np.zeros((2, 2, 3))
    maps[0, 0, 1] = maps[0, 1, 2] = maps[1, 0, 0] = maps[1, 1, 0] = 1.0  # peaks [[1, 2], [0, 0]]
    per_au = np.array([[[0, 5, 1], [0, 5, 1]], [[9, 0, 0], [0, 0, 9]]])  # largest [[1, 1], [0, 2]]
    assert M.peak_at_largest(maps, per_au) == pytest.approx(2 / 4)
    shared = np.array([[[0, 0, 7]], [[7, 0, 0]]])  # one norm per frame: largest [2], [0]
    assert M.peak_at_largest(maps, shared) == pytest.approx(3 / 4)


# ----------------------------------------------------------------------------- the switches
def build(**overrides) -> HiVA:
    torch.manual_seed(0)
    return HiVA(dataclasses.replace(variants.apply_variant(TINY, "full"), **overrides), AUS, DESCS)


def test_defaults_are_the_literal_reading():
    cfg = variants.apply_variant(TINY, "full")
    assert cfg.au_distinction == "ldiff_h"
    for slug in ("full_au_id", "full_ldiff_z"):
        assert variants.VARIANTS[slug].control and slug not in variants.TABLE_ROWS


def test_au_identity_adds_only_its_embedding():
    plain, ided = build(), build(au_distinction="identity")
    # the global random stream is not drawn from: every other weight is the same
    extra = {k for k in ided.state_dict() if k not in plain.state_dict()}
    assert extra == {"text.au_identity.weight"}
    for k, v in plain.state_dict().items():
        assert torch.equal(v, ided.state_dict()[k]), k
    assert torch.rand(1).item() == (torch.manual_seed(0), build(), torch.rand(1).item())[2]
    e = ided.text.au_identity.weight
    assert e.shape == (len(AUS), TINY.dim) and e.abs().sum() > 0
    # Z = Trans(W_p H + E), by hand
    ided.eval()
    with torch.no_grad():
        h, z = ided.text_embeddings()
        by_hand = ided.text.context((ided.text.proj(h) + e).unsqueeze(0)).squeeze(0)
        torch.testing.assert_close(z, by_hand)
        # with E = 0 the model is the default model, output for output
        e.zero_()
        x = torch.rand(2, 3, TINY.img_size, TINY.img_size,
                       generator=torch.Generator().manual_seed(3))
        assert torch.equal(ided(x).logits, plain.eval()(x).logits)
    # E is a fresh stage-2 module: in the "new" group, trained
    names = {id(p): n for n, p in ided.named_parameters()}
    new = [names[id(p)] for g in ided.param_groups(2, 1e-3) if g["name"] == "new"
           for p in g["params"]]
    assert "text.au_identity.weight" in new


def test_ldiff_z_applies_eq1_to_z():
    x = torch.rand(2, 3, TINY.img_size, TINY.img_size, generator=torch.Generator().manual_seed(3))
    for mode in ("ldiff_h", "ldiff_z"):
        model = build(au_distinction=mode).eval()
        with torch.no_grad():
            h, z = model.text_embeddings()
            out = model(x)
        torch.testing.assert_close(out.l_diff, l_diff(z if mode == "ldiff_z" else h))
        assert model.text.au_identity is None


def test_default_runs_keep_their_signature(tmp_path):
    """Runs saved before the switches existed are still found (their signature lacks them);
    a run with a switch on is another run."""
    cfg = make_config("synth-disfa", smoke=True, data_root=str(tmp_path), variant="full")
    model = runs.signature(cfg, 2)["model"]
    assert "au_distinction" not in model
    on = dataclasses.replace(cfg, variant="full_au_id")
    assert runs.signature(on, 2)["model"]["au_distinction"] == "identity"


def test_layer_embeddings_end_in_z():
    model = build(au_distinction="identity")
    stages = M.layer_embeddings(model)
    names = [s for s, _ in stages]
    assert names == ["H", "proj", *(f"layer{i}" for i in range(1, TINY.text_layers + 1))]
    h, z = model.text_embeddings()
    np.testing.assert_allclose(stages[0][1], h.numpy(), rtol=1e-6)
    np.testing.assert_allclose(stages[-1][1], z.numpy(), rtol=1e-5, atol=1e-6)
    assert model.text.training  # restored


# ----------------------------------------------------------------------------- notebook 09
@pytest.mark.slow
def test_notebook_10_smoke(tmp_path, smoke_data_root):
    import pandas as pd
    from conftest import run_notebook

    from hiva_lib.engine.train import run_variant

    roots = dict(data_root=str(smoke_data_root), runs_root=str(tmp_path / "runs"),
                 results_root=str(tmp_path / "results"))
    run_variant(make_config("synth-disfa", smoke=True, variant="full", **roots))
    run_notebook("09_mechanism", tmp_path, dataset="synth-disfa", smoke=True, seeds=[0],
                 max_frames=6, figures_root=str(tmp_path / "figures"), **roots)
    out = tmp_path / "results" / "synth-disfa"
    table, layers = pd.read_csv(out / M.MECHANISM), pd.read_csv(out / M.LAYERS)
    assert set(table["variant"]) == set(layers["variant"]) == {"full"}
    assert table["epoch"].tolist() == list(range(len(table)))  # 0 = before stage 2
    last = table.iloc[-1]
    assert 0 <= last["ddca_entropy_norm"] <= 1 and 0 <= last["cdca_argmax_pairs"] <= 1
    assert table.iloc[:-1]["ddca_entropy"].isna().all()  # attention at the last epoch only
    # the Z saved after the last epoch is the final model's last Transformer layer, and the
    # Z saved before stage 2 is the rebuilt initial model's (initial_model = the engine's init)
    z_out = layers[layers["stage"] == f"layer{TINY.text_layers}"].set_index("when")["cosine"]
    assert last["z_cosine"] == pytest.approx(z_out["final"], abs=1e-4)
    assert table.iloc[0]["z_cosine"] == pytest.approx(z_out["before"], abs=1e-4)
    assert table.iloc[0]["z_cosine"] != pytest.approx(last["z_cosine"], abs=1e-4)
    assert 0 <= last["ddca_peak_at_largest"] <= 1 and 0 <= last["cdca_peak_at_largest"] <= 1
    for row in (table.iloc[0], last):  # gradient sharing before stage 2 and at its end
        assert 0 < row["z_grad_shared"] <= 1 and 0 < row["h_grad_shared"] <= 1
    assert (tmp_path / "figures" / "synth-disfa" / "mechanism.png").stat().st_size > 20_000
