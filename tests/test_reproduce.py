"""The reproduction check (hiva_lib.study.reproduce) on planted runs and a planted noise
measurement: bands and verdicts against hand computations."""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pandas as pd
import pytest

from hiva_lib.data.au import au_keys, dataset_aus
from hiva_lib.study import reproduce as R

DS = "synth-disfa"
KEYS = au_keys(dataset_aus(DS))
SEEDS_AVE = [72.0, 73.0, 71.5, 72.5, 74.0]  # planted fold-1 Baseline, one thread
SEEDS_AU1 = [80.0, 84.0, 82.0, 81.0, 83.0]


def _noise_csv(tmp_path: Path) -> Path:
    rows = [dict(dataset=DS, fold=1, seed=s, threads=1, mean_f1=a, f1_AU1=b)
            for s, (a, b) in enumerate(zip(SEEDS_AVE, SEEDS_AU1, strict=True))]
    rows.append(dict(dataset=DS, fold=1, seed=0, threads=2, mean_f1=60.0, f1_AU1=10.0))
    rows.append(dict(dataset="synth-bp4d", fold=1, seed=0, threads=1, mean_f1=1.0, f1_AU1=1.0))
    rows.append(dict(dataset="synth-bp4d", fold=1, seed=1, threads=1, mean_f1=5.0, f1_AU1=2.0))
    path = tmp_path / "bench_noise.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _run(root: Path, variant: str, seed: int, fold: int, f1: float, threads: int = 1,
         preset: str = "cpu-lite0", config: dict | None = None) -> None:
    """A finished run whose every AU scores ``f1`` (fraction), AVE too; ``config``: more
    fields of the config it records."""
    out = root / DS / variant / f"seed{seed}" / f"fold{fold}"
    out.mkdir(parents=True)
    ids = [int(a) for a in dataset_aus(DS)]
    (out / "metrics.json").write_text(json.dumps(dict(
        dataset=DS, variant=variant, seed=seed, fold=fold, au_ids=ids,
        f1={k: f1 for k in KEYS}, mean_f1=f1, n_test=10, checkpoint=None,
        data_fingerprint="abc", provenance={"torch_threads": threads},
        config={"model_preset": preset, "epochs_stage1": 4, **(config or {})})))


def test_seed_noise_is_the_sample_sd_at_one_thread(tmp_path):
    sd, source = R.seed_noise(DS, _noise_csv(tmp_path))
    assert sd["AVE"] == pytest.approx(statistics.stdev(SEEDS_AVE))
    assert sd["AU1"] == pytest.approx(statistics.stdev(SEEDS_AU1))  # the 2-thread row left out
    assert "5 seeds" in source
    other, source = R.seed_noise("synth-gft", _noise_csv(tmp_path))  # not measured: the largest
    assert other["AVE"] == pytest.approx(statistics.stdev([1.0, 5.0]))
    assert other["AU1"] == pytest.approx(statistics.stdev(SEEDS_AU1))
    assert "no measurement of synth-gft" in source


def test_verdicts_against_hand_computed_bands():
    sd = 0.5
    band = 3 * sd * math.sqrt(2)  # one run against one run: 2.12
    ref = pd.DataFrame(dict(variant=["a", "b", "c", "d"], column="AVE",
                            value=[70.0, 70.0, 70.0, 70.0]))
    new = pd.DataFrame(dict(variant=["a", "b", "c", "d", "e"], column="AVE",
                            value=[70.001, 70.0 + band - 0.01, 70.0 - band - 0.01, 71.0, 60.0]))
    t = R.compare_to_reference(new, ref, sd, ["variant", "column"]).set_index("variant")
    assert t["band"].iloc[0] == pytest.approx(band)
    assert list(t["verdict"]) == ["identical", "reproduced", "differs", "reproduced",
                                  "no reference"]
    assert R.exit_status(t) == 1 and R.exit_status(t.drop(index="c")) == 0
    # means of several runs: the band narrows as sqrt(1/n_new + 1/n_ref)
    four = R.compare_to_reference(new.assign(n=4), ref.assign(n=1), {"AVE": sd},
                                  ["variant", "column"])
    assert four["band"].iloc[0] == pytest.approx(3 * sd * math.sqrt(1 / 4 + 1))


