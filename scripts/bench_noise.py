"""Benchmark: the seed and thread noise of the vision-only Baseline (noise calibration).

Trains stage 1 (the Baseline) of the default SynthFACS training preset on one fold of each
data set for several seeds, evaluates it on the test fold, and prints per data set the mean F1
over the seeds (mean, sample std, min, max, in F1 points), then the same seed on 1 and 2
threads. Goal: seed-to-seed std <= 1.0 F1 point on both synth-bp4d and synth-disfa.
``--stage2`` also trains HiVA's stage 2 (variant ``full``) on the first seed, to time it.

Every run goes to a fresh temporary folder (nothing of the project's runs/ is reused); the
data sets are read from the project's data/prepared (generated there first when missing). The
measurement, one row per run, is written to ``results/bench_noise.csv`` (an earlier one is
kept: the new one goes to ``bench_noise-v2.csv``, ``-v3``...).

    python scripts/bench_noise.py                        # 5 seeds, fold 1, bp4d + disfa
    python scripts/bench_noise.py --seeds 0 1 2 --datasets synth-gft --stage2
    python scripts/bench_noise.py --datasets synth-disfa --seeds 10 11 12 13 14 15 \
        --n-subjects 9 --frames-per-subject 480 --data-root /tmp/layout --out /tmp/noise.csv
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hiva_lib.data.prepare import prepare_dataset  # noqa: E402
from hiva_lib.engine import evaluate, train  # noqa: E402
from hiva_lib.engine.config import TrainConfig, make_config  # noqa: E402
from hiva_lib.integrity import atomic_write_text, free_version  # noqa: E402

GOAL_STD = 1.0  # F1 points, seed to seed, on each data set


def one_run(cfg: TrainConfig, threads: int, data, stage1: Path | None = None) -> dict:
    """Train and evaluate one run: the stage-1 Baseline, or with ``stage1`` (its checkpoint)
    the stage 2 of ``cfg.variant``."""
    torch.set_num_threads(threads)
    t0 = time.time()
    if stage1 is None:
        run = train.train_stage1(cfg, data)
    else:
        run = train.train_stage2(cfg, data, stage1)
    t1 = time.time()
    metrics, _ = evaluate.evaluate_run(cfg, run.checkpoint, run.run_dir, data)
    return dict(dataset=cfg.dataset, fold=cfg.fold, seed=cfg.seed, threads=threads,
                stage=1 if stage1 is None else 2, checkpoint=str(run.checkpoint),
                variant=cfg.variant,
                mean_f1=round(100 * metrics["mean_f1"], 2),
                min_au_f1=round(100 * min(metrics["f1"].values()), 2),
                train_s=round(t1 - t0, 1), eval_s=round(time.time() - t1, 1),
                **{f"f1_{k}": round(100 * v, 2) for k, v in metrics["f1"].items()})


def layout_of(data) -> dict:
    """The SynthFACS layout that ``generate`` recorded (the seed noise depends on it)."""
    return {k: data.meta[k] for k in ("n_subjects", "frames_per_subject")}


def summary(rows: pd.DataFrame, threads: int) -> tuple[list[str], bool]:
    """Printed lines per data set and whether every data set meets the goal."""
    lines, met = [], True
    for ds, part in rows[rows.stage == 1].groupby("dataset", sort=False):
        seeds = part[part.threads == threads]
        f1 = seeds["mean_f1"].tolist()
        std = statistics.stdev(f1) if len(f1) > 1 else float("nan")
        ok = len(f1) > 1 and std <= GOAL_STD
        met &= ok
        lines.append(f"{ds} fold {part.fold.iat[0]}, Baseline mean F1 over {len(f1)} seeds "
                     f"({threads} threads): mean {statistics.mean(f1):.2f}, std {std:.2f}, "
                     f"min {min(f1):.2f}, max {max(f1):.2f} -> {'met' if ok else 'NOT met'} "
                     f"(goal std <= {GOAL_STD})")
        never = [c[3:] for c in seeds.columns if c.startswith("f1_") and seeds[c].max() == 0]
        if never:
            lines.append(f"  AUs with F1 0 in every run: {', '.join(never)}")
        first = seeds.seed.iat[0]
        other = part[(part.seed == first) & (part.threads != threads)]
        for _, r in other.iterrows():
            base = seeds[seeds.seed == first].mean_f1.iat[0]
            lines.append(f"  seed {first}: {threads} threads {base:.2f} vs {r.threads} thread(s) "
                         f"{r.mean_f1:.2f} (difference {r.mean_f1 - base:+.2f})")
        lines.append(f"  time per stage-1 run: {seeds.train_s.mean():.0f} s train + "
                     f"{seeds.eval_s.mean():.0f} s eval (mean of {len(seeds)})")
    for _, r in rows[rows.stage == 2].iterrows():
        lines.append(f"{r.dataset} fold {r.fold} seed {r.seed}: stage 2 ({r.variant}) "
                     f"mean F1 {r.mean_f1:.2f}, {r.train_s:.0f} s train + {r.eval_s:.0f} s eval")
    return lines, met


def save(rows: list[dict], path: Path) -> pd.DataFrame:
    """Write the runs so far to ``path`` (one row per run) and return them as a table."""
    table = pd.DataFrame(rows).drop(columns="checkpoint")  # temporary folders, gone at the end
    table["date"] = time.strftime("%Y-%m-%d %H:%M:%S")
    table["cpus"] = os.cpu_count()
    atomic_write_text(table.to_csv(index=False), path)
    return table


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--datasets", nargs="*", default=["synth-bp4d", "synth-disfa"])
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2, 3, 4])
    ap.add_argument("--fold", type=int, default=1)
    ap.add_argument("--preset", default=None, help="training preset (default: the data set's)")
    ap.add_argument("--threads", type=int, default=2, help="threads of the seed runs")
    ap.add_argument("--other-threads", type=int, default=1,
                    help="the first seed again on this many threads (0: skip)")
    ap.add_argument("--stage2", action="store_true", help="also time stage 2 (full) of the "
                    "first seed")
    ap.add_argument("--data-root", type=Path, default=ROOT / "data" / "prepared")
    ap.add_argument("--n-subjects", type=int, help="SynthFACS layout other than the preset's "
                    "(to compare layouts; give a --data-root of its own)")
    ap.add_argument("--frames-per-subject", type=int, help="likewise")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "bench_noise.csv",
                    help="where the measurement goes (an existing file is kept: -v2, -v3...)")
    args = ap.parse_args()
    if len(args.seeds) < 2:
        ap.error("--seeds: give at least 2 seeds (the goal is on their std)")
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs; this measures the machine as it "
          "is (other processes slow the times, not the F1)", flush=True)
    rows: list[dict] = []
    path = free_version(args.out)
    layout = {k: v for k, v in (("n_subjects", args.n_subjects),
                                ("frames_per_subject", args.frames_per_subject)) if v}
    with tempfile.TemporaryDirectory() as tmp:
        for ds in args.datasets:
            data = prepare_dataset(ds, args.data_root, progress=False, **layout)
            shape = layout_of(data)  # recorded with each run
            base = dict(fold=args.fold, runs_root=f"{tmp}/runs", results_root=f"{tmp}/results",
                        data_root=str(args.data_root), if_exists="version")
            runs = [(s, args.threads) for s in args.seeds]
            if args.other_threads:
                runs.append((args.seeds[0], args.other_threads))
            for seed, threads in runs:
                cfg = make_config(ds, args.preset, variant="baseline", seed=seed, **base)
                rows.append(one_run(cfg, threads, data) | shape)
                save(rows, path)  # after every run: a stopped measurement keeps what it has
                print(f"{ds} seed {seed}, {threads} thread(s): Baseline mean F1 "
                      f"{rows[-1]['mean_f1']:.2f} ({rows[-1]['train_s']:.0f} s)", flush=True)
            if args.stage2:
                cfg = make_config(ds, args.preset, variant="full", seed=args.seeds[0], **base)
                first = next(r["checkpoint"] for r in rows if r["dataset"] == ds)
                rows.append(one_run(cfg, args.threads, data, Path(first)) | shape)
                save(rows, path)
    table = save(rows, path)
    lines, met = summary(table, args.threads)
    print("\n".join(lines))
    goal_sets = {"synth-bp4d", "synth-disfa"}
    if goal_sets <= set(args.datasets):
        print(f"goal (seed std <= {GOAL_STD} F1 point on synth-bp4d and synth-disfa): "
              + ("met" if met else "NOT met"))
    print(f"measurement written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
