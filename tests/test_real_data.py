"""BP4D / DISFA / GFT preparation from fixture trees in their distributed layouts, alignment,
ME-GraphAU / MDHR list folders (import, export, round trip, their class-weight formula) on
fixture folders in the repositories' exact names and formats (hiva_lib.data.real, prepare)."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from real_fixtures import (
    BUILDERS,
    DISFA_SUBJECTS,
    GFT_SUBJECTS,
    make_gft,
    make_megraphau,
    megraphau_weights,
    render,
    write_video,
)

from hiva_lib.data.au import au_keys, dataset_aus
from hiva_lib.data.prepare import prepare_dataset
from hiva_lib.data.prepared import DatasetError, load_prepared
from hiva_lib.data.real.disfa import DISFA_MAX_UNLABELLED_TAIL
from hiva_lib.data.real.face_align import (
    align_face,
    similarity_transform,
    square_resize,
    template_points,
)
from hiva_lib.data.real.megraphau import (
    export_megraphau,
    import_megraphau_lists,
    write_megraphau_lists,
)
from hiva_lib.data.real.raw import BP4D_PARTS, DISFA_PARTS, parts_to_folds
from hiva_lib.losses import inverse_frequency_weights

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


def _tree(root: Path) -> dict[str, bytes | None]:
    """Everything under ``root``, root included: file bytes, None for a folder. Equal
    before and after a failed call = the call wrote nothing (cache, temporaries, folders)."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None
            for p in [root, *root.rglob("*")]}


def _rows_match_renders(data, subject: str, refs: list[np.ndarray]) -> None:
    """Row k of ``subject`` (in frame order) looks most like ``refs[k]``: no off-by-one."""
    rows = data.index.index[data.index["subject"] == subject]
    rows = rows[np.argsort(data.index.loc[rows, "frame"].to_numpy())]
    got = [cv2.cvtColor(cv2.imread(str(data.image_path(r))), cv2.COLOR_BGR2RGB).astype(float)
           for r in rows]
    ref = [square_resize(r, 32).astype(float) for r in refs]
    dist = np.array([[np.abs(g - r).mean() for r in ref] for g in got])
    assert len(got) == len(ref) and (dist.argmin(1) == np.arange(len(got))).all(), dist.round(1)


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
    from hiva_lib.data import synthfacs
    from hiva_lib.data.real.face_align import FaceAligner

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
    from hiva_lib.data.real import face_align

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
    assert _tree(tmp_path / "none") == {}


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
    """Frame k of the prepared set shows the face rendered for label line k (no off-by-one),
    and ``frame`` is that 0-based line, ME-GraphAU's image name (SN001/0.png = line 0)."""
    raw, _ = raw_trees["disfa"]
    data = _prepare("disfa", raw, tmp_path)
    aus = dataset_aus("disfa")
    for si, subject in enumerate(DISFA_SUBJECTS):
        # re-render from the intensities the label files hold
        inten = {a: np.loadtxt(raw / "ActionUnit_Labels" / subject / f"{subject}_au{a}.txt",
                               delimiter=",")[:, 1] for a in aus}
        n = len(inten[aus[0]])
        frames = data.index.loc[data.index["subject"] == subject, "frame"]
        assert sorted(frames) == list(range(n))
        _rows_match_renders(data, subject,
                            [render(si, i, {a: float(inten[a][i]) for a in aus}) for i in range(n)])


