"""SynthFACS: the embedded synthetic AU data set (a procedural face renderer, numpy only).

The paper's data sets (BP4D, DISFA, GFT; Sec. IV-A) are licensed, so newcomers run the study on
SynthFACS. The package, in the order a face is made:

* :mod:`.subject`: a subject (:class:`Identity`) and a frame's nuisances (:class:`Nuisance`);
* :mod:`.face`: :func:`render_face`, which draws a face in named steps and returns its AU
  region masks;
* :mod:`.canvas`: the pixel grid, pose, warp and drawing primitives of one render;
* :mod:`.au_effects`: what each AU does, as two tables of small per-AU drawing functions
  (its windows before the face is drawn, its wrinkles and furrows after);
* :mod:`.labels`: expression prototypes, the presets that mimic BP4D / DISFA / GFT, the
  calibration of their base rates, and the index (subjects, folds, intensities) of a data set;
* :mod:`.dataset`: :func:`generate`, the writer of a prepared data set;
* :mod:`.contact_sheet`: the contact sheet of a data set.

Everything other code uses is importable from here (``from hiva_lib.data import synthfacs``).
"""
from hiva_lib.data.au import ALL_AU_IDS
from hiva_lib.data.synthfacs.contact_sheet import CONTACT_SHEET, contact_sheet, write_contact_sheet
from hiva_lib.data.synthfacs.dataset import (
    POSITIVE_RULE,
    REGION_SIZE,
    SOURCE,
    downsample_mask,
    generate,
)
from hiva_lib.data.synthfacs.face import MASK_MARGIN_PX, VERSION, au_levels, render_face
from hiva_lib.data.synthfacs.labels import (
    EXCLUSIVE,
    PROTOTYPES,
    SYNTH_PRESETS,
    Calibration,
    SynthPreset,
    calibrate,
    get_preset,
    sample_labels,
    sample_subject_intensities,
    stream_seed,
    subject_folds,
)
from hiva_lib.data.synthfacs.subject import (
    NEUTRAL_NUISANCE,
    Identity,
    Nuisance,
    sample_identity,
    sample_nuisance,
)

__all__ = [
    "ALL_AU_IDS", "CONTACT_SHEET", "EXCLUSIVE", "MASK_MARGIN_PX", "NEUTRAL_NUISANCE",
    "POSITIVE_RULE", "PROTOTYPES", "REGION_SIZE", "SOURCE", "SYNTH_PRESETS", "VERSION",
    "Calibration", "Identity", "Nuisance", "SynthPreset", "au_levels", "calibrate",
    "contact_sheet", "downsample_mask", "generate", "get_preset", "render_face",
    "sample_identity", "sample_labels", "sample_nuisance", "sample_subject_intensities",
    "stream_seed", "subject_folds", "write_contact_sheet",
]
