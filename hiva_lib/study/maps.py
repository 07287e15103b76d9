"""Where a model looks: its attention maps (DDCA, CDCA, Eq. 5/6), its AU graph (Eq. 3) and
Grad-CAM on the backbone's last stage. Used by Figs. 6-7, the attention scores and inference."""
from __future__ import annotations

import math

import numpy as np
import torch


@torch.no_grad()
def model_maps(model: torch.nn.Module, x: torch.Tensor) -> dict[str, np.ndarray | None]:
    """Probabilities (B, N) and the maps of one forward pass: ``ddca`` / ``cdca`` as
    (B, N, h, w) and ``graph`` (B, N, N), each None when the model has no such module."""
    device = next(model.parameters()).device
    out = model(x.to(device))
    return _output_maps(out.logits, out.maps or {})


def _output_maps(logits: torch.Tensor, maps: dict) -> dict[str, np.ndarray | None]:
    """:func:`model_maps` of a forward pass's logits and maps."""
    h, w = maps.get("x_g_hw", (None, None)) or (None, None)
    res: dict[str, np.ndarray | None] = {
        "probs": torch.sigmoid(logits.detach().float()).cpu().numpy()}
    for key in ("ddca", "cdca"):
        m = maps.get(key)
        if m is not None and h is None:
            h = w = int(math.isqrt(m.shape[-1]))
        res[key] = None if m is None else \
            m.detach().float().reshape(*m.shape[:2], h, w).cpu().numpy()
    g = maps.get("graph")
    res["graph"] = None if g is None else g.detach().float().cpu().numpy()
    return res


def maps_with_gradcam(model: torch.nn.Module, x: torch.Tensor) -> dict[str, np.ndarray | None]:
    """:func:`model_maps` and ``gradcam``, Grad-CAM of every AU (B, N, H, W), from one
    forward pass. The target layer's output becomes a leaf of the graph (same values), so each
    AU's gradient w.r.t. it is taken through the layers above it alone (``torch.autograd.grad``,
    one per AU): what :func:`gradcam` computes for that AU, without a forward pass per AU or
    a backward pass through the backbone. The CAM arithmetic is pytorch_grad_cam's GradCAM
    (channel weights = mean gradient, ReLU, its min-max scaling and resize, twice)."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    layer, nhwc = gradcam_layer(model)
    kept: list[torch.Tensor] = []

    def as_leaf(_module, _inputs, output):  # the graph below the layer is never needed
        kept.append(output.detach().requires_grad_(True))
        return kept[-1]

    device = next(model.parameters()).device
    handle = layer.register_forward_hook(as_leaf)
    try:
        with torch.enable_grad():
            out = model(x.to(device))
    finally:
        handle.remove()
    acts, n_aus = kept[-1], out.logits.shape[1]
    grads = [torch.autograd.grad(out.logits[:, j].sum(), acts, retain_graph=j < n_aus - 1)[0]
             for j in range(n_aus)]
    nchw = swin_reshape_transform if nhwc else (lambda t: t)
    a = nchw(acts.detach()).cpu().numpy()
    size = (x.shape[-1], x.shape[-2])
    cams = []
    for g in grads:
        weights = np.mean(nchw(g).cpu().numpy(), axis=(2, 3))
        cam = np.maximum((weights[:, :, None, None] * a).sum(axis=1), 0)
        cams.append(scale_cam_image(np.maximum(scale_cam_image(cam, size), 0)))
    res = _output_maps(out.logits, out.maps or {})
    res["gradcam"] = np.stack(cams, axis=1).astype(np.float64)
    return res


class _Logits(torch.nn.Module):
    """The AU logits alone, the output Grad-CAM differentiates."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).logits


def swin_reshape_transform(t: torch.Tensor) -> torch.Tensor:
    """Swin activations to NCHW for Grad-CAM: timm's stages give NHWC (B, H, W, C) maps,
    older ones tokens (B, H*W, C)."""
    if t.ndim == 3:
        s = math.isqrt(t.shape[1])
        t = t.reshape(t.shape[0], s, s, t.shape[2])
    return t.permute(0, 3, 1, 2)


def gradcam_layer(model: torch.nn.Module) -> tuple[torch.nn.Module, bool]:
    """Grad-CAM's target layer: the last stage of the model's image backbone (timm's
    ``feature_info``: the last Swin stage, or ``layer4`` of a ResNet), and whether its maps are
    NHWC (Swin) and need :func:`swin_reshape_transform`."""
    from hiva_lib.model.backbone import Backbone

    for module in model.modules():
        if isinstance(module, Backbone):
            body = module.body
            return body.get_submodule(body.feature_info[-1]["module"]), module.nhwc
    raise ValueError("no hiva_lib Backbone found in the model; pass target_layer to gradcam()")


def gradcam(model: torch.nn.Module, x: torch.Tensor, au_index: int | list[int],
            target_layer: torch.nn.Module | None = None, nhwc: bool = False) -> np.ndarray:
    """Grad-CAM (pytorch_grad_cam.GradCAM) of AU logit(s) on the backbone's last stage:
    (B, H, W) in [0, 1] at the input resolution. ``au_index`` is one AU column or one per
    image; ``nhwc`` applies the Swin reshape transform to an explicit ``target_layer``."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    idx = [au_index] * len(x) if isinstance(au_index, int) else list(au_index)
    device = next(model.parameters()).device
    layer, nhwc = (target_layer, nhwc) if target_layer is not None else gradcam_layer(model)
    wrapped = _Logits(model).eval()
    with torch.enable_grad(), GradCAM(wrapped, [layer], reshape_transform=(
            swin_reshape_transform if nhwc else None)) as cam:
        maps = cam(input_tensor=x.to(device), targets=[ClassifierOutputTarget(i) for i in idx])
    return np.asarray(maps, np.float64)


def overlay_maps(model: torch.nn.Module, x: torch.Tensor, probs: np.ndarray, top: int,
                 keys: list[str]) -> tuple[list[np.ndarray], list[str]]:
    """Per face of ``x``: a stack of maps of its ``top`` most probable AUs (their DDCA maps and
    the CDCA composite, or Grad-CAM for a model without attention) and their titles; ``keys``:
    the AUs' column names (``AU01``...), in ``model.au_ids`` order."""
    out = model_maps(model, x)
    stacks, names = [], []
    for r in range(len(x)):
        aus = [int(j) for j in np.argsort(-probs[r])[:top]]
        if out["ddca"] is not None or out["cdca"] is not None:
            maps, titles = [], []
            if out["ddca"] is not None:
                maps += [out["ddca"][r, j] for j in aus]
                titles += [f"DDCA {keys[j]} p={probs[r, j]:.2f}" for j in aus]
            if out["cdca"] is not None:
                maps.append(out["cdca"][r, aus].mean(0))
                titles.append("CDCA (" + "+".join(keys[j] for j in aus) + ")")
        else:
            maps = [gradcam(model, x[r:r + 1], j)[0] for j in aus]
            titles = [f"Grad-CAM {keys[j]} p={probs[r, j]:.2f}" for j in aus]
        stacks.append(np.stack([np.asarray(m, np.float64) for m in maps]))
        names.append(titles)
    return stacks, names
