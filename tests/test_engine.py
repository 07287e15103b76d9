"""The two-stage engine: resume after a kill, reuse/refusal of finished runs, stage-1 checks."""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

import hiva_lib.engine.distributed as distributed
import hiva_lib.engine.evaluate as evaluate
import hiva_lib.engine.loop as loop
import hiva_lib.engine.runs as runs
import hiva_lib.engine.train as train
from hiva_lib.engine.checkpoint import atomic_save
from hiva_lib.engine.config import make_config
from hiva_lib.errors import CheckpointError


def _cfg(root, tag, data_root, **kw):
    return make_config("synth-disfa", smoke=True, data_root=str(data_root),
                       runs_root=str(root / tag / "runs"), results_root=str(root / tag / "res"),
                       **kw)


def _kill_at(monkeypatch, call: int | None) -> dict:
    """Make the n-th loss computation raise, as a killed process would stop there (None:
    never). Returns the call counter, which counts the training steps run."""
    real, count = loop.au_loss, {"n": 0}

    def dying(*a, **k):
        count["n"] += 1
        if count["n"] == call:
            raise KeyboardInterrupt("killed")
        return real(*a, **k)

    monkeypatch.setattr(loop, "au_loss", dying)  # the loss the loop's step looks up
    return count


@pytest.mark.slow  # trains several smoke runs: the slow tier
@pytest.mark.parametrize("stage", [1, 2])
def test_killed_run_resumes_to_the_same_result(tmp_path, smoke_data_root, monkeypatch, stage):
    kw = dict(epochs_stage1=2, epochs_stage2=2, max_steps_per_epoch=3, checkpoint_every=1)
    ref = _cfg(tmp_path, "ref", smoke_data_root, **kw)
    ran = _cfg(tmp_path, "ran", smoke_data_root, **kw)
    train_fn = train.train_stage1 if stage == 1 else train.train_stage2
    if stage == 2:  # both stage-2 runs start from the same stage-1 weights
        s1 = train.train_stage1(ref)
        shutil.copytree(s1.run_dir, runs.stage1_dir(ran))
    a = train_fn(ref)
    with monkeypatch.context() as m:
        _kill_at(m, 5)  # mid second epoch, after the step-4 checkpoint
        with pytest.raises(KeyboardInterrupt):
            train_fn(ran)
    assert (runs.stage1_dir(ran) if stage == 1 else runs.stage2_dir(ran)).joinpath(
        "last.pt").exists()
    with monkeypatch.context() as m:
        steps = _kill_at(m, None)
        b = train_fn(ran)  # resumes from the step-4 checkpoint: runs steps 5 and 6 only
    assert steps["n"] == 2
    assert not (b.run_dir / "last.pt").exists() and (b.run_dir / "DONE").exists()
    wa, wb = torch.load(a.checkpoint)["model"], torch.load(b.checkpoint)["model"]
    assert wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0, msg=k)
    ma, _ = evaluate.evaluate_run(ref, a.checkpoint, a.run_dir)
    mb, _ = evaluate.evaluate_run(ran, b.checkpoint, b.run_dir)
    assert ma["f1"] == mb["f1"]


def test_finished_runs_are_reused_or_versioned(tmp_path, smoke_data_root):
    cfg = _cfg(tmp_path, "x", smoke_data_root)
    first = train.train_stage1(cfg)
    again = train.train_stage1(cfg)
    assert again.skipped and again.run_dir == first.run_dir
    v2 = train.train_stage1(dataclasses.replace(cfg, if_exists="version"))
    assert v2.run_dir.name == "fold1-v2" and (v2.run_dir / "DONE").exists()
    with pytest.raises(CheckpointError, match="already finished"):
        train.train_stage1(dataclasses.replace(cfg, if_exists="error"))


