"""``hiva_lib.create_model``: the model of a named preset, variant and data set in one call,
checked against the model assembled from its parts (tiny preset, MiniLM offline)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import hiva_lib
from hiva_lib.data.au import DATASET_AUS
from hiva_lib.model.hiva import HiVA
from hiva_lib.presets import MODEL_PRESETS
from hiva_lib.variants import apply_variant


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # everything here must run without network


@pytest.mark.parametrize("variant, dataset", [("full", "synth-disfa"), ("wo_ddca", "bp4d"),
                                              ("baseline", "gft")])
def test_create_model_is_the_model_assembled_from_its_parts(variant, dataset):
    torch.manual_seed(0)
    model = hiva_lib.create_model("test-tiny", variant, dataset, graph_k=3)
    cfg = apply_variant(dataclasses.replace(MODEL_PRESETS["test-tiny"], graph_k=3), variant)
    torch.manual_seed(0)
    parts = HiVA(cfg, DATASET_AUS[dataset])
    assert model.au_ids == DATASET_AUS[dataset] and model.cfg == parts.cfg
    assert model.cfg.graph_k == 3
    assert model.stage == (1 if variant == "baseline" else 2)
    mine, theirs = model.state_dict(), parts.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)  # same seed: same weights
    x = torch.rand(2, 3, cfg.img_size, cfg.img_size)
    with torch.no_grad():
        assert model.eval()(x).logits.shape == (2, len(DATASET_AUS[dataset]))


def test_create_model_takes_a_prepared_data_sets_own_au_list():
    model = hiva_lib.create_model("test-tiny", "baseline", au_ids=[4, 1, 2])
    assert model.au_ids == (4, 1, 2)


@pytest.mark.parametrize("call, message", [
    (lambda: hiva_lib.create_model("tiny"), "unknown model preset 'tiny'; choose one of"),
    (lambda: hiva_lib.create_model("test-tiny", "HiVA"), "unknown variant 'HiVA'"),
    (lambda: hiva_lib.create_model("test-tiny", "full", "disfa2"), "unknown data set 'disfa2'"),
    (lambda: hiva_lib.create_model("test-tiny", graph_kk=3),
     r"unknown model settings \['graph_kk'\]; graph_kk: did you mean 'graph_k'\?"),
])
def test_create_model_names_what_is_wrong(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_training_builds_its_model_with_create_model(monkeypatch, tmp_path):
    """The engine's model is create_model's (so the README's call gives the trained
    architecture): the engine's builder is called through it with the config's values."""
    from hiva_lib.engine import train
    from hiva_lib.engine.config import make_config

    calls = []

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return hiva_lib.create_model(*args, **kwargs)

    monkeypatch.setattr(train, "create_model", spy)
    cfg = make_config("synth-disfa", smoke=True, runs_root=str(tmp_path),
                      model_overrides={"graph_k": 3})
    data = type("Data", (), {"au_ids": DATASET_AUS["synth-disfa"]})()
    model = train._build(cfg, data, "full", torch.device("cpu"), backbone_weights=False)
    assert calls == [(("test-tiny", "full", "synth-disfa"),
                      dict(au_ids=DATASET_AUS["synth-disfa"], graph_k=3, pretrained=False))]
    assert model.cfg.graph_k == 3 and model.au_ids == DATASET_AUS["synth-disfa"]
