"""The engine's GPU memory and speed options, checked on the CPU: micro-batches give
the update of the whole batch, activation checkpointing the same gradients, the training step
makes no host-device sync, and DDP evaluation on 2 gloo processes the metrics of one."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch.utils._python_dispatch import TorchDispatchMode

from hiva_lib.data.au import dataset_aus
from hiva_lib.engine import loop, performance
from hiva_lib.engine.config import make_config, model_config
from hiva_lib.model.hiva import HiVA


def _fit(cfg, stage: int = 2, optimizer: str = "sgd", seed: int = 0) -> loop.Fit:
    torch.manual_seed(seed)
    ids = dataset_aus(cfg.dataset)
    model = HiVA(model_config(cfg, "full" if stage == 2 else "baseline"), ids)
    model.set_stage(stage)
    if optimizer == "sgd":  # plain SGD: the step is linear in the gradients
        opt = torch.optim.SGD(model.param_groups(stage, 0.5), lr=0.5)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    else:
        opt, sched = loop.build_optimizer(model, stage, cfg, 10)
    weights = torch.linspace(0.5, 1.5, len(ids))
    return loop.Fit(model, stage, cfg, torch.device("cpu"), Path("unused"), opt, sched,
                    weights, n_batches=1)


def _batch(cfg, n: int = 6, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    size = model_config(cfg, "full").img_size
    images = torch.randint(0, 256, (n, 3, size + 8, size + 8), dtype=torch.uint8, generator=g)
    labels = (torch.rand(n, len(dataset_aus(cfg.dataset)), generator=g) < 0.4).float()
    off, flip = [3, 5], torch.rand(n, generator=g) < 0.5
    return images, labels, off, flip


@pytest.mark.parametrize("how", [dict(grad_accum_steps=3), dict(micro_batch=4),
                                 dict(grad_accum_steps=6)])
def test_micro_batches_give_the_update_of_the_whole_batch(how):
    """Dropout off (eval mode), stage 2 (L_au + lambda L_diff): parameters after one step and
    the logged losses agree with the whole batch's to float rounding."""
    cfg = make_config("synth-disfa", smoke=True, lambda_diff=0.5)
    whole, parts = _fit(cfg), _fit(dataclasses.replace(cfg, **how))
    parts.model.load_state_dict(whole.model.state_dict())
    whole.model.eval(), parts.model.eval()
    batch = _batch(cfg)
    la = loop.device_step(whole, *batch)
    lb = loop.device_step(parts, *batch)
    assert performance.micro_batches(6, parts.micro or performance.fixed_micro_batch(
        parts.cfg), parts.cfg.grad_accum_steps) > 1
    torch.testing.assert_close(la, lb, rtol=1e-6, atol=1e-7)
    moved = 0
    for (name, a), b in zip(whole.model.named_parameters(), parts.model.parameters(),
                            strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
        moved += a.requires_grad
    assert moved > 10


def test_micro_batches_split_sizes():
    assert performance.micro_batches(128, None, 1) == 1
    assert performance.micro_batches(128, 32, 1) == 4
    assert performance.micro_batches(128, 48, 1) == 3
    assert performance.micro_batches(128, None, 4) == 4
    assert performance.micro_batches(3, None, 8) == 3  # never an empty micro-batch
    with pytest.raises(ValueError, match="micro_batch=0"):
        performance.fixed_micro_batch(make_config("synth-disfa", smoke=True, micro_batch=0))


def test_auto_micro_batch_is_the_whole_batch_on_the_cpu():
    assert performance.auto_micro_batch(lambda m: 1 / 0, 32, torch.device("cpu")) == 32


def _count_checkpointed_blocks(monkeypatch) -> dict[str, int]:
    """Count the calls of timm's checkpointed Swin path (the smoke backbone's): {"n": calls}."""
    import timm.models.swin_transformer as swin

    calls = {"n": 0}
    real = swin.checkpoint_seq

    def counted(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(swin, "checkpoint_seq", counted)
    return calls


def test_grad_checkpointing_gives_the_same_gradients(monkeypatch):
    cfg = make_config("synth-disfa", smoke=True)
    plain, ckpt = _fit(cfg), _fit(dataclasses.replace(cfg, grad_checkpointing=True))
    ckpt.model.load_state_dict(plain.model.state_dict())
    performance.prepare_model(ckpt.model, ckpt.cfg)
    calls = _count_checkpointed_blocks(monkeypatch)
    images, labels, off, flip = _batch(cfg)
    grads = []
    for fit in (plain, ckpt):
        fit.model.eval()  # dropout off; checkpointing is on in eval mode too (timm)
        x = loop.apply_augmentation(images, fit.core.cfg.img_size, off, flip)
        fit.optimizer.zero_grad()
        loop.batch_loss(fit, x, labels)[0].backward()
        grads.append({n: p.grad.clone() for n, p in fit.model.named_parameters()
                      if p.grad is not None})
    assert calls["n"] > 0  # the checkpointed path did run
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-7,
                                   msg=name)


def test_stage1_run_with_grad_checkpointing_trains_the_same_weights(tmp_path, smoke_data_root,
                                                                     monkeypatch):
    """The option as a run takes it (train_stage1 -> model building -> prepare_model): the
    checkpointed backbone runs, and the trained weights equal those of the plain run."""
    from hiva_lib.engine import train

    calls = _count_checkpointed_blocks(monkeypatch)
    weights = {}
    for ckpt in (False, True):
        cfg = make_config("synth-disfa", smoke=True, data_root=str(smoke_data_root),
                          runs_root=str(tmp_path / f"runs{ckpt}"), grad_checkpointing=ckpt,
                          results_root=str(tmp_path / "res"), batch_size=4, num_workers=0)
        n_before = calls["n"]
        run = train.train_stage1(cfg)
        assert (calls["n"] > n_before) == ckpt  # checkpointing acts only when asked
        weights[ckpt] = torch.load(run.checkpoint, weights_only=False)
    assert weights[True]["signature"] == weights[False]["signature"]  # not part of a run's id
    a, b = weights[False]["model"], weights[True]["model"]
    assert a.keys() == b.keys()
    moved = 0
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
        moved += a[name].is_floating_point()
    assert moved > 10


def test_compile_keeps_the_parameter_names():
    """compile=True compiles the backbone in place: checkpoints keep the plain names."""
    cfg = make_config("synth-disfa", smoke=True)
    model = HiVA(model_config(cfg, "baseline"), dataset_aus(cfg.dataset))
    names = list(model.state_dict())
    performance.prepare_model(model, dataclasses.replace(cfg, compile=True))
    assert list(model.state_dict()) == names
    assert model.backbone.body._compiled_call_impl is not None


def test_speed_options_are_validated_in_one_error():
    from hiva_lib.engine.validate import ParameterError

    with pytest.raises(ParameterError) as err:
        make_config("synth-disfa", smoke=True, grad_accum_steps=0, micro_batch="big",
                    grad_checkpointing="yes", compile=1, tf32="False", cudnn_benchmark=2,
                    num_workers="many", prefetch_factor=0, log_every=-1)
    text = str(err.value)
    for name in ("grad_accum_steps=0", "micro_batch='big'", "grad_checkpointing='yes'",
                 "compile=1", "tf32='False'", "cudnn_benchmark=2", "num_workers='many'",
                 "prefetch_factor=0", "log_every=-1"):
        assert name in text, name
    assert "-p micro_batch auto" in text and "nothing was written" in text
    cfg = make_config("synth-disfa", smoke=True, micro_batch="auto", num_workers="auto",
                      grad_accum_steps=4, tf32=True)
    assert (cfg.micro_batch, cfg.num_workers, cfg.grad_accum_steps) == ("auto", "auto", 4)


def test_speed_options_leave_the_signature_and_enter_the_provenance():
    from hiva_lib.engine.provenance import provenance
    from hiva_lib.engine.runs import signature

    cfg = make_config("synth-disfa", smoke=True)
    fast = dataclasses.replace(cfg, grad_accum_steps=4, micro_batch="auto", tf32=True,
                               compile=True, cudnn_benchmark=True, grad_checkpointing=True,
                               num_workers="auto", prefetch_factor=4, log_every=5)
    for stage in (1, 2):
        assert signature(fast, stage) == signature(cfg, stage)
    numerics = provenance({}, fast.to_dict())["numerics"]
    assert numerics["tf32"] is True and numerics["compile"] is True
    assert numerics["grad_accum_steps"] == 4


def test_a_nan_step_is_withheld_on_the_device_and_reported_later():
    """The guard of a fused-AdamW step: no sync, the bad step and the later ones not applied,
    and the error (at the next read) names the first bad step."""
    cfg = make_config("synth-disfa", smoke=True)
    fit = _fit(cfg, optimizer="adamw")
    fit.model.train()
    images, labels, off, flip = _batch(cfg)
    loop.device_step(fit, images, labels, off, flip)
    before = {n: p.detach().clone() for n, p in fit.model.named_parameters()}
    bad = labels.clone()
    bad[0, 0] = float("nan")
    loop.device_step(fit, images, bad, off, flip)  # step 2: NaN loss
    loop.device_step(fit, images, labels, off, flip)  # step 3: finite, but after a bad one
    for name, p in fit.model.named_parameters():
        assert torch.equal(p, before[name]), name
    with pytest.raises(loop.NonFiniteLossError, match=r"stopped at step 2 \(epoch 2, batch 1\)"
                                                       r": loss nan"):
        loop.raise_if_nonfinite(fit)


# ----------------------------------------------------------------------------- sync audit
SYNC_OPS = {"_local_scalar_dense", "nonzero", "is_nonzero", "equal", "masked_select",
            "_unique2", "unique_dim", "unique_consecutive", "item"}


class SyncAudit(TorchDispatchMode):
    """Records the ops that make a CUDA device wait for the host (a scalar read, nonzero,
    boolean-mask indexing...) and Python-level reads of tensor values; on the CPU they run
    as they would on a GPU, so a count of zero here means zero syncs there."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._patched: list = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in SYNC_OPS or (name == "index" and any(
                isinstance(i, torch.Tensor) and i.dtype == torch.bool
                for i in (args[1] if len(args) > 1 else []) if i is not None)):
            self.found.append(name)
        return func(*args, **(kwargs or {}))

    def __enter__(self):
        for attr in ("item", "tolist", "numpy", "cpu", "__int__", "__float__", "__bool__"):
            real = getattr(torch.Tensor, attr)
            self._patched.append((attr, real))
            setattr(torch.Tensor, attr, self._recording(attr, real))
        return super().__enter__()

    def __exit__(self, *exc):
        for attr, real in self._patched:
            setattr(torch.Tensor, attr, real)
        return super().__exit__(*exc)

    def _recording(self, attr, real):
        def wrapper(t, *a, **k):
            self.found.append(f"Tensor.{attr}")
            return real(t, *a, **k)
        return wrapper


def test_sync_audit_catches_planted_syncs():
    x = torch.arange(6.0)
    with SyncAudit() as audit:
        y = (x * 2).sum()
        y.item()
        x.nonzero()
        x[x > 2]
        int(x[0])
    assert {"Tensor.item", "nonzero", "Tensor.__int__"} <= set(audit.found), audit.found
    assert len(audit.found) >= 4


@pytest.mark.parametrize("how", [dict(), dict(grad_accum_steps=2)])
def test_training_step_makes_no_host_device_sync(how):
    """The device part of a stage-2 step (forward with the text branch, Eq. 7, backward,
    fused AdamW, schedule) reads nothing back: the augmentation and the text positions are
    worked out on the host, the losses stay on the device."""
    cfg = make_config("synth-disfa", smoke=True, **how)
    fit = _fit(cfg, optimizer="adamw")
    fit.model.train()
    batch = _batch(cfg)
    loop.device_step(fit, *batch)  # warm-up (lazy state)
    with SyncAudit() as audit:
        loop.device_step(fit, *batch)
    assert audit.found == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_step_makes_no_sync_on_cuda():
    cfg = make_config("synth-disfa", smoke=True, device="cuda")
    fit = _fit(cfg, optimizer="adamw")
    fit.model.cuda().train()
    fit.device = torch.device("cuda")
    fit.weights = fit.weights.cuda()
    fit.optimizer, fit.scheduler = loop.build_optimizer(fit.model, 2, cfg, 10)
    batch = _batch(cfg)
    loop.device_step(fit, *batch)
    torch.cuda.set_sync_debug_mode("error")
    try:
        loop.device_step(fit, *batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")


# ----------------------------------------------------------------------------- DDP evaluation
def _evaluate_rank(rank: int, world: int, init: str, cfg_dict: dict, ckpt: str, run_dir: str,
                   out: str) -> None:
    import torch.distributed as dist

    from hiva_lib.engine.config import TrainConfig
    from hiva_lib.engine.evaluate import evaluate_run

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        metrics, folder = evaluate_run(TrainConfig(**cfg_dict), Path(ckpt), Path(run_dir))
        if rank == 0:
            Path(out).write_text(json.dumps({"f1": metrics["f1"], "dir": str(folder)}))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_evaluation_on_two_processes_matches_one(tmp_path, smoke_data_root):
    from hiva_lib.engine import train

    cfg = make_config("synth-disfa", smoke=True, data_root=str(smoke_data_root),
                      runs_root=str(tmp_path / "runs"), results_root=str(tmp_path / "one"),
                      batch_size=4)
    run = train.train_stage1(cfg)
    found = {}
    for world in (1, 2):  # both in spawned processes of one thread each: the same arithmetic
        wcfg = dataclasses.replace(cfg, results_root=str(tmp_path / f"world{world}"))
        out = tmp_path / f"world{world}.json"
        mp.spawn(_evaluate_rank, args=(world, f"file://{tmp_path / f'pg{world}'}",
                                       wcfg.to_dict(), str(run.checkpoint), str(run.run_dir),
                                       str(out)), nprocs=world, join=True)
        found[world] = json.loads(out.read_text())
    assert found[2]["f1"] == found[1]["f1"]
    a = np.load(Path(found[1]["dir"]) / "predictions.npz")
    b = np.load(Path(found[2]["dir"]) / "predictions.npz")
    assert np.array_equal(a["rows"], b["rows"]) and np.array_equal(a["labels"], b["labels"])
    assert np.array_equal(a["probs"], b["probs"])  # the same batches, in the same order
    assert len(a["probs"]) > 4 * 2  # several batches per rank
