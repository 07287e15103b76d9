"""Components of HiVA checked against independent computations: Eq. 1, Eq. 3, top-K graph,
cross-attention (Eq. 5/6), the cached text encoder, and the pretrained-weight switches."""
from __future__ import annotations

import collections

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from hiva_lib.model import pretrained
from hiva_lib.model.attention import CDCA, DDCA, CrossAttention, reference_attention
from hiva_lib.model.au_graph import AUBranches, DynamicGraph, topk_adjacency
from hiva_lib.model.backbone import Backbone
from hiva_lib.model.text import TextEncoder, l_diff

DESCS = [
    ["The inner eyebrows are raised.", "Inner brows lift upward.", "Raising of the inner brow."],
    ["The outer eyebrows are raised.", "Outer brows go up at the sides."],
    ["The brows are lowered and drawn together.", "A frown pulls the brows down.",
     "Brows knit downward.", "The glabella wrinkles as brows lower."],
]


# ----------------------------------------------------------------------------- Eq. 1
def test_l_diff_matches_numpy():
    h = torch.randn(5, 7, dtype=torch.float64)
    hn = h.numpy() / np.linalg.norm(h.numpy(), axis=1, keepdims=True)
    expected = np.linalg.norm(hn @ hn.T - np.eye(5), "fro") ** 2 / 25
    assert float(l_diff(h)) == pytest.approx(expected, rel=1e-6)
    assert float(l_diff(torch.eye(4) * 3.0)) == pytest.approx(0.0, abs=1e-7)  # orthogonal
    same = torch.ones(4, 3)  # identical rows: N^2 - N off-diagonal ones
    assert float(l_diff(same)) == pytest.approx((16 - 4) / 16, rel=1e-6)


# ----------------------------------------------------------------------------- Eq. 3, graph
def test_topk_adjacency_matches_numpy_argsort():
    torch.manual_seed(0)
    u = torch.randn(3, 6, 5)
    adj = topk_adjacency(u, 2)
    for b in range(3):
        sim = (u[b] @ u[b].T).numpy()
        np.fill_diagonal(sim, -np.inf)
        for i in range(6):
            expected = set(np.argsort(-sim[i])[:2])
            assert set(np.flatnonzero(adj[b, i].numpy())) == expected
    assert torch.all(adj.diagonal(dim1=1, dim2=2) == 0)
    assert torch.all(adj.sum(-1) == 2)
    with_self = topk_adjacency(u, 6, self_loops=True)
    assert torch.all(with_self == 1)


def _hand_graph(k: int) -> DynamicGraph:
    graph = DynamicGraph(dim=2, k=k)
    with torch.no_grad():
        graph.r.weight.copy_(torch.tensor([[1.0, 2.0], [0.0, 1.0]]))
        graph.g.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, -1.0, 1.0, 0.0]]))
        graph.g.bias.copy_(torch.tensor([-2.5, 0.5]))
    return graph


def test_eq3_hand_computed():
    u = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, 1.0]]])
    # K=1: sims without self: AU0 -> AU2 (2 > 0), AU1 -> AU2 (1 > 0), AU2 -> AU0 (2 > 1)
    upd, adj = _hand_graph(1)(u)
    assert adj[0].tolist() == [[0, 0, 1], [0, 0, 1], [1, 0, 0]]
    # r(U0)=[1,0], r(U2)=[4,1]; U0 + W_g[U0; r(U2)] + b = [1,0] + [2,4] + [-2.5,.5] = [.5,4.5]
    expected = torch.tensor([[[0.5, 4.5], [0.0, 4.5], [1.5, 1.5]]])
    torch.testing.assert_close(upd, expected)
    # K=2: every AU averages the messages of both others
    upd, adj = _hand_graph(2)(u)
    torch.testing.assert_close(upd, torch.tensor([[[0.5, 3.5], [0.0, 3.0], [2.0, 2.0]]]))


def test_branches_equal_separate_pointwise_convs():
    torch.manual_seed(0)
    branches = AUBranches(3, 4)
    x = torch.randn(2, 4, 5, 5)
    f = branches(x)
    for i in range(3):
        conv = torch.nn.Conv2d(4, 4, 1)
        with torch.no_grad():
            conv.weight.copy_(branches.weight[i, :, :, None, None])
            conv.bias.copy_(branches.bias[i])
        torch.testing.assert_close(f[:, i], conv(x))


