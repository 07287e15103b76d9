"""Paper tables, their audit, and the side-by-side report on fake results trees."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from hiva_lib.data.au import au_keys, dataset_aus
from hiva_lib.study import paper_tables as PT
from hiva_lib.study import report as R
from hiva_lib.study import report_render


# ----------------------------------------------------------------------------- tables
def test_tables_load_with_dataset_au_columns():
    for n, info in PT.TABLES.items():
        table = PT.load_table(n)
        assert list(table.columns) == [*au_keys(dataset_aus(info.dataset)), "AVE"]
        assert table.to_numpy().dtype == np.float64
        assert ((table >= 0) & (table <= 100)).all().all()
        assert PT.OURS in table.index
    assert PT.load_table(1).loc["HiVA (Ours)", "AU1"] == 54.3
    assert PT.load_table(4).loc["HiVA (Ours)", "AU1"] == 54.1


def test_dataset_table_mapping():
    assert PT.table_for("bp4d") == (1, 4) == PT.table_for("synth-bp4d")
    assert PT.table_for("disfa") == (2, 5) == PT.table_for("synth-disfa")
    assert PT.table_for("gft") == (3, 6) == PT.table_for("synth-gft")
    with pytest.raises(PT.PaperTableError, match="ck"):
        PT.table_for("ck+")


def test_every_variant_has_a_row_in_every_ablation_table():
    for n in (4, 5, 6):
        rows = set(PT.load_table(n).index)
        for slug in PT.variant_row_names():
            assert PT.row_name(slug, n) in rows, (slug, n)
    assert PT.row_name("baseline", 4) == "VLU"
    assert PT.row_name("baseline", 5) == "Baseline"
    assert PT.paper_row("synth-gft", "wo_cdca")["AVE"] == 59.7
    assert PT.paper_row("disfa", "full", kind="sota")["AVE"] == 67.4


def test_row_names_come_from_the_variants_module():
    from hiva_lib import variants

    assert PT.variant_row_names() == {s: v.row_name for s, v in variants.TABLE_ROWS.items()}
    assert variants.variant_from_row_name("VLU").slug == "baseline"
    assert PT.table_for("synth-disfa") == PT.table_for("disfa") == (2, 5)


def test_malformed_table_names_the_file(tmp_path):
    for info in PT.TABLES.values():
        (tmp_path / info.file).write_text((PT.PAPER_DIR / info.file).read_text())
    path = tmp_path / PT.TABLES[2].file
    path.write_text(path.read_text().replace("60.6", "n/a"))
    with pytest.raises(PT.PaperTableError, match="table2_disfa_sota.csv.*HiVA \\(Ours\\).*AU1"):
        PT.load_table(2, tmp_path)


# ----------------------------------------------------------------------------- audit
def _table(rows: dict[str, list[float]], aus=("AU1", "AU2", "AU4")) -> pd.DataFrame:
    df = pd.DataFrame.from_dict(rows, orient="index", columns=[*aus, "AVE"])
    df.index.name = "method"
    return df


def test_audit_recomputes_means_by_hand():
    audit = PT.audit_tables()
    ave = audit[audit["check"] == "ave_mismatch"].set_index(["table", "method"])
    # hand sums: Table VI "w/o CDCA": 591.0 / 10; Table I SRERL: 754.8 / 12
    assert ave.loc[("VI", "HiVA (w/o CDCA)"), "reference"] == pytest.approx(59.10)
    assert ave.loc[("VI", "HiVA (w/o CDCA)"), "value"] == 59.7
    assert ave.loc[("I", "SRERL [11]"), "reference"] == pytest.approx(62.90)
    # HiVA (Ours) in Table I: 797.7 / 12 = 66.475, printed 66.5: within rounding
    assert ("I", "HiVA (Ours)") not in ave.index


def test_hiva_rows_mean_by_hand():
    # independent arithmetic on the printed HiVA (Ours) rows
    t1 = PT.load_table(1).loc["HiVA (Ours)"]
    assert t1.drop("AVE").sum() == pytest.approx(797.7)
    assert t1.drop("AVE").mean() == pytest.approx(66.475)  # prints as 66.5


def test_audit_findings_on_the_paper():
    audit = PT.audit_tables()
    cross = audit[audit["check"] == "cross_table"]
    got = {(r.table, r.column, r.value, r.reference) for r in cross.itertuples()}
    assert got == {("I", "AU1", 54.3, 54.1), ("III", "AU15", 47.8, 47.7)}
    not_best = audit[audit["check"] == "not_best"]
    assert list(not_best["table"]) == ["II"]
    assert not_best["reference"].iat[0] == 68.2 and "MGRR-Net" in not_best["finding"].iat[0]
    dup = audit[audit["check"] == "duplicate_row"]
    assert list(zip(dup["table"], dup["method"], strict=True)) == [("III", "AAR [35]")]
    # the AlexNet row of Table III has integer AU values: 0.5 + 0.05 tolerance, no finding
    assert not ((audit["table"] == "III") & (audit["check"] == "ave_mismatch")).any()


def test_audit_clean_on_consistent_tables():
    sota = _table({"A": [50.0, 60.0, 70.0, 60.0], "HiVA (Ours)": [55.1, 60.2, 70.3, 61.9]})
    ablation = _table({"HiVA (Ours)": [55.1, 60.2, 70.3, 61.9], "B": [40.0, 41.0, 42.1, 41.0]})
    assert PT.audit_tables({1: sota, 4: ablation}).empty
    assert "No inconsistencies" in PT.audit_markdown(PT.audit_tables({1: sota, 4: ablation}))


def test_audit_finds_planted_inconsistencies():
    tables = PT.load_tables()
    planted = {n: t.copy() for n, t in tables.items()}
    planted[5].loc["Baseline", "AU9"] += 3.0  # AVE now off by 3/8 = 0.375
    planted[2].loc["HiVA (Ours)", "AU26"] = 63.9  # differs from Table V's 63.8 (AVE: +0.0125)
    base = PT.audit_tables(tables)
    new = PT.audit_tables(planted)
    extra = new.merge(base, how="left", indicator=True).query("_merge == 'left_only'")
    assert {(r.check, r.table, r.method) for r in extra.itertuples()} == {
        ("ave_mismatch", "V", "Baseline"), ("cross_table", "II", "HiVA (Ours)")}
    row = extra[extra["check"] == "ave_mismatch"].iloc[0]
    assert row["reference"] == pytest.approx((483.3 + 3.0) / 8)  # hand sum of the row: 483.3


def test_audit_tolerance_is_rounding_aware():
    # 1-decimal values: tolerance 0.1; mean 10.1333 vs AVE 10.2 passes, 10.3 fails
    ok = _table({"m": [10.0, 10.1, 10.3, 10.2]})
    bad = _table({"m": [10.0, 10.1, 10.3, 10.3]})
    assert PT.audit_tables({1: ok}).empty
    assert list(PT.audit_tables({1: bad})["tolerance"]) == [pytest.approx(0.1)]
    # integer AU values (AlexNet style): tolerance 0.55
    ints = _table({"m": [44.0, 46.0, 2.0, 31.1]})
    assert PT.audit_tables({1: ints}).empty  # mean 30.667, off by 0.43


# ----------------------------------------------------------------------------- results
AUS = au_keys(dataset_aus("synth-disfa"))  # AU1 AU2 AU4 AU6 AU9 AU12 AU25 AU26


def _write_run(root, variant, seed, fold, f1, run=None, dataset="synth-disfa"):
    d = root / dataset / variant / f"seed{seed}" / (run or f"fold{fold}")
    d.mkdir(parents=True)
    metrics = dict(dataset=dataset, variant=variant, seed=seed, fold=fold,
                   au_ids=list(dataset_aus(dataset)), f1=dict(zip(AUS, f1, strict=True)),
                   mean_f1=float(np.mean(f1)), n_test=10, config={}, checkpoint="ckpt.pt")
    (d / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def tree(tmp_path):
    full = [0.5, 0.6, 0.7, 0.5, 0.6, 0.7, 0.9, 0.6]  # mean 0.6375
    base = [0.4, 0.5, 0.6, 0.4, 0.5, 0.6, 0.8, 0.5]  # mean 0.5375
    _write_run(tmp_path, "full", 0, 1, full)
    _write_run(tmp_path, "baseline", 0, 1, base)
    return tmp_path


def test_collect_one_row_per_run(tree):
    df = R.collect_results(tree, "synth-disfa")
    assert sorted(df["variant"]) == ["baseline", "full"]
    assert df.set_index("variant").loc["full", "AU25"] == 0.9


def test_summary_matches_hand_computation(tree):
    s = R.summarise(R.collect_results(tree, "synth-disfa")).set_index(["variant", "column"])
    assert s.loc[("full", "AU1"), "mean"] == pytest.approx(50.0)
    assert s.loc[("full", "AVE"), "mean"] == pytest.approx(63.75)
    assert s.loc[("baseline", "AVE"), "mean"] == pytest.approx(53.75)
    assert s.loc[("full", "AVE"), "n"] == 1 and math.isnan(s.loc[("full", "AVE"), "std"])
    assert list(s.loc["full"].index) == [*AUS, "AVE"]


def test_summary_std_over_folds_and_seeds(tree):
    second = [0.7, 0.6, 0.7, 0.5, 0.6, 0.7, 0.9, 0.6]  # AU1 0.7 vs 0.5; mean 0.6625
    _write_run(tree, "full", 1, 1, second)
    s = R.summarise(R.collect_results(tree, "synth-disfa")).set_index(["variant", "column"])
    assert s.loc[("full", "AU1"), "mean"] == pytest.approx(60.0)
    assert s.loc[("full", "AU1"), "std"] == pytest.approx(math.sqrt(2 * 10.0**2))  # ddof=1
    assert s.loc[("full", "AU2"), "std"] == pytest.approx(0.0)
    assert s.loc[("full", "AVE"), "mean"] == pytest.approx(65.0)
    assert s.loc[("full", "AVE"), "std"] == pytest.approx(math.sqrt(2 * 1.25**2))
    assert s.loc[("full", "AVE"), "n_seeds"] == 2


def test_newest_version_of_a_run_wins(tree):
    _write_run(tree, "full", 0, 1, [0.1] * 8, run="fold1-v2")
    df = R.collect_results(tree, "synth-disfa")
    assert len(df) == 2
    assert df.set_index("variant").loc["full", "AU1"] == pytest.approx(0.1)


def test_versions_by_number_and_fold10_apart(tree):
    # v10 is newer than v2 (string order says otherwise); fold10 is not a version of fold1
    _write_run(tree, "full", 0, 1, [0.2] * 8, run="fold1-v2")
    _write_run(tree, "full", 0, 1, [0.3] * 8, run="fold1-v10")
    _write_run(tree, "full", 0, 10, [0.9] * 8)
    _write_run(tree, "full", 0, 1, [0.7] * 8, run="fold1-old")  # not a run folder: ignored
    df = R.collect_results(tree, "synth-disfa")
    full = df[df.variant == "full"].set_index("fold")
    assert sorted(full.index) == [1, 10]
    assert full.loc[1, "run"] == "fold1-v10" and full.loc[1, "AU1"] == pytest.approx(0.3)
    assert full.loc[10, "AU1"] == pytest.approx(0.9)


def test_results_filed_under_another_run_are_refused(tree):
    _write_run(tree, "full", 0, 2, [0.5] * 8, run="fold3")  # fold-2 results in fold3/
    with pytest.raises(R.ReportError, match="fold3/metrics.json: results of full/seed0/fold2"):
        R.collect_results(tree, "synth-disfa")


def test_side_by_side_deltas(tree):
    sbs = R.side_by_side(R.summarise(R.collect_results(tree, "synth-disfa")), "synth-disfa")
    key = sbs.set_index(["table", "paper_row", "column"])
    assert key.loc[("V", "HiVA (Ours)", "AU1"), "paper"] == 60.6
    assert key.loc[("V", "HiVA (Ours)", "AU1"), "delta"] == pytest.approx(50.0 - 60.6)
    assert key.loc[("V", "Baseline", "AVE"), "delta"] == pytest.approx(53.75 - 60.4)
    assert key.loc[("II", "HiVA (Ours)", "AVE"), "delta"] == pytest.approx(63.75 - 67.4)
    # gains over Baseline: ours 10 points on every AU; paper AU1 60.6 - 43.5
    assert key.loc[("V", "HiVA (Ours)", "AU1"), "ours_gain"] == pytest.approx(10.0)
    assert key.loc[("V", "HiVA (Ours)", "AU1"), "paper_gain"] == pytest.approx(17.1)
    assert key.loc[("V", "Baseline", "AVE"), "ours_gain"] == pytest.approx(0.0)
    # the paper's row order: HiVA (Ours) before Baseline in Table V; Table II last
    assert list(dict.fromkeys(zip(sbs["table"], sbs["paper_row"], strict=True))) == [
        ("V", "HiVA (Ours)"), ("V", "Baseline"), ("II", "HiVA (Ours)")]


def _three_folds(root):
    """full and baseline on folds 1-3; full's AVE gains over baseline: +10, +4, -2 points."""
    base = [0.4, 0.5, 0.6, 0.4, 0.5, 0.6, 0.8, 0.5]  # AVE 53.75
    for fold, shift in ((1, 0.10), (2, 0.04), (3, -0.02)):
        _write_run(root, "baseline", 0, fold, base)
        _write_run(root, "full", 0, fold, [v + shift for v in base])
        _write_run(root, "wo_ddca", 0, fold, [v + 0.05 + 0.001 * fold for v in base])


