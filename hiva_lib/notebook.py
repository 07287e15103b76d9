"""What the numbered notebooks share beyond their science: their folders, the training
parameters of notebooks 02 and 03, and how a failure reads in JupyterLab.

* :func:`notebook_roots` resolves a notebook's data, runs, results and figures folders from
  its parameters (``smoke`` and the ``*_root`` names; :func:`hiva_lib.project.default_roots`
  decides the defaults, smoke size apart from full size).
* :func:`training_config` is the one ``make_config`` call of notebooks 02 and 03.
* :func:`show_markdown`, :func:`for_people`, :func:`run_status`: files and tables as a reader
  wants them in a notebook (images inline, integers as integers, no empty columns).
* :func:`install_error_handler` (run when a kernel imports hiva_lib) prints an error of the
  project as red lines, the shortest fix first, instead of a traceback (``%tb`` shows it).
"""
from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from hiva_lib.project import ROOT_NAMES, resolve_roots

# The parameters of notebooks 02 and 03 that make_config takes under their own name.
TRAINING_PARAMETERS = ("fold", "seed", "batch_size", "data_root", "runs_root", "results_root",
                       "device", "if_exists", "model_overrides", "num_workers",
                       "grad_accum_steps", "micro_batch", "grad_checkpointing", "compile",
                       "tf32", "cudnn_benchmark")
RED, RESET = "\x1b[31m", "\x1b[0m"
# The parameters each helper reads from the namespace it is given (a notebook's globals()):
# tests/test_notebook_structure.py counts them as used by a notebook that calls the helper.
READS = {"notebook_roots": ("smoke", *ROOT_NAMES),
         "training_config": ("dataset", "smoke", "variant", "epochs", "lr", *ROOT_NAMES,
                             *TRAINING_PARAMETERS),
         "efficiency_settings": ("smoke", "presets", "batch_size", "reps", "cpu_reps",
                                 *ROOT_NAMES),
         "inference_inputs": ("checkpoint", "source", "out_dir", "variant")}


def notebook_roots(params: Mapping[str, object]) -> dict[str, Path]:
    """The four folders of a notebook whose parameters are ``params`` (its ``globals()``):
    each ``*_root`` parameter it sets, the default of its size (``smoke``) for the others."""
    given = {k: params.get(k) for k in ROOT_NAMES}
    return resolve_roots(params.get("smoke") is True, **given)


def training_config(notebook: str, params: Mapping[str, object]):
    """The run of notebook 02 (stage 1) or 03 (stage 2) from its parameters cell: unknown
    parameters refused first, then ``make_config`` with the stage's epochs and learning rate."""
    from hiva_lib.engine.config import make_config
    from hiva_lib.engine.validate import check_notebook_parameters

    check_notebook_parameters(notebook, params)  # papermill only warns of unknown -p
    stage = 1 if notebook.startswith("02") else 2
    roots = notebook_roots(params)
    values = {k: params.get(k) for k in TRAINING_PARAMETERS}
    values.update({k: str(roots[k]) for k in ("data_root", "runs_root", "results_root")},
                  variant=params.get("variant") if stage == 2 else None,
                  **{f"epochs_stage{stage}": params.get("epochs"),
                     f"lr_stage{stage}": params.get("lr")})
    return make_config(params["dataset"], smoke=params.get("smoke", False), **values)


def inference_inputs(study, params: Mapping[str, object]) -> tuple[Path, object, Path]:
    """Notebook 08's checkpoint, source and output folder: each parameter as given, else the
    trained ``variant`` of the study, a few test frames of its data set (the demo) and
    ``<results_root>/<dataset>/inference``."""
    checkpoint = params.get("checkpoint") or study.checkpoint(params["variant"])
    source = params.get("source")
    if source is None:
        _, test_rows = study.data.split(study.cfg.fold)
        source = [study.data.image_path(int(r)) for r in test_rows[:6]]
    out_dir = params.get("out_dir") or Path(study.cfg.results_root) / study.dataset / "inference"
    return Path(checkpoint), source, Path(out_dir)


def efficiency_settings(params: Mapping[str, object]) -> dict:
    """Notebook 07's presets, batch size and repetitions (smoke size: the tiny test preset,
    one repetition) and the table it writes (``<results_root>/efficiency.csv``)."""
    keys = ("presets", "batch_size", "reps", "cpu_reps")
    smoke = params.get("smoke") is True
    values = (dict(presets=["test-tiny"], batch_size=4, reps=1, cpu_reps=1) if smoke
              else {k: params[k] for k in keys})
    return {**values, "out_csv": notebook_roots(params)["results_root"] / "efficiency.csv"}


