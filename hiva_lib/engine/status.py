"""The status of an ablation grid's runs: ``results/<dataset>/ablation_status.csv``.

One row per (variant, seed, fold), written as a run changes state: ``started`` before a run
that trains, then ``done``, ``reused`` or ``failed``; on a cluster ``submitted`` / ``running``
with the job's id, state and log. The rows of earlier calls are kept and merged. Both
executors record through the same rows and :class:`RunRecorder` (:mod:`.ablation` on this
machine, :mod:`.cluster` as jobs).
"""
from __future__ import annotations

import dataclasses
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from hiva_lib import variants
from hiva_lib.engine.grid import Job, Plan
from hiva_lib.integrity import atomic_write_text

STATUS_KEY = ["variant", "seed", "fold"]
STATUS_COLUMNS = ["variant", "row_name", "fold", "seed", "status", "mean_f1", "error",
                  "seconds", "updated", "executor", "job_id", "job_state", "log"]
FINISHED = ("done", "reused")


class AblationStatusError(ValueError):
    """An existing ablation_status.csv cannot be read or merged."""


def read_status(path: Path) -> pd.DataFrame:
    """The status table of earlier calls (empty if none), or one error naming the file."""
    if not path.exists():
        return pd.DataFrame(columns=STATUS_COLUMNS)
    try:
        table = pd.read_csv(path, keep_default_na=False, na_values=[""],
                            dtype={"job_id": str})  # SLURM's 123_4, a local pid: text
        missing = [c for c in [*STATUS_KEY, "status"] if c not in table.columns]
        if missing:
            raise ValueError(f"columns {missing} missing")
        table[["seed", "fold"]] = table[["seed", "fold"]].astype(int)
    except (ValueError, pd.errors.ParserError) as e:
        raise AblationStatusError(
            f"{path}: unreadable ablation status table ({e}). It only records earlier runs "
            "(the runs themselves are in runs/ and results/): move it away or delete it and "
            "call again.") from None
    return table.reindex(columns=STATUS_COLUMNS)


def merge_status(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """``old`` with the rows of ``new`` added or replacing those of the same (variant, seed,
    fold), sorted by seed, fold and variant."""
    both = pd.concat([old, new.reindex(columns=STATUS_COLUMNS)], ignore_index=True)
    both = both.drop_duplicates(STATUS_KEY, keep="last")
    return both.sort_values(["seed", "fold", "variant"], kind="stable").reset_index(drop=True)


@dataclass
class StatusFile:
    """``ablation_status.csv``: every run recorded for a data set, rewritten at each change."""

    path: Path
    table: pd.DataFrame
    before: pd.DataFrame  # as it was when this call opened it

    @classmethod
    def open(cls, path: Path) -> StatusFile:
        table = read_status(path)  # a bad file stops us before any run
        return cls(path, table, table.copy())

    def record(self, row: dict) -> None:
        self.table = merge_status(self.table, pd.DataFrame([row]))
        atomic_write_text(self.table.to_csv(index=False), self.path)

    def earlier(self, job: Job) -> dict | None:
        """The row of ``job`` (seed, fold, slug) as this call found it, or None."""
        seed, fold, slug = job
        t = self.before
        hit = t[(t.variant == slug) & (t.seed == seed) & (t.fold == fold)]
        return hit.iloc[-1].to_dict() if len(hit) else None

    def finish(self, job: Job, row: dict) -> None:
        """Record a run's outcome; a reused run whose row already said it finished keeps
        that row, and the file is not rewritten for it (unless this call wrote ``started``
        over the row: then the row is put back as it was)."""
        old = self.earlier(job)
        if row["status"] == "reused" and old is not None and old["status"] in FINISHED:
            seed, fold, slug = job
            t = self.table
            now = t[(t.variant == slug) & (t.seed == seed) & (t.fold == fold)]
            if now.iloc[-1]["status"] != old["status"]:
                self.record(old)
            return
        self.record(row)


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def started_row(job: Job, status: str = "started", executor: str = "local") -> dict:
    seed, fold, slug = job
    return dict(variant=slug, row_name=variants.VARIANTS[slug].row_name, fold=fold, seed=seed,
                status=status, mean_f1=float("nan"), error="", seconds=float("nan"),
                updated=_now(), executor=executor)


def finished_row(row: dict, t0: float, result: tuple[bool, float] | None,
                 error: BaseException | str | None) -> dict:
    """``row`` updated with the outcome: (reused?, mean F1) or the error."""
    if error is None:
        row = {**row, "status": "reused" if result[0] else "done", "mean_f1": result[1]}
    else:  # a worker's error carries its traceback as the cause
        if isinstance(error, BaseException):
            traceback.print_exception(error)
        row = {**row, "status": "failed",
               "error": error if isinstance(error, str) else repr(error)}
    row.update(seconds=round(time.time() - t0, 1), updated=_now())
    tqdm.write(f"[{row['status']}] {row['row_name']}, fold {row['fold']}, seed {row['seed']}: "
               f"mean F1 {row['mean_f1']:.3f} ({row['seconds']} s)", file=sys.stdout)
    return row


@dataclass
class RunRecorder:
    """The status file, the plan and the progress bar of one call, updated together."""

    status: StatusFile
    plan: Plan
    bar: object = None
    rows: list = dataclasses.field(default_factory=list)

    def begin(self, job: Job) -> tuple[dict, float]:
        """The run's ``started`` row, written unless the plan reuses a finished run (a kernel
        killed during a run that trains leaves "started")."""
        row = started_row(job)
        if self.plan.kinds.get(job) != "reuse":
            self.status.record(row)
        return row, time.time()

    def end(self, job: Job, row: dict, t0: float, result: tuple[bool, float] | None,
            error: BaseException | str | None) -> dict:
        row = finished_row(row, t0, result, error)
        self.status.finish(job, row)
        self.rows.append(row)
        if self.bar is not None and self.plan.kinds.get(job) != "reuse":
            self.bar.update(1)
        return row
