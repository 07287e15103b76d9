"""Did it reproduce? Each number a run produced beside its reference number, the noise band of
that number, and a verdict: the end of ``scripts/run_study.py``, notebook 11, and the same
table for a run on BP4D, DISFA or GFT against the paper's Tables IV-VI.

**The numbers.** One trained run's F1 in points: its mean over the AUs (``AVE``) and each AU's,
per (data set, variant, seed, fold), from ``metrics.json`` (the newest version of each run).

**The noise.** The seed-to-seed sample standard deviation ``sd`` of those numbers, measured by
``scripts/bench_noise.py`` (the newest ``results/bench_noise*.csv``: the fold-1 Baseline on
seeds 0-4, one thread, per data set, for AVE and for each AU). A data set without a
measurement (synth-gft, the real ones) takes the largest measured ``sd`` of that column, and
the table says so.

**The rule.** A run on another thread count or machine differs from the reference at most like
a run on another seed: the difference of two numbers that are means of ``n_new`` and ``n_ref``
runs has the standard deviation ``sd * sqrt(1/n_new + 1/n_ref)``, and a number is *reproduced*
when ``|produced - reference| <= K * sd * sqrt(1/n_new + 1/n_ref)``, ``K = 3``. For one run
against one run that is ``3 * sqrt(2) * sd`` (AVE: 2.34 points on synth-disfa, 2.81 on
synth-bp4d). On one thread, on the machine kind that made the reference, the default training
path is bit-identical: the difference is 0.00 and the verdict is *identical*. On two threads
the same seed moved AVE by +0.12 (synth-bp4d) and -0.54 (synth-disfa) points: inside the band.
A number outside its band *differs*; one without a counterpart has *no reference*, one
without a noise measurement *no noise measured*, and one whose reference run was trained with
other settings (model preset, epochs, learning rates, batch size...: a smoke-size run against
the committed study) *other settings*, not compared (none of these is a failure). The Baseline
(no stage 2) is compared on its stage-1 settings only (:func:`settings_of`): its stage 1 is
shared, so its config names whichever variant trained it.
:func:`exit_status` is 1 when any number differs.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from hiva_lib.engine import runs as layout
from hiva_lib.integrity import latest_versions, newest_version

K = 3.0  # band half-width in standard deviations of the difference
IDENTICAL = 0.005  # F1 points: equal to the two decimals shown
KEYS = ["dataset", "variant", "seed", "fold", "column"]
VERDICTS = ("identical", "reproduced", "differs", "no reference", "no noise measured",
            "other settings")
# What defines a run's number besides its keys: these config fields must match to compare
SETTINGS = (*layout.SIGNATURE_FIELDS, *layout.STAGE_FIELDS[1], *layout.STAGE_FIELDS[2],
            "model_overrides")
# ... of a vision-only variant (the Baseline: the stage-1 model evaluated as is): its stage-2
# fields, the variant among them, are those of whichever variant trained the shared stage 1
STAGE1_SETTINGS = (*layout.SIGNATURE_FIELDS, *layout.STAGE_FIELDS[1], "model_overrides")


class ReproduceError(FileNotFoundError):
    """The runs or the noise measurement a comparison needs are missing."""


def noise_csv(project: Path | None = None) -> Path:
    """The newest ``results/bench_noise*.csv`` of the project (the committed measurement)."""
    from hiva_lib.project import project_root

    base = (project or project_root()) / "results" / "bench_noise.csv"
    path = newest_version(base)
    if path is None:
        raise ReproduceError(f"{base}: no seed-noise measurement. Measure it: python "
                             "scripts/bench_noise.py --threads 1 --other-threads 2")
    return path


def seed_noise(dataset: str, path: str | Path | None = None) -> tuple[pd.Series, str]:
    """Seed-to-seed sd (F1 points) per column (``AVE``, ``AU1``...) of ``dataset``'s fold-1
    Baseline at one thread, and where it comes from. Without a measurement of ``dataset``,
    each column's largest measured sd (of any data set)."""
    path = Path(path) if path else noise_csv()
    table = pd.read_csv(path)
    table = table[table["threads"] == 1].rename(columns={"mean_f1": "AVE"})
    au = [c for c in table.columns if c.startswith("f1_AU")]
    table = table.rename(columns={c: c.removeprefix("f1_") for c in au})
    cols = ["AVE", *(c.removeprefix("f1_") for c in au)]
    sd = table.groupby("dataset")[cols].std(ddof=1)
    if dataset in sd.index:
        n = int((table["dataset"] == dataset).sum())
        return sd.loc[dataset].dropna(), f"{path.name}: {dataset}, {n} seeds, one thread"
    return sd.max().dropna(), (f"{path.name}: no measurement of {dataset}; the largest "
                               f"measured sd ({', '.join(sd.index)})")


