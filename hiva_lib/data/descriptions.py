"""Textual AU descriptions T_i (Sec. III-B) and the augmented paraphrase set ("AUG").

The paper writes a few FACS-derived sentences per AU and lets GPT-4 produce semantically
consistent variants, checked by hand (Sec. I, Fig. 1a; "w/o AUG" in Tables IV-VI). We
ship our own wording of the same content in ``data/au_descriptions.json``::

    {"AU1": {"base": "...", "variants": ["...", ...]}, ...}

Index 0 of an AU's list is the base description, indices 1.. are its paraphrases.
Which description is used at inference and how one is drawn per training step is
ambiguity 5 of the design notes: :func:`sample_indices` implements both readings
(``per_au``: each AU draws its own variant; ``shared``: one rank for every AU).
"""
from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import numpy as np

from hiva_lib.data.au import ALL_AU_IDS, AUS, parse_au_key

DESCRIPTIONS_PATH = Path(__file__).parents[1] / "assets" / "au_descriptions.json"
MIN_VARIANTS = 8
SAMPLE_MODES = ("per_au", "shared")


class DescriptionError(ValueError):
    """The AU description file is missing or malformed."""


def _norm(text: str) -> str:
    # duplicates are judged case- and whitespace-insensitively
    return " ".join(text.lower().split())


def _validate(raw: object, path: Path) -> dict[int, dict]:
    fix = "Fix the file (format: {\"AU1\": {\"base\": str, \"variants\": [str, ...]}, ...})."
    if not isinstance(raw, dict):
        raise DescriptionError(f"{path}: top level is {type(raw).__name__}, not an object. {fix}")
    out: dict[int, dict] = {}
    problems: list[str] = []
    for key, entry in raw.items():
        try:
            au_id = parse_au_key(key)
        except ValueError:
            problems.append(f"key {key!r} is not an AU name like 'AU12'")
            continue
        if au_id not in AUS:
            problems.append(f"{key} is not in the AU registry (hiva_lib/data/au.py)")
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("base"), str):
            problems.append(f"{key} needs a string 'base'")
            continue
        variants = entry.get("variants")
        if not isinstance(variants, list) or not all(isinstance(v, str) for v in variants):
            problems.append(f"{key} needs 'variants' as a list of strings")
            continue
        texts = [entry["base"], *variants]
        if any(not t.strip() for t in texts):
            problems.append(f"{key} has an empty description")
        normed = [_norm(t) for t in texts]
        dups = sorted({t for t in normed if normed.count(t) > 1})
        if dups:
            problems.append(f"{key} repeats {dups[0]!r}")
        if len(variants) < MIN_VARIANTS:
            problems.append(f"{key} has {len(variants)} variants, at least {MIN_VARIANTS} needed")
        out[au_id] = {"base": entry["base"], "variants": list(variants)}
    missing = [f"AU{a}" for a in ALL_AU_IDS if a not in out and f"AU{a}" not in raw]
    if missing:
        problems.append(f"missing AUs {missing}")
    if problems:
        raise DescriptionError(f"{path}: " + "; ".join(problems) + f". {fix}")
    return out


@functools.lru_cache(maxsize=8)
def _load_cached(path: Path) -> dict[int, dict]:
    if not path.exists():
        raise DescriptionError(f"{path}: file not found. Reinstall hiva_lib (the file ships in "
                               "hiva_lib/data/) or pass path= pointing at a description file.")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DescriptionError(f"{path}: not valid JSON ({err}). Fix the file or restore it "
                               "from the repository.") from None
    return _validate(raw, path)


def load_descriptions(path: str | Path | None = None) -> dict[int, dict]:
    """``{au_id: {"base": str, "variants": [str, ...]}}`` for every AU, validated."""
    path = Path(path) if path is not None else DESCRIPTIONS_PATH
    return copy.deepcopy(_load_cached(path.resolve()))


def _lookup(au_ids, path: str | Path | None) -> list[dict]:
    table = load_descriptions(path)
    unknown = [a for a in au_ids if a not in table]
    if unknown:
        raise ValueError(f"no descriptions for AU ids {unknown}; known: {sorted(table)}")
    return [table[a] for a in au_ids]


def base_descriptions(au_ids, *, path: str | Path | None = None) -> list[str]:
    """The base description T_i of each AU, in the order of ``au_ids``."""
    return [e["base"] for e in _lookup(au_ids, path)]


def all_descriptions(au_ids, *, path: str | Path | None = None) -> list[list[str]]:
    """Per AU: [base, variant_1, ...] (index 0 = base), in the order of ``au_ids``."""
    return [[e["base"], *e["variants"]] for e in _lookup(au_ids, path)]


def sample_indices(n_per_au: list[int], seed: int, step: int, mode: str = "per_au") -> list[int]:
    """Description index per AU for training step ``step`` (the AUG augmentation).

    Deterministic in (seed, step), so a resumed run sees the same descriptions.
    ``per_au``: each AU draws uniformly from its own 0..n-1 independently.
    ``shared``: one rank r is drawn from 0..max(n)-1 and AU i uses r mod n_i.
    """
    if mode not in SAMPLE_MODES:
        raise ValueError(f"mode {mode!r} unknown; choose one of {SAMPLE_MODES}")
    if not n_per_au or any(int(n) < 1 for n in n_per_au):
        raise ValueError(f"n_per_au must be a non-empty list of counts >= 1, got {n_per_au}")
    # SeedSequence mixes (seed, step) so neighbouring steps are unrelated draws
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(step)]))
    if mode == "per_au":
        return [int(rng.integers(int(n))) for n in n_per_au]
    rank = int(rng.integers(max(int(n) for n in n_per_au)))
    return [rank % int(n) for n in n_per_au]


def derangement(n: int, seed: int = 0) -> list[int]:
    """A fixed permutation p of 0..n-1 with p[i] != i for every i (the ``shuffled_text``
    control: AU i gets the descriptions of AU p[i]). Uniform among derangements: shuffles drawn
    from ``seed`` until one has no fixed point (about e = 2.7 draws on average)."""
    if n < 2:
        raise ValueError(f"derangement: needs at least 2 AUs, got {n} (one AU cannot be given "
                         "another AU's descriptions)")
    rng = np.random.default_rng(seed)
    while True:
        p = rng.permutation(n)
        if not (p == np.arange(n)).any():
            return [int(i) for i in p]
