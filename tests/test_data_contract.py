"""The prepared-data-set contract, metrics, losses, checkpoints and config (no model needed)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import f1_score

from hiva_lib.data import au
from hiva_lib.data.prepared import DatasetError, load_prepared, prepared_dir_writer, write_index
from hiva_lib.engine.checkpoint import atomic_save
from hiva_lib.engine.config import make_config
from hiva_lib.engine.runs import resolve_run_dir
from hiva_lib.errors import CheckpointError
from hiva_lib.losses import au_loss, inverse_frequency_weights, total_loss
from hiva_lib.metrics import all_positive_f1, f1_per_au
from hiva_lib.study.paper_tables import PAPER_DIR


def test_au_sets_match_the_papers_tables():
    """The AU sets in the order of the paper's Tables I-III (the CSVs shipped in hiva_lib)."""
    header = {"bp4d": "table1_bp4d_sota.csv", "disfa": "table2_disfa_sota.csv",
              "gft": "table3_gft_sota.csv"}
    for name, csv in header.items():
        columns = list(pd.read_csv(PAPER_DIR / csv, nrows=0).columns)
        assert columns[0].lower() == "method" and columns[-1].upper() == "AVE", columns
        ids = au.dataset_aus(name)
        assert len(ids) == {"bp4d": 12, "disfa": 8, "gft": 10}[name]
        assert list(ids) == [au.parse_au_key(c) for c in columns[1:-1]]
    assert set().union(*(au.dataset_aus(d) for d in ("bp4d", "disfa", "gft"))) == set(au.AUS)
    assert len(au.AUS) == 15 and all(a.region in au.REGIONS for a in au.AUS.values())
    with pytest.raises(ValueError, match="unknown data set"):
        au.dataset_aus("ck+")


def test_f1_matches_sklearn():
    rng = np.random.default_rng(0)
    labels = rng.random((200, 5)) < [0.05, 0.2, 0.5, 0.8, 0.0]
    probs = rng.random((200, 5))
    ours = f1_per_au(probs, labels)
    ref = [f1_score(labels[:, i], probs[:, i] >= 0.5, zero_division=0) for i in range(5)]
    np.testing.assert_allclose(ours, ref)
    ref_pos = [f1_score(labels[:, i], np.ones(200, bool), zero_division=0) for i in range(5)]
    np.testing.assert_allclose(all_positive_f1(labels), ref_pos)


def test_inverse_frequency_weights_by_hand():
    labels = np.array([[1, 0, 1], [1, 0, 0], [1, 1, 0], [1, 0, 0]])  # rates 1, .25, .25
    w = inverse_frequency_weights(labels)
    inv = np.array([1.0, 4.0, 4.0])
    np.testing.assert_allclose(w, inv / inv.sum() * 3)
    assert np.isclose(w.mean(), 1.0)


def test_total_loss_is_eq7():
    """Eq. 7 by hand: L = L_au + lambda L_diff; L_au alone without L_diff; gradients of both."""
    l_au = torch.tensor(2.5, requires_grad=True)
    l_diff = torch.tensor(0.4, requires_grad=True)
    loss = total_loss(l_au, l_diff, 0.25)
    assert loss.item() == pytest.approx(2.5 + 0.25 * 0.4)
    loss.backward()
    assert l_au.grad.item() == 1.0 and l_diff.grad.item() == pytest.approx(0.25)
    assert total_loss(l_au, None, 0.25) is l_au

def test_au_loss_is_eq4_weighted_sum():
    logits = torch.tensor([[0.3, -1.2], [2.0, 0.1]])
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    w = torch.tensor([0.5, 1.5])
    p = 1 / (1 + np.exp(-logits.numpy()))
    yy = y.numpy()
    per = -(yy * np.log(p) + (1 - yy) * np.log(1 - p))  # Eq. 4 terms
    expected_sum = float((per.mean(0) * w.numpy()).sum())
    assert au_loss(logits, y, w, "sum").item() == pytest.approx(expected_sum, rel=1e-6)
    assert au_loss(logits, y, w, "mean").item() == pytest.approx(expected_sum / 2, rel=1e-6)


def _tiny_dataset(root, n_subjects=6, frames=3, leak=False):
    au_ids = au.dataset_aus("disfa")
    rows = []
    with prepared_dir_writer(root) as tmp:
        for s in range(n_subjects):
            for f in range(frames):
                rel = f"images/S{s}/{f}.png"
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (16, 16), (s * 20, f * 30, 0)).save(tmp / rel)
                fold = (s % 3) + 1 if not (leak and f == 0) else ((s + 1) % 3) + 1
                rows.append({"subject": f"S{s}", "sequence": "T1", "frame": f, "image": rel,
                             "fold": fold, **{k: int((s + f + i) % 3 == 0)
                                              for i, k in enumerate(au.au_keys(au_ids))}})
        meta = dict(dataset="synth-disfa", au_ids=list(au_ids), protocol="3fold",
                    test_folds=[1, 2, 3], image_size=16, source="test")
        write_index(tmp, meta, pd.DataFrame(rows))
    return root


def test_contract_round_trip_and_split(tmp_path):
    data = load_prepared(_tiny_dataset(tmp_path / "synth-disfa"))
    train, test = data.split(2)
    assert set(data.index.subject.iloc[train]).isdisjoint(data.index.subject.iloc[test])
    assert len(train) + len(test) == len(data.index)
    assert data.labels(test).shape == (len(test), 8)
    with pytest.raises(DatasetError, match="fold 4 is not a test fold"):
        data.split(4)