def run_numbers(results_root: str | Path, dataset: str) -> pd.DataFrame:
    """One row per number of every finished run of ``dataset`` under ``results_root``:
    ``KEYS``, ``value`` (F1 points), ``n`` (1 run), ``threads`` (torch threads of the run) and
    ``settings`` (the config fields of ``SETTINGS``, as text)."""
    from hiva_lib.study.report import ReportError, collect_results

    try:
        runs = collect_results(results_root, dataset)
    except ReportError as e:
        raise ReproduceError(str(e)) from None
    au = [c for c in runs.columns if c.startswith("AU") and c[2:].isdigit()]
    records = [_run_record(p) for p in runs["path"]]
    runs = runs.assign(AVE=runs["mean_f1"], threads=[r[0] for r in records],
                       settings=[r[1] for r in records])
    long = runs.melt(id_vars=["dataset", "variant", "seed", "fold", "threads", "settings"],
                     value_vars=["AVE", *au], var_name="column", value_name="value")
    long["value"] = long["value"] * 100.0
    return long.assign(n=1)[[*KEYS, "value", "n", "threads", "settings"]]


def settings_of(variant: str) -> tuple[str, ...]:
    """The config fields that define ``variant``'s numbers: a variant without stage 2 (the
    Baseline) is defined by its stage-1 fields only (its config records the variant, and the
    stage-2 values, of the run that trained the shared stage 1: ``baseline`` in a run of the
    Baseline alone, ``full`` in the study, which trains stage 1 once for both)."""
    from hiva_lib.variants import VARIANTS

    known = VARIANTS.get(variant)
    return STAGE1_SETTINGS if known is not None and 2 not in known.stages else SETTINGS


def _run_record(metrics_path: str) -> tuple[int | None, str]:
    """The torch threads and the settings (:func:`settings_of` its variant) of a run."""
    metrics = json.loads(Path(metrics_path).read_text())
    config = metrics.get("config") or {}
    fields = settings_of(str(metrics.get("variant")))
    settings = json.dumps({k: config.get(k) for k in fields}, sort_keys=True, default=str)
    return (metrics.get("provenance") or {}).get("torch_threads"), settings


