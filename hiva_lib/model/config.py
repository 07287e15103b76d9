"""The model's configuration: one dataclass of every switch of Sec. III and the design notes.

The named presets (paper, cpu-small, ...) live in :mod:`hiva_lib.presets`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from hiva_lib.data.descriptions import SAMPLE_MODES
from hiva_lib.model.attention import DDCA_MODES
from hiva_lib.model.text import EVAL_MODES

FUSIONS = ("concat", "add")
TEXT_CONTROLS = ("none", "shuffled", "learned")
AU_DISTINCTIONS = ("ldiff_h", "identity", "ldiff_z")
# what every checkpoint saved before ModelConfig had input_mean/input_std was trained with
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ModelConfig:
    # (a) visual encoding
    backbone: str = "swin_base_patch4_window7_224"
    backbone_kwargs: dict = field(default_factory=dict)  # extra timm.create_model kwargs
    pretrained: bool | str = True  # True: hub ImageNet weights; False: random; str: local file
    img_size: int = 224
    # submodules of the timm body that train (e.g. ("blocks.6", "conv_head", "bn2")); the rest
    # of the body is frozen, in eval mode, in both stages. None: all of it trains (the paper)
    backbone_trainable: tuple[str, ...] | None = None
    # per-channel input normalisation of [0, 1] RGB images, applied inside the backbone;
    # None: the backbone's own (timm's pretrained config: 0.5/0.5 for tf_ Lite, ImageNet for
    # Swin). HiVA stores the resolved values, so a checkpoint records what it was trained with.
    input_mean: tuple[float, float, float] | None = None
    input_std: tuple[float, float, float] | None = None
    dim: int = 512  # C = d, width of X_g, F_i, U_i, Z_i and the attention space
    # (b) text
    text_model: str = "bert-large-uncased"  # hub id, local folder, or "minilm" (offline)
    text_trainable_layers: int = 2
    text_layers: int = 3  # Transformer of Eq. 2
    text_heads: int = 8
    text_ff_dim: int | None = None  # feed-forward width of Eq. 2's layers; None = dim
    descriptions_path: str | None = None  # None: hiva_lib/assets/au_descriptions.json
    # controls (hiva_lib.variants): "none"; "shuffled": every AU gets another AU's
    # descriptions (a fixed derangement); "learned": learned per-AU token embeddings in place
    # of the text encoder's output, no language model
    text_control: str = "none"
    # Eq. 7's lambda for this model (the lambda sweep); None: the training preset's lambda_diff
    lambda_diff: float | None = None
    # (c) graph
    graph_k: int = 4  # top-K neighbours (not stated in the paper; ME-GraphAU's value)
    # ablation flags (Tables IV-VI)
    use_text: bool = True  # False: vision-only Baseline, stage 1 only (unless vision_stage2)
    use_aug: bool = True  # False: base descriptions only ("w/o AUG")
    use_ldiff: bool = True  # False: no L_diff ("w/o L_diff")
    use_ddca: bool = True
    use_cdca: bool = True
    # switches of the design notes' ambiguities (default first)
    ddca_mode: str = "spatial"  # 1: "spatial" | "literal" (Eq. 5 as written)
    attn_heads: int = 1  # single-head attention as Eq. 5/6 write it
    graph_in_stage2: bool = False  # 2: False = graph is a stage-1 auxiliary
    fusion_without_attention: str = "concat"  # 3: w/o both: "concat" (U_i, Z_i) | "add"
    stage2_train_branches: bool = True  # stage 2 also trains the AU branches (and graph)
    stage2_new_module_lr_mult: float = 1.0  # 4: lr multiplier of fresh stage-2 modules
    eval_descriptions: str = "base"  # 5: "base" | "mean" (H averaged over all variants)
    train_sampling: str = "per_au"  # 5: "per_au" | "shared" (one rank for all AUs)
    sampling_seed: int = 0  # description draws are a function of (sampling_seed, step)
    head_dim: int = 512  # the FC of the final head
    # 7: what keeps the AUs' text embeddings apart. "ldiff_h": Eq. 1 and 2 as written (L_diff
    # on H; Z = Trans(W_p H), the AUs an unordered set); "identity": also a learned AU-identity
    # embedding added to W_p H before the Transformer (hiva_lib.model.text.AUIdentity);
    # "ldiff_z": L_diff on Z (what the attentions use) instead of H
    au_distinction: str = "ldiff_h"
    # the matched-training control (``baseline_s2``): a vision-only model (use_text=False) that
    # also has HiVA's stage 2: its vision parameters as HiVA's stage 2 trains them, and a fresh
    # fusion FC + per-AU head of HiVA's form on U_i alone (no text, DDCA, CDCA)
    vision_stage2: bool = False
    # causal tests of the AU embeddings' collapse (default off): Z enters CDCA / DDCA detached,
    # so their gradient does not reach Z (or the text branch through Z); the text branch's
    # weights (BERT layers, W_p, the Transformer of Eq. 2) are not trained in stage 2
    cdca_stop_grad_z: bool = False
    ddca_stop_grad_z: bool = False
    text_frozen_stage2: bool = False

    def __post_init__(self) -> None:
        choices = dict(ddca_mode=DDCA_MODES, fusion_without_attention=FUSIONS,
                       eval_descriptions=EVAL_MODES, train_sampling=SAMPLE_MODES,
                       text_control=TEXT_CONTROLS, au_distinction=AU_DISTINCTIONS)
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise ValueError(f"ModelConfig.{key}={getattr(self, key)!r}: "
                                 f"choose one of {allowed}")
        if self.lambda_diff is not None and not self.lambda_diff >= 0:
            raise ValueError(f"ModelConfig.lambda_diff={self.lambda_diff!r}: give a weight >= 0, "
                             "or None for the training preset's lambda_diff")
        self._check_text_switches()
        if self.graph_k < 1:
            raise ValueError(f"ModelConfig.graph_k={self.graph_k}: must be >= 1")
        if self.backbone_trainable is not None:
            if isinstance(self.backbone_trainable, str):
                raise ValueError(f"ModelConfig.backbone_trainable={self.backbone_trainable!r}: "
                                 "give a tuple of submodule names, e.g. ('blocks.6',)")
            self.backbone_trainable = tuple(self.backbone_trainable)
        for key in ("input_mean", "input_std"):
            value = getattr(self, key)
            if value is None:
                continue
            try:
                value = tuple(float(v) for v in value)
            except (TypeError, ValueError):
                value = ()
            if len(value) != 3 or (key == "input_std" and min(value) <= 0):
                raise ValueError(f"ModelConfig.{key}={getattr(self, key)!r}: give three "
                                 "per-channel RGB values (std > 0), or None for the backbone's own")
            setattr(self, key, value)


    def _check_text_switches(self) -> None:
        """The switches that need (or exclude) the language branch."""
        if self.use_text and self.vision_stage2:
            raise ValueError("ModelConfig.vision_stage2=True is the vision-only matched-training "
                             "control: set use_text=False with it (or vision_stage2=False)")
        text_only = [k for k in ("cdca_stop_grad_z", "ddca_stop_grad_z", "text_frozen_stage2")
                     if getattr(self, k)]
        if text_only and not self.use_text:
            raise ValueError(f"ModelConfig.{text_only[0]}=True acts on the text branch, which a "
                             "vision-only model (use_text=False) has not: set use_text=True, or "
                             f"{text_only[0]}=False")


def config_from_dict(values: dict) -> ModelConfig:
    """A ModelConfig from a saved dict; unknown keys raise one clear error.

    A dict saved before the normalisation fields existed (an old checkpoint) gets ImageNet
    mean/std: every model was then fed ImageNet-normalised images."""
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown ModelConfig keys {unknown}; known: {sorted(names)}")
    old = dict(input_mean=IMAGENET_MEAN, input_std=IMAGENET_STD)
    return ModelConfig(**{**{k: v for k, v in old.items() if k not in values}, **values})