def test_paired_gains_match_hand_computation(tmp_path):
    from scipy import stats as sps

    _three_folds(tmp_path)
    runs = R.collect_results(tmp_path, "synth-disfa")
    g = R.paired_gains(runs).set_index(["variant", "column"])
    # full: gains 10, 4, -2 -> mean 4, std sqrt(((6)^2 + 0 + (-6)^2) / 2) = 6
    t2 = sps.t.ppf(0.975, 2)  # 4.303: the t quantile of 3 pairs
    assert t2 == pytest.approx(4.3027, abs=1e-4)
    full = g.loc[("full", "AVE")]
    assert full["gain"] == pytest.approx(4.0) and full["gain_std"] == pytest.approx(6.0)
    assert full["gain_n"] == 3 and full["method"] == "t"
    assert (full["gain_low"], full["gain_high"]) == pytest.approx(
        (4.0 - t2 * 6.0 / math.sqrt(3), 4.0 + t2 * 6.0 / math.sqrt(3)))
    assert full["resolved"] is not None and not full["resolved"]  # [-10.9, 18.9] holds 0
    # wo_ddca: gains 5.1, 5.2, 5.3 -> mean 5.2, std 0.1: [4.95, 5.45] excludes 0
    assert g.loc[("wo_ddca", "AU1"), "gain"] == pytest.approx(5.2)
    ddca = g.loc[("wo_ddca", "AVE")]
    assert ddca["gain_std"] == pytest.approx(0.1)
    assert ddca["gain_low"] == pytest.approx(5.2 - t2 * 0.1 / math.sqrt(3))
    assert ddca["resolved"]
    boot = R.paired_gains(runs, method="bootstrap").set_index(["variant", "column"])
    assert boot.loc[("wo_ddca", "AVE"), "method"] == "bootstrap"
    # 3 pairs: the bootstrap means lie between the smallest and largest difference
    assert 5.1 - 1e-9 <= boot.loc[("wo_ddca", "AVE"), "gain_low"] < 5.2
    text = R.write_report(tmp_path, "synth-disfa")["report_md"].read_text()
    assert "| HiVA (Ours) | 4.0 | [-10.9, 18.9] | 3 | no (interval holds 0) | 7.0 | yes |" in text
    assert "| HiVA (w/o DDCA) | 5.2 | [5.0, 5.4] | 3 | yes | 3.9 | yes |" in text  # 64.3 - 60.4
    assert "1 of 2 gains are resolved" in text and "t-interval over the pairs" in text