def compare_to_reference(produced: pd.DataFrame, reference: pd.DataFrame,
                         sd: float | Mapping[str, float], keys: list[str] | None = None,
                         k: float = K) -> pd.DataFrame:
    """Each produced number beside its reference, the band and the verdict.

    ``produced`` and ``reference`` hold ``keys`` (default: every column but ``value``, ``n``,
    ``threads``, ``settings``), ``value`` (F1 points) and optionally ``n`` (runs averaged;
    default 1) and ``settings`` (numbers of other settings are not compared). ``sd``:
    the noise of one run, one number or one per ``column`` value. Band: ``k * sd *
    sqrt(1/n_new + 1/n_ref)``; verdict by the rule of this module. Any reference table works:
    the committed results (:func:`run_numbers`), the paper's (:func:`paper_numbers`)."""
    extra = {"value", "n", "threads", "settings"}
    keys = keys or [c for c in produced.columns if c not in extra]
    new = produced.assign(n=produced.get("n", 1))
    ref = reference.assign(n=reference.get("n", 1))
    ref = ref[[*keys, "value", "n", *(c for c in ("threads", "settings") if c in ref)]]
    table = new.merge(ref, on=keys, how="left", suffixes=("", "_ref"))
    sds = table["column"].map(sd) if isinstance(sd, Mapping) else pd.Series(sd, table.index)
    table = table.rename(columns={"value": "produced", "value_ref": "reference"})
    table["diff"] = table["produced"] - table["reference"]
    table["band"] = k * sds.astype(float) * (1 / table["n"] + 1 / table["n_ref"]) ** 0.5
    table["verdict"] = [_verdict(d, b) for d, b in zip(table["diff"], table["band"],
                                                      strict=True)]
    if {"settings", "settings_ref"} <= set(table):
        other = table["settings_ref"].notna() & (table["settings"] != table["settings_ref"])
        table.loc[other, "verdict"] = "other settings"
    order = [*keys, *(c for c in ("threads", "threads_ref") if c in table), "produced",
             "reference", "diff", "band", "verdict"]
    return table[order].reset_index(drop=True)


def _verdict(diff: float, band: float) -> str:
    if diff is None or math.isnan(diff):
        return "no reference"
    if abs(diff) < IDENTICAL:
        return "identical"
    if math.isnan(band):
        return "no noise measured"
    return "reproduced" if abs(diff) <= band + 1e-9 else "differs"


def reproduction_table(results_root: str | Path, reference_root: str | Path,
                       datasets: list[str] | None = None,
                       noise: str | Path | None = None) -> pd.DataFrame:
    """Every number of every run under ``results_root`` (of ``datasets``, default all that have
    runs there) beside the same run's number under ``reference_root`` (the committed
    ``results/``), with its band from the measured seed noise and its verdict."""
    datasets = datasets or sorted({p.parents[3].name for p in  # <ds>/<variant>/seed/fold
                                   Path(results_root).glob("*/*/seed*/fold*/metrics.json")})
    parts = []
    for ds in dict.fromkeys(datasets):
        sd, source = seed_noise(ds, noise)
        new = run_numbers(results_root, ds)
        try:
            ref = run_numbers(reference_root, ds)
        except ReproduceError:
            ref = new.iloc[:0]
        parts.append(compare_to_reference(new, ref, sd.to_dict(), KEYS).assign(noise=source))
    if not parts:
        raise ReproduceError(f"{results_root}: no finished runs to compare. Run the study "
                             "first: python scripts/run_study.py")
    return pd.concat(parts, ignore_index=True)


def exit_status(table: pd.DataFrame) -> int:
    """1 when any number differs beyond its band, else 0."""
    return int((table["verdict"] == "differs").any())


def summary(table: pd.DataFrame) -> str:
    """One line: how many numbers, and how many of each verdict."""
    counts = table["verdict"].value_counts()
    parts = [f"{int(counts.get(v, 0))} {v}" for v in VERDICTS if counts.get(v, 0)]
    compared = table["verdict"].isin(["identical", "reproduced", "differs"]).any()
    what = "DIFFERS" if exit_status(table) else "REPRODUCED" if compared else "NOTHING COMPARED"
    return f"{len(table)} numbers: {', '.join(parts)}: {what} (rule: {rule_text()})"


def rule_text(k: float = K) -> str:
    return (f"|produced - reference| <= {k:g} x sd x sqrt(1/n_new + 1/n_ref), sd the measured "
            "seed-to-seed sd of that number")


