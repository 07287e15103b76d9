"""BP4D / DISFA / GFT preparation from fixture trees in their distributed layouts, alignment,
ME-GraphAU list import/export and its class-weight formula (hiva_lib.real_data, face_align,
megraphau, prepare)."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from real_fixtures import BUILDERS, DISFA_SUBJECTS, render

from hiva_lib.au import au_keys, dataset_aus
from hiva_lib.datasets import DatasetError, load_prepared
from hiva_lib.face_align import align_face, similarity_transform, template_points
from hiva_lib.losses import inverse_frequency_weights
from hiva_lib.megraphau import import_megraphau_lists, write_megraphau_lists
from hiva_lib.prepare import prepare_dataset
from hiva_lib.real_data import BP4D_PARTS, DISFA_PARTS, parts_to_folds

KEY = ["subject", "sequence", "frame", "fold"]


@pytest.fixture(scope="module")
def raw_trees(tmp_path_factory) -> dict[str, tuple[Path, pd.DataFrame]]:
    """One pristine fixture tree per data set (tests that corrupt one copy it first)."""
    base = tmp_path_factory.mktemp("raw")
    return {name: (base / name, build(base / name)) for name, build in BUILDERS.items()}


def _copy(raw_trees, name: str, tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    src, expected = raw_trees[name]
    shutil.copytree(src, tmp_path / name)
    return tmp_path / name, expected


def _prepare(name: str, raw: Path, data_root: Path, **kw):
    return prepare_dataset(name, data_root, raw_root=raw, align="skip", image_size=32,
                           progress=False, **kw)


def _nothing_written(data_root: Path, name: str) -> bool:
    return not (data_root / name).exists() and not list(data_root.glob(f".{name}.*"))


# ------------------------------------------------------------------------- alignment
def test_similarity_transform_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.random((5, 2)) * 100
    a, s, t = np.deg2rad(17), 1.8, np.array([12.0, -7.0])
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    m = similarity_transform(src, src @ (s * rot).T + t)
    np.testing.assert_allclose(m, np.hstack([s * rot, t[:, None]]), atol=1e-9)


def test_align_face_moves_the_landmarks_onto_the_template():
    """Coloured dots at known landmarks land on the template points, within a pixel."""
    size, out = 200, 112
    a, s, t = np.deg2rad(-14), 1.45, np.array([23.0, 31.0])
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    landmarks = template_points(100) @ (s * rot).T + t  # a tilted, scaled, shifted face
    image = np.zeros((size, size, 3), np.uint8)
    face = cv2.resize(render(0, 0, {}), (size, size))
    image[:] = face // 3  # face texture behind the markers, dimmed
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255)]
    for (x, y), c in zip(landmarks, colours, strict=True):
        cv2.circle(image, (int(round(x * 16)), int(round(y * 16))), 3 * 16, c, -1,
                   lineType=cv2.LINE_AA, shift=4)
    aligned = align_face(image, landmarks, out)
    for target, c in zip(template_points(out), colours, strict=True):
        mask = np.all(np.abs(aligned.astype(int) - c) < 60, axis=-1)
        ys, xs = np.nonzero(mask)
        assert len(xs) > 5
        np.testing.assert_allclose([xs.mean(), ys.mean()], target - 0.0, atol=1.0)


def test_mtcnn_aligns_a_synthfacs_face_offline():
    """The bundled MTCNN finds a rendered face; re-detected on the crop, its landmarks sit
    on the template (a few pixels: detector noise), and a black frame has no face."""
    pytest.importorskip("facenet_pytorch")
    from hiva_lib import synthfacs
    from hiva_lib.face_align import FaceAligner

    aligner = FaceAligner("mtcnn", 112, device="cpu")
    face, _ = synthfacs.render_face(synthfacs.sample_identity(3), {12: 3.0},
                                    synthfacs.sample_nuisance(5), 160)
    frame = np.zeros((240, 300, 3), np.uint8)
    frame[50:210, 100:260] = face  # off-centre in a bigger frame
    lm, none = aligner.landmarks([frame, np.zeros_like(frame)])
    assert none is None and lm is not None
    again = aligner.landmarks([cv2.resize(aligner.crop(frame, lm), (224, 224))])[0]
    assert np.abs(again / 2 - template_points(112)).max() < 6


def _fake_detector(monkeypatch, every: int | None):
    """MTCNN stand-in: fixed landmarks on every ``every``-th call, None otherwise."""
    from hiva_lib import face_align

    calls = {"n": 0}

    def landmarks(self, images):
        out = []
        for im in images:
            calls["n"] += 1
            hit = every is not None and calls["n"] % every == 0
            out.append(template_points(im.shape[0]) * 0.9 + 2 if hit else None)
        return out

    monkeypatch.setattr(face_align.MTCNNDetector, "__init__", lambda self, device=None: None)
    monkeypatch.setattr(face_align.MTCNNDetector, "landmarks", landmarks)


def test_frames_without_a_face_borrow_the_nearest_landmarks(raw_trees, tmp_path, monkeypatch):
    raw, expected = raw_trees["gft"]
    _fake_detector(monkeypatch, every=2)
    data = prepare_dataset("gft", tmp_path, raw_root=raw, align="mtcnn", image_size=32,
                           progress=False)
    assert len(data.index) == len(expected)
    assert 0 < data.index["face_found"].sum() < len(expected)
    assert all(data.image_path(r).exists() for r in range(len(data.index)))
    _fake_detector(monkeypatch, every=None)
    with pytest.raises(DatasetError, match="no face found in any frame"):
        prepare_dataset("gft", tmp_path / "none", raw_root=raw, align="mtcnn", image_size=32,
                        progress=False)
    assert _nothing_written(tmp_path / "none", "gft")


# ------------------------------------------------------------------------- layouts
@pytest.mark.parametrize("name", ["bp4d", "disfa", "gft"])
def test_prepare_each_layout(raw_trees, tmp_path, name):
    raw, expected = raw_trees[name]
    data = _prepare(name, raw, tmp_path)
    aus = au_keys(dataset_aus(name))
    got = data.index[KEY + aus].sort_values(KEY).reset_index(drop=True)
    want = expected[KEY + aus].sort_values(KEY).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    assert data.meta["protocol"] == ("train_test" if name == "gft" else "3fold")
    assert data.test_folds == ([1] if name == "gft" else [1, 2, 3])
    for fold in data.test_folds:
        train, test = data.split(fold)
        assert not set(data.index["subject"].iloc[train]) & set(data.index["subject"].iloc[test])
    img = cv2.imread(str(data.image_path(0)))
    assert img.shape == (32, 32, 3)
    if name == "bp4d":  # one unknown (9) row per sequence was dropped
        assert data.meta["preparation"]["dropped_unknown_frames"] == 6
    reloaded = load_prepared(tmp_path / name)
    assert len(reloaded.index) == len(expected)


def test_disfa_video_frames_line_up_with_label_lines(raw_trees, tmp_path):
    """Frame k of the prepared set shows the face rendered for label line k (no off-by-one)."""
    raw, _ = raw_trees["disfa"]
    data = _prepare("disfa", raw, tmp_path)
    aus = dataset_aus("disfa")
    from hiva_lib.face_align import square_resize

    for si, subject in enumerate(DISFA_SUBJECTS):
        rows = np.flatnonzero(data.index["subject"].to_numpy() == subject)
        got = [cv2.cvtColor(cv2.imread(str(data.image_path(r))), cv2.COLOR_BGR2RGB).astype(float)
               for r in rows]
        # re-render from the intensities the label files hold
        inten = {a: np.loadtxt(raw / "ActionUnit_Labels" / subject / f"{subject}_au{a}.txt",
                               delimiter=",")[:, 1] for a in aus}
        ref = [square_resize(render(si, i, {a: float(inten[a][i]) for a in aus}), 32)
               .astype(float) for i in range(len(rows))]
        dist = np.array([[np.abs(g - r).mean() for r in ref] for g in got])
        assert (dist.argmin(1) == np.arange(len(rows))).all(), dist.round(1)


def test_finished_dataset_is_reused_refused_or_overwritten(raw_trees, tmp_path):
    raw, _ = raw_trees["gft"]
    first = _prepare("gft", raw, tmp_path)
    again = _prepare("gft", raw, tmp_path)  # same settings: reused
    pd.testing.assert_frame_equal(first.index, again.index)
    with pytest.raises(DatasetError, match="other settings"):
        prepare_dataset("gft", tmp_path, raw_root=raw, align="skip", image_size=48,
                        progress=False)
    redo = prepare_dataset("gft", tmp_path, raw_root=raw, align="skip", image_size=48,
                           overwrite=True, progress=False)
    assert redo.meta["image_size"] == 48 and not list(tmp_path.glob(".gft.*"))


def test_smoke_keeps_a_few_frames_per_subject(raw_trees, tmp_path):
    raw, expected = raw_trees["bp4d"]
    data = _prepare("bp4d", raw, tmp_path, smoke=True)
    assert data.meta["preparation"]["smoke"] is True
    assert set(data.index["subject"]) == set(expected["subject"])


# ------------------------------------------------------------------------- bad input
def _corrupt_missing_disfa_label(raw: Path) -> None:
    (raw / "ActionUnit_Labels" / "SN013" / "SN013_au4.txt").unlink()


def _corrupt_missing_bp4d_label(raw: Path) -> None:
    (raw / "AUCoding" / "AU_OCC" / "F001_T2.csv").unlink()


def _corrupt_unreadable_frame(raw: Path) -> None:
    next((raw / "Sequences(2D+3D)" / "M011" / "T1").glob("*.jpg")).write_bytes(b"not a jpeg")


def _corrupt_disfa_count(raw: Path) -> None:
    for f in (raw / "ActionUnit_Labels" / "SN003").glob("*.txt"):
        f.write_text(f.read_text() + "7,0\n")  # 7 label lines, 6 video frames


def _corrupt_bp4d_count(raw: Path) -> None:
    sorted((raw / "Sequences(2D+3D)" / "F007" / "T2").glob("*.jpg"))[-1].unlink()


def _corrupt_gft_video(raw: Path) -> None:
    (raw / "videos" / "002C.avi").write_bytes(b"\x00" * 100)


@pytest.mark.parametrize("name,corrupt,message", [
    ("disfa", _corrupt_missing_disfa_label, r"SN013_au4\.txt: missing label file"),
    ("bp4d", _corrupt_missing_bp4d_label, r"F001_T2\.csv: missing label file"),
    ("bp4d", _corrupt_unreadable_frame, r"M011/T1/\d+\.jpg: unreadable frame"),
    ("disfa", _corrupt_disfa_count, r"LeftVideoSN003_comp\.avi: 6 frames.*describe 7.*do not "
                                    r"match"),
    ("bp4d", _corrupt_bp4d_count, r"F007/T2: 1 of 5 frames.*do not match"),
    ("gft", _corrupt_gft_video, r"002C\.avi: (unreadable video|0 frames)"),
])
def test_corrupted_input_gives_one_clear_error_and_writes_nothing(
        raw_trees, tmp_path, name, corrupt, message):
    raw, _ = _copy(raw_trees, name, tmp_path)
    corrupt(raw)
    out = tmp_path / "prepared"
    with pytest.raises(DatasetError, match=message):
        _prepare(name, raw, out)
    assert _nothing_written(out, name)


def test_wrong_or_missing_raw_root(raw_trees, tmp_path):
    disfa_raw, _ = raw_trees["disfa"]
    with pytest.raises(DatasetError, match=r"raw_root must be .*AU_OCC.*-p raw_root"):
        _prepare("bp4d", disfa_raw, tmp_path)  # a DISFA tree given as BP4D
    with pytest.raises(DatasetError, match=r"licensed.*papermill .*-p dataset disfa -p raw_root"):
        prepare_dataset("disfa", tmp_path, raw_root=None, progress=False)
    with pytest.raises(DatasetError, match="not a folder"):
        _prepare("gft", tmp_path / "nowhere", tmp_path)
    with pytest.raises(ValueError, match="unknown data set"):
        prepare_dataset("ck+", tmp_path)
    assert not any(p.name in ("bp4d", "disfa", "gft") for p in tmp_path.iterdir())


# ------------------------------------------------------------------------- folds, leakage
def test_fold_tables_are_the_subject_independent_protocol():
    for parts, n, sizes in ((BP4D_PARTS, 41, [13, 14, 14]), (DISFA_PARTS, 27, [9, 9, 9])):
        folds = parts_to_folds(parts)
        assert len(folds) == n == sum(len(p) for p in parts)  # every subject exactly once
        assert [list(folds.values()).count(k) for k in (1, 2, 3)] == sizes
    # ME-GraphAU: BP4D_test_img_path_fold1.txt starts with F007 (part 3), fold 3 tests part 1
    assert parts_to_folds(BP4D_PARTS)["F007"] == 1 and parts_to_folds(BP4D_PARTS)["F001"] == 3
    assert parts_to_folds(DISFA_PARTS)["SN003"] == 1 and parts_to_folds(DISFA_PARTS)["SN002"] == 3


def test_unknown_subject_is_refused(raw_trees, tmp_path):
    raw, _ = _copy(raw_trees, "bp4d", tmp_path)
    labels = raw / "AUCoding" / "AU_OCC"
    shutil.copy(labels / "F001_T1.csv", labels / "F099_T1.csv")
    shutil.copytree(raw / "Sequences(2D+3D)" / "F001", raw / "Sequences(2D+3D)" / "F099")
    shutil.rmtree(raw / "Sequences(2D+3D)" / "F099" / "T2")
    with pytest.raises(DatasetError, match=r"\['F099'\] are not in the bp4d 3fold table"):
        _prepare("bp4d", raw, tmp_path / "out")
    data = _prepare("bp4d", raw, tmp_path / "out2",
                    folds={**parts_to_folds(BP4D_PARTS), "F099": 2})
    assert set(data.index.loc[data.index["subject"] == "F099", "fold"]) == {2}


def test_gft_split_with_a_subject_in_train_and_test_is_leakage(raw_trees, tmp_path):
    raw, _ = _copy(raw_trees, "gft", tmp_path)
    split = pd.read_csv(raw / "split.csv", dtype=str)
    split = pd.concat([split, pd.DataFrame({"subject": ["001A"], "split": ["test"]})])
    split.to_csv(raw / "split.csv", index=False)
    with pytest.raises(DatasetError, match="subject leakage.*001A"):
        _prepare("gft", raw, tmp_path / "out")
    assert _nothing_written(tmp_path / "out", "gft")


# ------------------------------------------------------------------------- ME-GraphAU
def _megraphau_formula(labels: np.ndarray) -> np.ndarray:
    """tool/BP4D_calculate_AU_class_weights.py, rewritten: rate = share of rows > 0 per AU,
    w = 1 / rate, then w / sum(w) * N."""
    n, k = labels.shape
    rate = np.array([np.sum(labels[:, i] > 0) / float(n) for i in range(k)])
    w = 1.0 / rate
    return w / w.sum() * k


def test_inverse_frequency_weights_match_megraphau_formula(raw_trees, tmp_path):
    rng = np.random.default_rng(3)
    labels = (rng.random((57, 8)) < [0.02, 0.1, 0.3, 0.5, 0.7, 0.9, 0.05, 0.4]).astype(int)
    labels[0] = 1
    np.testing.assert_allclose(inverse_frequency_weights(labels), _megraphau_formula(labels),
                               rtol=1e-12)
    # and the weight files we export are that formula on each fold's train labels
    raw, _ = raw_trees["disfa"]
    data = _prepare("disfa", raw, tmp_path)
    write_megraphau_lists(data, tmp_path / "list")
    for k in (1, 2, 3):
        train = np.loadtxt(tmp_path / "list" / f"DISFA_train_label_fold{k}.txt")
        w = np.loadtxt(tmp_path / "list" / f"DISFA_weight_fold{k}.txt")
        np.testing.assert_allclose(w, _megraphau_formula(train), atol=1e-6)


def test_megraphau_list_import_round_trip(raw_trees, tmp_path):
    """Lists written by hand in ME-GraphAU's format import to the same labels and folds."""
    raw, expected = raw_trees["bp4d"]
    src = _prepare("bp4d", raw, tmp_path / "src")
    img_root, list_dir = tmp_path / "img", tmp_path / "list"
    list_dir.mkdir()
    aus = au_keys(dataset_aus("bp4d"))
    for k in (1, 2, 3):
        for split, part in (("test", src.index["fold"] == k), ("train", src.index["fold"] != k)):
            rows = src.index[part]
            paths = [f"{s}/{q}/{f}.jpg" for s, q, f in
                     zip(rows["subject"], rows["sequence"], rows["frame"], strict=True)]
            (list_dir / f"BP4D_{split}_img_path_fold{k}.txt").write_text("\n".join(paths) + "\n")
            np.savetxt(list_dir / f"BP4D_{split}_label_fold{k}.txt", rows[aus].to_numpy(),
                       fmt="%d", delimiter=" ")
            for p, r in zip(paths, rows.index, strict=True):
                (img_root / p).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src.image_path(r), img_root / p)
    data = import_megraphau_lists(list_dir, img_root, "bp4d", tmp_path / "imported",
                                  progress=False)
    got = data.index.sort_values(KEY).reset_index(drop=True)
    want = expected.sort_values(KEY).reset_index(drop=True)
    pd.testing.assert_frame_equal(got[KEY + aus], want[KEY + aus], check_dtype=False)
    # and our exporter writes the same test lists
    write_megraphau_lists(src, tmp_path / "exported")
    for k in (1, 2, 3):
        ours = np.loadtxt(tmp_path / "exported" / f"BP4D_test_label_fold{k}.txt", ndmin=2)
        np.testing.assert_array_equal(ours, np.loadtxt(list_dir / f"BP4D_test_label_fold{k}.txt",
                                                       ndmin=2))