def test_controls_have_their_own_table(tmp_path):
    _three_folds(tmp_path)
    base = [0.4, 0.5, 0.6, 0.4, 0.5, 0.6, 0.8, 0.5]
    for fold, shift in ((1, -0.03), (2, -0.031), (3, -0.029)):
        _write_run(tmp_path, "shuffled_text", 0, fold, [v + shift for v in base])
    runs = R.collect_results(tmp_path, "synth-disfa")
    sbs = R.side_by_side(R.summarise(runs), "synth-disfa", R.paired_gains(runs))
    assert "shuffled_text" not in set(sbs["variant"])  # not a row of the paper
    c = R.controls_table(runs).set_index("variant").loc["shuffled_text"]
    assert c["ave"] == pytest.approx(53.75 - 3.0) and c["runs"] == 3
    assert c["gain_vs_baseline"] == pytest.approx(-3.0) and c["high_vs_baseline"] < 0
    assert bool(c["resolved_vs_baseline"])
    # vs full: -3 - (10, 4, -2) = -13, -7, -1: mean -7, interval holds 0
    assert c["gain_vs_full"] == pytest.approx(-7.0) and not bool(c["resolved_vs_full"])
    files = R.write_report(tmp_path, "synth-disfa")
    text = files["report_md"].read_text()
    assert "## Controls" in text and "Control: shuffled descriptions" in text
    assert pd.read_csv(files["controls"])["variant"].tolist() == ["shuffled_text"]