def test_results_of_another_checkpoint_are_kept_and_the_new_ones_versioned(tmp_path,
                                                                           smoke_data_root):
    """As on a fresh clone: results/ holds committed results of a checkpoint that is not the
    one just trained. They stay; the new evaluation goes to fold1-v2; rerunning reuses it."""
    import hashlib
    import json

    cfg = _cfg(tmp_path, "r", smoke_data_root)
    run = train.train_stage1(cfg)
    m1, out1 = evaluate.evaluate_run(cfg, run.checkpoint, run.run_dir)
    assert m1["checkpoint_sha256"] == hashlib.sha256(run.checkpoint.read_bytes()).hexdigest()
    assert evaluate.evaluate_run(cfg, run.checkpoint, run.run_dir)[1] == out1  # same: reused
    committed = json.loads((out1 / "metrics.json").read_text())
    committed["checkpoint_sha256"] = "0" * 64  # results of some other checkpoint
    (out1 / "metrics.json").write_text(json.dumps(committed))
    before = (out1 / "metrics.json").read_text()
    m2, out2 = evaluate.evaluate_run(cfg, run.checkpoint, run.run_dir)
    assert out2.name == "fold1-v2" and (out1 / "metrics.json").read_text() == before
    assert m2["f1"] == m1["f1"]
    assert evaluate.evaluate_run(cfg, run.checkpoint, run.run_dir)[1] == out2


def test_stage2_without_or_with_mismatching_stage1(tmp_path, smoke_data_root):
    cfg = _cfg(tmp_path, "y", smoke_data_root)
    with pytest.raises(CheckpointError, match="02_train_stage1.ipynb"):
        train.train_stage2(cfg)
    train.train_stage1(cfg)
    other_fold = runs.stage1_dir(cfg) / "final.pt"
    with pytest.raises(CheckpointError, match="fold: checkpoint 1 vs now 2"):
        train.train_stage2(dataclasses.replace(cfg, fold=2), stage1_checkpoint=other_fold)


def test_run_variant_writes_results_with_config(tmp_path, smoke_data_root):
    cfg = _cfg(tmp_path, "z", smoke_data_root, variant="wo_cdca")
    res = train.run_variant(cfg)
    m = res.metrics
    assert m["row_name"] == "HiVA (w/o CDCA)" and set(m["f1"]) == {
        "AU1", "AU2", "AU4", "AU6", "AU9", "AU12", "AU25", "AU26"}
    assert all(0 <= v <= 1 for v in m["f1"].values())
    assert (res.results_dir / "config.json").exists() and (res.results_dir / "f1.csv").exists()
    base = train.run_variant(dataclasses.replace(cfg, variant="baseline"))
    assert base.run_dir == runs.stage1_dir(cfg)  # the Baseline is the shared stage-1 model


