"""AU registry: FACS ids, names, facial regions, and the AU sets of BP4D, DISFA and GFT.

Everything else in hiva_lib refers to AUs through this module so that the AU
order of a data set (the column order of labels, logits and tables) is defined
in exactly one place.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ActionUnit:
    au_id: int
    name: str  # FACS name
    region: str  # facial region key, see REGIONS
    muscle: str

    @property
    def key(self) -> str:
        return f"AU{self.au_id}"


# Facial regions in which AUs act. The SynthFACS renderer draws each AU's ground-truth
# mask inside its region; these names are also used in figure captions.
REGIONS: dict[str, str] = {
    "inner_brow": "inner eyebrows and the forehead above them",
    "outer_brow": "outer eyebrows and the lateral forehead",
    "brow": "eyebrows and the glabella between them",
    "cheek": "cheeks and the skin below the lower eyelids",
    "eyelid": "upper and lower eyelids",
    "nose": "nose bridge and the skin beside the nose",
    "upper_lip": "upper lip and the nasolabial area",
    "lip_corner": "lip corners and the adjacent cheek",
    "chin": "chin boss and the lower lip",
    "lips": "lips",
    "mouth": "mouth opening and jaw",
}

_AUS: tuple[ActionUnit, ...] = (
    ActionUnit(1, "Inner Brow Raiser", "inner_brow", "frontalis, pars medialis"),
    ActionUnit(2, "Outer Brow Raiser", "outer_brow", "frontalis, pars lateralis"),
    ActionUnit(4, "Brow Lowerer", "brow", "corrugator supercilii, depressor supercilii"),
    ActionUnit(6, "Cheek Raiser", "cheek", "orbicularis oculi, pars orbitalis"),
    ActionUnit(7, "Lid Tightener", "eyelid", "orbicularis oculi, pars palpebralis"),
    ActionUnit(9, "Nose Wrinkler", "nose", "levator labii superioris alaeque nasi"),
    ActionUnit(10, "Upper Lip Raiser", "upper_lip", "levator labii superioris"),
    ActionUnit(12, "Lip Corner Puller", "lip_corner", "zygomaticus major"),
    ActionUnit(14, "Dimpler", "lip_corner", "buccinator"),
    ActionUnit(15, "Lip Corner Depressor", "lip_corner", "depressor anguli oris"),
    ActionUnit(17, "Chin Raiser", "chin", "mentalis"),
    ActionUnit(23, "Lip Tightener", "lips", "orbicularis oris"),
    ActionUnit(24, "Lip Pressor", "lips", "orbicularis oris"),
    ActionUnit(25, "Lips Part", "lips", "depressor labii inferioris, relaxed mentalis"),
    ActionUnit(26, "Jaw Drop", "mouth", "masseter relaxed, temporalis and pterygoids"),
)

AUS: dict[int, ActionUnit] = {au.au_id: au for au in _AUS}
ALL_AU_IDS: tuple[int, ...] = tuple(AUS)

# AU sets in the order the AU literature (and the paper's tables) uses.
DATASET_AUS: dict[str, tuple[int, ...]] = {
    "bp4d": (1, 2, 4, 6, 7, 10, 12, 14, 15, 17, 23, 24),
    "disfa": (1, 2, 4, 6, 9, 12, 25, 26),
    "gft": (1, 2, 4, 6, 10, 12, 14, 15, 23, 24),
}
REAL_DATASETS = ("bp4d", "disfa", "gft")
# The SynthFACS presets mimic the real sets' AU sets: synth-<name> stands in for <name>.
for _real in REAL_DATASETS:
    DATASET_AUS[f"synth-{_real}"] = DATASET_AUS[_real]


def real_counterpart(dataset: str) -> str:
    """The real data set a name stands for: ``synth-disfa`` -> ``disfa``, ``disfa`` -> itself."""
    name = dataset.lower()
    return name.removeprefix("synth-")


def dataset_aus(dataset: str) -> tuple[int, ...]:
    """AU ids of a data set (``bp4d``, ``disfa``, ``gft`` or a ``synth-*`` preset)."""
    try:
        return DATASET_AUS[dataset.lower()]
    except KeyError:
        raise ValueError(
            f"unknown data set {dataset!r}; choose one of {sorted(DATASET_AUS)}"
        ) from None


def au_keys(au_ids: tuple[int, ...] | list[int]) -> list[str]:
    """Column names ("AU1", ...) for AU ids, validating each id."""
    unknown = [a for a in au_ids if a not in AUS]
    if unknown:
        raise ValueError(f"unknown AU ids {unknown}; known: {list(ALL_AU_IDS)}")
    return [AUS[a].key for a in au_ids]


def parse_au_key(key: str) -> int:
    """"AU12" -> 12."""
    if not key.upper().startswith("AU") or not key[2:].isdigit():
        raise ValueError(f"{key!r} is not an AU column name like 'AU12'")
    return int(key[2:])