def test_paired_gains_pair_by_run(tmp_path):
    _three_folds(tmp_path)
    _write_run(tmp_path, "full", 0, 4, [0.9] * 8)  # no Baseline on fold 4: not paired
    g = R.paired_gains(R.collect_results(tmp_path, "synth-disfa")).set_index(
        ["variant", "column"])
    assert g.loc[("full", "AVE"), "gain_n"] == 3
    assert g.loc[("full", "AVE"), "gain"] == pytest.approx(4.0)


def test_write_report_files(tree):
    out = tree / "synth-disfa" / "report"
    files = R.write_report(tree, "synth-disfa", out)
    for path in files.values():
        assert path.exists() and path.stat().st_size > 0, path
    text = files["report_md"].read_text()
    assert "| HiVA (Ours) | 50.0 | 60.0 |" in text  # ours, 1 run: no std
    assert "| Baseline | -3.5 |" in text  # delta table: AU1 40.0 - 43.5
    # AVE gains 63.75-53.75 and 67.4-60.4; one run: no interval, so not resolved
    assert "| HiVA (Ours) | 10.0 |  | 1 | n/a (< 3 pairs) | 7.0 | yes |" in text
    assert "no gain is resolved" in text
    assert "MGRR-Net" in files["audit_md"].read_text()
    assert files["deltas_png"].read_bytes()[:4] == b"\x89PNG"
    assert files["deltas_pdf"].read_bytes()[:4] == b"%PDF"
    # the report folder is not mistaken for a variant on the next run
    assert len(R.collect_results(tree, "synth-disfa")) == 2