def test_reproduction_table_of_planted_roots(tmp_path):
    noise = _noise_csv(tmp_path)
    sd = statistics.stdev(SEEDS_AVE)
    new, ref = tmp_path / "new", tmp_path / "ref"
    _run(ref, "baseline", 0, 1, 0.7200)
    _run(ref, "full", 0, 1, 0.7100)
    _run(new, "baseline", 0, 1, 0.7200)  # the same: identical
    _run(new, "full", 0, 1, 0.7100 + 3.5 * sd / 100, threads=2)  # 3.5 sd: inside 4.24 sd
    t = R.reproduction_table(new, ref, noise=noise)
    ave = t[t.column == "AVE"].set_index("variant")
    assert ave.loc["baseline", "verdict"] == "identical"
    assert ave.loc["full", "verdict"] == "reproduced"
    assert ave.loc["full", "band"] == pytest.approx(3 * math.sqrt(2) * sd)
    assert ave.loc["full", "threads"] == 2 and ave.loc["full", "threads_ref"] == 1
    assert R.exit_status(t) == 0 and "REPRODUCED" in R.summary(t)
    _run(new, "wo_ddca", 0, 1, 0.5)  # not in the reference: no verdict against it
    _run(ref, "wo_ddca", 0, 1, 0.5 + 5 * sd / 100)  # ... now 5 sd away: differs
    t = R.reproduction_table(new, ref, noise=noise)
    verdicts = t[t.variant == "wo_ddca"].set_index("column").verdict
    assert verdicts["AVE"] == "differs"  # 5 sd > 4.24 sd
    assert verdicts["AU1"] == "reproduced"  # its own, wider noise: 4.8 points < 6.7
    assert verdicts["AU2"] == "no noise measured"  # no sd planted for AU2: not a failure
    assert R.exit_status(t) == 1 and "DIFFERS" in R.format_table(t)


def test_runs_of_other_settings_are_not_compared(tmp_path):
    """A smoke-size run (another model preset) against the committed study: not a verdict."""
    new, ref = tmp_path / "new", tmp_path / "ref"
    _run(ref, "full", 0, 1, 0.71)
    _run(new, "full", 0, 1, 0.20, preset="test-tiny")
    t = R.reproduction_table(new, ref, noise=_noise_csv(tmp_path))
    assert set(t.verdict) == {"other settings"} and R.exit_status(t) == 0
    assert "NOTHING COMPARED" in R.summary(t)


def test_the_baseline_of_a_fresh_study_is_compared(tmp_path):
    """The committed Baseline was trained by a run of the Baseline (its config: variant
    baseline); the study trains stage 1 once, in the run of HiVA (variant full, with stage-2
    values): the same stage-1 settings, so its numbers are compared. Another stage-1 setting
    is still not."""
    new, ref = tmp_path / "new", tmp_path / "ref"
    stage2 = dict(epochs_stage2=2, lr_stage2=2e-4, lambda_diff=0.01)
    _run(ref, "baseline", 0, 1, 0.72, config=dict(variant="baseline", lr_stage1=5e-4))
    _run(new, "baseline", 0, 1, 0.72, config=dict(variant="full", lr_stage1=5e-4, **stage2))
    _run(ref, "full", 0, 1, 0.71, config=dict(variant="full", lr_stage1=5e-4, **stage2))
    _run(new, "full", 0, 1, 0.71, config=dict(variant="full", lr_stage1=5e-4, **stage2))
    t = R.reproduction_table(new, ref, noise=_noise_csv(tmp_path))
    assert set(t.verdict) == {"identical"} and set(t.variant) == {"baseline", "full"}
    _run(ref, "baseline", 1, 1, 0.72, config=dict(variant="baseline", lr_stage1=5e-4))
    _run(new, "baseline", 1, 1, 0.72, config=dict(variant="full", lr_stage1=1e-3, **stage2))
    t = R.reproduction_table(new, ref, noise=_noise_csv(tmp_path))
    assert set(t[t.seed == 1].verdict) == {"other settings"}
    # a stage-2 variant still compares its stage-2 settings
    _run(ref, "wo_ddca", 0, 1, 0.70, config=dict(variant="wo_ddca", lr_stage1=5e-4, **stage2))
    _run(new, "wo_ddca", 0, 1, 0.70,
         config=dict(variant="wo_ddca", lr_stage1=5e-4, **{**stage2, "lr_stage2": 1e-3}))
    t = R.reproduction_table(new, ref, noise=_noise_csv(tmp_path))
    assert set(t[t.variant == "wo_ddca"].verdict) == {"other settings"}


def test_paper_comparison_takes_the_pooled_seed_sd(tmp_path):
    root = tmp_path / "runs"
    for seed, f1 in enumerate([0.60, 0.64]):
        _run(root, "full", seed, 1, f1)
    for seed, f1 in enumerate([0.50, 0.51]):
        _run(root, "full", seed, 2, f1)
    pooled = R.pooled_seed_sd(root, DS)["AVE"]
    hand = math.sqrt((statistics.variance([60, 64]) + statistics.variance([50, 51])) / 2)
    assert pooled == pytest.approx(hand)
    t = R.paper_comparison(root, DS).set_index("column")
    paper = R.paper_numbers(DS)
    hiva = paper[(paper.variant == "full") & (paper.column == "AVE")].value.item()
    assert t.loc["AVE", "reference"] == pytest.approx(hiva)
    assert t.loc["AVE", "produced"] == pytest.approx((60 + 64 + 50 + 51) / 4)
    assert t.loc["AVE", "band"] == pytest.approx(3 * hand * math.sqrt(1 / 4 + 1))
    with pytest.raises(R.ReproduceError, match="one seed"):
        one = tmp_path / "one"
        _run(one, "full", 0, 1, 0.6)
        R.pooled_seed_sd(one, DS)