def test_disfa_video_past_its_labels_by_a_few_frames_is_kept_and_reported(raw_trees, tmp_path):
    """The DISFA frame-count rule: SN010 has one label line fewer than the other subjects. A
    video longer than its labels by at most DISFA_MAX_UNLABELLED_TAIL frames keeps the
    labelled frames (line k = frame k), warns, and records the skipped frames in meta.json,
    also when the crops come from the cache."""
    raw, expected = _copy(raw_trees, "disfa", tmp_path)
    for f in (raw / "ActionUnit_Labels" / "SN001").glob("*.txt"):
        f.write_text("".join(f.read_text().splitlines(keepends=True)[:-1]))  # 6 frames, 5 labels
    for overwrite in (False, True):  # the second run reuses the cached crops
        with pytest.warns(UserWarning, match=r"\{'SN001': 1\} frame\(s\) past the last label"):
            data = _prepare("disfa", raw, tmp_path / "out", overwrite=overwrite)
        assert data.meta["preparation"]["unlabelled_video_frames"] == {"SN001": 1}
    aus = au_keys(dataset_aus("disfa"))
    got = data.index[KEY + aus].sort_values(KEY).reset_index(drop=True)
    want = expected[~((expected["subject"] == "SN001") & (expected["frame"] == 5))]
    pd.testing.assert_frame_equal(got, want[KEY + aus].sort_values(KEY).reset_index(drop=True),
                                  check_dtype=False)
    inten = {a: np.loadtxt(raw / "ActionUnit_Labels" / "SN001" / f"SN001_au{a}.txt",
                           delimiter=",")[:, 1] for a in dataset_aus("disfa")}
    si = list(DISFA_SUBJECTS).index("SN001")
    _rows_match_renders(data, "SN001", [render(si, i, {a: float(v[i]) for a, v in inten.items()})
                                        for i in range(5)])
    assert DISFA_MAX_UNLABELLED_TAIL == 5


@pytest.mark.parametrize("media,first_frame", [("frames", 1), ("videos", 0)])
def test_gft_frames_layout_and_first_frame(tmp_path, media, first_frame):
    """frames/<subject>/<frame>.jpg works as videos/ does; labels counted from 0 need
    first_frame=0 (else one clear error), and then label frame f is video position f."""
    raw = tmp_path / "raw"
    expected = make_gft(raw, media=media, first_frame=first_frame)
    kw = {} if first_frame == 1 else {"first_frame": first_frame}
    data = _prepare("gft", raw, tmp_path / "out", **kw)
    aus = au_keys(dataset_aus("gft"))
    got = data.index[KEY + aus].sort_values(KEY).reset_index(drop=True)
    want = expected[KEY + aus].sort_values(KEY).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    for si, subject in enumerate(GFT_SUBJECTS):
        lab = expected.loc[expected["subject"] == subject, aus].to_numpy()
        refs = [render(si, i, {a: 3.0 * lab[i, j] for j, a in enumerate(dataset_aus("gft"))})
                for i in range(len(lab))]
        _rows_match_renders(data, subject, refs)
    if media == "videos":
        assert data.meta["preparation"]["first_frame"] == 0
        with pytest.raises(DatasetError, match=r"below first_frame=1; pass first_frame=0"):
            _prepare("gft", raw, tmp_path / "out2")
        assert _tree(tmp_path / "out2") == {}


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


def _corrupt_disfa_long_video(raw: Path) -> None:
    video = raw / "Videos_LeftCamera" / "LeftVideoSN003_comp.avi"
    write_video(video, [np.zeros((32, 32, 3), np.uint8)] * 12)  # 6 labels: 6 frames too many


def _corrupt_bp4d_count(raw: Path) -> None:
    sorted((raw / "Sequences(2D+3D)" / "F007" / "T2").glob("*.jpg"))[-1].unlink()


def _corrupt_gft_video(raw: Path) -> None:
    (raw / "videos" / "002C.avi").write_bytes(b"\x00" * 100)


def _corrupt_gft_missing_label(raw: Path) -> None:
    (raw / "labels" / "001B.csv").unlink()


def _corrupt_gft_split_subject_absent(raw: Path) -> None:
    (raw / "labels" / "001B.csv").unlink()
    (raw / "videos" / "001B.avi").unlink()


def _corrupt_gft_split_unreadable(raw: Path) -> None:
    (raw / "split.csv").write_text('subject,split\n"001A,train\n')


