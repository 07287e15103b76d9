"""(b) Language-based AU description modelling (Sec. III-B; Eq. 1 and Eq. 2).

Semantic encoding: each description is WordPiece-tokenised and encoded by BERT; H_i is the
mask-aware mean of the last layer's token states ([CLS] and [SEP] included, padding not).
Only the last ``trainable_layers`` BERT layers are trained, so the output of the frozen part
(embeddings + the first L - trainable layers) is a constant per description: it is computed
ONCE at construction for every description (base and paraphrases) and kept as a buffer with
its attention mask; the frozen modules are then dropped (they never run again and hold most of
BERT-large's weights). Each step runs only the trainable layers on the selected descriptions.

L_diff (Eq. 1) = (1/N^2) || Hn Hn^T - E ||_F^2 on the row-normalised H.
Contextual modelling (Eq. 2): Z = Trans(W_p H), a d' -> d projection then a Transformer
encoder over the N AU embeddings (no positional encoding: the AUs are a set). Ambiguity 7
(``au_distinction``, docs/model.md): ``"identity"`` gives Z = Trans(W_p H + E), E a learned
AU-identity embedding (one row per AU, the AUs' counterpart of a position embedding);
``"ldiff_z"`` applies Eq. 1 to Z instead of H (in :class:`hiva_lib.model.hiva.HiVA`).

Descriptions (ambiguity 5): a training step with a step number draws one description per AU
deterministically from (seed, step) (``train_sampling``: ``per_au`` independent draws, or one
``shared`` rank for every AU); otherwise the evaluation descriptions are used
(``eval_descriptions``: ``base`` = index 0, or ``mean`` = H averaged over all descriptions of
the AU, whose tokens then all serve as keys of the spatial DDCA).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hiva_lib.data.descriptions import SAMPLE_MODES, sample_indices
from hiva_lib.model.pretrained import load_text_model

EVAL_MODES = ("base", "mean")
LEARNED_TOKENS = 16  # token states per AU of the no_language control (a description: ~10-20)


def l_diff(h: torch.Tensor) -> torch.Tensor:
    """Eq. 1: (1/N^2) ||Hn Hn^T - E||_F^2, Hn = row-wise l2-normalised H (N, d')."""
    hn = F.normalize(h.float(), dim=-1)
    n = hn.shape[0]
    eye = torch.eye(n, device=h.device)
    return ((hn @ hn.T - eye) ** 2).sum() / n**2


@dataclass
class TextOutput:
    h: torch.Tensor  # (N, d') sentence-level H_i, BERT width
    z: torch.Tensor  # (N, dim) contextual Z_i (Eq. 2)
    tokens: torch.Tensor  # (N, T, dim) projected last-layer token states (DDCA keys)
    token_mask: torch.Tensor  # (N, T) True on real tokens


_FROZEN: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def frozen_states(name: str, tokenizer, bert: nn.Module, flat: list[str], k: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(hidden_states[k], attention mask) of the descriptions ``flat`` through the first ``k``
    layers of the frozen text model: the output of the first k layers, the same for every
    model built in this process from the same text model and descriptions (kept, as copies,
    per thread count: a model's text branch is built without running the encoder again)."""
    key = (name, tuple(flat), k, torch.get_num_threads())
    if key not in _FROZEN:
        enc = tokenizer(flat, padding=True, truncation=True, return_tensors="pt")
        bert.eval()
        with torch.no_grad():
            states = [bert(**{n: v[i:i + 64] for n, v in enc.items()},
                           output_hidden_states=True).hidden_states[k]
                      for i in range(0, len(flat), 64)]
        _FROZEN[key] = torch.cat(states), enc["attention_mask"].bool()
    states, mask = _FROZEN[key]
    return states.clone(), mask.clone()


class TextEncoder(nn.Module):
    def __init__(self, text_model: str, descriptions: list[list[str]], dim: int = 512,
                 trainable_layers: int = 2, layers: int = 3, heads: int = 8,
                 ff_dim: int | None = None, sampling: str = "per_au",
                 eval_descriptions: str = "base", seed: int = 0, au_identity: bool = False
                 ) -> None:
        super().__init__()
        if sampling not in SAMPLE_MODES:
            raise ValueError(f"train_sampling {sampling!r}: choose one of {SAMPLE_MODES}")
        if eval_descriptions not in EVAL_MODES:
            raise ValueError(f"eval_descriptions {eval_descriptions!r}: choose one of {EVAL_MODES}")
        if not descriptions or any(not d for d in descriptions):
            raise ValueError("descriptions: every AU needs at least one description")
        self.descriptions = [list(d) for d in descriptions]
        self.sampling, self.eval_mode, self.seed = sampling, eval_descriptions, seed
        tokenizer, bert = load_text_model(text_model)
        total = bert.config.num_hidden_layers
        if not 0 <= trainable_layers <= total:
            raise ValueError(f"text_trainable_layers={trainable_layers}, but {text_model!r} "
                             f"has {total} layers")
        counts = [len(d) for d in self.descriptions]
        self.counts = counts
        self.register_buffer("descriptions_hash", descriptions_hash(self.descriptions))
        self.register_buffer("first", torch.tensor([0, *counts[:-1]]).cumsum(0), persistent=False)

        flat = [d for per_au in self.descriptions for d in per_au]
        states, mask = frozen_states(text_model, tokenizer, bert, flat, total - trainable_layers)
        self.register_buffer("frozen_states", states, persistent=False)
        self.register_buffer("frozen_mask", mask, persistent=False)
        # host copies: which rows and tokens a step needs is worked out on the CPU, so the
        # step never waits for the GPU to answer (no .item()/.nonzero() after the backbone)
        self.mask_host = mask.numpy()
        self.first_host = np.cumsum([0, *counts[:-1]])
        self.layers = nn.ModuleList(bert.encoder.layer[total - trainable_layers:])
        del bert  # embeddings and frozen layers are not needed any more

        width = self.frozen_states.shape[-1]
        self.proj = nn.Linear(width, dim)
        block = nn.TransformerEncoderLayer(dim, heads, ff_dim or dim, dropout=0.1,
                                           batch_first=True)
        self.context = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.au_identity = AUIdentity(len(counts), dim) if au_identity else None

    # ------------------------------------------------------------------ descriptions
    def select_host(self, step: int | None) -> np.ndarray:
        """Rows of the description table per AU, (N, S) int64 on the host; -1 pads.
        S = 1 unless eval_descriptions='mean'."""
        if step is not None:
            idx = sample_indices(self.counts, self.seed, step, self.sampling)
            return (self.first_host + np.asarray(idx, dtype=np.int64))[:, None]
        if self.eval_mode == "base":
            return self.first_host[:, None].astype(np.int64)
        s = max(self.counts)
        rows = self.first_host[:, None] + np.arange(s)
        valid = np.arange(s) < np.asarray(self.counts)[:, None]
        return np.where(valid, rows, -1).astype(np.int64)

    def select(self, step: int | None) -> torch.Tensor:
        """:meth:`select_host` as a tensor on the model's device."""
        return self._to_device(self.select_host(step))

    def _to_device(self, a: np.ndarray) -> torch.Tensor:
        # a host-to-device copy does not wait for queued GPU work
        return torch.from_numpy(np.ascontiguousarray(a)).to(self.first.device, non_blocking=True)

    def plan(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        """Index tensors of the descriptions in ``rows`` (R,), all worked out on the host:
        their rows, token mask (R, T) trimmed to the longest, the real tokens' positions."""
        mask = self.mask_host[rows]
        mask = mask[:, :int(mask.sum(1).max())]  # trim padding no selected description needs
        return dict(rows=self._to_device(rows), mask=self._to_device(mask),
                    real=self._to_device(np.flatnonzero(mask)))

    def run_trainable(self, plan: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Trainable BERT layers on the descriptions of ``plan`` (:meth:`plan`): last-layer
        states (R, T, d'), zero on padding, and the mask (R, T)."""
        rows, mask, real = plan["rows"], plan["mask"], plan["real"]
        h = self.frozen_states[rows, :mask.shape[1]].flatten(0, 1)[real]  # packed (P, d')
        for layer in self.layers:
            h = bert_layer_packed(layer, h, real, mask)
        out = h.new_zeros(mask.numel(), h.shape[-1]).index_copy(0, real, h)
        return out.view(*mask.shape, -1), mask

    # ------------------------------------------------------------------ forward
    def forward(self, step: int | None = None) -> TextOutput:
        """Eq. 2: H (N, d') as the mean of each AU's encoded descriptions, then
        Z = Trans(W_p H) (N, d); also the projected token states DDCA attends to."""
        rows = self.select_host(step)  # (N, S)
        n, s = rows.shape
        valid = rows >= 0
        slots = self._to_device(np.flatnonzero(valid))  # of the (N * S) (AU, slot) pairs
        per_au = self._to_device(valid.sum(1, keepdims=True))
        states, mask = self.run_trainable(self.plan(rows[valid]))  # (R, T, d'), (R, T)
        m = mask.unsqueeze(-1).to(states.dtype)
        h_desc = (states * m).sum(1) / m.sum(1)  # mask-aware token mean per description
        t, width = states.shape[1], states.shape[-1]
        h_all = states.new_zeros(n * s, h_desc.shape[-1]).index_copy(0, slots, h_desc)
        h = h_all.view(n, s, -1).sum(1) / per_au  # mean over the AU's descriptions
        tok = states.new_zeros(n * s, t, width).index_copy(0, slots, states)
        tok_mask = torch.zeros(n * s, t, dtype=torch.bool, device=states.device).index_copy(
            0, slots, mask)
        return TextOutput(h=h, z=contextualise(self, h), tokens=self.proj(tok.view(n, s * t, -1)),
                          token_mask=tok_mask.view(n, s * t))

    # ------------------------------------------------------------------ checkpoints
    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # a checkpoint is only valid with the descriptions it was trained on
        saved = state_dict.get(prefix + "descriptions_hash")
        if saved is not None and int(saved) != int(self.descriptions_hash):
            raise ValueError(
                "checkpoint was trained with other AU descriptions than this model was built "
                "with (their hashes differ). Build HiVA with the same descriptions= list or "
                "descriptions_path, or restore hiva_lib/assets/au_descriptions.json.")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class AUIdentity(nn.Module):
    """Ambiguity 7: a learned embedding E (N, dim) added to W_p H before Eq. 2's Transformer,
    which otherwise sees the AUs as an unordered set of similar vectors.

    Initialised N(0, 1/dim) (rows of norm ~1, nearly orthogonal; W_p H rows are of norm ~1 at
    initialisation) from its own generator seeded by ``torch.initial_seed()``: the global
    random stream is not drawn from, so every other weight, dropout mask and batch of a run
    is the same with and without it (for the same seed)."""

    def __init__(self, n: int, dim: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(torch.initial_seed())
        self.weight = nn.Parameter(torch.randn(n, dim, generator=g) * dim**-0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.weight


def contextualise(text: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """Eq. 2: Z = Trans(W_p H) (N, dim), with the AU-identity embedding of ambiguity 7 added
    to W_p H when the text branch has one."""
    x = text.proj(h)
    if text.au_identity is not None:
        x = text.au_identity(x)
    return text.context(x.unsqueeze(0)).squeeze(0)


def bert_layer_packed(layer: nn.Module, x: torch.Tensor, real: torch.Tensor,
                      mask: torch.Tensor) -> torch.Tensor:
    """One transformers ``BertLayer`` on packed tokens: the stock layer's result on the real
    tokens of a padded (R, T) batch, without computing the padding.

    x (P, d') holds the P real tokens of the R descriptions (``real``: their positions in the
    flattened (R, T) layout; ``mask`` (R, T)). The linear maps, the feed-forward block and the
    LayerNorms (most of the cost) run on the P tokens only (a third of a padded batch of short
    and long descriptions is padding); the attention runs per description on a padded view.
    Uses the layer's own modules: query/key/value, attention dropout, output and
    intermediate blocks (the same names in transformers 4.x and 5.x).
    """
    sa = layer.attention.self
    r, t = mask.shape
    heads, width = sa.num_attention_heads, sa.attention_head_size

    def padded(y: torch.Tensor) -> torch.Tensor:  # (P, d) -> (R, heads, T, width)
        full = y.new_zeros(r * t, y.shape[-1]).index_copy(0, real, y)
        return full.view(r, t, heads, width).transpose(1, 2)

    q, k, v = padded(sa.query(x)), padded(sa.key(x)), padded(sa.value(x))
    scores = (q @ k.transpose(-1, -2)) * width**-0.5
    scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    context = sa.dropout(scores.softmax(-1)) @ v  # (R, heads, T, width)
    context = context.transpose(1, 2).reshape(r * t, heads * width)[real]
    attended = layer.attention.output(context, x)  # dense, dropout, LayerNorm(. + x)
    return layer.output(layer.intermediate(attended), attended)


def descriptions_hash(descriptions: list[list[str]]) -> torch.Tensor:
    """An int64 fingerprint of the description lists, kept in the state dict."""
    digest = hashlib.sha256(json.dumps(descriptions).encode()).digest()
    return torch.tensor(int.from_bytes(digest[:8], "little", signed=True))


class _CachedText(nn.Module):
    """Stands in for the text branch at inference: its output for the fixed descriptions."""

    def __init__(self, text: nn.Module) -> None:
        super().__init__()
        with torch.no_grad():
            self.out = text(None)

    def forward(self, step: int | None = None):
        return self.out


@contextlib.contextmanager
def cached_text(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` with its text branch replaced by its precomputed output (inference only)."""
    if model.text is None:
        yield model
        return
    real = model.text
    model.text = _CachedText(real)
    try:
        yield model
    finally:
        model.text = real


class _TokenTable(nn.Module):
    """Learned token states (N, T, width), in the place of the trainable language-model layers
    (so HiVA's stage 2 trains them like those layers)."""

    def __init__(self, n: int, tokens: int, width: int) -> None:
        super().__init__()
        self.states = nn.Parameter(torch.randn(n, tokens, width) * 0.02)


class LearnedText(nn.Module):
    """The ``no_language`` control: :class:`TextEncoder`'s outputs with no language
    model and no descriptions. Each AU has ``tokens`` learned token states (width ``dim``);
    H_i is their mean, and W_p and the Transformer of Eq. 2 are as in TextEncoder, so Z, the
    DDCA keys and L_diff (Eq. 1, on H) keep their shapes and roles. What is removed is exactly
    what the language gives: the descriptions' meaning."""

    def __init__(self, n: int, dim: int, layers: int = 3, heads: int = 8,
                 ff_dim: int | None = None, tokens: int = LEARNED_TOKENS,
                 au_identity: bool = False) -> None:
        super().__init__()
        self.layers = nn.ModuleList([_TokenTable(n, tokens, dim)])
        self.proj = nn.Linear(dim, dim)
        block = nn.TransformerEncoderLayer(dim, heads, ff_dim or dim, dropout=0.1,
                                           batch_first=True)
        self.context = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.au_identity = AUIdentity(n, dim) if au_identity else None

    def forward(self, step: int | None = None) -> TextOutput:
        """``step`` is accepted for TextEncoder's signature; nothing is drawn."""
        states = self.layers[0].states  # (N, T, dim)
        h = states.mean(1)
        z = contextualise(self, h)
        mask = torch.ones(states.shape[:2], dtype=torch.bool, device=states.device)
        return TextOutput(h=h, z=z, tokens=self.proj(states), token_mask=mask)
