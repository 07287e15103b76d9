"""Command-line training, for clusters and several GPUs (the notebooks call the same code).

    python scripts/train.py --dataset disfa --fold 1 --variant full
    torchrun --nproc_per_node 2 scripts/train.py --dataset bp4d --fold 1 --variant full
    python scripts/train.py --dataset bp4d --set micro_batch=auto grad_checkpointing=True

Runs stage 1 (shared, reused when finished), stage 2 of the variant, and the evaluation, like
``hiva_lib.engine.train.run_variant``. SIGTERM, SIGUSR1 and SIGUSR2 (SLURM's warning before a
time limit, preemption, scancel) save ``last.pt`` at the current step and stop; the same
command resumes from there (docs/cluster.md). Under torchrun each rank takes its share of every
batch (DDP) and of the test fold; rank 0 writes checkpoints and results. Any TrainConfig field
can be set with --set key=value, the memory and speed options among them (grad_accum_steps,
micro_batch, grad_checkpointing, compile, tf32, cudnn_benchmark, num_workers=auto;
docs/training.md).
"""
from __future__ import annotations

import argparse
import ast
import sys

from hiva_lib.engine.config import make_config
from hiva_lib.engine.distributed import setup_distributed
from hiva_lib.engine.stop import stop_on_signals
from hiva_lib.engine.train import run_variant


def _value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a plain string


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--fold", type=int, default=1)
    ap.add_argument("--variant", default="full")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="TrainConfig overrides, e.g. lr_stage2=1e-5 device=cpu")
    args = ap.parse_args(argv)
    overrides = dict(kv.split("=", 1) for kv in args.set)
    cfg = make_config(args.dataset, smoke=args.smoke, fold=args.fold, variant=args.variant,
                      seed=args.seed, **{k: _value(v) for k, v in overrides.items()})
    setup_distributed()
    with stop_on_signals():
        result = run_variant(cfg)
    if result.metrics:
        print(f"{result.metrics['row_name']}: mean F1 {result.metrics['mean_f1']:.3f} "
              f"-> {result.results_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