def format_table(table: pd.DataFrame, columns: tuple[str, ...] = ("AVE",)) -> str:
    """The rows of ``columns`` (default: each run's AVE) and every row that differs, as text
    with two decimals, then :func:`summary`."""
    shown = table[table["column"].isin(columns) | (table["verdict"] == "differs")]
    cols = [c for c in [*KEYS, "threads", "threads_ref", "produced", "reference", "diff",
                        "band", "verdict"] if c in shown]
    text = shown[cols].to_string(index=False, float_format=lambda v: f"{v:.2f}")
    return f"{text}\n{summary(table)}"


# ----------------------------------------------------------------------------- the paper
def summary_numbers(results_root: str | Path, dataset: str) -> pd.DataFrame:
    """Per (variant, column): the mean over runs (seeds x folds) in F1 points and ``n`` runs:
    what the paper's tables report (a mean over folds)."""
    runs = run_numbers(results_root, dataset)
    out = runs.groupby(["variant", "column"], as_index=False).agg(value=("value", "mean"),
                                                                  n=("value", "size"))
    return out


def paper_numbers(dataset: str) -> pd.DataFrame:
    """The paper's ablation table of ``dataset`` (Tables IV-VI) as (variant, column, value):
    one row per variant of ours that the table has (``n`` 1: one value per row)."""
    from hiva_lib.study import paper_tables as PT
    from hiva_lib.variants import TABLE_ROWS

    rows = []
    for slug in TABLE_ROWS:
        try:
            row = PT.paper_row(dataset, slug)
        except PT.PaperTableError:
            continue  # a row this table does not have
        rows += [dict(variant=slug, column=c, value=float(v)) for c, v in row.items()]
    return pd.DataFrame(rows).assign(n=1)


def pooled_seed_sd(results_root: str | Path, dataset: str) -> pd.Series:
    """Per column, the seed-to-seed sd of ``dataset``'s runs pooled over (variant, fold):
    the noise of one run on the user's own data (two seeds or more of some run needed)."""
    runs = run_numbers(results_root, dataset)
    groups = runs.groupby(["variant", "fold", "column"])["value"]
    var, dof = groups.var(ddof=1), groups.size() - 1
    ok = dof > 0
    if not ok.any():
        raise ReproduceError(f"{results_root}/{dataset}: every run has one seed, so the seed "
                             "noise cannot be estimated. Train a second seed (seeds = [0, 1] in "
                             "notebook 04's parameters cell, or papermill notebooks/"
                             "04_ablations.ipynb out.ipynb -p seeds '[0, 1]'), or pass sd.")
    pooled = (var[ok] * dof[ok]).groupby(level="column").sum() / dof[ok].groupby(
        level="column").sum()
    return pooled ** 0.5


def paper_comparison(results_root: str | Path, dataset: str,
                     sd: float | Mapping[str, float] | None = None) -> pd.DataFrame:
    """A run of ``dataset`` (BP4D, DISFA, GFT) against the paper's ablation table, in the same
    format as :func:`reproduction_table`: each row's mean over runs beside the paper's value.
    ``sd``: the noise of one run (default: :func:`pooled_seed_sd` of these runs)."""
    if sd is None:
        sd = pooled_seed_sd(results_root, dataset).to_dict()
    table = compare_to_reference(summary_numbers(results_root, dataset),
                                 paper_numbers(dataset), sd, ["variant", "column"])
    return table.assign(dataset=dataset)


# ----------------------------------------------------------------------------- either
def check(dataset: str, results_root: str | Path, reference_root: str | Path | None = None,
          noise: str | Path | None = None,
          sd: float | Mapping[str, float] | None = None) -> pd.DataFrame:
    """The reproduction table of ``dataset``'s runs under ``results_root``: a real data set
    (bp4d, disfa, gft) against the paper's ablation table (:func:`paper_comparison`, ``sd``
    the noise of one run); SynthFACS against ``reference_root`` (default: the committed
    results/, :func:`reproduction_table`, the noise from ``noise``)."""
    from hiva_lib.data.au import REAL_DATASETS
    from hiva_lib.project import project_root

    if dataset in REAL_DATASETS:
        return paper_comparison(results_root, dataset, sd)
    reference = reference_root or project_root() / "results"
    return reproduction_table(results_root, reference, [dataset], noise)


