"""SynthFACS: determinism, AU locality and grading, presets, folds, base rates, generate()."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from PIL import Image

from hiva_lib.data import au
from hiva_lib.data import synthfacs as sf
from hiva_lib.data.prepared import DatasetError, load_prepared

SMOKE = dict(n_subjects=6, frames_per_subject=8, image_size=64)


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a != b).any(-1)


def test_same_seed_same_pixels_and_different_seed_different():
    idn, nz = sf.sample_identity(3), sf.sample_nuisance(11)
    inten = {6: 3, 12: 4, 25: 2}
    a, ma = sf.render_face(idn, inten, nz)
    b, mb = sf.render_face(sf.sample_identity(3), inten, sf.sample_nuisance(11))
    assert a.shape == (128, 128, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and all(np.array_equal(ma[k], mb[k]) for k in ma)
    assert _diff(a, sf.render_face(sf.sample_identity(4), inten, nz)[0]).mean() > 0.3
    assert _diff(a, sf.render_face(idn, inten, sf.sample_nuisance(12))[0]).mean() > 0.3
    assert sf.sample_identity(3) != sf.sample_identity(4)


@pytest.mark.parametrize("seed", [0, 7])
def test_each_au_changes_pixels_only_inside_its_region(seed):
    idn, nz = sf.sample_identity(seed), sf.sample_nuisance(100 + seed)
    base, masks0 = sf.render_face(idn, {}, nz)
    for a in au.ALL_AU_IDS:
        img, masks = sf.render_face(idn, {a: 4}, nz)
        changed = _diff(base, img)
        assert changed.sum() >= 15, f"AU{a} changes only {changed.sum()} pixels"
        outside = changed & ~masks[a]
        assert not outside.any(), f"AU{a} changes {outside.sum()} pixels outside its region"
        assert np.array_equal(masks[a], masks0[a])  # regions do not depend on intensities
        limit = 0.4 if a == 26 else 0.25  # a jaw drop moves the whole lower face
        assert masks[a].mean() < limit, f"AU{a} region covers {masks[a].mean():.0%} of the image"


def test_more_intensity_more_change():
    idn, nz = sf.sample_identity(5), sf.sample_nuisance(5)
    base = sf.render_face(idn, {}, nz)[0].astype(np.int32)
    for a in au.ALL_AU_IDS:
        change = [np.abs(sf.render_face(idn, {a: k}, nz)[0] - base).sum() for k in (1, 3, 5)]
        assert change[0] < change[1] < change[2], f"AU{a}: {change}"


def test_masks_follow_the_pose():
    idn = sf.sample_identity(2)
    shifted = dataclasses.replace(sf.NEUTRAL_NUISANCE, shift=(0.1, 0.0))
    m0 = sf.render_face(idn, {}, sf.NEUTRAL_NUISANCE)[1]
    m1 = sf.render_face(idn, {}, shifted)[1]
    for a in (1, 12, 17):
        x0, x1 = np.argwhere(m0[a])[:, 1].mean(), np.argwhere(m1[a])[:, 1].mean()
        assert abs((x1 - x0) - 0.1 * 64) < 1.0  # 0.1 canvas units = 6.4 px at 128 px
    ys = {a: np.argwhere(m0[a])[:, 0].mean() for a in (1, 6, 9, 12, 17, 26)}
    assert ys[1] < ys[6] < ys[9] < ys[12] < ys[17] < ys[26]  # brows above cheeks ... jaw


def test_bad_intensities_raise():
    idn = sf.sample_identity(0)
    with pytest.raises(ValueError, match="unknown AU"):
        sf.render_face(idn, {5: 2})
    with pytest.raises(ValueError, match=r"\[0, 5\]"):
        sf.render_face(idn, {12: 7})


def test_presets_mimic_the_real_sets():
    assert set(sf.SYNTH_PRESETS) == {"synth-bp4d", "synth-disfa", "synth-gft"}
    for name, p in sf.SYNTH_PRESETS.items():
        assert p.au_ids == au.dataset_aus(p.real) == au.dataset_aus(name)
        assert set(p.base_rates) == set(p.au_ids)
        assert p.n_subjects < p.real_subjects
        # enough frames for seed-to-seed noise below 1 F1 point (SynthFACS 1.2, calibration),
        # few enough to render in well under a minute
        assert 3000 <= p.n_subjects * p.frames_per_subject <= 5000
    assert sf.SYNTH_PRESETS["synth-gft"].protocol == "train_test"
    assert sf.SYNTH_PRESETS["synth-gft"].test_folds == (1, 2, 3)
    assert sf.SYNTH_PRESETS["synth-disfa"].test_folds == (1, 2, 3)


@pytest.mark.parametrize("name", sorted(sf.SYNTH_PRESETS))
def test_folds_are_subject_disjoint_and_labels_follow_the_rule(name):
    p = sf.SYNTH_PRESETS[name]
    df = sf.sample_labels(name)
    assert len(df) == p.n_subjects * p.frames_per_subject
    per_subject = df.groupby("subject")["fold"].nunique()
    assert (per_subject == 1).all()
    counts = df.groupby("fold")["subject"].nunique()
    if p.protocol == "3fold":
        assert sorted(counts.index) == [1, 2, 3] and counts.max() - counts.min() <= 1
    else:
        assert sorted(counts.index) == [0, 1, 2, 3] and (counts[[1, 2, 3]] == 3).all()
    for a in p.au_ids:
        assert np.array_equal(df[f"AU{a}"], (df[f"I{a}"] >= 2).astype(int))
    assert df[[f"I{a}" for a in au.ALL_AU_IDS]].isin(range(6)).all().all()


@pytest.mark.parametrize("name", sorted(sf.SYNTH_PRESETS))
def test_base_rates_match_the_targets(name):
    """Relative bounds, so a rare AU (target 0.05) cannot pass at rate 0. On 480 x 50 frames
    the sampler is within 8 % of every target (measured; 20 % allowed). The shipped default
    size (9-12 subjects, seed 0) varies by subject: within 35 % there (measured), 50 % allowed."""
    p = sf.SYNTH_PRESETS[name]
    big = sf.sample_labels(name, n_subjects=480, frames_per_subject=50, seed=1)
    small = sf.sample_labels(name)
    for a in p.au_ids:
        target = p.base_rates[a]
        rate, shipped = big[f"AU{a}"].mean(), small[f"AU{a}"].mean()
        assert abs(rate - target) <= max(0.01, 0.2 * target), (a, rate, target)
        assert abs(shipped - target) <= 0.5 * target, (a, shipped, target)


def test_gft_fold1_is_the_one_fold_designs_test_fold():
    # the subjects the one-fold design tested on (its subject order's first ceil(n x 18/96)),
    # computed here from the same seeded order: folds 2 and 3 take the next ones
    for n in (6, 12, 40):
        order = sf.labels._stream_rng(0, "synth-gft", 7).permutation(n)
        n_test = math.ceil(n * 18 / 96)
        folds = sf.subject_folds("synth-gft", n)
        for k in (1, 2, 3):
            assert set(np.flatnonzero(folds == k)) == set(order[(k - 1) * n_test:k * n_test])
        assert (folds[order[3 * n_test:]] == 0).all()
    with pytest.raises(ValueError, match="at least 3 subjects"):
        sf.sample_labels("synth-gft", n_subjects=2)


def test_prototypes_give_real_co_occurrence():
    df = sf.sample_labels("synth-bp4d", n_subjects=100, frames_per_subject=40)
    corr = np.corrcoef(df["AU6"], df["AU12"])[0, 1]
    assert corr > 0.3  # Duchenne smiles
    both = (df["AU12"] & df["AU15"]).mean()
    assert both == 0  # an exclusive pair


def test_generate_writes_a_valid_deterministic_prepared_set(tmp_path):
    d1 = sf.generate("synth-disfa", tmp_path / "a" / "synth-disfa", progress=False, **SMOKE)
    d2 = sf.generate("synth-disfa", tmp_path / "b" / "synth-disfa", progress=False, **SMOKE)
    again = load_prepared(d1.root)
    assert len(again.index) == 48 and again.name == "synth-disfa"
    assert again.meta["source"].startswith("SynthFACS") and again.meta["image_size"] == 64
    assert again.meta["protocol"] == "3fold" and again.test_folds == [1, 2, 3]
    assert again.au_columns == au.au_keys(au.dataset_aus("disfa"))
    r1 = again.region_masks()
    assert r1.shape == (48, 8, 32, 32) and r1.dtype == bool and r1.any()
    assert np.array_equal(r1, d2.region_masks())
    assert (d1.root / "index.csv").read_bytes() == (d2.root / "index.csv").read_bytes()
    for rel in d1.index["image"][:10]:
        assert (d1.root / rel).read_bytes() == (d2.root / rel).read_bytes()
    row = 5
    with Image.open(d1.image_path(row)) as im:
        assert im.size == (64, 64) and im.mode == "RGB"
    # the stored regions are the render's masks, downsampled; the image is the render itself
    subj = d1.index["subject"].iat[row]
    s, fr = int(subj[1:]) - 1, int(d1.index["frame"].iat[row])
    idn = sf.sample_identity(sf.stream_seed(0, "synth-disfa", s, 1))
    nz = sf.sample_nuisance(sf.stream_seed(0, "synth-disfa", s, fr, 3))
    inten = d1.index.loc[row, [f"I{a}" for a in au.ALL_AU_IDS]].to_numpy(np.float32)
    img, masks = sf.render_face(idn, inten, nz, 64)
    with Image.open(d1.image_path(row)) as im:
        assert np.array_equal(np.asarray(im), img)
    for j, a in enumerate(again.au_ids):
        assert np.array_equal(r1[row, j], sf.downsample_mask(masks[a]))
    with pytest.raises(DatasetError, match="already here"):
        sf.generate("synth-disfa", d1.root, progress=False, **SMOKE)


def test_write_contact_sheet_reuses_versions_or_overwrites(tmp_path):
    """figures_root/<dataset>/synthfacs_contact_sheet.png, tagged with the index's SHA-256:
    the same data set reuses it, another one goes to -v2 (the first kept), overwrite replaces;
    licensed data sets get none."""
    import hashlib

    from hiva_lib.data.prepare import contact_sheet_figure

    d = sf.generate("synth-gft", tmp_path / "a" / "synth-gft", progress=False, **SMOKE)
    other = sf.generate("synth-gft", tmp_path / "b" / "synth-gft", progress=False, seed=1,
                        **SMOKE)
    figs = tmp_path / "figs"
    first = contact_sheet_figure(d, figs)
    assert first == figs / "synth-gft" / "synthfacs_contact_sheet.png"
    sha = hashlib.sha256((d.root / "index.csv").read_bytes()).hexdigest()
    with Image.open(first) as im:
        assert im.info["Source"].endswith(sha) and im.size[0] > 300
    kept = first.read_bytes()
    first.touch()
    stamp = first.stat().st_mtime_ns
    assert contact_sheet_figure(d, figs) == first and first.stat().st_mtime_ns == stamp
    second = contact_sheet_figure(other, figs)
    assert second.name == "synthfacs_contact_sheet-v2.png" and first.read_bytes() == kept
    assert contact_sheet_figure(other, figs) == second  # found again, no -v3
    assert contact_sheet_figure(other, figs, overwrite=True) == first
    assert first.read_bytes() != kept
    assert sorted(p.name for p in (figs / "synth-gft").iterdir()) == [
        "synthfacs_contact_sheet-v2.png", "synthfacs_contact_sheet.png"]
    licensed = dataclasses.replace(d, meta={**d.meta, "dataset": "gft"})
    assert contact_sheet_figure(licensed, figs) is None


def test_generate_gft_and_contact_sheet(tmp_path):
    d = sf.generate("synth-gft", tmp_path / "synth-gft", progress=False, **SMOKE)
    assert d.test_folds == [1, 2, 3] and set(d.index["fold"]) <= {0, 1, 2, 3}
    tested = []
    for fold in d.test_folds:
        train, test = d.split(fold)
        assert set(d.index["subject"].iloc[train]).isdisjoint(d.index["subject"].iloc[test])
        tested.append(set(d.index["subject"].iloc[test]))
    assert all(a.isdisjoint(b) for i, a in enumerate(tested) for b in tested[i + 1:])
    out = sf.contact_sheet(d, tmp_path / "sheet.png", n=8, outlines=True)
    with Image.open(out) as im:
        assert im.size[0] > 300
    with pytest.raises(ValueError, match="unknown SynthFACS preset"):
        sf.generate("synth-ck", tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def test_rendering_in_two_processes_writes_the_same_bytes(tmp_path):
    """generate(workers=2) renders chunks in spawned processes: every file (images, index,
    meta, regions) is byte-identical to rendering in this process."""
    import filecmp

    for w in (1, 2):
        sf.generate("synth-disfa", tmp_path / f"w{w}", n_subjects=6, frames_per_subject=24,
                    image_size=48, progress=False, workers=w)
    files = sorted(p.relative_to(tmp_path / "w1") for p in (tmp_path / "w1").rglob("*")
                   if p.is_file() and p.name != ".image_sha256.csv")  # that one holds mtimes
    assert len(files) > 144
    _, mismatch, errors = filecmp.cmpfiles(tmp_path / "w1", tmp_path / "w2", files, shallow=False)
    assert not mismatch and not errors
