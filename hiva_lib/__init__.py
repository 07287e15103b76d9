"""hiva_lib: the model and data code of the HiVA reproducibility study.

One module per paper concept; notebooks in ``notebooks/`` call into it. The model of a named
preset in one call, as ``timm.create_model``::

    model = hiva_lib.create_model("cpu-lite0", "full", "synth-disfa")
"""
from __future__ import annotations

import sys as _sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from hiva_lib.model.hiva import HiVA

__version__ = "0.1.0"


def create_model(preset: str, variant: str = "full", dataset: str = "synth-disfa", *,
                 au_ids: Sequence[int] | None = None, **overrides) -> HiVA:
    """The HiVA model of model preset ``preset`` (``hiva_lib.presets.MODEL_PRESETS``: "paper",
    "cpu-lite0", "test-tiny"...) for the ablation ``variant`` (``hiva_lib.variants.VARIANTS``)
    and the AU set of ``dataset`` (or ``au_ids``: a prepared data set's own list).

    ``overrides`` are ModelConfig fields (e.g. ``pretrained=False``). The weights are the
    preset's initial ones (its ImageNet backbone where it has one); a trained model is loaded
    with ``hiva_lib.engine.evaluate.load_trained``. The model starts in the stage of its
    variant: 2 with text, 1 for the vision-only Baseline."""
    # imported here, not at the top: `import hiva_lib.<module>` runs this file first, and the
    # data tools (SynthFACS, the real-data preparation) should not pay for torch and timm
    from hiva_lib.data.au import dataset_aus
    from hiva_lib.model.hiva import HiVA
    from hiva_lib.presets import preset_config

    return HiVA(preset_config(preset, variant, **overrides),
                dataset_aus(dataset) if au_ids is None else tuple(au_ids))


if "ipykernel" in _sys.modules:  # a notebook's kernel: the project's errors read as their fix
    from hiva_lib.notebook import install_error_handler as _install_error_handler

    _install_error_handler()