@pytest.mark.slow
def test_torchrun_ddp_two_processes_on_cpu(tmp_path, smoke_data_root):
    """DDP through torchrun (gloo on the CPU here, NCCL on GPUs): both ranks train, rank 0
    writes the results once."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "train.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "29533", str(script), "--dataset", "synth-disfa", "--smoke",
           "--variant", "full", "--set", f"data_root={smoke_data_root}",
           f"runs_root={tmp_path / 'runs'}", f"results_root={tmp_path / 'res'}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("HiVA (Ours): mean F1") == 1
    assert (tmp_path / "res" / "synth-disfa" / "full" / "seed0" / "fold1" / "metrics.json").exists()


def test_a_finished_run_is_reused_only_with_the_same_settings(tmp_path, smoke_data_root):
    """Another setting never reuses (nor overwrites) a finished run: it trains a version."""
    cfg = _cfg(tmp_path, "s", smoke_data_root)
    first = train.train_stage1(cfg)
    before = first.checkpoint.read_bytes()
    other = train.train_stage1(dataclasses.replace(cfg, lr_stage1=cfg.lr_stage1 * 2))
    assert not other.skipped and other.run_dir.name == "fold1-v2"
    assert first.checkpoint.read_bytes() == before
    # each setting finds its own finished run again
    assert train.train_stage1(cfg).run_dir == first.run_dir
    again = train.train_stage1(dataclasses.replace(cfg, lr_stage1=cfg.lr_stage1 * 2))
    assert again.skipped and again.run_dir == other.run_dir


def test_stage2_only_switch_reuses_stage1_and_versions_stage2(tmp_path, smoke_data_root):
    """An ambiguity switch of stage 2 (ddca_mode) shares the stage-1 checkpoint; the stage-2
    run with the default switch is kept and the literal one gets its own folder + results."""
    cfg = _cfg(tmp_path, "w", smoke_data_root)
    spatial = train.run_variant(cfg)
    literal_cfg = dataclasses.replace(cfg, model_overrides={"ddca_mode": "literal"})
    literal = train.run_variant(literal_cfg)
    assert literal.run_dir.name == "fold1-v2" and literal.results_dir.name == "fold1-v2"
    assert spatial.results_dir.name == "fold1"
    assert runs.find_finished(runs.stage1_dir(cfg)) == runs.stage1_dir(cfg)  # one stage 1
    assert not (runs.stage1_dir(cfg).parent / "fold1-v2").exists()
    state = torch.load(literal.checkpoint, weights_only=False)
    assert state["model_config"]["ddca_mode"] == "literal"
    assert literal.metrics["config"]["model_overrides"] == {"ddca_mode": "literal"}


@pytest.mark.slow  # trains several smoke runs: the slow tier
def test_versioned_stage1_feeds_its_own_stage2(tmp_path, smoke_data_root):
    cfg = _cfg(tmp_path, "v", smoke_data_root)
    train.run_variant(cfg)
    old = runs.stage1_dir(cfg) / "final.pt"  # mark the first stage-1 weights
    marked = torch.load(old, weights_only=False)
    marked["model"]["stage1_head.weight"] += 1.0
    torch.save(marked, old)
    rerun = train.run_variant(dataclasses.replace(cfg, if_exists="version"))
    assert rerun.run_dir.name == "fold1-v2"
    new = torch.load(runs.stage1_dir(cfg).parent / "fold1-v2" / "final.pt", weights_only=False)
    head = torch.load(rerun.checkpoint, weights_only=False)["model"]["stage1_head.weight"]
    # stage 2 does not train the stage-1 head: it still holds the weights it started from
    torch.testing.assert_close(head, new["model"]["stage1_head.weight"])
    assert not torch.allclose(head, marked["model"]["stage1_head.weight"])


def test_aggregate_takes_the_newest_version_of_each_fold(tmp_path):
    import json

    base = tmp_path / "synth-disfa" / "full" / "seed0"
    for name, f1 in (("fold1", 0.2), ("fold1-v2", 0.8), ("fold1-v10", 0.6), ("fold2", 0.5)):
        (base / name).mkdir(parents=True)
        (base / name / "metrics.json").write_text(json.dumps(
            dict(fold=int(name[4]), f1={"AU1": f1})))
    summary = evaluate.aggregate_folds(tmp_path, "synth-disfa", "full", 0)
    assert summary["folds"] == [1, 2]
    assert summary["f1"]["AU1"] == pytest.approx((0.6 + 0.5) / 2)


@pytest.mark.parametrize("n,batch,world", [(257, 128, 2), (10, 4, 3), (9, 3, 3), (5, 8, 2)])
def test_ddp_shards_are_never_empty_and_disjoint(n, batch, world):
    import numpy as np

    order = np.random.default_rng(0).permutation(n)
    shards = [distributed.shard_batches(order, batch, r, world) for r in range(world)]
    assert len({len(s) for s in shards}) == 1  # every rank runs the same number of steps
    for step in zip(*shards, strict=True):
        assert all(len(part) > 0 for part in step)
        joined = np.concatenate(step)
        assert len(set(joined)) == len(joined)  # no sample twice in a step
    assert distributed.shard_batches(order, batch, 0, 1)[-1].size == n - batch * ((n - 1) // batch)


def test_evaluation_needs_no_backbone_download(tmp_path, smoke_data_root, monkeypatch):
    """A checkpoint saved with pretrained=True (hub weights) is evaluated offline: its own
    weights replace ImageNet's, so none are fetched."""
    cfg = _cfg(tmp_path, "o", smoke_data_root)
    run = train.train_stage1(cfg)
    state = torch.load(run.checkpoint, weights_only=False)
    state["model_config"]["pretrained"] = True
    hub_ckpt = tmp_path / "hub.pt"
    atomic_save(state, hub_ckpt)  # its own content checksum recorded anew
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = evaluate.load_trained(hub_ckpt)
    for k, v in state["model"].items():
        torch.testing.assert_close(model.state_dict()[k], v, msg=k)
    metrics, out = evaluate.evaluate_run(cfg, hub_ckpt, run.run_dir)
    prov = metrics["provenance"]
    assert prov["torch"] == torch.__version__ and "git_commit" in prov
    assert prov["data"]["dataset"] == "synth-disfa"


