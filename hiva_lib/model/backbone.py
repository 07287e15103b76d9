"""(a) AU-oriented visual feature encoding (Sec. III-B, "Image feature encoding").

A timm backbone (Swin-B by default) gives its last-stage map, 7x7x1024 for Swin-B at 224 px;
a pointwise convolution maps it to the global feature map X_g (7x7xC, C = 512).
"""
from __future__ import annotations

import torch
from torch import nn

from hiva_lib.model.pretrained import create_timm_model


class Backbone(nn.Module):
    """images (B, 3, S, S) -> X_g (B, C, H, W), channels first whatever the timm layout."""

    def __init__(self, name: str, dim: int, pretrained: bool | str = True,
                 img_size: int | None = None, **timm_kwargs) -> None:
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

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.body.forward_features(images)
        if feats.ndim != 4:
            raise ValueError(
                f"backbone {type(self.body).__name__} returns {tuple(feats.shape)} features, "
                "not a spatial map; use a hierarchical model (swin_*, convnext_*, resnet*)")
        if self.nhwc:
            feats = feats.permute(0, 3, 1, 2)
        return self.x_g_proj(feats.contiguous())