def test_megraphau_import_refuses_leaky_or_mismatched_lists(raw_trees, tmp_path):
    raw, _ = raw_trees["disfa"]
    src = _prepare("disfa", raw, tmp_path / "src")
    list_dir = tmp_path / "list"
    write_megraphau_lists(src, list_dir)
    img_root = src.root / "images"
    train1 = list_dir / "DISFA_train_img_path_fold1.txt"
    test1 = (list_dir / "DISFA_test_img_path_fold1.txt").read_text()
    train1.write_text(train1.read_text() + test1)  # fold 1's test subject also in its train list
    with pytest.raises(DatasetError, match="subject leakage.*SN003"):
        import_megraphau_lists(list_dir, img_root, "disfa", tmp_path / "out", progress=False)
    write_megraphau_lists(src, list_dir)
    lab = list_dir / "DISFA_test_label_fold2.txt"
    lab.write_text("\n".join(lab.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(DatasetError, match="image and label counts do not match"):
        import_megraphau_lists(list_dir, img_root, "disfa", tmp_path / "out", progress=False)
    assert _nothing_written(tmp_path / "out", "disfa")


def test_synth_smoke_preparation(smoke_data_root):
    data = load_prepared(smoke_data_root / "synth-disfa")
    assert data.index["subject"].nunique() == 6
    assert data.au_ids == dataset_aus("disfa")
    again = prepare_dataset("synth-disfa", smoke_data_root, smoke=True, progress=False)
    pd.testing.assert_frame_equal(again.index, data.index)  # reused, not regenerated
    with pytest.raises(DatasetError, match="other settings.*overwrite=True"):
        prepare_dataset("synth-disfa", smoke_data_root, progress=False)  # full size asked
