"""Every training parameter checked before anything is written.

``make_config`` (and so notebooks 02-04, scripts/train.py and the ablations) calls
:func:`check_train_values` first: each bad value gets one line that names the parameter, the
value, what is allowed (with a close match for a mistyped name) and the fix, and all lines come
in one :class:`ParameterError`. papermill passes ``-p`` values as Python literals where they
parse (``5`` -> int, ``True`` -> bool) and as strings otherwise, so ``model_overrides`` is also
accepted as the JSON text of a dict (``-p model_overrides '{"dim": 64}'``).
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from hiva_lib import variants
from hiva_lib.data.au import DATASET_AUS, REAL_DATASETS
from hiva_lib.model.config import ModelConfig
from hiva_lib.presets import MODEL_PRESETS, TRAIN_PRESETS
from hiva_lib.project import project_root

# notebook parameter -> TrainConfig field it sets (where the names differ)
NOTEBOOK_ALIASES = {"epochs_stage1": "epochs", "epochs_stage2": "epochs", "lr_stage1": "lr",
                    "lr_stage2": "lr"}
CHOICES = {
    "schedule": ("cosine", "constant"),
    "au_loss_reduction": ("sum", "mean"),
    "if_exists": ("skip", "version", "error"),
}
POSITIVE_INTS = ("epochs_stage1", "epochs_stage2", "batch_size", "grad_accum_steps",
                 "prefetch_factor")
NONNEGATIVE_INTS = ("seed", "checkpoint_every", "log_every")
POSITIVE_FLOATS = ("lr_stage1", "lr_stage2")
NONNEGATIVE_FLOATS = ("lambda_diff", "weight_decay")
BOOLS = ("amp", "save_text_embeddings", "smoke", "grad_checkpointing", "compile", "tf32",
         "cudnn_benchmark")
PATHS = ("data_root", "runs_root", "results_root")
DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


class ParameterError(ValueError):
    """One or more parameters are invalid; nothing has been written."""


# The fixes below read as papermill options; in JupyterLab the same values go into the
# notebook's parameters cell (said once, in the first line of the error).
IN_JUPYTERLAB = ("; in JupyterLab, set the values in the notebook's parameters cell, e.g. "
                 "fold = 1 for -p fold 1")


def suggest(value: object, allowed: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest allowed name, else ''."""
    names = [str(a) for a in allowed]
    close = difflib.get_close_matches(str(value), names, n=1, cutoff=0.6) or [
        a for a in names if str(value) and a.startswith(str(value))][:1]
    return f" (did you mean {close[0]!r}?)" if close else ""


def _flag(name: str) -> str:
    return NOTEBOOK_ALIASES.get(name, name)


def _problem(name: str, value: object, problem: str, fix: str) -> str:
    shown = name if _flag(name) == name else f"{_flag(name)} ({name})"
    return f"{shown}={value!r}: {problem}. {fix}"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def dataset_folds(dataset: str, data_root: str | Path | None) -> list[int]:
    """The test folds of ``dataset``: its prepared meta.json when there, else the protocol's."""
    meta = project_root() / Path(data_root or "") / dataset / "meta.json"
    if data_root is not None and meta.is_file():
        try:
            return [int(f) for f in json.loads(meta.read_text())["test_folds"]]
        except (ValueError, KeyError, TypeError):
            pass  # a broken meta.json gets its own error from load_prepared
    return [1] if dataset == "gft" else [1, 2, 3]  # synth-gft: three test folds


def parse_model_overrides(value: object) -> tuple[dict, list[str]]:
    """``model_overrides`` as a dict (None -> {}, JSON text -> dict), and its problems."""
    fix = ("Give a dict of ModelConfig fields, e.g. -p model_overrides '{\"dim\": 64}' "
           "(or -y 'model_overrides: {dim: 64}')")
    if value is None:
        return {}, []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            return {}, [_problem("model_overrides", value, f"not valid JSON ({e})", fix)]
    if not isinstance(value, Mapping):
        return {}, [_problem("model_overrides", value, "not a dict", fix)]
    names = [f.name for f in dataclasses.fields(ModelConfig)]
    problems = [_problem("model_overrides", dict(value), f"{key!r} is not a ModelConfig field"
                         + suggest(key, names), f"Known fields: {', '.join(names)}")
                for key in value if key not in names]
    return dict(value), problems


