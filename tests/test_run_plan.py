"""The run plan (scripts/plan_runs.py --runs) on planted results: what is needed, what is
done, and the estimated time by hand."""
from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from hiva_lib import variants
from hiva_lib.study import run_plan as P


def _result(root, ds, variant, seed, fold, fingerprint="v1"):
    run = root / ds / variant / f"seed{seed}" / f"fold{fold}"
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"data_fingerprint": fingerprint}))


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "results"
    # synth-gft: HiVA and the Baseline on 5 seeds of fold 1, baseline_s2 on seed 0
    for seed in range(5):
        for v in ("baseline", "full"):
            _result(root, "synth-gft", v, seed, 1)
    _result(root, "synth-gft", "baseline_s2", 0, 1)
    _result(root, "synth-gft", "full", 7, 2)  # no Baseline beside it: not a pair
    status = pd.DataFrame(dict(variant=["baseline", "baseline", "full", "full", "full"],
                               status=["done", "done", "done", "reused", "done"],
                               seconds=[100.0, 300.0, 60.0, 1.0, 80.0]))
    (root / "synth-gft").mkdir(parents=True, exist_ok=True)
    status.to_csv(root / "synth-gft" / "ablation_status.csv", index=False)
    return root


def test_groups_pair_the_controls_with_every_hiva_and_baseline_run(results):
    groups = [g for g in P.required_groups(results) if g.dataset == "synth-gft"]
    assert groups[0].variants == ("baseline", "full", "baseline_s2", "no_language")
    assert (groups[0].seeds, groups[0].folds) == ((0, 1, 2), (1, 2, 3))
    # the pairs outside 3 seeds x 3 folds: seeds 3 and 4 of fold 1 (not seed 7, no Baseline)
    assert [(g.variants, g.seeds, g.folds) for g in groups[1:]] == [
        (("baseline_s2", "no_language"), (3, 4), (1,))]
    causal = P.required_groups(results)[-1]
    assert causal.dataset == "synth-bp4d" and causal.folds == (1,)
    cells = set(variants.ldiff_site_weight_cells(0.01).values())
    assert set(causal.variants) == cells | set(variants.CAUSAL)
    assert groups[1].notebook_yaml() == "{variants: [baseline_s2, no_language], seeds: [3, 4], " \
                                        "folds: [1]}"


def test_plan_counts_and_time_by_hand(results):
    table = P.plan_table(results, at_once=2).set_index(["dataset", "seeds", "folds"])
    main = table.loc[("synth-gft", "0 1 2", "1 2 3")]
    # 4 variants x 9 pairs; done: baseline and full of seeds 0-2 fold 1, baseline_s2 seed 0
    assert (main["needed"], main["done"], main["to_train"]) == (36, 7, 29)
    # stage 1 for the 6 pairs of folds 2-3; stage 2: full x 6 + baseline_s2 x 8 + no_language x 9
    assert main["stage1_to_train"] == 6
    s1, s2 = 200.0, 70.0  # medians of the "done" rows
    assert main["minutes"] == pytest.approx((6 * s1 + 23 * s2) / 2 / 60)
    extra = table.loc[("synth-gft", "3 4", "1")]
    assert (extra["to_train"], extra["stage1_to_train"]) == (4, 0)
    assert extra["minutes"] == pytest.approx(4 * s2 / 2 / 60)
    # presets without recorded times have no estimate
    assert math.isnan(table.loc[("synth-disfa", "0 1 2", "1 2 3")]["minutes"])


def test_results_of_another_data_version_are_trained_again(results, tmp_path):
    data = tmp_path / "data" / "synth-gft"
    data.mkdir(parents=True)
    (data / "index.csv").write_text("subject,fold\nS001,1\n")
    (data / "meta.json").write_text("{}")
    assert P.done_runs(results, "synth-gft", tmp_path / "data") == set()
    assert ("full", 0, 1) in P.done_runs(results, "synth-gft")
    table = P.plan_table(results, 2, tmp_path / "data").set_index(["dataset", "seeds", "folds"])
    assert table.loc[("synth-gft", "0 1 2", "1 2 3")]["done"] == 0
    # the old version's seeds 3-4 pairs need no controls: they are not pairs of this version
    assert ("synth-gft", "3 4", "1") not in table.index
    assert [g.seeds for g in P.required_groups(results, tmp_path / "data")
            if g.dataset == "synth-gft"] == [(0, 1, 2)]