# ----------------------------------------------------------------------------- Eq. 5 / 6
def _np_attention(att: CrossAttention, q: np.ndarray, kv: np.ndarray) -> tuple:
    wq, wk, wv = (w.weight.detach().double().numpy() for w in (att.w_q, att.w_k, att.w_v))
    out, maps = [], []
    for qi in q:  # single head, written out per query
        s = (wq @ qi) @ (kv @ wk.T).T / np.sqrt(len(qi))
        a = np.exp(s - s.max())
        a /= a.sum()
        maps.append(a)
        out.append(a @ (kv @ wv.T))
    return np.array(out), np.array(maps)


def test_cross_attention_matches_numpy():
    torch.manual_seed(0)
    att = CrossAttention(8).double()
    q, kv = torch.randn(3, 8, dtype=torch.float64), torch.randn(5, 8, dtype=torch.float64)
    out, attn = att(q, kv)
    ref_out, ref_map = _np_attention(att, q.numpy(), kv.numpy())
    np.testing.assert_allclose(out.detach().numpy(), ref_out, rtol=1e-10)
    np.testing.assert_allclose(attn.detach().numpy(), ref_map, rtol=1e-10)


def _np_multihead(att: CrossAttention, q: np.ndarray, kv: np.ndarray, heads: int = 2):
    """Attention of one query set (Lq, C) on one key set (Lk, C), written out with explicit
    per-head projections: (output (Lq, C), head-averaged map (Lq, Lk))."""
    wq, wk, wv = (w.weight.detach().numpy() for w in (att.w_q, att.w_k, att.w_v))
    width = q.shape[-1] // heads
    outs, maps = [], []
    for hd in range(heads):
        rows = slice(width * hd, width * (hd + 1))
        s = (q @ wq[rows].T) @ (kv @ wk[rows].T).T / np.sqrt(width)
        a = np.exp(s - s.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        maps.append(a)
        outs.append(a @ (kv @ wv[rows].T))
    return np.concatenate(outs, -1), np.mean(maps, 0)


@pytest.mark.parametrize("lq, lk", [(3, 5), (7, 2), (4, 4)])
def test_folded_attention_equals_projected_multihead_attention(lq, lk):
    """Both folding paths against attention written out with explicit per-head projections."""
    torch.manual_seed(1)
    att = CrossAttention(8, heads=2).double()
    q, kv = torch.randn(2, lq, 8, dtype=torch.float64), torch.randn(2, lk, 8, dtype=torch.float64)
    refs = [_np_multihead(att, q[b].numpy(), kv[b].numpy()) for b in range(2)]
    out, attn = att(q, kv)
    np.testing.assert_allclose(out.detach().numpy(), np.array([r[0] for r in refs]),
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(attn.detach().numpy(), np.array([r[1] for r in refs]),
                               rtol=1e-9, atol=1e-12)
    pooled, _ = att(q, kv, mean_queries=True)
    np.testing.assert_allclose(pooled.detach().numpy()[:, 0],
                               np.array([r[0].mean(0) for r in refs]), rtol=1e-9)


@pytest.mark.parametrize("heads, lq, lk", [(1, 3, 5), (2, 7, 2), (2, 4, 4)])
def test_reference_attention_equals_the_optimised_path(heads, lq, lk):
    """Eq. 5/6 as written (softmax(QK^T/sqrt(d))V) against the folded CrossAttention."""
    torch.manual_seed(3)
    att = CrossAttention(8, heads=heads).double()
    q, kv = torch.randn(2, lq, 8, dtype=torch.float64), torch.randn(2, lk, 8, dtype=torch.float64)
    mask = torch.ones(2, lk, dtype=torch.bool)
    mask[1, -1] = lk == 1
    out, attn = att(q, kv, mask)
    ref_out, ref_map = reference_attention(att, q, kv, mask)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(attn, ref_map, rtol=1e-10, atol=1e-12)
    # and the reference itself against numpy, written out per head
    np_out, np_map = _np_multihead(att, q[0].numpy(), kv[0].numpy(), heads)
    np.testing.assert_allclose(ref_out[0].detach().numpy(), np_out, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ref_map[0].detach().numpy(), np_map, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("shared", ["kv", "query"])
@pytest.mark.parametrize("lq, lk", [(6, 3), (1, 6)])
def test_attention_with_a_broadcast_side(shared, lq, lk):
    """The text side has no batch dimension (DDCA/CDCA): kv (Lk, C) against queries (B, Lq, C),
    or one query set against batched keys; every fold path equals per-sample attention."""
    torch.manual_seed(2)
    att = CrossAttention(8, heads=2).double()
    q = torch.randn(*(() if shared == "query" else (3,)), lq, 8, dtype=torch.float64)
    kv = torch.randn(*(() if shared == "kv" else (3,)), lk, 8, dtype=torch.float64)
    out, attn = att(q, kv)
    for b in range(3):
        ref_out, ref_map = _np_multihead(att, (q if shared == "query" else q[b]).numpy(),
                                         (kv if shared == "kv" else kv[b]).numpy())
        np.testing.assert_allclose(out[b].detach().numpy(), ref_out, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(attn[b].detach().numpy(), ref_map, rtol=1e-9, atol=1e-12)


def test_multihead_maps_average_heads_and_masks_keys():
    torch.manual_seed(0)
    att = CrossAttention(8, heads=2)
    q, kv = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    out, attn = att(q, kv, mask)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 3))
    assert torch.all(attn[1, :, 3:] == 0)
    kv2 = kv.clone()
    kv2[1, 3:] = 100.0  # padded keys must not matter
    torch.testing.assert_close(att(q, kv2, mask)[0], out)


def test_ddca_literal_attention_is_exactly_one():
    torch.manual_seed(0)
    ddca = DDCA(8, mode="literal")
    b, n, hw = 2, 3, 4
    f, u, z = torch.randn(b, n, hw, 8), torch.randn(b, n, 8), torch.randn(n, 8)
    d, attn, eq5 = ddca(f, u, z, torch.randn(n, 5, 8), torch.ones(n, 5, dtype=torch.bool))
    assert attn.shape == (b, n, 1) and eq5.shape == (b, n, 1, 1)
    assert torch.all(attn == 1.0) and torch.all(eq5 == 1.0)  # Eq. 5's own map, and its dual
    # softmax over one key is 1, so Eq. 5 gives W_V Z_i and its dual W_V' U_i
    expected = ddca.v2t.w_v(z).expand(b, n, 8) + ddca.t2v.w_v(u)
    torch.testing.assert_close(d, expected)


def test_ddca_spatial_maps_and_pooling():
    torch.manual_seed(0)
    ddca = DDCA(8)
    b, n, hw, t = 2, 3, 6, 5
    f, u, z = torch.randn(b, n, hw, 8), torch.randn(b, n, 8), torch.randn(n, 8)
    tokens, mask = torch.randn(n, t, 8), torch.ones(n, t, dtype=torch.bool)
    mask[1, 3:] = False
    d, attn, eq5 = ddca(f, u, z, tokens, mask)
    assert d.shape == (b, n, 8) and attn.shape == (b, n, hw) and eq5.shape == (b, n, hw, t)
    torch.testing.assert_close(attn.sum(-1), torch.ones(b, n))
    torch.testing.assert_close(eq5.sum(-1), torch.ones(b, n, hw))  # each F_i token over T
    assert torch.all(eq5[:, 1, :, 3:] == 0)  # padding of description 1 gets no attention
    # AU i attends only to its own F_i and its own description: independent recomputation
    i = 1
    u_hat, _ = ddca.v2t(f[:, i], tokens[i, :3])
    z_l, a = ddca.t2v(z[i:i + 1], f[:, i])
    torch.testing.assert_close(d[:, i], u_hat.mean(1) + z_l[:, 0])
    torch.testing.assert_close(attn[:, i], a[:, 0])


def test_cdca_shapes_sums_and_pooling():
    torch.manual_seed(0)
    cdca = CDCA(8)
    x, z = torch.randn(2, 6, 8), torch.randn(3, 8)
    c, attn, dual = cdca(x, z)
    assert c.shape == (2, 3, 8) and attn.shape == (2, 3, 6) and dual.shape == (2, 6, 3)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 3))  # Z_i over the HW tokens
    torch.testing.assert_close(dual.sum(-1), torch.ones(2, 6))  # each token over the N AUs
    z_g, _ = cdca.t2v(z, x)
    x_hat, _ = cdca.v2t(x, z)
    torch.testing.assert_close(c, z_g + x_hat.mean(1, keepdim=True))


