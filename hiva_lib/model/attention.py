"""(d) Hierarchical vision-language interaction (Sec. III-D): DDCA (Eq. 5) and CDCA (Eq. 6).

:func:`reference_attention` is Eq. 5/6 written as the paper writes it; :class:`CrossAttention`
is the optimised form used for training, tested equal to it.

Every attention is softmax((W_Q q)(W_K k)^T / sqrt(d)) (W_V v) with learnable bias-free
W_Q, W_K, W_V (d x C) and no output projection, as the equations write it. Single head by
default (Eq. 5/6); with ``heads > 1`` the maps are averaged over heads and d is the head width.

DDCA (ambiguity 1). Eq. 5 read literally (query U_i, key/value Z_i: one vector each) is a
softmax over one element, identically 1, so U_hat_i = W_V Z_i does not depend on the image.
``mode="spatial"`` (default) gives both directions tokens, as the paper's pooling step and the
spatial DDCA maps of Fig. 6 imply:
  vision -> text: the HW spatial tokens of F_i query the token states of description i;
                  U_hat_i = mean over HW of the output;
  text -> vision: Z_i queries the HW tokens of F_i -> Z^l_i, map (B, N, HW) (Fig. 6);
  D_i = U_hat_i + Z^l_i.
``mode="literal"`` runs Eq. 5 and its dual exactly (maps of shape (B, N, 1), all ones).

CDCA (Eq. 6 and its dual): Z_i queries the HW tokens of X_g -> Z^g_i, map (B, N, HW); the
X_g tokens query all Z (N keys) -> X_hat_g, mean-pooled over HW; C_i = Z^g_i + pool(X_hat_g).
"""
from __future__ import annotations

import torch
from torch import nn

DDCA_MODES = ("spatial", "literal")


class CrossAttention(nn.Module):
    """q (..., Lq, C), kv (..., Lk, C), leading dims broadcast -> (out (..., Lq, d), map).

    Computed without projecting the large side: (W_Q q)^T (W_K k) = q^T (W_Q^T W_K) k, so the
    C x C product W_Q^T W_K is applied to whichever of query and kv holds fewer token rows
    (the text side has no batch dimension: N or N x T rows against B x N x HW spatial ones),
    and sum_j a_j W_V v_j = W_V (sum_j a_j v_j) projects the values after the weighted sum
    when there are fewer output rows than value rows. Exactly equal, several times cheaper.
    """

    def __init__(self, dim: int, heads: int = 1) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.w_q = nn.Linear(dim, dim, bias=False)
        self.w_k = nn.Linear(dim, dim, bias=False)
        self.w_v = nn.Linear(dim, dim, bias=False)

    def forward(self, query: torch.Tensor, kv: torch.Tensor,
                key_mask: torch.Tensor | None = None, mean_queries: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``mean_queries`` returns the output averaged over the queries (..., 1, d)."""
        h, c = self.heads, query.shape[-1]
        wq, wk, wv = (w.weight.view(h, c // h, c) for w in (self.w_q, self.w_k, self.w_v))
        q, k = query.unsqueeze(-3), kv.unsqueeze(-3)  # (..., 1, L, C): broadcast over heads
        q_rows, kv_rows = query.numel() // c, kv.numel() // c
        if q_rows <= kv_rows:  # fold W_Q^T W_K into the (fewer) query rows
            scores = _mm(_mm(q, wq.transpose(-1, -2) @ wk), k.transpose(-1, -2))
        else:  # fold it into the (fewer) key rows
            scores = _mm(q, _mm(k, wk.transpose(-1, -2) @ wq).transpose(-1, -2))
        scores = scores * (c // h) ** -0.5  # (..., h, Lq, Lk)
        if key_mask is not None:  # (..., Lk) True on real keys
            scores = scores.masked_fill(~key_mask[..., None, None, :], float("-inf"))
        attn = scores.softmax(-1)
        a = attn.mean(-2, keepdim=True) if mean_queries else attn
        out_rows = a.numel() // (a.shape[-1] * h)
        if out_rows < kv_rows:  # weighted sum of raw values first, then W_V
            out = _mm(_mm(a, k), wv.transpose(-1, -2))
        else:
            out = _mm(a, _mm(k, wv.transpose(-1, -2)))
        out = out.transpose(-3, -2)  # (..., Lq, h, C/h)
        return out.reshape(*out.shape[:-2], -1), attn.mean(-3)


def reference_attention(att: CrossAttention, query: torch.Tensor, kv: torch.Tensor,
                        key_mask: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 5/6 as written: softmax((W_Q q)(W_K k)^T / sqrt(d)) (W_V v), per head.

    The readable form of :class:`CrossAttention` (which computes the same numbers with the
    projections folded into the smaller side); slower, kept to read and to test against.
    query (..., Lq, C), kv (..., Lk, C) with equal leading dims -> (out (..., Lq, C),
    head-averaged map (..., Lq, Lk)).
    """
    h, c = att.heads, query.shape[-1]
    d = c // h
    q, k, v = att.w_q(query), att.w_k(kv), att.w_v(kv)  # W_Q q, W_K k, W_V v

    def split(x: torch.Tensor) -> torch.Tensor:  # (..., L, C) -> (..., h, L, d)
        return x.reshape(*x.shape[:-1], h, d).transpose(-3, -2)

    scores = split(q) @ split(k).transpose(-1, -2) / d ** 0.5
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask[..., None, None, :], float("-inf"))
    attn = scores.softmax(-1)
    out = (attn @ split(v)).transpose(-3, -2)  # (..., Lq, h, d)
    return out.reshape(*out.shape[:-2], c), attn.mean(-3)


