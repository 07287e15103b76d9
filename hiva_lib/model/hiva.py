"""HiVA: the full model of Sec. III (Fig. 2), assembled from one module per component.

    (a) Backbone          images -> X_g (B, C, H, W)                     backbone.py
    (c) AU branches+graph X_g -> F_i, U_i; Eq. 3; stage-1 FC per AU      au_graph.py
    (b) Text              descriptions -> H (Eq. 1: L_diff), Z (Eq. 2)   text.py
    (d) DDCA / CDCA       (F_i, U_i, Z) -> D_i (Eq. 5); (X_g, Z) -> C_i  attention.py
    head                  concat(U_i, D_i, C_i) -> FC -> ReLU -> per-AU logit

Stage 1 (Sec. III-E) runs (a) + (c) and predicts from the graph-refined U_i'. Stage 2 runs
(a), (b), (d) and the head; by default the graph is a stage-1 auxiliary (ambiguity 2), though
its adjacency is still computed from U for Fig. 7. See docs/model.md for every switch.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from hiva_lib.data.descriptions import derangement
from hiva_lib.errors import CheckpointError, key_problems
from hiva_lib.model.attention import CDCA, DDCA
from hiva_lib.model.au_graph import AUBranches, DynamicGraph, PerAULinear, topk_adjacency
from hiva_lib.model.backbone import Backbone
from hiva_lib.model.config import ModelConfig
from hiva_lib.model.text import LearnedText, TextEncoder, l_diff

STAGE1_PREFIXES = ("backbone.", "branches.", "graph.", "stage1_head.")

@dataclass
class HiVAOutput:
    logits: torch.Tensor  # (B, N) of the current stage
    l_diff: torch.Tensor | None  # Eq. 1, stage 2 with use_ldiff
    # "ddca", "ddca_eq5", "cdca", "cdca_dual", "graph", "x_g_hw"
    maps: dict = field(default_factory=dict)


class HiVA(nn.Module):
    def __init__(self, cfg: ModelConfig, au_ids, descriptions: list[list[str]] | None = None
                 ) -> None:
        super().__init__()
        self.cfg, self.au_ids = cfg, tuple(au_ids)
        n, c = len(self.au_ids), cfg.dim
        # (a) and (c): stage 1
        self.backbone = Backbone(cfg.backbone, c, cfg.pretrained, cfg.img_size, cfg.input_mean,
                                 cfg.input_std, cfg.backbone_trainable, **cfg.backbone_kwargs)
        # the resolved normalisation goes into the config a checkpoint saves
        mean, std = self.backbone.normalisation
        self.cfg = cfg = dataclasses.replace(cfg, input_mean=mean, input_std=std)
        self.branches = AUBranches(n, c)
        self.graph = DynamicGraph(c, cfg.graph_k)
        self.stage1_head = PerAULinear(n, c)
        # (b), (d) and the head: stage 2, built only for text variants
        self.text = self.ddca = self.cdca = self.fuse = self.head = None
        if cfg.use_text:
            if descriptions is None:
                from hiva_lib.data.descriptions import all_descriptions
                descriptions = all_descriptions(self.au_ids, path=cfg.descriptions_path)
            if len(descriptions) != n:
                raise ValueError(f"descriptions: {len(descriptions)} AU lists for {n} AUs "
                                 f"{self.au_ids}")
            if not cfg.use_aug:  # w/o AUG: the base descriptions only, in training too
                descriptions = [d[:1] for d in descriptions]
            if cfg.text_control == "shuffled":  # AU i gets all descriptions of AU p[i] != i
                descriptions = [descriptions[j] for j in derangement(n)]
            if cfg.text_control == "learned":
                self.text = LearnedText(n, c, cfg.text_layers, cfg.text_heads, cfg.text_ff_dim,
                                        au_identity=cfg.au_distinction == "identity")
            else:
                self.text = TextEncoder(cfg.text_model, descriptions, c,
                                        cfg.text_trainable_layers, cfg.text_layers,
                                        cfg.text_heads, cfg.text_ff_dim, cfg.train_sampling,
                                        cfg.eval_descriptions, cfg.sampling_seed,
                                        au_identity=cfg.au_distinction == "identity")
            if cfg.use_ddca:
                self.ddca = DDCA(c, cfg.attn_heads, cfg.ddca_mode)
            if cfg.use_cdca:
                self.cdca = CDCA(c, cfg.attn_heads)
            parts = 1 + cfg.use_ddca + cfg.use_cdca
            if not (cfg.use_ddca or cfg.use_cdca) and cfg.fusion_without_attention == "concat":
                parts += 1
            self.fuse = nn.Sequential(nn.Linear(parts * c, cfg.head_dim), nn.ReLU())
            self.head = PerAULinear(n, cfg.head_dim)
        elif cfg.vision_stage2:  # the matched-training control: HiVA's stage-2 head on U alone
            self.fuse = nn.Sequential(nn.Linear(c, cfg.head_dim), nn.ReLU())
            self.head = PerAULinear(n, cfg.head_dim)
        self.set_stage(2 if cfg.use_text else 1)

    # ------------------------------------------------------------------ stages
    def _stage_modules(self, stage: int) -> tuple[list[nn.Module], list[nn.Module]]:
        """(modules initialised from pretrained or stage-1 weights, fresh modules) of a stage."""
        if stage == 1:
            return [self.backbone, self.branches, self.graph, self.stage1_head], []
        old, new = [self.backbone], []
        # the text branch trains unless there is none (vision_stage2) or it is frozen
        if self.text is not None and not self.cfg.text_frozen_stage2:
            old.append(self.text.layers)
            new += [self.text.proj, self.text.au_identity, self.text.context]
        if self.cfg.stage2_train_branches:
            old.append(self.branches)
            if self.cfg.graph_in_stage2:
                old.append(self.graph)
        new += [self.ddca, self.cdca, self.fuse, self.head]
        return old, [m for m in new if m is not None]

    def set_stage(self, stage: int) -> None:
        """Stage 1 trains (a)+(c); stage 2 trains (a), (b) [last BERT layers; none with
        ``text_frozen_stage2``], (d), the head, and the AU branches per
        ``stage2_train_branches``. Everything else is frozen. A ``vision_stage2`` model's stage 2
        trains the same vision parameters and its own fresh head."""
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 or 2, not {stage!r}")
        if stage == 2 and self.head is None:
            raise ValueError("this model is vision-only (use_text=False, the Baseline): it has "
                             "no stage 2; evaluate its stage-1 model (or set vision_stage2=True "
                             "for the matched-training control baseline_s2)")
        self.stage = stage
        self.requires_grad_(False)
        old, new = self._stage_modules(stage)
        for module in old + new:
            module.requires_grad_(True)
        self.backbone.freeze()  # the parts of the body outside cfg.backbone_trainable

    def param_groups(self, stage: int, lr: float) -> list[dict]:
        """Optimizer groups of a stage: one lr for all (the paper), fresh stage-2 modules at
        ``lr * stage2_new_module_lr_mult``."""
        old, new = self._stage_modules(stage)
        groups = [dict(params=[p for m in old for p in m.parameters() if p.requires_grad], lr=lr,
                       name="pretrained"),
                  dict(params=[p for m in new for p in m.parameters()],
                       lr=lr * self.cfg.stage2_new_module_lr_mult, name="new")]
        return [g for g in groups if g["params"]]

    def load_stage1(self, state_dict: dict) -> None:
        """Load the (a)+(c) weights of a stage-1 checkpoint; every one must fit exactly."""
        own = {k: v for k, v in self.state_dict().items() if k.startswith(STAGE1_PREFIXES)}
        problems = []
        if "branches.weight" in state_dict and state_dict["branches.weight"].shape[0] != len(
                self.au_ids):
            problems.append(f"AU count {state_dict['branches.weight'].shape[0]} in the "
                            f"checkpoint vs {len(self.au_ids)} here")
        missing = sorted(set(own) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(own))
        shapes = [f"{k}: {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
                  for k, v in own.items() if k in state_dict and state_dict[k].shape != v.shape]
        problems += key_problems(missing, unexpected, shapes)
        if problems:
            raise CheckpointError(
                "stage-1 weights do not fit this model: " + "; ".join(problems)
                + f". The stage-1 checkpoint must come from the same backbone "
                f"({self.cfg.backbone}, {self.cfg.backbone_kwargs}), dim ({self.cfg.dim}) and "
                f"AU set {self.au_ids}: rerun stage 1 with this model preset and data set.")
        self.load_state_dict(state_dict, strict=False)

    # ------------------------------------------------------------------ forward
    def forward(self, images: torch.Tensor, step: int | None = None) -> HiVAOutput:
        """``images``: [0, 1] RGB (B, 3, S, S), normalised by the backbone; ``step``: the
        training step (draws the descriptions); None = eval descriptions."""
        x_g = self.backbone(images)  # (B, C, H, W)
        b, c, h, w = x_g.shape
        f = self.branches(x_g)  # (B, N, C, H, W)
        u = f.mean((-2, -1))  # GAP -> U_i
        maps: dict = {"x_g_hw": (h, w)}
        if self.stage == 1:
            u_upd, maps["graph"] = self.graph(u)
            return HiVAOutput(self.stage1_head(u_upd), None, maps)

        if self.cfg.graph_in_stage2:
            u, maps["graph"] = self.graph(u)
        else:  # the graph is not part of the stage-2 model; its adjacency is kept for Fig. 7
            with torch.no_grad():
                maps["graph"] = topk_adjacency(u, self.cfg.graph_k)
        if self.text is None:  # vision_stage2: HiVA's stage-2 head on U_i alone
            return HiVAOutput(self.head(self.fuse(u)), None, maps)
        text = self.text(step)
        feats = [u]
        if self.ddca is not None:
            f_tok = f.flatten(-2).transpose(-1, -2)  # (B, N, HW, C)
            z = text.z.detach() if self.cfg.ddca_stop_grad_z else text.z  # causal test
            d, maps["ddca"], maps["ddca_eq5"] = self.ddca(f_tok, u, z, text.tokens,
                                                          text.token_mask)
            feats.append(d)
        if self.cdca is not None:
            x_tok = x_g.flatten(2).transpose(1, 2)  # (B, HW, C)
            z = text.z.detach() if self.cfg.cdca_stop_grad_z else text.z  # causal test
            cc, maps["cdca"], maps["cdca_dual"] = self.cdca(x_tok, z)
            feats.append(cc)
        if self.ddca is None and self.cdca is None:  # ambiguity 3: text without attention
            z = text.z.expand(b, -1, -1)
            if self.cfg.fusion_without_attention == "concat":
                feats.append(z)
            else:
                feats[0] = u + z
        logits = self.head(self.fuse(torch.cat(feats, dim=-1)))
        kept_apart = text.z if self.cfg.au_distinction == "ldiff_z" else text.h  # ambiguity 7
        return HiVAOutput(logits, l_diff(kept_apart) if self.cfg.use_ldiff else None, maps)

    @torch.no_grad()
    def text_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(H (N, d'), Z (N, dim)) of the evaluation descriptions, dropout off (Fig. 5)."""
        if self.text is None:
            raise ValueError("vision-only model (use_text=False) has no text embeddings")
        was_training = self.text.training
        self.text.eval()
        try:
            out = self.text(None)
        finally:
            self.text.train(was_training)
        return out.h, out.z


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