# ----------------------------------------------------------------------------- text (b)
@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _full_bert_h(texts: list[str]) -> torch.Tensor:
    """Independent H: the whole MiniLM, mask-aware mean of the last layer."""
    path = pretrained.minilm_path()
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        last = model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).float()
    return (last * m).sum(1) / m.sum(1)


def test_text_encoder_cache_equals_full_bert(offline):
    enc = TextEncoder("minilm", DESCS, dim=16, trainable_layers=2, layers=1, heads=2).eval()
    out = enc(None)
    torch.testing.assert_close(out.h, _full_bert_h([d[0] for d in DESCS]), atol=1e-5, rtol=1e-5)
    assert out.z.shape == (3, 16) and out.tokens.shape[0] == 3 and out.tokens.shape[2] == 16
    # frozen part dropped: no embeddings, only the 2 trainable layers are parameters
    names = [n for n, _ in enc.named_parameters()]
    assert not any("embeddings" in n for n in names)
    assert len(enc.layers) == 2 and not enc.frozen_states.requires_grad


def test_frozen_states_are_kept_per_model_descriptions_and_depth(offline):
    """A second encoder of the same text model and descriptions reuses the frozen layers'
    output (equal to running them again), as its own copy; another depth runs them again."""
    from hiva_lib.model import text

    text._FROZEN.clear()
    a = TextEncoder("minilm", DESCS, dim=16, trainable_layers=2, layers=1, heads=2)
    assert len(text._FROZEN) == 1
    b = TextEncoder("minilm", DESCS, dim=16, trainable_layers=2, layers=1, heads=2)
    assert len(text._FROZEN) == 1 and torch.equal(a.frozen_states, b.frozen_states)
    b.frozen_states.zero_()  # a copy: the kept states and a's are untouched
    text._FROZEN.clear()
    again = TextEncoder("minilm", DESCS, dim=16, trainable_layers=2, layers=1, heads=2)
    assert torch.equal(again.frozen_states, a.frozen_states)
    deeper = TextEncoder("minilm", DESCS, dim=16, trainable_layers=3, layers=1, heads=2)
    assert len(text._FROZEN) == 2 and not torch.equal(deeper.frozen_states, a.frozen_states)


