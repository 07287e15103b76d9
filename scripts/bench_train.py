"""Benchmark of the training engine (issue goals, printed, not asserted):

1. end-to-end time of the embedded study (notebooks 01 + 02 + 03 on synth-disfa, fold 1, CPU,
   into a fresh temporary folder) and its mean F1 against the all-positive detector;
2. the stage-2 (full HiVA) training-step time over the vision-only (stage-1 / Baseline) step,
   measured in one run on the same batch: goal <= 1.25x;
3. ``--profile``: where a training step's time goes (forward, of it the frozen backbone
   layers; backward; optimizer), per stage, as shares measured in one run.

    python scripts/bench_train.py                 # 1 and 2
    python scripts/bench_train.py --steps-only    # only the step-time ratio
    python scripts/bench_train.py --profile       # only the profile
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


STAGES = (("vision-only (stage 1)", "baseline", 1), ("full HiVA (stage 2)", "full", 2))


def _models(preset: str, batch: int, dataset: str) -> tuple[dict, torch.Tensor]:
    """Per stage of :data:`STAGES`: (model in training mode, its optimizer as train.py builds
    it, a random batch of images); and the labels, shared."""
    from hiva_lib import create_model

    runs = {}
    for name, variant, stage in STAGES:
        torch.manual_seed(0)
        model = create_model(preset, variant, dataset)
        model.set_stage(stage)
        model.train()
        opt = torch.optim.AdamW(model.param_groups(stage, 1e-4), fused=True)  # as train.py
        size = model.cfg.img_size
        runs[name] = (model, opt, torch.randn(batch, 3, size, size))
    return runs, (torch.rand(batch, len(model.au_ids)) < 0.3).float()


def _step(model, opt, x: torch.Tensor, y: torch.Tensor, i: int) -> tuple[float, float, float]:
    """One training step; the seconds of its forward pass (with the loss), backward pass and
    optimizer step."""
    from hiva_lib.losses import au_loss

    t0 = time.perf_counter()
    out = model(x, step=i)
    loss = au_loss(out.logits, y)
    if out.l_diff is not None:
        loss = loss + 1e-2 * out.l_diff
    t1 = time.perf_counter()
    opt.zero_grad()
    loss.backward()
    t2 = time.perf_counter()
    opt.step()
    return t1 - t0, t2 - t1, time.perf_counter() - t2


def step_time(preset: str, batch: int, steps: int, dataset: str) -> dict[str, list[float]]:
    """Training-step times (s) of the vision-only and the full model, measured interleaved
    (one step of each in turn) so that a change of machine load hits both alike."""
    runs, y = _models(preset, batch, dataset)
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(steps + 2):  # two warm-up rounds
        for name, (model, opt, x) in runs.items():
            phases = _step(model, opt, x, y, i)
            if i >= 2:
                times[name].append(sum(phases))
    return times


def _outermost(modules: list[torch.nn.Module]) -> list[torch.nn.Module]:
    """The modules of ``modules`` not inside another of them (each frozen layer counted once)."""
    inner = {id(c) for m in modules for c in m.modules() if c is not m}
    return [m for m in modules if id(m) not in inner]


def _timed(modules: list[torch.nn.Module]) -> dict[str, float]:
    """Hooks that add the forward time of ``modules`` (run one after another) to ["t"]."""
    clock = {"t": 0.0, "start": 0.0}

    def start(*_) -> None:
        clock["start"] = time.perf_counter()

    def stop(*_) -> None:
        clock["t"] += time.perf_counter() - clock["start"]

    for m in modules:
        m.register_forward_pre_hook(start)
        m.register_forward_hook(stop)
    return clock


def profile_step(preset: str, batch: int, steps: int, dataset: str) -> dict[str, dict]:
    """Seconds per training step in each phase, per stage: the forward pass and, timed by
    hooks inside it, the frozen backbone layers; the backward pass; the optimizer step."""
    runs, y = _models(preset, batch, dataset)
    out = {}
    for name, (model, opt, x) in runs.items():
        frozen = _timed(_outermost(model.backbone.frozen_modules))
        phases = dict.fromkeys(("forward", "frozen backbone layers", "backward", "optimizer"),
                               0.0)
        for i in range(steps + 2):  # two warm-up steps
            frozen["t"] = 0.0
            forward, backward, optimizer = _step(model, opt, x, y, i)
            if i >= 2:
                for k, v in zip(phases, (forward, frozen["t"], backward, optimizer),
                                strict=True):
                    phases[k] += v / steps
        out[name] = phases
    return out


def print_profile(preset: str, steps: int, dataset: str) -> None:
    for stage, phases in profile_step(preset, 32, steps, dataset).items():
        total = phases["forward"] + phases["backward"] + phases["optimizer"]
        shares = ", ".join(f"{k} {v * 1000:.0f} ms ({100 * v / total:.0f}%)"
                           for k, v in phases.items())
        print(f"{stage}, batch 32, {preset}: step {total * 1000:.0f} ms = {shares} "
              "(the frozen layers are part of the forward pass)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps-only", action="store_true")
    ap.add_argument("--profile", action="store_true", help="only where a step's time goes")
    ap.add_argument("--dataset", default="synth-disfa")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--preset", help="model preset of the step times (default: the data set's, "
                    "as training uses it)")
    args = ap.parse_args()
    from hiva_lib.engine.config import make_config

    preset = args.preset or make_config(args.dataset).model_preset  # as training resolves it
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"device cpu", flush=True)
    if args.profile:
        print_profile(preset, args.steps, args.dataset)
        return 0
    times = step_time(preset, 32, args.steps, args.dataset)
    for k, v in times.items():
        print(f"median step time, batch 32, {preset}, {k}: {statistics.median(v) * 1000:.0f} ms")
    # the ratio of each round (one step of each model, back to back) cancels slow drifts of
    # the machine's speed; its median and quartiles say how firm the figure is
    a, b = times.values()
    q1, med, q3 = statistics.quantiles([y / x for x, y in zip(a, b, strict=True)], n=4)
    print(f"stage-2 / vision-only step-time ratio: {med:.2f}x (median of {len(a)} rounds, "
          f"quartiles {q1:.2f}-{q3:.2f}; goal <= 1.25x)")
    if args.steps_only:
        return 0
    import run_study

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.time()
        run_study.main(["--dataset", args.dataset, "--root", tmp, "--no-check", "--only",
                        "01_prepare_data", "02_train_stage1", "03_train_stage2"])
        elapsed = time.time() - t0
        m = json.loads(next(Path(tmp, "results").glob(f"{args.dataset}/full/seed0/fold1/"
                                                      "metrics.json")).read_text())
        b = json.loads(next(Path(tmp, "results").glob(f"{args.dataset}/baseline/seed0/fold1/"
                                                      "metrics.json")).read_text())
    print(f"end-to-end 01+02+03 on {args.dataset}: {elapsed:.0f} s (goal <= 300 s)")
    print(f"mean F1: HiVA {m['mean_f1']:.3f}, Baseline (stage 1) {b['mean_f1']:.3f}, "
          f"all-positive detector {m['all_positive_mean_f1']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
