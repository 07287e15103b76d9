"""The study a figure is drawn from: :class:`Study` knows where one data set's data, runs,
results and figures live (the same folders as the training notebooks) and loads its data and
trained models on demand. :func:`run_figure` and :func:`show` are the notebook's wrappers;
a missing input is one :class:`FigureError` naming the notebook to run.

Figures are written as PNG and PDF to ``figures_root/<dataset>/`` (:meth:`Study.save`).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch
from matplotlib.figure import Figure

from hiva_lib.data.prepared import PreparedDataset
from hiva_lib.engine import runs
from hiva_lib.engine.config import (
    TrainConfig,
    default_figures_root,
    make_config,
    project_root,
    smoke_flag,
)


class FigureError(FileNotFoundError):
    """What a figure needs (results, checkpoints, text embeddings) is missing."""


@dataclass
class Study:
    """Where one data set's study lives, and lazy access to its data and trained models."""

    cfg: TrainConfig
    figures_root: Path
    _data: PreparedDataset | None = field(default=None, repr=False)
    _models: dict = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, dataset: str, data_root: str | None = None, runs_root: str | None = None,
             results_root: str | None = None, figures_root: str | None = None,
             smoke: bool = False, seed: int = 0, fold: int = 1, device: str = "cpu") -> Study:
        cfg = make_config(dataset, smoke=smoke, data_root=data_root, runs_root=runs_root,
                          results_root=results_root, seed=seed, fold=fold, device=device)
        if figures_root is None:
            figures_root = str(default_figures_root(smoke))
        return cls(cfg, Path(figures_root))

    @property
    def dataset(self) -> str:
        return self.cfg.dataset

    @property
    def data(self) -> PreparedDataset:
        if self._data is None:
            from hiva_lib.engine.train import load_data

            self._data = load_data(self.cfg)
        return self._data

    @property
    def out_dir(self) -> Path:
        return self.figures_root / self.dataset

    def _train_hint(self, variant: str) -> str:
        smoke = smoke_flag(self.cfg)
        return (f"Train it first: papermill notebooks/03_train_stage2.ipynb out.ipynb -p dataset "
                f"{self.dataset} -p variant {variant} -p fold {self.cfg.fold} -p seed "
                f"{self.cfg.seed}{smoke} (Baseline: notebooks/02_train_stage1.ipynb), or pass "
                "runs_root / results_root pointing at the folders that hold it.")

    def checkpoint(self, variant: str) -> Path:
        """The final.pt evaluated for ``variant`` (its metrics.json names it), or the run's."""
        from hiva_lib import variants

        # this fold's versions only (fold1, fold1-v2; not fold10), the newest by number
        for run in runs.newest_fold_results(self.cfg.results_root, self.dataset, variant,
                                            self.cfg.seed, self.cfg.fold):
            metrics = json.loads((run / "metrics.json").read_text())
            ckpt = metrics.get("checkpoint")
            ckpt = ckpt and project_root() / ckpt  # relative to the project (or absolute)
            if ckpt and ckpt.exists():
                self._check_data_version(run, metrics.get("data_fingerprint"))
                return ckpt
        cfg = dataclasses.replace(self.cfg, variant=variant)
        stage = 2 if 2 in variants.VARIANTS[variant].stages else 1
        run = runs.finished_run(cfg, stage)  # trained with this study's settings
        path = (run or runs.run_dir(cfg, stage)) / "final.pt"
        if not path.exists():
            raise FigureError(f"{path}: no trained {variant!r} model for {self.dataset}, fold "
                              f"{self.cfg.fold}, seed {self.cfg.seed}. "
                              + self._train_hint(variant))
        return path

    def _check_data_version(self, run: Path, fingerprint: str | None) -> None:
        """Refuse a model of another version of the prepared data (issue 13): a figure must
        not show it beside this data's frames and regions."""
        current = runs.data_version(self.cfg)  # None while the data is not prepared here
        if fingerprint and current and fingerprint != current:
            raise FigureError(
                f"{run}: its model was evaluated on {runs.describe_data(fingerprint)}, but the "
                f"prepared data is now {runs.describe_data(current)}. Train it again on this "
                "data, or point data_root at the data it was trained on.")

    def model(self, variant: str) -> torch.nn.Module:
        if variant not in self._models:
            from hiva_lib.engine.evaluate import load_trained

            self._models[variant] = load_trained(self.checkpoint(variant), self.cfg.device)
        return self._models[variant]

    def save(self, fig: Figure, name: str) -> list[Path]:
        """``fig`` as figures_root/<dataset>/<name>.png and .pdf."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        paths = [self.out_dir / f"{name}.png", self.out_dir / f"{name}.pdf"]
        fig.savefig(paths[0], dpi=150, bbox_inches="tight")
        fig.savefig(paths[1], bbox_inches="tight")
        plt.close(fig)
        return paths


def write_run_rows(new: pd.DataFrame, path: Path, float_format: str | None = None
                   ) -> pd.DataFrame:
    """Write a per-run table (columns seed, fold, variant, ...) to ``path``, replacing the rows
    of the (seed, fold, variant) runs that ``new`` holds and keeping every other run's, so that
    measuring one run never drops another's. Returns the whole table."""
    from hiva_lib.engine.checkpoint import atomic_write_text

    if path.exists():
        old = pd.read_csv(path)
        key = ["seed", "fold", "variant"]
        measured = pd.MultiIndex.from_frame(new[key].drop_duplicates())
        new = pd.concat([old[~pd.MultiIndex.from_frame(old[key]).isin(measured)], new],
                        ignore_index=True)
    new = new.sort_values(["seed", "fold"], kind="stable").reset_index(drop=True)
    atomic_write_text(new.to_csv(index=False, float_format=float_format), path)
    return new


def run_figure(fn, *args, skip_missing: bool = False, **kwargs):
    """``fn(*args, **kwargs)``; with ``skip_missing`` a missing input (:class:`FigureError`)
    is reported and None returned, so one untrained variant does not stop the other figures."""
    try:
        return fn(*args, **kwargs)
    except FigureError as e:
        if not skip_missing:
            raise
        print(f"skipped {getattr(fn, '__name__', fn)}: {e}")
        return None


def show(study: Study, name: str):
    """The saved PNG of figure ``name``, for display in a notebook."""
    from IPython.display import Image

    return Image(filename=str(study.out_dir / f"{name}.png"))
