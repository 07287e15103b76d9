"""The reproduction check's entry points: the library versions beside the reference's (planted
provenance), and, in the slow tier, ``scripts/run_study.py`` run as a user runs it: the whole
study at smoke size (every notebook, the table, status 0), and notebook 11 plus the check on a
results root planted from the committed runs (one copy as it is: identical; one 10 F1 points
lower: differs, status 1)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hiva_lib.engine import runs as layout
from hiva_lib.study import reproduce as R
from hiva_lib.variants import TABLE_ROWS

ROOT = Path(__file__).resolve().parents[1]
DS = "synth-disfa"
REFERENCE = {"python": "3.11.7", "torch": "2.14.1+cu130", "timm": "1.0.31",
             "transformers": "5.24.0"}  # planted: numpy not recorded, as in older runs


def _plant(root: Path, variant: str, provenance: dict) -> None:
    out = root / DS / variant / "seed0" / "fold1"
    out.mkdir(parents=True)
    (out / "metrics.json").write_text(json.dumps(dict(
        dataset=DS, variant=variant, seed=0, fold=1, f1={"AU1": 0.5}, mean_f1=0.5,
        provenance=provenance)))


def test_versions_beside_the_reference(tmp_path):
    _plant(tmp_path, "baseline", REFERENCE)
    _plant(tmp_path, "full", {**REFERENCE, "transformers": "5.23.0"})  # two versions recorded
    same = R.environment_table(tmp_path, [DS], here={**REFERENCE, "numpy": "2.4.6"})
    t = same.set_index("package")
    assert list(t.index) == list(R.PACKAGES)
    assert t.loc["torch", "same"] is True and t.loc["numpy", "same"] is None
    assert t.loc["transformers", "reference"] == "5.23.0, 5.24.0"
    assert t.loc["transformers", "same"] is False  # a mixed reference equals no one version
    text = R.environment_text(same)
    assert "numpy         2.4.6          reference: not recorded" in text
    assert "transformers differs" in text and '"identical" cannot be expected' in text

    only = tmp_path / "one"
    _plant(only, "full", REFERENCE)
    newer = R.environment_text(R.environment_table(
        only, here={**REFERENCE, "timm": "1.0.32", "numpy": "2.4.6"}))
    assert "timm differs" in newer and "transformers" not in newer.splitlines()[-1]
    equal = R.environment_text(R.environment_table(only, here={**REFERENCE, "numpy": "2.4.6"}))
    assert "equal the reference's" in equal and "cannot be expected" not in equal


def test_the_real_data_sets_reference_records_no_versions():
    assert "not known" in R.environment_report("disfa")


def test_this_environment_is_read_as_the_provenance_records_it():
    import numpy
    import torch

    here = R.installed_versions()
    assert here["torch"] == torch.__version__ and here["numpy"] == numpy.__version__


def _pins(path: Path) -> dict[str, str]:
    """name -> version of each ``name==version`` line (markers dropped, names normalised)."""
    pins = {}
    for line in path.read_text().splitlines():
        spec = line.split("#")[0].split(";")[0].strip()
        if "==" in spec:
            name, version = spec.split("==")
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


def test_the_lock_pins_what_made_the_committed_results():
    lock = _pins(ROOT / "requirements.lock")
    recorded = R.reference_versions(ROOT / "results")
    doc = " ".join((ROOT / "docs" / "training.md").read_text().split())
    for name in ("torch", "timm", "transformers"):
        assert len(recorded[name]) == 1, f"the committed results record {recorded[name]}"
        assert lock[name] == recorded[name][0].split("+")[0]  # 2.14.1+cu130: the Linux wheel
        assert f"{name} {lock[name]}" in doc, name
    assert recorded["python"] and all(v.startswith("3.11.") for v in recorded["python"])
    assert "Python 3.11" in (ROOT / "requirements.lock").read_text().splitlines()[0]
    # every package requirements.txt names is pinned, but facenet-pytorch: install.sh installs
    # it without its stale dependencies, which the lock's resolver would otherwise refuse
    wanted = {line.split("#")[0].split(">")[0].split("=")[0].strip().lower()
              for line in (ROOT / "requirements.txt").read_text().splitlines()}
    wanted -= {"", "-e ."}
    assert wanted and not wanted - set(lock), wanted - set(lock)
    assert "facenet-pytorch" not in lock
    assert '"facenet-pytorch==2.6.0"' in (ROOT / "scripts" / "install.sh").read_text()


def _study(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "run_study.py"), *args],
                          cwd=cwd, env=env, capture_output=True, text=True)


def _outputs(nb_path: Path) -> str:
    cells = json.loads(nb_path.read_text())["cells"]
    return "\n".join("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", ""))
                     for c in cells for o in c.get("outputs", []))


@pytest.mark.slow
def test_the_study_command_at_smoke_size(tmp_path):
    done = _study("--smoke", "--root", str(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    executed = tmp_path / "notebooks" / DS
    for name in ["01_prepare_data", "02_train_stage1", "03_train_stage2", "04_ablations",
                 "05_report", "06_figures", "07_efficiency", "08_inference", "09_mechanism",
                 "10_claims", "11_reproduce"]:
        assert f"== {name} done in" in done.stdout, name
        assert (executed / f"{name}.ipynb").exists(), name
    # every run in the table, each of Table V's eight rows among them; none compared (the
    # committed runs were trained with other settings), so the status is 0
    table = done.stdout.split("== reproduction check:")[1]
    runs = layout.latest_versions(layout.finished_results(tmp_path / "results", DS))
    shown = {line.split()[1] for line in table.splitlines() if line.split()[:1] == [DS]}
    assert shown == {folder.parent.parent.name for folder in runs} >= set(TABLE_ROWS)
    n = 9 * len(runs)  # per run: AVE and the 8 AUs of synth-disfa
    assert f"{n} numbers: {n} other settings: NOTHING COMPARED" in table
    for name in R.PACKAGES:  # the versions beside the reference's
        assert any(line.split()[:1] == [name] and "reference: " in line
                   for line in table.splitlines()), name
    assert "other settings" in _outputs(executed / "11_reproduce.ipynb")


def _copy_of_committed(root: Path, variant: str, shift: float) -> dict:
    """The committed fold-1 seed-0 run of ``variant`` filed under ``root``, every per-AU F1
    set to its mean plus ``shift`` (so its mean moves by ``shift``, AUs and mean agreeing);
    returns the committed metrics."""
    ref = layout.latest_versions(layout.newest_fold_results(ROOT / "results", DS, variant, 0, 1))
    metrics = json.loads((ref[0] / "metrics.json").read_text())
    planted = dict(metrics)
    if shift:
        planted["f1"] = {k: metrics["mean_f1"] + shift for k in metrics["f1"]}
        planted["mean_f1"] = metrics["mean_f1"] + shift
    out = root / "results" / DS / variant / "seed0" / "fold1"
    out.mkdir(parents=True)
    (out / "metrics.json").write_text(json.dumps(planted))
    return metrics


@pytest.mark.slow
def test_notebook_11_and_the_check_on_a_planted_difference(tmp_path):
    """The exit status is 1 when a number differs beyond its band; the table says which."""
    _copy_of_committed(tmp_path, "full", 0.0)
    base = _copy_of_committed(tmp_path, "baseline", -0.10)  # 10 points: band 2.34 (AVE)
    done = _study("--root", str(tmp_path), "--only", "11_reproduce")
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    table = done.stdout.split("== reproduction check:")[1]
    rows = {line.split()[1]: line.split() for line in table.splitlines()
            if line.split()[:1] == [DS] and line.split()[4] == "AVE"}
    assert rows["full"][-1] == "identical" and rows["baseline"][-1] == "differs"
    assert float(rows["baseline"][-3]) == pytest.approx(-10.0, abs=0.006)  # the diff column
    assert float(rows["baseline"][-2]) < 10.0  # ... beyond its band
    assert f"{100 * base['mean_f1'] - 10:.2f}" in rows["baseline"]
    assert "DIFFERS" in table and "versions (this environment" in table
    shown = _outputs(tmp_path / "notebooks" / DS / "11_reproduce.ipynb")
    assert "differs" in shown and "DIFFERS" in shown and "reference: 2.14.1" in shown