@pytest.mark.parametrize("name,corrupt,message", [
    ("disfa", _corrupt_missing_disfa_label, r"SN013_au4\.txt: missing label file"),
    ("bp4d", _corrupt_missing_bp4d_label, r"F001_T2\.csv: missing label file"),
    ("bp4d", _corrupt_unreadable_frame, r"M011/T1/\d+\.jpg: unreadable frame"),
    ("disfa", _corrupt_disfa_count, r"LeftVideoSN003_comp\.avi: 6 frames.*describe 7.*do not "
                                    r"match"),
    ("disfa", _corrupt_disfa_long_video, r"LeftVideoSN003_comp\.avi: 12 frames, but the labels "
                                         r"of SN003 describe 6 \(at most 5 unlabelled frames"),
    ("bp4d", _corrupt_bp4d_count, r"F007/T2: 1 of 5 frames.*do not match"),
    ("gft", _corrupt_gft_video, r"002C\.avi: (unreadable video|0 frames)"),
    ("gft", _corrupt_gft_missing_label, r"001B\.csv: missing label file for .*001B\.avi.*Restore"),
    ("gft", _corrupt_gft_split_subject_absent,
     r"split\.csv: subjects \['001B'\] \(1\) are in the split but have no labels.*remove them"),
    ("gft", _corrupt_gft_split_unreadable, r"split\.csv: unreadable split file.*subject,split"),
])
def test_corrupted_input_gives_one_clear_error_and_writes_nothing(
        raw_trees, tmp_path, name, corrupt, message):
    """Also nothing in the crop cache: what was in data_root before (another data set's
    files, a killed run's crops) is all that is there after."""
    raw, _ = _copy(raw_trees, name, tmp_path)
    corrupt(raw)
    out = tmp_path / "prepared"
    (out / "other").mkdir(parents=True)
    (out / "other" / "notes.txt").write_text("someone's work")
    killed = out / ".cache" / name / "skip-32" / "X001" / "T1" / "1.jpg"  # a killed run's crop
    killed.parent.mkdir(parents=True)
    killed.write_bytes(b"crop")
    before = _tree(out)
    with pytest.raises(DatasetError, match=message):
        _prepare(name, raw, out)
    assert _tree(out) == before


def test_output_that_is_not_a_prepared_set_is_never_replaced(raw_trees, tmp_path):
    """The raw copy at <data_root>/<dataset>, an output inside the raw copy, a raw copy inside
    the output, someone's folder at the output: refused, even with overwrite, nothing written."""
    raw, expected = _copy(raw_trees, "gft", tmp_path / "base")
    base = tmp_path / "base"
    nested = tmp_path / "work" / "gft" / "raw"
    shutil.copytree(raw, nested)
    other = tmp_path / "busy" / "gft"
    other.mkdir(parents=True)
    (other / "thesis.tex").write_text("x")
    for overwrite in (False, True):
        for raw_root, data_root, message in (
                (raw, base, r"base/gft: this output folder is the source"),
                (raw, raw / "prepared", r"prepared/gft: this output folder overlaps the source"),
                (nested, tmp_path / "work", r"work/gft: this output folder overlaps the source"),
                (raw, tmp_path / "busy", r"busy/gft: exists and is not a prepared data set.*"
                                         r"even with overwrite=True")):
            before = _tree(tmp_path)
            with pytest.raises(DatasetError, match=message):
                _prepare("gft", raw_root, data_root, overwrite=overwrite)
            assert _tree(tmp_path) == before
    (tmp_path / "empty" / "gft").mkdir(parents=True)  # an empty folder holds nothing to lose
    assert len(_prepare("gft", raw, tmp_path / "empty").index) == len(expected)


def test_fold_override_must_use_the_protocols_folds(raw_trees, tmp_path):
    """A subject given fold 5 would silently be train-only: refused, naming the folds."""
    raw, _ = raw_trees["bp4d"]
    with pytest.raises(DatasetError, match=r"subject 'F007' has fold 5.*folds \{1: 'test fold 1'"):
        _prepare("bp4d", raw, tmp_path, folds={**parts_to_folds(BP4D_PARTS), "F007": 5})
    gft, _ = raw_trees["gft"]
    with pytest.raises(DatasetError, match=r"'001B' has fold 2.*\{0: 'train', 1: 'test'\}"):
        _prepare("gft", gft, tmp_path, folds={"001A": 0, "001B": 2, "002C": 1})
    with pytest.raises(DatasetError, match="split_file is GFT's"):
        _prepare("bp4d", raw, tmp_path, split_file=gft / "split.csv")
    with pytest.raises(TypeError, match=r"does not take \['first_frame'\]"):
        _prepare("bp4d", raw, tmp_path, first_frame=0)
    assert _tree(tmp_path) == {".": None}


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
    with pytest.raises(TypeError, match=r"renders SynthFACS; \['first_frame', 'raw_root'\]"):
        prepare_dataset("synth-gft", tmp_path, raw_root=disfa_raw, first_frame=0)
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
    folds = parts_to_folds(BP4D_PARTS)
    # F099's images are copies of F001's: in another fold they are image leakage (refused by
    # the content check), so the fold table puts F099 with F001
    data = _prepare("bp4d", raw, tmp_path / "out2", folds={**folds, "F099": folds["F001"]})
    assert set(data.index.loc[data.index["subject"] == "F099", "fold"]) == {folds["F001"]}