def test_packed_bert_layer_equals_the_stock_layer(offline):
    """bert_layer_packed on the real tokens == transformers' BertLayer on the padded batch."""
    from hiva_lib.model.text import bert_layer_packed

    model = AutoModel.from_pretrained(pretrained.minilm_path(), local_files_only=True,
                                      attn_implementation="eager").eval()
    layer = model.encoder.layer[4]
    torch.manual_seed(0)
    mask = torch.tensor([[1] * 7 + [0] * 3, [1] * 10, [1] * 4 + [0] * 6], dtype=torch.bool)
    x = torch.randn(3, 10, model.config.hidden_size)
    ext = (~mask)[:, None, None, :].float() * torch.finfo(torch.float32).min
    with torch.no_grad():
        ref = layer(x, attention_mask=ext)
        ref = ref[0] if isinstance(ref, tuple) else ref
        real = mask.flatten().nonzero().squeeze(1)
        packed = bert_layer_packed(layer, x.flatten(0, 1)[real], real, mask)
    torch.testing.assert_close(packed, ref.flatten(0, 1)[real], atol=1e-5, rtol=1e-5)


def test_text_encoder_mean_mode_averages_all_descriptions(offline):
    enc = TextEncoder("minilm", DESCS, dim=16, layers=1, heads=2,
                      eval_descriptions="mean").eval()
    out = enc(None)
    flat_h = _full_bert_h([d for per in DESCS for d in per])
    expected = torch.stack([flat_h[0:3].mean(0), flat_h[3:5].mean(0), flat_h[5:9].mean(0)])
    torch.testing.assert_close(out.h, expected, atol=1e-5, rtol=1e-5)
    # all 4 descriptions of AU 2 are keys of its spatial DDCA
    assert out.token_mask.shape[0] == 3 and int(out.token_mask[1].sum()) < int(
        out.token_mask[2].sum())


def test_description_sampling_is_deterministic_in_seed_and_step(offline):
    a = TextEncoder("minilm", DESCS, dim=16, layers=1, heads=2, seed=7)
    b = TextEncoder("minilm", DESCS, dim=16, layers=1, heads=2, seed=7)
    c = TextEncoder("minilm", DESCS, dim=16, layers=1, heads=2, seed=8)
    rows_a = [a.select(s).flatten().tolist() for s in range(30)]
    assert rows_a == [b.select(s).flatten().tolist() for s in range(30)]
    assert rows_a != [c.select(s).flatten().tolist() for s in range(30)]
    assert len({tuple(r) for r in rows_a}) > 5  # it does vary with the step
    for r in rows_a:  # each AU draws among its own descriptions
        assert 0 <= r[0] < 3 and 3 <= r[1] < 5 and 5 <= r[2] < 9
    assert a.select(None).flatten().tolist() == [0, 3, 5]  # eval: base descriptions
    shared = TextEncoder("minilm", DESCS, dim=16, layers=1, heads=2, sampling="shared")
    for s in range(20):
        r = shared.select(s).flatten().tolist()
        rank = r[2] - 5  # AU 2 has the most descriptions: its index is the shared rank
        assert r[0] == rank % 3 and r[1] - 3 == rank % 2


