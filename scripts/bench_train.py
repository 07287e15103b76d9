"""Benchmark of the training engine (issue goals, printed, not asserted):

1. end-to-end time of the embedded study (notebooks 01 + 02 + 03 on synth-disfa, fold 1, CPU,
   into a fresh temporary folder) and its mean F1 against the all-positive detector;
2. the stage-2 (full HiVA) training-step time over the vision-only (stage-1 / Baseline) step,
   measured in one run on the same batch: goal <= 1.25x.

    python scripts/bench_train.py                 # both
    python scripts/bench_train.py --steps-only    # only the step-time ratio
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


def step_time(preset: str, batch: int, steps: int, dataset: str) -> dict[str, list[float]]:
    """Training-step times (s) of the vision-only and the full model, measured interleaved
    (one step of each in turn) so that a change of machine load hits both alike."""
    from hiva_lib.data import au
    from hiva_lib.engine.config import make_config, model_config
    from hiva_lib.losses import au_loss
    from hiva_lib.model.hiva import HiVA

    cfg = make_config(dataset, model_preset=preset)
    ids = au.dataset_aus(dataset)
    runs = {}
    for name, variant, stage in (("vision-only (stage 1)", "baseline", 1),
                                 ("full HiVA (stage 2)", "full", 2)):
        torch.manual_seed(0)
        model = HiVA(model_config(cfg, variant), ids)
        model.set_stage(stage)
        model.train()
        opt = torch.optim.AdamW(model.param_groups(stage, 1e-4), fused=True)  # as train.py
        size = model.cfg.img_size
        runs[name] = (model, opt, torch.randn(batch, 3, size, size))
    y = (torch.rand(batch, len(ids)) < 0.3).float()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for i in range(steps + 2):  # two warm-up rounds
        for name, (model, opt, x) in runs.items():
            t0 = time.perf_counter()
            out = model(x, step=i)
            loss = au_loss(out.logits, y)
            if out.l_diff is not None:
                loss = loss + 1e-2 * out.l_diff
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i >= 2:
                times[name].append(time.perf_counter() - t0)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps-only", action="store_true")
    ap.add_argument("--dataset", default="synth-disfa")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--preset", help="model preset of the step times (default: the data set's, "
                    "as training uses it)")
    args = ap.parse_args()
    from hiva_lib.engine.config import make_config

    preset = args.preset or make_config(args.dataset).model_preset  # as training resolves it
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"device cpu", flush=True)
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
