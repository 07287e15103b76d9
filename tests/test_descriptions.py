"""AU descriptions: shipped data complete and varied, loader validation, step sampler."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from hiva_lib.data import descriptions as D
from hiva_lib.data.au import ALL_AU_IDS, DATASET_AUS

# words that tie a description to a place on the face (the cue DDCA is meant to ground)
REGION_WORDS = ("brow", "forehead", "cheek", "eye", "lid", "nose", "nasal", "lip", "mouth",
                "chin", "jaw", "mandible", "teeth", "dimple")


def test_every_au_has_base_and_enough_distinct_variants():
    table = D.load_descriptions()
    assert sorted(table) == sorted(ALL_AU_IDS)
    for au_id, entry in table.items():
        texts = [entry["base"], *entry["variants"]]
        assert len(entry["variants"]) >= D.MIN_VARIANTS, au_id
        assert len({" ".join(t.lower().split()) for t in texts}) == len(texts), au_id


def test_descriptions_name_a_facial_region():
    for au_id, texts in zip(ALL_AU_IDS, D.all_descriptions(ALL_AU_IDS), strict=True):
        for text in texts:
            assert any(w in text.lower() for w in REGION_WORDS), (au_id, text)


def test_variants_are_not_shared_between_aus():
    counts = Counter(t for texts in D.all_descriptions(ALL_AU_IDS) for t in texts)
    assert max(counts.values()) == 1


def test_base_and_all_follow_au_order():
    ids = DATASET_AUS["disfa"]
    table = D.load_descriptions()
    bases = D.base_descriptions(ids)
    everything = D.all_descriptions(ids)
    assert bases == [table[a]["base"] for a in ids]
    assert [t[0] for t in everything] == bases
    assert [t[1:] for t in everything] == [table[a]["variants"] for a in ids]
    with pytest.raises(ValueError, match="99"):
        D.base_descriptions([1, 99])


def test_loaded_dict_is_a_copy():
    D.load_descriptions()[1]["base"] = "changed"
    assert D.load_descriptions()[1]["base"] != "changed"


def _write(tmp_path, data) -> str:
    path = tmp_path / "desc.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def _good() -> dict:
    return {f"AU{a}": {"base": e["base"], "variants": e["variants"]}
            for a, e in D.load_descriptions().items()}


def test_corrupted_json_names_the_file(tmp_path):
    path = _write(tmp_path, '{"AU1": {"base": "x", ')
    with pytest.raises(D.DescriptionError, match="desc.json.*not valid JSON"):
        D.load_descriptions(path)


@pytest.mark.parametrize("break_it, message", [
    (lambda d: d.pop("AU12"), "missing AUs \\['AU12'\\]"),
    (lambda d: d["AU4"].update(variants=d["AU4"]["variants"][:5]), "AU4 has 5 variants"),
    (lambda d: d["AU6"]["variants"].append(d["AU6"]["base"].upper()), "AU6 repeats"),
    (lambda d: d.update(AUX={"base": "x", "variants": []}), "'AUX' is not an AU name"),
    (lambda d: d["AU1"].pop("base"), "AU1 needs a string 'base'"),
])
def test_malformed_file_raises_one_clear_error(tmp_path, break_it, message):
    data = _good()
    break_it(data)
    with pytest.raises(D.DescriptionError, match=message) as err:
        D.load_descriptions(_write(tmp_path, data))
    assert "desc.json" in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(D.DescriptionError, match="not found"):
        D.load_descriptions(tmp_path / "nope.json")


@pytest.mark.parametrize("mode", D.SAMPLE_MODES)
def test_sampler_is_deterministic_and_in_range(mode):
    counts = [10, 4, 7, 1]
    a = [D.sample_indices(counts, seed=3, step=s, mode=mode) for s in range(50)]
    b = [D.sample_indices(counts, seed=3, step=s, mode=mode) for s in range(50)]
    c = [D.sample_indices(counts, seed=4, step=s, mode=mode) for s in range(50)]
    assert a == b
    assert a != c
    assert len({tuple(x) for x in a}) >= 8  # steps differ (shared mode has 10 at most)
    for draw in a:
        assert all(0 <= i < n for i, n in zip(draw, counts, strict=True))


@pytest.mark.parametrize("mode", D.SAMPLE_MODES)
def test_sampler_covers_every_description(mode):
    counts = [len(t) for t in D.all_descriptions(DATASET_AUS["bp4d"])]
    seen = [set() for _ in counts]
    for step in range(600):
        for au, i in enumerate(D.sample_indices(counts, seed=0, step=step, mode=mode)):
            seen[au].add(i)
    assert [len(s) for s in seen] == counts


def test_shared_mode_uses_one_rank_modulo_count():
    counts = [10, 4, 7]
    for step in range(100):
        draw = D.sample_indices(counts, seed=1, step=step, mode="shared")
        rank = draw[0]  # the first AU has the largest count, so its index is the rank itself
        assert draw == [rank % n for n in counts]


def test_per_au_draws_are_independent():
    # with equal counts, per-AU draws disagree often; shared draws never do
    counts = [9, 9, 9]
    per_au = [D.sample_indices(counts, 0, s, "per_au") for s in range(200)]
    shared = [D.sample_indices(counts, 0, s, "shared") for s in range(200)]
    assert sum(len(set(d)) > 1 for d in per_au) > 150
    assert all(len(set(d)) == 1 for d in shared)


def test_sampler_rejects_bad_input():
    with pytest.raises(ValueError, match="mode"):
        D.sample_indices([3], 0, 0, mode="random")
    with pytest.raises(ValueError, match="n_per_au"):
        D.sample_indices([3, 0], 0, 0)