# ----------------------------------------------------------------------------- the environment
# The libraries whose versions decide the last digits of a run (python too): "identical" holds
# only where they equal the reference's (requirements.lock pins them; scripts/install.sh).
PACKAGES = ("python", "torch", "timm", "transformers", "numpy")


def installed_versions() -> dict[str, str]:
    """The versions of ``PACKAGES`` in this environment, as the provenance records them."""
    import importlib
    import platform

    return {"python": platform.python_version(),
            **{name: importlib.import_module(name).__version__ for name in PACKAGES[1:]}}


def reference_versions(reference_root: str | Path,
                       datasets: list[str] | None = None) -> dict[str, list[str]]:
    """Per package of ``PACKAGES``, the distinct versions recorded in the provenance of the
    reference runs (the newest version of each run of ``datasets``, default all); an empty list
    where no run records it (numpy, in runs before it was recorded)."""
    datasets = datasets or sorted({p.parents[3].name for p in
                                   Path(reference_root).glob("*/*/seed*/fold*/metrics.json")})
    seen: dict[str, set[str]] = {name: set() for name in PACKAGES}
    for ds in dict.fromkeys(datasets):
        for folder in latest_versions(layout.finished_results(reference_root, ds)):
            recorded = json.loads((folder / "metrics.json").read_text()).get("provenance") or {}
            for name in PACKAGES:
                if recorded.get(name):
                    seen[name].add(str(recorded[name]))
    return {name: sorted(v) for name, v in seen.items()}


def environment_table(reference_root: str | Path, datasets: list[str] | None = None,
                      here: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per package: its version ``here`` (default: this environment), the reference
    runs' version(s) and ``same`` (True, False, or None where the reference did not record it)."""
    here = dict(here or installed_versions())
    ref = reference_versions(reference_root, datasets)
    rows = [dict(package=name, here=here.get(name), reference=", ".join(ref[name]) or None,
                 same=(ref[name] == [here.get(name)]) if ref[name] else None)
            for name in PACKAGES]
    return pd.DataFrame(rows)


def environment_text(table: pd.DataFrame) -> str:
    """The versions beside the reference's, and what a difference means for the verdicts."""
    lines = [f"  {r.package:<13} {_text(r.here):<14} reference: {_text(r.reference)}"
             for r in table.itertuples()]
    differ = [r.package for r in table.itertuples() if r.same is False]  # None: not recorded
    if differ:
        verb = "differs" if len(differ) == 1 else "differ"
        end = (f"{', '.join(differ)} {verb} from the reference's: \"identical\" cannot be "
               "expected, only \"reproduced\" within the noise band (the reference's versions: "
               "bash scripts/install.sh, which installs requirements.lock)")
    else:
        end = ("the recorded versions equal the reference's: on one thread, on the machine kind "
               "that made the reference, every number should be \"identical\"")
    return "versions (this environment, the reference runs):\n" + "\n".join(lines) + f"\n{end}"


def _text(version: object) -> str:
    return "not recorded" if version is None or pd.isna(version) else str(version)


def environment_report(dataset: str, reference_root: str | Path | None = None) -> str:
    """:func:`environment_text` of ``dataset``'s reference runs (SynthFACS: the committed
    results/ by default); a real data set's reference is the paper, which records none."""
    from hiva_lib.data.au import REAL_DATASETS
    from hiva_lib.project import project_root

    if dataset in REAL_DATASETS:
        return (f"versions: {dataset} is compared with the paper's tables, whose library "
                "versions are not known: \"identical\" cannot be expected, only \"reproduced\"")
    reference = reference_root or project_root() / "results"
    return environment_text(environment_table(reference, [dataset]))