def test_bf16_autocast_training_path(tmp_path, smoke_data_root, monkeypatch):
    """The CUDA bf16 path (autocast around the forward, losses in fp32) run on the CPU's bf16
    autocast: both stages train and the logged losses are finite."""

    seen = []

    def bf16(device, enabled):
        seen.append(enabled)
        return torch.autocast("cpu", dtype=torch.bfloat16)

    monkeypatch.setattr(distributed, "autocast", bf16)
    cfg = _cfg(tmp_path, "b", smoke_data_root)
    res = train.run_variant(cfg)
    assert seen and all(seen)  # amp=True reached the autocast of every step and prediction
    for run in (runs.stage1_dir(cfg), res.run_dir):
        log = pd.read_csv(run / "log.csv")
        assert log["loss"].notna().all() and (log["loss"].abs() < 1e6).all()
    assert 0 <= res.metrics["mean_f1"] <= 1


@pytest.mark.slow  # trains several smoke runs: the slow tier
def test_ablation_with_two_workers_trains_stage1_once_per_fold(tmp_path, smoke_data_root):
    from hiva_lib.engine.ablation import run_ablation

    kw = dict(smoke=True, data_root=str(smoke_data_root), runs_root=str(tmp_path / "runs"),
              results_root=str(tmp_path / "res"))
    table = run_ablation("synth-disfa", ["full", "wo_ddca", "baseline"], [1], workers=2, **kw)
    assert sorted(table.variant) == ["baseline", "full", "wo_ddca"]
    assert set(table.status) == {"done"}
    cfg = make_config("synth-disfa", **kw)
    assert [p.name for p in runs.stage1_dir(cfg).parent.iterdir()] == ["fold1"]
    for slug in ("baseline", "full", "wo_ddca"):
        metrics = json.loads((Path(kw["results_root"]) / "synth-disfa" / slug / "seed0" / "fold1"
                              / "metrics.json").read_text())
        assert metrics["variant"] == slug
        assert metrics["provenance"]["torch_threads"] == max(1, torch.get_num_threads() // 2)
    status = pd.read_csv(Path(kw["results_root"]) / "synth-disfa" / "ablation_status.csv")
    assert sorted(status.variant) == ["baseline", "full", "wo_ddca"]
    assert set(status.status) == {"done"}


def test_ablation_rerun_with_version_shares_one_new_stage1(tmp_path, smoke_data_root):
    from hiva_lib.engine.ablation import run_ablation

    kw = dict(smoke=True, data_root=str(smoke_data_root), runs_root=str(tmp_path / "runs"),
              results_root=str(tmp_path / "res"))
    run_ablation("synth-disfa", ["baseline", "full"], [1], workers=1, **kw)
    run_ablation("synth-disfa", ["baseline", "full"], [1], if_exists="version", workers=2, **kw)
    cfg = make_config("synth-disfa", **kw)
    stage1 = sorted(p.name for p in runs.stage1_dir(cfg).parent.iterdir())
    assert stage1 == ["fold1", "fold1-v2"]  # not one new stage 1 per variant
    full = runs.stage2_dir(dataclasses.replace(cfg, variant="full")).parent
    assert sorted(p.name for p in full.iterdir()) == ["fold1", "fold1-v2"]
    sig = json.loads((full / "fold1-v2" / "signature.json").read_text())
    assert sig["variant"] == "full"
