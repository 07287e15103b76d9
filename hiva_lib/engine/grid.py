"""The plan of an ablation grid before it runs, and its progress while it runs.

Each run of the grid (one variant, seed and fold) is classified before anything starts:
``reuse`` (a finished run with these settings exists: nothing is trained), ``resume`` (an
interrupted run with ``last.pt``), ``train``, or ``queued`` (a cluster job of an earlier call
is still pending or running). The plan is printed with an estimate of the time, taken from the
times that ``ablation_status.csv`` recorded for earlier runs of the data set, and a progress
bar counts the runs (reused ones included) with an ETA from the runs trained so far.
:func:`run_one` runs one of them in this process, for either executor.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import pandas as pd
from tqdm import tqdm

from hiva_lib import variants
from hiva_lib.data.prepared import PreparedDataset
from hiva_lib.engine.config import TrainConfig
from hiva_lib.engine.runs import finished_run, load_data, run_dir
from hiva_lib.engine.train import run_variant
from hiva_lib.progress import progress

Job = tuple[int, int, str]  # (seed, fold, variant slug)
KINDS = ("reuse", "resume", "train", "queued")


def stage_of(slug: str) -> int:
    """The stage whose finished run makes ``slug``'s run finished (Baseline: stage 1)."""
    return 2 if 2 in variants.VARIANTS[slug].stages else 1


def job_config(base_cfg: TrainConfig, job: Job) -> TrainConfig:
    seed, fold, slug = job
    return dataclasses.replace(base_cfg, seed=seed, fold=fold, variant=slug)


_DATA: dict[str, PreparedDataset] = {}  # per worker process: its images are decoded once


def run_one(cfg: TrainConfig, stage1_if_exists: str | None,
            data: PreparedDataset | None = None) -> tuple[bool, float]:
    """One run (stage 1 if needed, stage 2, evaluation): (reused?, mean F1)."""
    if data is None:
        key = f"{cfg.data_root}/{cfg.dataset}"
        if key not in _DATA:
            _DATA[key] = load_data(cfg)
        data = _DATA[key]
    res = run_variant(cfg, data, stage1_if_exists=stage1_if_exists)
    return res.skipped, res.metrics["mean_f1"]


def _has_last(cfg: TrainConfig, stage: int) -> bool:
    base = run_dir(cfg, stage)
    return any((v / "last.pt").exists() for v in (base, *base.parent.glob(f"{base.name}-v*")))


def classify(cfg: TrainConfig) -> str:
    """``reuse``, ``resume`` or ``train`` for the run of ``cfg`` (by what runs/ holds)."""
    stage = stage_of(cfg.variant)
    if cfg.if_exists != "version" and finished_run(cfg, stage) is not None:
        return "reuse"
    return "resume" if _has_last(cfg, stage) or _has_last(cfg, 1) else "train"


@dataclass
class Plan:
    """What a call of the grid will do with each run, and the time it should take."""

    kinds: dict[Job, str]
    stage1_to_train: set[tuple[int, int]] = field(default_factory=set)  # (seed, fold)
    seconds: float | None = None
    basis: str = ""

    def jobs(self, kind: str) -> list[Job]:
        return [j for j, k in self.kinds.items() if k == kind]

    def counts(self) -> dict[str, int]:
        return {k: len(self.jobs(k)) for k in KINDS}


def make_plan(jobs: list[Job], base_cfg: TrainConfig, queued: set[Job] = frozenset()) -> Plan:
    """Classify every run; a (seed, fold) whose stage 1 is not finished trains it once."""
    kinds, stage1 = {}, set()
    for job in jobs:
        cfg = job_config(base_cfg, job)
        kinds[job] = "queued" if job in queued else classify(cfg)
        needs_stage1 = cfg.if_exists == "version" or finished_run(cfg, 1) is None
        if kinds[job] in ("resume", "train") and needs_stage1:
            stage1.add(job[:2])
    return Plan(kinds, stage1)


def recorded_seconds(history: pd.DataFrame) -> tuple[float | None, float | None, int]:
    """Median seconds of earlier finished runs: (Baseline = stage 1, a stage-2 variant, n)."""
    done = history[(history["status"] == "done") & history["seconds"].notna()]
    base = done[done["variant"] == "baseline"]["seconds"]
    other = done[done["variant"] != "baseline"]["seconds"]
    med = [float(s.median()) if len(s) else None for s in (base, other)]
    return med[0], med[1], len(done)


def estimate(plan: Plan, history: pd.DataFrame, at_once: int) -> Plan:
    """``plan`` with its estimated wall time: the median recorded time of a stage-1 run
    (the Baseline's) per stage 1 to train and of a stage-2 run per stage-2 run, divided by
    the runs at once. Without recorded runs there is no estimate (the bar's ETA follows)."""
    s1, s2, n = recorded_seconds(history)
    if n == 0:
        plan.basis = ("no estimate yet: no finished run of this data set is recorded in "
                      "ablation_status.csv; the progress bar's ETA follows the first runs")
        return plan
    s1 = s1 if s1 is not None else s2
    s2 = s2 if s2 is not None else s1
    todo = plan.jobs("train") + plan.jobs("resume")
    stage2 = sum(stage_of(slug) == 2 for _, _, slug in todo)
    plan.seconds = (len(plan.stage1_to_train) * s1 + stage2 * s2) / max(1, at_once)
    plan.basis = (f"from {n} earlier runs in ablation_status.csv (median {s1:.0f} s per "
                  f"stage-1 run, {s2:.0f} s per stage-2 run, on the machine that ran them), "
                  f"{at_once} at once")
    return plan


def _duration(seconds: float) -> str:
    minutes = seconds / 60
    return f"{minutes:.0f} min" if minutes < 90 else f"{minutes / 60:.1f} h"


def describe(plan: Plan, where: str) -> str:
    """The plan in a few lines, printed before the first run."""
    c = plan.counts()
    lines = [f"Plan: {len(plan.kinds)} runs {where}: {c['train']} to train, {c['resume']} to "
             f"resume from last.pt, {c['reuse']} finished (reused, nothing trained)"
             + (f", {c['queued']} still queued or running on the cluster" if c["queued"]
                else "") + f"; {len(plan.stage1_to_train)} stage-1 run(s) among them."]
    if plan.seconds is not None:
        lines.append(f"Estimated time: about {_duration(plan.seconds)} ({plan.basis}).")
    elif c["train"] + c["resume"]:
        lines.append(f"Estimated time: {plan.basis}.")
    return "\n".join(lines)


def progress_bar(plan: Plan) -> tqdm:
    """A bar over the runs: the reused ones count as done from the start, so the ETA is
    from the rate of the runs actually trained."""
    reused = len(plan.jobs("reuse"))
    return progress(total=len(plan.kinds), initial=reused, desc="runs", unit="run")
