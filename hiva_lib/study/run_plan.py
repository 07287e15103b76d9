"""The runs that the ledger's design needs, what of them the results already hold, and how long
the rest should take (``scripts/plan_runs.py --runs``; ``scripts/regenerate_results.sh`` trains
them with notebook 04).

What is needed (:func:`required_groups`):

* on every preset, the Baseline, HiVA, the matched-training control ``baseline_s2`` and
  ``no_language`` on >= 3 seeds x the 3 subject-disjoint test folds (replication over subjects
  and seeds), and ``baseline_s2`` and ``no_language`` also on every other (seed, fold) pair on
  which both HiVA and the Baseline have results (they pair with them per run; with the
  prepared data given, pairs of its data version only);
* on synth-bp4d, fold 1 x seeds 0-2 (where the lambda sweep's runs are), the causal tests of
  the AU embeddings' collapse: L_diff's site x weight 2 x 2
  (:func:`hiva_lib.variants.ldiff_site_weight_cells`), the stop-gradients from CDCA and DDCA
  into Z and the text branch frozen in stage 2, each with the checkpoint and the saved text
  embeddings that mechanism.csv reads.

A run is done when ``results/<dataset>/<variant>/seed<s>/fold<k>/metrics.json`` exists (any
version) and, when the prepared data is given, records its data version: a result of another
version is trained again, so that every run of a claim is of one data version. The estimate
takes the median recorded times of
``ablation_status.csv`` (:func:`hiva_lib.engine.grid.recorded_seconds`): one stage-2 time per
run to train, and one stage-1 time per (seed, fold) without a Baseline result to use (its
stage 1 is not trained yet).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from hiva_lib import variants
from hiva_lib.data.prepared import data_fingerprint
from hiva_lib.engine.grid import recorded_seconds
from hiva_lib.engine.runs import ablation_status_path, finished_results, fold_of
from hiva_lib.integrity import read_json
from hiva_lib.presets import TRAIN_PRESETS

PRESETS = ("synth-bp4d", "synth-disfa", "synth-gft")
SEEDS = (0, 1, 2)
FOLDS = (1, 2, 3)
PAIRED = ("baseline", "full")  # the runs the controls pair with
CONTROLS = ("baseline_s2", "no_language")
CAUSAL_PRESET, CAUSAL_FOLDS = "synth-bp4d", (1,)
SYNTH_LAMBDA = TRAIN_PRESETS["synth-cpu"]["lambda_diff"]  # the embedded study's lambda


@dataclass(frozen=True)
class RunGroup:
    """Variants x seeds x folds of one preset, and why they are needed."""

    dataset: str
    variants: tuple[str, ...]
    seeds: tuple[int, ...]
    folds: tuple[int, ...]
    why: str

    def jobs(self) -> list[tuple[str, int, int]]:
        return [(v, s, f) for v in self.variants for s in self.seeds for f in self.folds]

    def notebook_yaml(self) -> str:
        """The notebook-04 parameters that train this group (``-y``)."""
        return (f"{{variants: [{', '.join(self.variants)}], seeds: {list(self.seeds)}, "
                f"folds: {list(self.folds)}}}")


def done_runs(results_root: Path, dataset: str, data_root: Path | None = None
              ) -> set[tuple[str, int, int]]:
    """(variant, seed, fold) of every result with metrics.json under ``results_root``; of the
    data version prepared under ``data_root`` only, when that holds ``dataset``."""
    wanted = None
    if data_root is not None and (data_root / dataset / "index.csv").exists():
        wanted = data_fingerprint(data_root / dataset)
    out = set()
    for run in finished_results(results_root, dataset):
        seed = run.parent.name.removeprefix("seed")
        if not seed.isdigit():
            continue
        if wanted is not None and read_json(run / "metrics.json", "").get(
                "data_fingerprint") != wanted:
            continue
        out.add((run.parent.parent.name, int(seed), fold_of(run.name)))
    return out


def _paired(done: set[tuple[str, int, int]]) -> list[tuple[int, int]]:
    """The (seed, fold) pairs on which both HiVA and the Baseline have results."""
    have = [{(s, f) for v, s, f in done if v == slug} for slug in PAIRED]
    return sorted(set.intersection(*have))


def required_groups(results_root: Path, data_root: Path | None = None) -> list[RunGroup]:
    """Every group of runs the design needs (module docstring), given the results: a pair
    HiVA and the Baseline ran on is a pair the controls need (with ``data_root``, a pair of
    its prepared data version only: results of another version are trained again or
    replaced, never paired with)."""
    return _groups(_done_by_preset(results_root, data_root))


def _done_by_preset(results_root: Path, data_root: Path | None
                    ) -> dict[str, set[tuple[str, int, int]]]:
    return {ds: done_runs(results_root, ds, data_root) for ds in PRESETS}


def _groups(done: dict[str, set[tuple[str, int, int]]]) -> list[RunGroup]:
    """:func:`required_groups` from the runs done per preset."""
    groups = []
    for ds in PRESETS:
        groups.append(RunGroup(ds, (*PAIRED, *CONTROLS), SEEDS, FOLDS,
                               "C1, C8, C9 on >= 3 seeds x 3 subject-disjoint folds"))
        extra = sorted(p for p in _paired(done[ds])
                       if p[0] not in SEEDS or p[1] not in FOLDS)
        for fold in sorted({f for _, f in extra}):
            seeds = tuple(s for s, f in extra if f == fold)
            groups.append(RunGroup(ds, CONTROLS, seeds, (fold,),
                                   "paired with every other HiVA / Baseline run"))
    groups.append(RunGroup(CAUSAL_PRESET, variants.causal_tests(SYNTH_LAMBDA), SEEDS, CAUSAL_FOLDS,
                           "causal tests of the collapse, with their mechanism.csv rows"))
    return groups


def _seconds(results_root: Path, dataset: str) -> tuple[float | None, float | None, int]:
    path = ablation_status_path(results_root, dataset)
    if not path.exists():
        return None, None, 0
    return recorded_seconds(pd.read_csv(path))


def plan_table(results_root: Path, at_once: int = 2, data_root: Path | None = None
               ) -> pd.DataFrame:
    """One row per group: runs needed, done (of ``data_root``'s data version when given), to
    train, stage-1 runs to train and the estimated minutes (``at_once`` runs at a time; NaN
    without recorded times)."""
    rows, stage1_counted = [], set()
    done_by_preset = _done_by_preset(results_root, data_root)  # read once: every group uses it
    for g in _groups(done_by_preset):
        done = done_by_preset[g.dataset]
        todo = [j for j in g.jobs() if j not in done]
        # a (seed, fold) without a Baseline result has its shared stage 1 still to train
        stage1 = {(g.dataset, s, f) for v, s, f in todo
                  if ("baseline", s, f) not in done} - stage1_counted
        stage1_counted |= stage1
        s1, s2, n = _seconds(results_root, g.dataset)
        s1 = s1 if s1 is not None else s2
        stage2 = sum(variants.VARIANTS[v].stages != (1,) for v, _, _ in todo)
        seconds = (len(stage1) * s1 + stage2 * s2) / max(1, at_once) if n else float("nan")
        rows.append(dict(dataset=g.dataset, variants=" ".join(g.variants),
                         seeds=" ".join(map(str, g.seeds)), folds=" ".join(map(str, g.folds)),
                         needed=len(g.jobs()), done=len(g.jobs()) - len(todo),
                         to_train=len(todo), stage1_to_train=len(stage1),
                         minutes=seconds / 60, recorded_runs=n, why=g.why,
                         notebook_yaml=g.notebook_yaml()))
    return pd.DataFrame(rows)