def test_gft_split_with_a_subject_in_train_and_test_is_leakage(raw_trees, tmp_path):
    raw, _ = _copy(raw_trees, "gft", tmp_path)
    split = pd.read_csv(raw / "split.csv", dtype=str)
    split = pd.concat([split, pd.DataFrame({"subject": ["001A"], "split": ["test"]})])
    split.to_csv(raw / "split.csv", index=False)
    with pytest.raises(DatasetError, match="subject leakage.*001A"):
        _prepare("gft", raw, tmp_path / "out")
    assert _tree(tmp_path / "out") == {}


# ------------------------------------------------------------------------- ME-GraphAU / MDHR
def _import(list_dir: Path, dataset: str, out: Path, **kw):
    return import_megraphau_lists(list_dir, kw.pop("image_root", None), dataset, out,
                                  progress=False, **kw)


def _list_texts(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.glob("*.txt")}


def test_inverse_frequency_weights_match_megraphau_formula(raw_trees, tmp_path):
    rng = np.random.default_rng(3)
    labels = (rng.random((57, 8)) < [0.02, 0.1, 0.3, 0.5, 0.7, 0.9, 0.05, 0.4]).astype(int)
    labels[0] = 1
    np.testing.assert_allclose(inverse_frequency_weights(labels), megraphau_weights(labels),
                               rtol=1e-12)
    # and the weight files we export are that formula on each fold's train labels
    raw, _ = raw_trees["disfa"]
    data = _prepare("disfa", raw, tmp_path)
    write_megraphau_lists(data, tmp_path / "list")
    for k in (1, 2, 3):
        train = np.loadtxt(tmp_path / "list" / f"DISFA_train_label_fold{k}.txt")
        w = np.loadtxt(tmp_path / "list" / f"DISFA_weight_fold{k}.txt")
        np.testing.assert_allclose(w, megraphau_weights(train), atol=1e-6)


@pytest.mark.parametrize("dataset", ["bp4d", "disfa"])
@pytest.mark.parametrize("list_format", ["megraphau", "mdhr"])
def test_list_folder_round_trip_is_byte_identical(tmp_path, dataset, list_format):
    """A list folder as ME-GraphAU's tool scripts write it (MDHR: as its lists lie) imports
    to the expected rows, and exports to the same bytes: paths (DISFA SN001/0.png or
    SN001/SN001_0.png), labels, weights, AU relations (train = the other parts, ME-GraphAU's
    order) or MDHR's sub labels; the exported image folder holds every listed image (written
    at 256 px, as the 8 px fixture images are smaller; tests/test_megraphau_export.py checks
    the images themselves)."""
    list_dir, expected = make_megraphau(tmp_path / "given", dataset, list_format)
    data = _import(list_dir, dataset, tmp_path / "prepared")
    aus = au_keys(dataset_aus(dataset))
    got = data.index[KEY + aus].sort_values(KEY).reset_index(drop=True)
    want = expected[KEY + aus].sort_values(KEY).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    out = export_megraphau(data, tmp_path / "export", list_format, progress=False)
    given = _list_texts(list_dir)
    exported = _list_texts(out / "list" if list_format == "megraphau" else out)
    assert len(given) == (18 if list_format == "megraphau" else 21)
    assert sorted(exported) == sorted(given)
    for name, content in given.items():
        assert exported[name] == content, name
    mdhr_disfa = list_format == "mdhr" and dataset == "disfa"
    image_dir = list_dir.parent / "img" if list_format == "megraphau" else list_dir / (
        "img_o" if mdhr_disfa else "img")
    ours = out / ("img_o" if mdhr_disfa else "img")
    word = "path" if mdhr_disfa else "img_path"
    listed = [p for k in (1, 2, 3) for p in
              (list_dir / f"{dataset.upper()}_test_{word}_fold{k}.txt").read_text().split()]
    assert len(listed) == len(expected)
    for p in listed:  # 8 px given, 256 px exported, in the format the name says
        assert (image_dir / p).is_file()
        with Image.open(ours / p) as im:
            assert im.size == (256, 256) and im.format == ("JPEG" if p.endswith(".jpg")
                                                           else "PNG")