def test_failed_rendering_writes_nothing(tree, monkeypatch):
    out = tree / "synth-disfa" / "report"

    def broken(fig, fmt):
        raise RuntimeError("no space left on device")

    monkeypatch.setattr(report_render, "_figure_bytes", broken)
    with pytest.raises(RuntimeError, match="no space"):
        R.write_report(tree, "synth-disfa", out)
    assert not out.exists()
    assert not list((tree / "synth-disfa").glob(".report.tmp-*"))  # no leftovers


def test_failed_write_leaves_the_previous_report(tree, monkeypatch):
    out = tree / "synth-disfa" / "report"
    R.write_report(tree, "synth-disfa", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    _write_run(tree, "full", 1, 1, [0.9] * 8)  # new results: a different report
    real = Path.write_bytes

    def failing(self, data):
        if self.name == "deltas.pdf":  # the last file of the report
            raise OSError("disk full")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", failing)
    with pytest.raises(OSError, match="disk full"):
        R.write_report(tree, "synth-disfa", out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_missing_results_say_which_notebook(tmp_path):
    with pytest.raises(R.ReportError, match="04_ablations.ipynb") as err:
        R.write_report(tmp_path, "synth-gft")
    assert "synth-gft" in str(err.value)
    assert not (tmp_path / "synth-gft").exists()


def test_results_of_another_dataset_are_refused(tmp_path):
    _write_run(tmp_path, "full", 0, 1, [0.5] * 8)
    (tmp_path / "synth-disfa").rename(tmp_path / "synth-bp4d")
    with pytest.raises(R.ReportError, match="filed under synth-bp4d"):
        R.collect_results(tmp_path, "synth-bp4d")


def test_malformed_metrics_names_the_file(tree):
    path = tree / "synth-disfa" / "full" / "seed0" / "fold1" / "metrics.json"
    path.write_text('{"dataset": "synth-disfa", "variant": "full"')
    with pytest.raises(R.ReportError, match="full/seed0/fold1/metrics.json: malformed"):
        R.collect_results(tree, "synth-disfa")


# ----------------------------------------------------------------------------- ablation status
@pytest.fixture
def fake_ablation(tmp_path, monkeypatch):
    """run_ablation with a stand-in for run_variant: finished runs are reused, as the engine
    does; the runs named in ``fail_once`` raise the first time. Records every call."""
    from hiva_lib.engine import ablation as A
    from hiva_lib.engine import grid

    state = SimpleNamespace(finished=set(), fail_once=set(), calls=[],
                            path=tmp_path / "synth-disfa" / "ablation_status.csv")

    def run_variant(cfg, data, stage1_if_exists=None):
        key = (cfg.variant, cfg.seed, cfg.fold)
        # the status is on disk before each run: this one "started", earlier ones final
        seen = pd.read_csv(state.path).set_index(["variant", "seed", "fold"])
        assert seen.loc[key, "status"] == "started"
        state.calls.append(key)
        if key in state.fail_once:
            state.fail_once.discard(key)
            raise RuntimeError("CUDA out of memory")
        skipped = key in state.finished
        state.finished.add(key)
        return SimpleNamespace(skipped=skipped, metrics={"mean_f1": 0.5})

    monkeypatch.setattr(grid, "run_variant", run_variant)  # what each run of the grid calls
    monkeypatch.setattr(A, "load_data", lambda cfg: SimpleNamespace(test_folds=[1, 2, 3]))
    monkeypatch.setattr(A, "aggregate_folds", lambda *args: None)
    state.run = lambda folds: A.run_ablation("synth-disfa", ["full", "wo_ddca"], folds,
                                             smoke=True, workers=1, results_root=str(tmp_path))
    return state


def _statuses(path) -> dict:
    table = pd.read_csv(path)
    return {(r.variant, r.fold): r.status for r in table.itertuples()}


def test_ablation_records_a_failure_and_reruns_only_it(fake_ablation):
    s = fake_ablation
    s.fail_once = {("wo_ddca", 0, 2)}
    with pytest.raises(RuntimeError, match="1 ablation runs failed") as err:
        s.run([1, 2])
    assert "CUDA out of memory" in str(err.value)
    assert _statuses(s.path) == {("full", 1): "done", ("wo_ddca", 1): "done",
                                 ("full", 2): "done", ("wo_ddca", 2): "failed"}
    errors = pd.read_csv(s.path).set_index(["variant", "fold"])["error"]
    assert "CUDA out of memory" in errors[("wo_ddca", 2)]

    table = s.run([2])  # one fold again: the failed run reruns, the finished one is reused
    assert dict(zip(table.variant, table.status, strict=True)) == {"full": "reused",
                                                                   "wo_ddca": "done"}
    # fold 1's rows are kept: the file is merged, not replaced by this call's rows; the
    # reused run keeps its "done" row
    assert _statuses(s.path) == {("full", 1): "done", ("wo_ddca", 1): "done",
                                 ("full", 2): "done", ("wo_ddca", 2): "done"}
    assert s.calls == [("full", 0, 1), ("wo_ddca", 0, 1), ("full", 0, 2), ("wo_ddca", 0, 2),
                       ("full", 0, 2), ("wo_ddca", 0, 2)]


def test_ablation_status_of_a_killed_run_stays_started(fake_ablation):
    s = fake_ablation

    def killed(cfg, data, stage1_if_exists=None):
        raise KeyboardInterrupt  # the kernel is interrupted: nothing after this line runs

    from hiva_lib.engine import grid

    grid.run_variant = killed  # monkeypatch (fixture) restores it
    with pytest.raises(KeyboardInterrupt):
        s.run([1])
    assert _statuses(s.path) == {("full", 1): "started"}


def test_unreadable_status_file_stops_before_any_run(fake_ablation):
    from hiva_lib.engine.status import AblationStatusError

    s = fake_ablation
    s.path.parent.mkdir(parents=True)
    s.path.write_text("name,when\nx,y\n")
    with pytest.raises(AblationStatusError, match="ablation_status.csv: unreadable.*delete it"):
        s.run([1])
    assert s.calls == [] and s.path.read_text() == "name,when\nx,y\n"