# ----------------------------------------------------------------------------- showing
def say_written(path: str | Path) -> None:
    """"written to <path>", and when ``path`` is a ``-v2``, ``-v3``... name, that the file of
    the plain name was already there and is kept (nothing is overwritten)."""
    path = Path(path)
    match = re.fullmatch(r"(.+)-v(\d+)", path.stem)
    kept = f" ({match[1]}{path.suffix} was already there and is kept)" if match else ""
    print(f"written to {path}{kept}")


_IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+\.(?:png|jpg|jpeg|svg))\)")


def show_markdown(path: str | Path) -> None:
    """Display a Markdown file with its local images inline: a relative ``![x](x.png)``
    resolves from the notebook's folder in JupyterLab (a broken image), so each is shown
    from the file's own folder instead."""
    from IPython.display import Image, Markdown, display

    path = Path(path)
    parts = _IMAGE.split(path.read_text())
    for i, part in enumerate(parts):
        if i % 2 == 0:
            if part.strip():
                display(Markdown(part))
            continue
        image = path.parent / part
        display(Image(filename=str(image)) if image.exists() else Markdown(f"*{part}: missing*"))


def for_people(table: pd.DataFrame) -> pd.DataFrame:
    """A table as a reader wants it: columns with no value dropped (e.g. a cluster's job
    columns on a local run), whole-number columns (seed, fold, counts) as integers."""
    table = table.dropna(axis=1, how="all").copy()
    for col in table.select_dtypes("float").columns:
        values = table[col].dropna()
        if len(values) and (values == values.round()).all():
            table[col] = table[col].astype("Int64")
    return table


def run_status(status: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A status table (one row per run: ``status`` "measured" or "skipped: why") as the runs
    measured and what is missing, one row per variant with the (seed, fold) pairs it lacks."""
    done = status["status"].eq("measured")
    missing = status[~done].assign(
        run=lambda t: [f"seed {s} fold {f}" for s, f in zip(t["seed"], t["fold"],
                                                                        strict=True)],
        why=lambda t: t["status"].str.removeprefix("skipped: ").str.split(": ", n=1).str[-1])
    missing = missing.groupby("variant", sort=False).agg(
        runs=("run", ", ".join), why=("why", "first")).reset_index()
    return for_people(status[done].drop(columns="status")), missing


# ----------------------------------------------------------------------------- failures
def _smoke_outputs(dataset: object) -> bool:
    """Whether a smoke walkthrough left data or results of ``dataset`` behind."""
    smoke = resolve_roots(True)
    return isinstance(dataset, str) and any(
        (smoke[k] / dataset).exists() for k in ("data_root", "results_root"))


def first_fix(error: BaseException, params: Mapping[str, object]) -> str | None:
    """The shortest fix of a missing input, in a JupyterLab user's terms, when the cause is
    the size: a notebook at full size after a smoke walkthrough (only smoke outputs exist)."""
    from hiva_lib.data.prepared import DatasetError
    from hiva_lib.errors import CheckpointError

    missing = isinstance(error, (FileNotFoundError, CheckpointError, DatasetError))
    if missing and params.get("smoke") is False and _smoke_outputs(params.get("dataset")):
        return ("nothing at full size yet, only the smoke walkthrough's outputs: set smoke = "
                "True in the parameters cell and run all cells again (or run notebooks 01-03 "
                "at their defaults first, about 3 minutes on 2 CPU cores)")
    return None


def _ours(etype: type) -> bool:
    return any(c.__module__.split(".")[0] == "hiva_lib" for c in etype.__mro__)


def error_lines(error: BaseException, params: Mapping[str, object]) -> list[str]:
    """What a cell shows for an error of the project: the fix first, then the message (it
    names the file or parameter, the problem and the fix), red, and where the traceback is."""
    fix = first_fix(error, params)
    lines = [f"{RED}{fix}{RESET}"] if fix else []
    lines.append(f"{RED}{type(error).__name__}: {error}{RESET}")
    lines.append("(the traceback: run %tb in a new cell)")
    return lines


def _handler(shell, etype: type, value: BaseException, tb, tb_offset: int | None = None) -> None:
    if _ours(etype):
        shell._showtraceback(etype, value, error_lines(value, shell.user_ns))
    else:  # not the project's: the usual traceback
        shell.showtraceback((etype, value, tb), tb_offset=tb_offset, running_compiled_code=True)


def install_error_handler() -> bool:
    """Show the project's errors as :func:`error_lines` in this IPython kernel (JupyterLab,
    papermill); other errors keep their traceback. False outside IPython."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython else None
    if shell is None:
        return False
    shell.set_custom_exc((Exception,), _handler)
    return True