def test_mdhr_path_lists_with_crlf_and_no_final_newline_import(tmp_path):
    """MDHR's published DISFA train path lists end lines with CRLF and lack a final newline."""
    list_dir, expected = make_megraphau(tmp_path / "given", "disfa", "mdhr")
    for k in (1, 2, 3):
        path = list_dir / f"DISFA_train_path_fold{k}.txt"
        path.write_bytes(b"\r\n".join(path.read_bytes().split()))
    data = _import(list_dir, "disfa", tmp_path / "prepared")
    assert len(data.index) == len(expected)
    assert data.index["image"].iat[0] == "images/SN023/SN023_0.jpg"  # fold 1 = part 3 first


def test_published_label_samples_are_named_as_such(tmp_path):
    """ME-GraphAU publishes complete path lists but 5-row label lists: the import says so,
    and where full lists come from (MDHR, ME-GraphAU's tool script, notebook 01 + export)."""
    list_dir, _ = make_megraphau(tmp_path / "given", "bp4d")
    paths = [f"F007/T1/{643 + i}.jpg" for i in range(46034)]  # full-length, as published
    (list_dir / "BP4D_test_img_path_fold1.txt").write_text("".join(p + "\n" for p in paths))
    sample = (list_dir / "BP4D_test_label_fold1.txt").read_text().splitlines()[:5]
    (list_dir / "BP4D_test_label_fold1.txt").write_text("\n".join(sample))  # no final newline
    with pytest.raises(DatasetError, match=r"BP4D_test_label_fold1\.txt: 5 rows, but "
                       r"BP4D_test_img_path_fold1\.txt has 46034 images\. This is the 5-row "
                       r"sample that ME-GraphAU publishes .*MDHR .*data/BP4D_dataset/"
                       r".*tool/BP4D_image_label_process\.py.*export_megraphau"):
        _import(list_dir, "bp4d", tmp_path / "out")
    assert _tree(tmp_path / "out") == {}


def _truncate(path: Path, keep: int) -> None:
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:keep]))


@pytest.mark.parametrize("weights", [True, False])
def test_train_label_rows_are_checked_against_the_train_paths(tmp_path, weights):
    """Full test lists with 5-row train label lists: refused naming the train list (not the
    weight file), with or without weight files; any other count mismatch is refused too."""
    list_dir, _ = make_megraphau(tmp_path / "given", "disfa")
    if not weights:
        for w in list_dir.glob("DISFA_weight_fold*.txt"):
            w.unlink()
    _truncate(list_dir / "DISFA_train_label_fold2.txt", 5)
    with pytest.raises(DatasetError, match=r"DISFA_train_label_fold2\.txt: 5 rows, but "
                                           r"DISFA_train_img_path_fold2\.txt has 1[0-9] images\. "
                                           r"This is the 5-row sample"):
        _import(list_dir, "disfa", tmp_path / "out")
    _truncate(list_dir / "DISFA_train_label_fold2.txt", 0)
    _truncate(list_dir / "DISFA_train_img_path_fold2.txt", 0)
    list_dir2, _ = make_megraphau(tmp_path / "given2", "disfa")
    lab = list_dir2 / "DISFA_train_label_fold3.txt"
    _truncate(lab, len(lab.read_text().splitlines()) - 1)
    with pytest.raises(DatasetError, match=r"fold3\.txt: 1[0-9] rows, but .* image and label "
                                           r"counts do not match"):
        _import(list_dir2, "disfa", tmp_path / "out")
    assert _tree(tmp_path / "out") == {}