def test_existing_data_set_is_not_overwritten(tmp_path):
    root = _tiny_dataset(tmp_path / "synth-disfa")
    before = (root / "index.csv").read_text()
    with pytest.raises(DatasetError, match="already here"):
        _tiny_dataset(root)
    assert (root / "index.csv").read_text() == before


def test_failed_preparation_writes_nothing(tmp_path):
    root = tmp_path / "data" / "x"  # data/ does not exist yet: not left behind either
    with pytest.raises(RuntimeError), prepared_dir_writer(root) as tmp:
        (tmp / "index.csv").write_text("half")
        raise RuntimeError("unreadable frame")
    assert list(tmp_path.iterdir()) == []


def test_writer_never_replaces_a_folder_that_is_not_a_prepared_set(tmp_path):
    """A raw copy (or anything else) at the output is refused even with overwrite; an empty
    folder or a finished data set (with overwrite) is replaced."""
    raw = tmp_path / "gft"
    (raw / "videos").mkdir(parents=True)
    (raw / "videos" / "001A.avi").write_bytes(b"licensed")
    for overwrite in (False, True):
        with pytest.raises(DatasetError, match="not a prepared data set.*even with overwrite"):
            with prepared_dir_writer(raw, overwrite=overwrite) as tmp:
                (tmp / "index.csv").write_text("new")
    assert (raw / "videos" / "001A.avi").read_bytes() == b"licensed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gft"]
    with pytest.raises(DatasetError, match="is the source"):
        prepared_dir_writer(tmp_path / "out", sources=[tmp_path / "out"]).__enter__()
    (tmp_path / "empty").mkdir()
    with prepared_dir_writer(tmp_path / "empty") as tmp:
        (tmp / "index.csv").write_text("new")
    assert (tmp_path / "empty" / "index.csv").read_text() == "new"
    root = _tiny_dataset(tmp_path / "synth-disfa")
    with prepared_dir_writer(root, overwrite=True) as tmp:
        (tmp / "meta.json").write_text("{}")
    assert [p.name for p in root.iterdir()] == ["meta.json"]


@pytest.mark.parametrize("corruption, message", [
    ("leak", "subject leakage"),
    ("label", "is not 0/1"),
    ("column", "missing columns"),
    ("image", "image missing"),
    ("meta", "not valid JSON"),
    ("csv", "not a readable CSV table"),
    ("au_ids", r"au_ids \[1, 3\] are not AU ids"),
])
def test_corrupted_contract_gives_one_clear_error(tmp_path, corruption, message):
    root = _tiny_dataset(tmp_path / "synth-disfa", leak=corruption == "leak")
    index = pd.read_csv(root / "index.csv")
    if corruption == "label":
        index.loc[3, "AU4"] = 9
        index.to_csv(root / "index.csv", index=False)
    elif corruption == "column":
        index.drop(columns="AU26").to_csv(root / "index.csv", index=False)
    elif corruption == "image":
        (root / index.image[5]).unlink()
    elif corruption == "meta":
        (root / "meta.json").write_text("{not json")
    elif corruption == "csv":
        (root / "index.csv").write_text('subject,sequence\n"S0,T1\n')
    elif corruption == "au_ids":
        meta = json.loads((root / "meta.json").read_text())
        (root / "meta.json").write_text(json.dumps({**meta, "au_ids": [1, 3]}))
    with pytest.raises(DatasetError, match=message) as err:
        load_prepared(root)
    assert str(root) in str(err.value)


def test_missing_data_set_says_how_to_prepare(tmp_path):
    with pytest.raises(DatasetError, match="01_prepare_data.ipynb"):
        load_prepared(tmp_path / "disfa")


def test_run_dir_policy(tmp_path):
    base = tmp_path / "fold1"
    assert resolve_run_dir(base, "skip") == (base, False)
    base.mkdir()
    (base / "DONE").write_text("x")
    assert resolve_run_dir(base, "skip") == (base, True)
    assert resolve_run_dir(base, "version") == (tmp_path / "fold1-v2", False)
    with pytest.raises(CheckpointError, match="already finished"):
        resolve_run_dir(base, "error")


def test_atomic_save_leaves_no_temporary(tmp_path):
    atomic_save({"a": torch.ones(2)}, tmp_path / "c.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_make_config_presets_and_overrides(tmp_path):
    paper = make_config("disfa", data_root=str(tmp_path))
    assert (paper.lr_stage1, paper.lr_stage2, paper.lambda_diff, paper.batch_size,
            paper.epochs_stage1, paper.model_preset) == (1e-5, 1e-6, 1e-5, 128, 30, "paper")
    synth = make_config("synth-disfa", lr_stage1=None, batch_size=7)
    assert synth.model_preset == "cpu-lite0" and synth.batch_size == 7
    smoke = make_config("synth-disfa", smoke=True)
    assert smoke.model_preset == "test-tiny" and smoke.results_root.endswith("results/_smoke")
    with pytest.raises(ValueError, match="lr_stage3=1.0: not a training parameter"):
        make_config("disfa", lr_stage3=1.0)
    json.dumps(paper.to_dict())