def test_frozen_layers_run_once_not_per_step(offline, monkeypatch):
    from transformers.models.bert import modeling_bert

    calls: collections.Counter = collections.Counter()
    original = modeling_bert.BertLayer.forward

    def counting(self, *args, **kwargs):
        calls[id(self)] += 1
        return original(self, *args, **kwargs)

    from hiva_lib.model import text

    monkeypatch.setattr(modeling_bert.BertLayer, "forward", counting)
    monkeypatch.setattr(text, "_FROZEN", {})  # nothing kept from other tests' encoders
    enc = TextEncoder("minilm", DESCS, dim=16, layers=1, heads=2).train()
    assert len(calls) == 6  # construction: all 6 MiniLM layers, once, for every description
    trainable = {id(layer.intermediate) for layer in enc.layers}
    calls.clear()
    # per step only the trainable layers' blocks run (packed, see bert_layer_packed)
    original_ff = modeling_bert.BertIntermediate.forward

    def counting_ff(self, *args, **kwargs):
        calls[id(self)] += 1
        return original_ff(self, *args, **kwargs)

    monkeypatch.setattr(modeling_bert.BertIntermediate, "forward", counting_ff)
    opt = torch.optim.SGD(enc.parameters(), lr=0.1)
    for step in range(3):
        out = enc(step)
        loss = l_diff(out.h) + out.z.square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert set(calls) == trainable and all(v == 3 for v in calls.values())


# ----------------------------------------------------------------------------- pretrained
def test_minilm_path_is_the_shipped_folder():
    path = pretrained.minilm_path()
    assert (path / "config.json").exists() and (path / "model.safetensors").exists()
    assert pretrained.resolve_text_model("minilm") == str(path)


def test_hub_text_model_offline_gives_one_clear_error(offline):
    with pytest.raises(pretrained.PretrainedUnavailableError) as err:
        pretrained.load_text_model("bert-large-uncased-not-cached-xyz")
    msg = str(err.value)
    assert "text_model" in msg and "HF_HUB_OFFLINE" in msg and "minilm" in msg


def test_missing_text_folder_gives_clear_error(tmp_path):
    with pytest.raises(pretrained.PretrainedUnavailableError, match="not found"):
        pretrained.load_text_model(str(tmp_path / "nope"))
    with pytest.raises(pretrained.PretrainedUnavailableError, match="config.json"):
        pretrained.load_text_model(str(tmp_path))


TINY_SWIN = dict(patch_size=4, embed_dim=16, depths=(1, 1), num_heads=(1, 2))


def test_backbone_layout_and_local_weights(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    bb = Backbone("swin_tiny_patch4_window7_224", 8, False, 56, **TINY_SWIN).eval()  # drop-path off
    x = torch.randn(2, 3, 56, 56)
    x_g = bb(x)
    assert x_g.shape == (2, 8, 7, 7)
    # NHWC -> NCHW handled: X_g is the pointwise conv of the permuted last-stage map
    # ... of the ImageNet-normalised images (the random-init Swin's own normalisation)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    nhwc = bb.body.forward_features((x - mean) / std)
    ref = torch.einsum("bhwc,oc->bohw", nhwc, bb.x_g_proj.weight[:, :, 0, 0])
    torch.testing.assert_close(x_g, ref + bb.x_g_proj.bias[None, :, None, None])
    file = tmp_path / "swin.safetensors"
    save_file({k: v.contiguous() for k, v in bb.body.state_dict().items()}, str(file))
    loaded = Backbone("swin_tiny_patch4_window7_224", 8, str(file), 56, **TINY_SWIN)
    for k, v in bb.body.state_dict().items():
        torch.testing.assert_close(loaded.body.state_dict()[k], v)
    with pytest.raises(pretrained.PretrainedUnavailableError, match="not found"):
        Backbone("swin_tiny_patch4_window7_224", 8, str(tmp_path / "x.pth"), 56, **TINY_SWIN)


def test_backbone_hub_weights_offline_gives_clear_error(offline, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache, whatever this machine has
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(pretrained.PretrainedUnavailableError) as err:
        Backbone("swin_tiny_patch4_window7_224", 8, True, 56, **TINY_SWIN)
    assert "ModelConfig.pretrained" in str(err.value) and "HF_HUB_OFFLINE" in str(err.value)