def _add_test_rows_to_train(list_dir: Path) -> None:
    for kind in ("img_path", "label"):
        train = list_dir / f"DISFA_train_{kind}_fold1.txt"
        train.write_text(train.read_text() + (list_dir / f"DISFA_test_{kind}_fold1.txt"
                                              ).read_text())


def _drop_a_train_row(list_dir: Path) -> None:
    for kind in ("img_path", "label"):
        path = list_dir / f"DISFA_train_{kind}_fold2.txt"
        _truncate(path, len(path.read_text().splitlines()) - 1)


def _flip_a_train_label(list_dir: Path) -> None:
    path = list_dir / "DISFA_train_label_fold3.txt"
    rows = path.read_text().splitlines()
    rows[2] = ("1" if rows[2][0] == "0" else "0") + rows[2][1:]
    path.write_text("\n".join(rows) + "\n")


def _twice_in_test_lists(list_dir: Path) -> None:
    for kind in ("img_path", "label"):
        path = list_dir / f"DISFA_test_{kind}_fold2.txt"
        first = path.read_text().splitlines(keepends=True)[0]
        path.write_text(path.read_text() + first)


@pytest.mark.parametrize("corrupt,message", [
    (_add_test_rows_to_train, r"train_img_path_fold1\.txt: subject leakage.*SN023"),
    (_drop_a_train_row, r"train_img_path_fold2\.txt: 1[0-9] images, but the other folds' test "
                        r"lists hold 1[0-9] \(1 of them missing here.*other folds' test lists"),
    (_flip_a_train_label, r"train_label_fold3\.txt: row 3 .* other labels than in its test"),
    (_twice_in_test_lists, r"'SN013/0\.png' is listed 2 times in the test lists"),
])
def test_train_lists_must_be_the_other_folds_test_lists(tmp_path, corrupt, message):
    list_dir, _ = make_megraphau(tmp_path / "given", "disfa")
    corrupt(list_dir)
    with pytest.raises(DatasetError, match=message):
        _import(list_dir, "disfa", tmp_path / "out")
    assert _tree(tmp_path / "out") == {}


def test_megraphau_import_checks_the_weight_files(tmp_path):
    """Their weight files must equal inverse_frequency_weights of the fold's train labels (1e-5;
    files hold %f); both file names are read; a planted wrong weight or a broken file fails."""
    list_dir, expected = make_megraphau(tmp_path / "ME", "disfa")
    (list_dir / "DISFA_weight_fold2.txt").rename(list_dir / "DISFA_train_weight_fold2.txt")
    (list_dir / "DISFA_train_label_fold3.txt").unlink()  # then: the other folds' test lists
    # through prepare_dataset, images found at list/../img by default, kept as they are
    data = prepare_dataset("disfa", tmp_path / "ok", megraphau_list_dir=list_dir,
                           image_size=None, progress=False)
    for k in (1, 2, 3):
        train = expected.loc[expected["fold"] != k, au_keys(dataset_aus("disfa"))].to_numpy()
        np.testing.assert_allclose(data.meta["megraphau_weights"][str(k)],
                                   megraphau_weights(train), atol=1e-6)
    again = prepare_dataset("disfa", tmp_path / "ok", megraphau_list_dir=list_dir,
                            image_size=None, progress=False)  # same lists: reused
    assert again.meta == data.meta
    with pytest.raises(ValueError, match=r"\['raw_root'\] do not apply to an import"):
        prepare_dataset("disfa", tmp_path / "x", raw_root=tmp_path, megraphau_list_dir=list_dir)
    weight = list_dir / "DISFA_weight_fold3.txt"
    good = weight.read_text()
    w = np.loadtxt(weight)
    w[2] += 0.001  # AU4
    np.savetxt(weight, w[None], fmt="%f", delimiter="\t")
    with pytest.raises(DatasetError, match=r"DISFA_weight_fold3\.txt: AU4 weight .*other folds"
                                           r".*do not belong to these labels"):
        _import(list_dir, "disfa", tmp_path / "bad")
    weight.write_text(good.replace("\t", "\tx", 1))
    with pytest.raises(DatasetError, match=r"DISFA_weight_fold3\.txt: not one row of numbers"):
        _import(list_dir, "disfa", tmp_path / "bad")
    assert _tree(tmp_path / "bad") == {}