# ModelConfig's whole-number fields that may be 0 (the others must be >= 1)
MODEL_NONNEGATIVE_INTS = ("text_trainable_layers", "sampling_seed")
# what a value of each ModelConfig field annotation must be: (test, description)
_MODEL_TYPES = {
    "int": (_is_int, "a whole number"),
    "int | None": (lambda v: v is None or _is_int(v), "None or a whole number"),
    "float": (lambda v: _is_real(v) and math.isfinite(v), "a finite number"),
    "float | None": (lambda v: v is None or _is_real(v) and math.isfinite(v),
                     "None or a finite number"),
    "bool": (lambda v: isinstance(v, bool), "True or False"),
    "bool | str": (lambda v: isinstance(v, bool | str), "True, False or a file path"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "str | None": (lambda v: v is None or isinstance(v, str), "None or a string"),
    "dict": (lambda v: isinstance(v, Mapping), "a dict"),
}


def _override_problem(name: str, kind: str, value: object) -> str | None:
    """The type or range problem of one ModelConfig override, or None."""
    test, described = _MODEL_TYPES.get(kind, (lambda v: v is None or isinstance(v, list | tuple),
                                              "None or a list"))
    if not test(value):
        return f"must be {described}"
    low = 0 if name in MODEL_NONNEGATIVE_INTS else 1
    if kind.startswith("int") and value is not None and value < low:
        return f"must be >= {low}"
    if kind == "float" and value <= 0:
        return "must be > 0"
    return None


def _check_override_values(overrides: dict) -> list[str]:
    kinds = {f.name: f.type for f in dataclasses.fields(ModelConfig)}
    return [_problem(f"model_overrides[{key!r}]", value, problem,
                     "Fix that field (see hiva_lib/model/config.py)")
            for key, value in overrides.items()
            if key in kinds and (problem := _override_problem(key, kinds[key], value))]


def _check_model(values: dict) -> list[str]:
    overrides, problems = parse_model_overrides(values.get("model_overrides"))
    values["model_overrides"] = overrides
    preset = values.get("model_preset")
    problems = problems or _check_override_values(overrides)
    if problems or preset not in MODEL_PRESETS:
        return problems
    try:  # ModelConfig's own checks (choices, graph_k, normalisation...)
        dataclasses.replace(MODEL_PRESETS[preset], **overrides)
    except (TypeError, ValueError) as e:
        problems.append(_problem("model_overrides", overrides, str(e),
                                 "Fix that field (see hiva_lib/model/config.py)"))
    return problems


def _check_field(name: str, value: object) -> str | None:
    """The problem of one TrainConfig value, or None."""
    if name in POSITIVE_INTS and not (_is_int(value) and value >= 1):
        return _problem(name, value, "must be a whole number >= 1", f"Pass e.g. -p {_flag(name)} 5")
    if name in NONNEGATIVE_INTS and not (_is_int(value) and value >= 0):
        return _problem(name, value, "must be a whole number >= 0", f"Pass e.g. -p {_flag(name)} 0")
    if name == "num_workers" and not (value == "auto" or _is_int(value) and value >= 0):
        return _problem(name, value, "must be a whole number >= 0 or 'auto' (the CPU cores "
                        "per rank - 1)", "Pass e.g. -p num_workers 4, or -p num_workers auto")
    if name == "micro_batch" and not (value is None or value == "auto"
                                      or _is_int(value) and value >= 1):
        return _problem(name, value, "must be None (whole batches), a whole number >= 1 (images "
                        "per micro-batch) or 'auto' (the most that fit the free GPU memory)",
                        "Pass e.g. -p micro_batch 32, or -p micro_batch auto")
    if name == "max_steps_per_epoch" and value is not None and not (_is_int(value) and value >= 1):
        return _problem(name, value, "must be None or a whole number >= 1", "Pass None or e.g. 2")
    if name in POSITIVE_FLOATS and not (_is_real(value) and math.isfinite(value) and value > 0):
        return _problem(name, value, "must be a finite number > 0",
                        f"Pass e.g. -p {_flag(name)} 1e-4")
    if name in NONNEGATIVE_FLOATS and not (_is_real(value) and math.isfinite(value)
                                           and value >= 0):
        return _problem(name, value, "must be a finite number >= 0", "Pass e.g. 1e-5")
    if name in BOOLS and not isinstance(value, bool):
        return _problem(name, value, "must be True or False", f"Pass -p {name} True or False")
    if name in PATHS and not isinstance(value, str | os.PathLike):
        return _problem(name, value, "must be a folder path", f"Pass -p {name} /path/to/folder")
    if name == "device" and not (isinstance(value, str) and DEVICE.match(value)):
        return _problem(name, value, "unknown device; allowed: auto, cpu, cuda, cuda:<k>, mps",
                        "Pass -p device auto")
    choices = {**CHOICES, "variant": tuple(variants.VARIANTS),
               "model_preset": tuple(MODEL_PRESETS)}.get(name)
    if choices and value not in choices:
        return _problem(name, value, f"allowed: {', '.join(choices)}{suggest(value, choices)}",
                        f"Pass one of them as {_flag(name)}")
    return None


def check_dataset(dataset: object) -> list[str]:
    names = sorted(DATASET_AUS)
    if isinstance(dataset, str) and dataset in DATASET_AUS:
        return []
    return [_problem("dataset", dataset, f"unknown data set; allowed: {', '.join(names)}"
                     + suggest(dataset, names),
                     "SynthFACS (synth-*) is generated by notebook 01; "
                     f"{', '.join(REAL_DATASETS)} need your licensed copy (docs/data.md)")]


def check_train_values(dataset: object, preset: object, smoke: object, values: dict,
                       fields: list[str]) -> dict:
    """Check the data set, preset, smoke flag and every TrainConfig value of ``values`` (the
    preset's merged with the overrides); ``fields`` are TrainConfig's field names. Returns
    ``values`` with ``model_overrides`` parsed. Raises one :class:`ParameterError` listing
    every problem."""
    problems = check_dataset(dataset)
    if preset not in TRAIN_PRESETS:
        problems.append(_problem("preset", preset, f"allowed: {', '.join(TRAIN_PRESETS)}"
                                 + suggest(preset, TRAIN_PRESETS), "Pass one of them"))
    for key in values:
        if key not in fields:
            problems.append(_problem(key, values[key], "not a training parameter"
                                     + suggest(key, fields), f"Known: {', '.join(fields)}"))
    values = dict(values)
    problems += _check_model(values)
    problems += [p for key in fields if key in values and (p := _check_field(key, values[key]))]
    fold = values.get("fold", 1)
    if not _is_int(fold):
        problems.append(_problem("fold", fold, "must be a whole number", "Pass e.g. -p fold 1"))
    elif isinstance(dataset, str) and dataset in DATASET_AUS:
        folds = dataset_folds(dataset, values.get("data_root") or "data/prepared")
        if fold not in folds:
            problems.append(_problem("fold", fold, f"{dataset} has test folds {folds}",
                                     f"Pass one of them, e.g. -p fold {folds[0]}"))
    if problems:
        raise ParameterError(f"invalid parameters (nothing was written{IN_JUPYTERLAB}):\n  "
                             + "\n  ".join(problems))
    return values


# ----------------------------------------------------------------------------- notebooks
IPYTHON_NAMES = {"In", "Out", "get_ipython", "exit", "quit", "open"}


def _notebook_names(path: Path) -> tuple[set[str], set[str]]:
    """(parameters declared in the parameters cell, every name the notebook's code binds)."""
    nb = json.loads(path.read_text())
    declared, bound = set(), set()
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        names |= {(a.asname or a.name).split(".")[0] for n in ast.walk(tree)
                  if isinstance(n, ast.Import | ast.ImportFrom) for a in n.names}
        bound |= names
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            declared |= {t.id for n in tree.body if isinstance(n, ast.Assign)
                         for t in n.targets if isinstance(t, ast.Name)}
    return declared, bound


def check_notebook_parameters(notebook: str, namespace: Mapping[str, object]) -> None:
    """Refuse a parameter that ``notebook`` does not declare (papermill only warns and the
    notebook would silently ignore it, e.g. ``-p variant fulll`` to notebook 02)."""
    path = project_root() / "notebooks" / f"{notebook}.ipynb"
    if not path.exists():
        return
    declared, bound = _notebook_names(path)
    unknown = sorted(k for k in namespace if not k.startswith("_") and k not in IPYTHON_NAMES
                     and k not in bound and k not in declared)
    if unknown:
        hint = {"variant": " (stage 1 has no variant: every stage-2 variant shares it; pass "
                           "-p variant to notebook 03)"} if notebook.startswith("02") else {}
        raise ParameterError(
            "invalid parameters (nothing was written):\n  " + "\n  ".join(
                f"{k}={namespace[k]!r}: not a parameter of {notebook}"
                + suggest(k, declared) + hint.get(k, "")
                + f". Its parameters: {', '.join(sorted(declared))}" for k in unknown))


# ----------------------------------------------------------------------------- outputs
def _can_write(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (permissions, read-only mounts): a probe
    file, removed at once."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def check_writable(folders: Mapping[str, str | Path]) -> None:
    """Refuse, before training, output folders that cannot be created or written (the
    nearest existing folder of each must be writable). No folder is created here."""
    problems = []
    for name, folder in folders.items():
        path = Path(folder)
        existing = next(p for p in (path, *path.parents) if p.exists())
        if not existing.is_dir():
            problems.append(f"{name}={str(folder)!r}: {existing} is a file, not a folder. "
                            f"Pass another {name}")
        elif not _can_write(existing):
            problems.append(f"{name}={str(folder)!r}: {existing} is not writable. Make it "
                            f"writable, or pass another {name} (-p {name} /path/you/can/write)")
    if problems:
        raise ParameterError(f"output folders (nothing was trained{IN_JUPYTERLAB}):\n  "
                             + "\n  ".join(problems))


def check_ablation_values(dataset: str, slugs: list, folds: list | None, seeds: object,
                          workers: object, data_root: str | Path) -> None:
    """The ablation notebook's lists: variant slugs, test folds, seeds and workers."""
    problems = []
    names = list(variants.VARIANTS)
    for slug in slugs:
        if slug not in variants.VARIANTS:
            problems.append(_problem("variants", slug, f"unknown variant; allowed: "
                                     f"{', '.join(names)}{suggest(slug, names)}",
                                     "Pass a list of them, e.g. -y 'variants: [full, baseline]'"))
    allowed = dataset_folds(dataset, data_root)
    for fold in folds or []:
        if not _is_int(fold) or fold not in allowed:
            problems.append(_problem("folds", fold, f"{dataset} has test folds {allowed}",
                                     "Pass None (all of them) or a list of them"))
    if not isinstance(seeds, list | tuple) or not seeds or not all(
            _is_int(s) and s >= 0 for s in seeds):
        problems.append(_problem("seeds", seeds, "must be a list of whole numbers >= 0",
                                 "Pass e.g. -y 'seeds: [0, 1]'"))
    if workers is not None and not (_is_int(workers) and workers >= 1):
        problems.append(_problem("workers", workers, "must be None or a whole number >= 1",
                                 "Pass -p workers 1"))
    if problems:
        raise ParameterError(f"invalid parameters (nothing was written{IN_JUPYTERLAB}):\n  "
                             + "\n  ".join(problems))
