"""A checkpoint knows its training subjects; evaluating it on a fold that holds any of them
is refused before anything is written."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import hiva_lib.engine.evaluate as evaluate
import hiva_lib.engine.train as train
from hiva_lib.data.prepared import load_prepared
from hiva_lib.engine.config import make_config
from hiva_lib.engine.fold_guard import FoldMixError, check_held_out, trained_on


def test_checkpoint_records_its_training_subjects_and_the_wrong_fold_is_refused(
        tmp_path, smoke_data_root):
    cfg = make_config("synth-disfa", smoke=True, data_root=str(smoke_data_root),
                      runs_root=str(tmp_path / "runs"), results_root=str(tmp_path / "res"))
    run = train.train_stage1(cfg)
    record = torch.load(run.checkpoint, weights_only=False)["trained_on"]
    data = load_prepared(smoke_data_root / "synth-disfa")
    folds = data.index.groupby("subject")["fold"].first()
    # independent of the code: fold 1's training subjects are those whose fold is not 1
    assert record["subjects"] == sorted(str(s) for s in folds.index[folds != 1])
    assert record["dataset"] == "synth-disfa" and record["fold"] == 1
    # its own test fold: evaluated as usual
    evaluate.evaluate_run(cfg, run.checkpoint, run.run_dir, data)
    # fold 2's test subjects are among fold 1's training subjects: refused, nothing written
    wrong = dataclasses.replace(cfg, fold=2)
    before = sorted(p for p in (tmp_path / "res").rglob("*"))
    with pytest.raises(FoldMixError, match=r"fold=1.*checkpoint trained for fold 2"):
        evaluate.evaluate_run(wrong, run.checkpoint, run.run_dir, data)
    assert sorted(p for p in (tmp_path / "res").rglob("*")) == before


def test_old_checkpoints_and_other_data_sets_are_not_checked(smoke_data_root):
    data = load_prepared(smoke_data_root / "synth-disfa")
    check_held_out(None, data, 2, "old.pt")  # written before the record existed
    other = dict(trained_on(data, 1), dataset="synth-bp4d")
    check_held_out(other, data, 2, "other.pt")
    with pytest.raises(FoldMixError):
        check_held_out(trained_on(data, 1), data, 2, "same.pt")