@pytest.mark.parametrize("list_format,name", [("megraphau", "img/SN003/0.png"),
                                              ("mdhr", "img_o/SN003/SN003_0.png")])
def test_export_of_raw_disfa_uses_the_repositorys_image_names(raw_trees, tmp_path, list_format,
                                                              name):
    """Our DISFA crops (images/SN003/SN003/0.jpg) are exported under ME-GraphAU's SN003/0.png
    (MDHR: SN003/SN003_0.png), as PNG at 256 px; importing the export gives back our rows."""
    raw, _ = raw_trees["disfa"]
    src = _prepare("disfa", raw, tmp_path / "src")
    out = export_megraphau(src, tmp_path / "DISFA", list_format, progress=False)
    lists = out / "list" if list_format == "megraphau" else out
    word = "img_path" if list_format == "megraphau" else "path"
    first = (lists / f"DISFA_test_{word}_fold1.txt").read_text().splitlines()[0]
    assert first == name.split("/", 1)[1]
    with Image.open(out / name) as im, Image.open(src.root / "images/SN003/SN003/0.jpg") as ours:
        assert (im.format, im.size) == ("PNG", (256, 256))
        np.testing.assert_array_equal(
            np.asarray(im), np.asarray(ours.resize((256, 256), Image.BILINEAR)))
    back = _import(lists, "disfa", tmp_path / "back", image_root=out / name.split("/")[0])
    cols = KEY + src.au_columns
    pd.testing.assert_frame_equal(back.index[cols], src.index[cols].sort_values(
        ["fold", "subject", "frame"]).reset_index(drop=True), check_dtype=False)


def test_export_never_replaces_what_it_did_not_write(raw_trees, tmp_path):
    raw, _ = raw_trees["gft"]
    src = _prepare("gft", raw, tmp_path / "src")
    theirs = tmp_path / "GFT"
    (theirs / "list").mkdir(parents=True)
    (theirs / "list" / "GFT_test_label_fold1.txt").write_text("0 1\n")
    for overwrite in (False, True):
        with pytest.raises(DatasetError, match=r"GFT: exists and is not an export of ours.*even "
                                               r"with overwrite=True.*dataset_path"):
            export_megraphau(src, theirs, overwrite=overwrite, progress=False)
    assert _tree(theirs) == {".": None, "list": None, "list/GFT_test_label_fold1.txt": b"0 1\n"}
    with pytest.raises(DatasetError, match=r"gft/export: this export folder overlaps the prepared"):
        export_megraphau(src, src.root / "export", progress=False)
    out = export_megraphau(src, tmp_path / "mine", progress=False)
    before = _tree(out)
    with pytest.raises(DatasetError, match="an export is already here.*overwrite=True"):
        export_megraphau(src, out, progress=False)
    assert _tree(out) == before
    export_megraphau(src, out, overwrite=True, progress=False)
    assert _tree(out) == before and (out / "img" / "002C" / "1.jpg").is_file()
    assert (src.root / "images" / "002C" / "002C" / "1.jpg").exists()  # targets kept
    with pytest.raises(DatasetError, match=r"GFT_train_img_path_fold1\.txt: a list file is "
                                           r"already here.*overwrite=True"):
        write_megraphau_lists(src, out / "list")
    with pytest.raises(ValueError, match="MDHR has lists for"):
        export_megraphau(src, tmp_path / "mdhr", "mdhr", progress=False)
    assert not (tmp_path / "mdhr").exists()


def test_synth_smoke_preparation(smoke_data_root):
    data = load_prepared(smoke_data_root / "synth-disfa")
    assert data.index["subject"].nunique() == 6
    assert data.au_ids == dataset_aus("disfa")
    again = prepare_dataset("synth-disfa", smoke_data_root, smoke=True, progress=False)
    pd.testing.assert_frame_equal(again.index, data.index)  # reused, not regenerated
    with pytest.raises(DatasetError, match="other settings.*overwrite=True"):
        prepare_dataset("synth-disfa", smoke_data_root, progress=False)  # full size asked