def _mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b with broadcast leading dims; einsum folds a dim that only one side has into that
    side's rows (one large matmul) where @ would copy the other side along it (many small)."""
    return torch.einsum("...ij,...jk->...ik", a, b)


class DDCA(nn.Module):
    """Eq. 5 and its dual: disentangled dual cross-attention, one AU description per AU branch."""

    def __init__(self, dim: int, heads: int = 1, mode: str = "spatial") -> None:
        super().__init__()
        if mode not in DDCA_MODES:
            raise ValueError(f"ddca_mode {mode!r}: choose one of {DDCA_MODES}")
        self.mode = mode
        self.v2t = CrossAttention(dim, heads)  # W^L of Eq. 5: vision queries text
        self.t2v = CrossAttention(dim, heads)  # the dual: text queries vision

    def forward(self, f_tokens: torch.Tensor, u: torch.Tensor, z: torch.Tensor,
                text_tokens: torch.Tensor, text_mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """f_tokens (B, N, HW, C), u (B, N, C), z (N, C), text_tokens (N, T, C), text_mask
        (N, T) -> D (B, N, C), the text->vision map (B, N, HW) (Fig. 6) and the
        vision->text map of Eq. 5 (B, N, HW, T). Literal: (B, N, 1) and (B, N, 1, 1)."""
        if self.mode == "literal":
            u_hat, eq5 = self.v2t(u.unsqueeze(2), z.unsqueeze(1))  # one key: softmax == 1
            z_l, attn = self.t2v(z.unsqueeze(1), u.unsqueeze(2))
            return u_hat.squeeze(2) + z_l.squeeze(2), attn.squeeze(2), eq5
        # (B, N, 1, C): the HW outputs are mean-pooled, so pool the attention rows first
        u_hat, eq5 = self.v2t(f_tokens, text_tokens, text_mask, mean_queries=True)
        z_l, attn = self.t2v(z.unsqueeze(1), f_tokens)  # (B, N, 1, C), (B, N, 1, HW)
        return u_hat.squeeze(2) + z_l.squeeze(2), attn.squeeze(2), eq5


class CDCA(nn.Module):
    """Eq. 6 and its dual: contextual dual cross-attention between X_g and all AU texts."""

    def __init__(self, dim: int, heads: int = 1) -> None:
        super().__init__()
        self.t2v = CrossAttention(dim, heads)  # W^G of Eq. 6: Z_i queries X_g
        self.v2t = CrossAttention(dim, heads)  # the dual: X_g tokens query Z

    def forward(self, x_tokens: torch.Tensor, z: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x_tokens (B, HW, C), z (N, C) -> C (B, N, C), map (B, N, HW), dual map (B, HW, N)."""
        z_g, attn = self.t2v(z, x_tokens)  # (B, N, C), (B, N, HW)
        x_hat, dual = self.v2t(x_tokens, z)  # (B, HW, C), (B, HW, N)
        return z_g + x_hat.mean(1, keepdim=True), attn, dual
