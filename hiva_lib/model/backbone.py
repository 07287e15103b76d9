"""(a) AU-oriented visual feature encoding (Sec. III-B, "Image feature encoding").

A timm backbone (Swin-B by default) gives its last-stage map, 7x7x1024 for Swin-B at 224 px;
a pointwise convolution maps it to the global feature map X_g (7x7xC, C = 512).

Images enter as [0, 1] RGB and are normalised here with the backbone's own mean/std (timm's
pretrained config unless given), so training, evaluation, figures, Grad-CAM and inference all
feed the network the way its weights expect, exactly once.
"""
from __future__ import annotations

import torch
from torch import nn

from hiva_lib.model.config import IMAGENET_MEAN, IMAGENET_STD
from hiva_lib.model.pretrained import create_timm_model

Triple = tuple[float, float, float]


def backbone_normalisation(body: nn.Module, mean: Triple | None = None,
                           std: Triple | None = None) -> tuple[Triple, Triple]:
    """(mean, std) of a timm model's inputs: the given values, else its pretrained config's
    (the same for random initialisation), else ImageNet's."""
    cfg = getattr(body, "pretrained_cfg", None) or {}
    mean = mean if mean is not None else cfg.get("mean", IMAGENET_MEAN)
    std = std if std is not None else cfg.get("std", IMAGENET_STD)
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


class Backbone(nn.Module):
    """[0, 1] images (B, 3, S, S) -> X_g (B, C, H, W), channels first whatever the timm layout.

    ``input_mean`` / ``input_std``: the normalisation (None: the backbone's own), kept in
    ``self.normalisation`` and as non-persistent buffers (state dicts stay as they were)."""

    def __init__(self, name: str, dim: int, pretrained: bool | str = True,
                 img_size: int | None = None, input_mean: Triple | None = None,
                 input_std: Triple | None = None, trainable: tuple[str, ...] | None = None,
                 **timm_kwargs) -> None:
        super().__init__()
        kwargs = dict(timm_kwargs)
        if img_size is not None:
            kwargs["img_size"] = img_size
        try:
            self.body = create_timm_model(name, pretrained, **kwargs)
        except TypeError:
            if "img_size" not in kwargs:
                raise
            kwargs.pop("img_size")  # CNNs take any size and have no img_size argument
            self.body = create_timm_model(name, pretrained, **kwargs)
        # Swin (and other hierarchical transformers in timm) return NHWC maps
        self.nhwc = getattr(self.body, "output_fmt", "NCHW") == "NHWC"
        self.x_g_proj = nn.Conv2d(self.body.num_features, dim, kernel_size=1)
        self.normalisation = backbone_normalisation(self.body, input_mean, input_std)
        mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in self.normalisation)
        self.register_buffer("pixel_mean", mean, persistent=False)
        self.register_buffer("pixel_std", std, persistent=False)
        self.frozen_params, self.frozen_modules = self._frozen_parts(trainable)
        self.freeze()

    def _frozen_parts(self, trainable: tuple[str, ...] | None
                      ) -> tuple[list[nn.Parameter], list[nn.Module]]:
        """The body's parameters and leaf modules outside ``trainable`` (None: none)."""
        if trainable is None:
            return [], []
        names = dict(self.body.named_modules())
        unknown = [t for t in trainable if not t or t not in names]
        if unknown:
            raise ValueError(f"ModelConfig.backbone_trainable: {unknown} are not submodules of "
                             f"{type(self.body).__name__}; choose among its children "
                             f"{[n for n, _ in self.body.named_children()]} or theirs "
                             "(e.g. 'blocks.6'), or None to train the whole backbone")

        def inside(name: str) -> bool:
            return any(name == t or name.startswith(t + ".") for t in trainable)

        # modules wholly outside the trainable parts (not the containers holding one of them)
        holders = {".".join(t.split(".")[:i]) for t in trainable for i in range(len(t.split(".")))}
        params = [p for n, p in self.body.named_parameters() if not inside(n)]
        modules = [m for n, m in self.body.named_modules() if n not in holders and not inside(n)]
        return params, modules

    def freeze(self) -> None:
        """No gradient for the frozen parameters (after a stage's ``requires_grad_(True)``)."""
        for p in self.frozen_params:
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        for module in self.frozen_modules:  # frozen parts keep their BN statistics, no dropout
            module.training = False  # this module only: .eval() would reach trainable children
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.body.forward_features((images - self.pixel_mean) / self.pixel_std)
        if feats.ndim != 4:
            raise ValueError(
                f"backbone {type(self.body).__name__} returns {tuple(feats.shape)} features, "
                "not a spatial map; use a hierarchical model (swin_*, convnext_*, resnet*)")
        if self.nhwc:
            feats = feats.permute(0, 3, 1, 2)
        return self.x_g_proj(feats.contiguous())
