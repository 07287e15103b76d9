"""The study a figure is drawn from: :class:`Study` knows where one data set's data, runs,
results and figures live (the same folders as the training notebooks) and loads its data and
trained models on demand. :func:`run_figure` and :func:`show` are the notebook's wrappers;
a missing input is one :class:`FigureError` naming the notebook to run (its parameters cell and
the papermill command); :func:`figure_status` lists what was drawn and what was skipped.

Figures are written as PNG and PDF to ``figures_root/<dataset>/`` (:meth:`Study.save`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch
from matplotlib.figure import Figure

from hiva_lib.data.prepared import PreparedDataset
from hiva_lib.engine import runs
from hiva_lib.engine.config import TrainConfig, make_config
from hiva_lib.integrity import (
    atomic_write_text,
    check_sha256,
    file_sha256,
    read_json,
    recorded_checksum,
)
from hiva_lib.project import default_figures_root, project_root


class FigureError(FileNotFoundError):
    """What a figure needs (results, checkpoints, text embeddings) is missing."""


# Every figure of notebook 06: the function that draws it -> the file it saves
# (figures_root/<dataset>/<name>.png and .pdf)
FIGURES = {"fig4": "fig4_f1_gain", "fig5": "fig5_text_similarity", "fig6": "fig6_attention",
           "score_attention": "attention_scores", "fig7": "fig7_au_graphs"}


@dataclass
class Study:
    """Where one data set's study lives, and lazy access to its data and trained models."""

    cfg: TrainConfig
    figures_root: Path
    _data: PreparedDataset | None = field(default=None, repr=False)
    _models: dict = field(default_factory=dict, repr=False)
    drawn: list[str] = field(default_factory=list, repr=False)  # names saved by save()
    skipped: dict[str, str] = field(default_factory=dict, repr=False)  # name -> what is missing
    _outputs_checked: bool = field(default=False, repr=False)

    def __repr__(self) -> str:  # one line in a notebook, not the whole TrainConfig
        c = self.cfg
        return (f"Study({c.dataset}, seed {c.seed}, fold {c.fold}{', smoke' if c.smoke else ''};"
                f" results {c.results_root}, runs {c.runs_root}, figures {self.figures_root})")

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
            self._data = runs.load_data(self.cfg)
        return self._data

    @property
    def out_dir(self) -> Path:
        return self.figures_root / self.dataset

    def _train_hint(self, variant: str) -> str:
        from hiva_lib import variants
        from hiva_lib.engine.notebook_hints import notebook_hint

        stage2 = 2 in variants.VARIANTS[variant].stages
        notebook = "03_train_stage2" if stage2 else "02_train_stage1"
        # the figures' device (cpu by default) is not the training's: the notebook's default
        cfg = dataclasses.replace(self.cfg, variant=variant, device=TrainConfig.device)
        return (f"Train it first: {notebook_hint(cfg, notebook)}. Or pass runs_root / "
                "results_root pointing at the folders that hold it.")

    def recorded_checkpoint(self, recorded: str) -> Path:
        """Where the checkpoint a metrics.json names is in this study: a path of the runs
        layout (``<dataset>/<preset>/<variant>/seed<s>/fold<k>/final.pt``) is taken relative
        to ``runs_root``, whatever folder it was recorded in; any other path as recorded
        (relative to the project, or absolute)."""
        parts = Path(recorded).parts
        if len(parts) >= 6 and parts[-6] == self.dataset and parts[-3].startswith("seed"):
            return Path(self.cfg.runs_root).joinpath(*parts[-6:])
        return project_root() / recorded

    def checkpoint(self, variant: str) -> Path:
        """The final.pt evaluated for ``variant`` (its metrics.json names it, under
        ``runs_root``; checked against the SHA-256 recorded there), or the run's."""
        from hiva_lib import variants

        # this fold's versions only (fold1, fold1-v2; not fold10), the newest by number
        for run in runs.newest_fold_results(self.cfg.results_root, self.dataset, variant,
                                            self.cfg.seed, self.cfg.fold):
            metrics = read_json(run / "metrics.json", f"Restore it, or move {run} away and "
                                "evaluate that run again (notebooks 02/03).")
            recorded = metrics.get("checkpoint")
            ckpt = recorded and self.recorded_checkpoint(recorded)
            if ckpt and ckpt.exists():
                self._check_data_version(run, metrics.get("data_fingerprint"))
                if metrics.get("checkpoint_sha256"):
                    check_sha256(ckpt, metrics["checkpoint_sha256"], run / "metrics.json",
                                 _not_the_results_checkpoint(ckpt))
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
        """Refuse a model of another version of the prepared data: a figure must
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

    def check_outputs(self) -> None:
        """The device and the folders figures write (figures_root; results_root, where
        measurements go), checked before the first figure: nothing is drawn or half-written
        when one cannot be used."""
        from hiva_lib.engine.distributed import resolve_device
        from hiva_lib.engine.validate import ParameterError, check_writable

        if self._outputs_checked:
            return
        try:
            resolve_device(self.cfg.device)
        except RuntimeError as err:
            raise ParameterError(f"device={self.cfg.device!r}: {err} (nothing was drawn)") from err
        check_writable(dict(figures_root=self.figures_root, results_root=self.cfg.results_root))
        self._outputs_checked = True

    def save(self, fig: Figure, name: str) -> list[Path]:
        """``fig`` as figures_root/<dataset>/<name>.png and .pdf."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        paths = [self.out_dir / f"{name}.png", self.out_dir / f"{name}.pdf"]
        fig.savefig(paths[0], dpi=150, bbox_inches="tight")
        fig.savefig(paths[1], bbox_inches="tight")
        plt.close(fig)
        self.drawn.append(name)
        return paths


def _not_the_results_checkpoint(ckpt: Path) -> str:
    """Why a checkpoint is not the one its results were evaluated from, and the fix."""
    own = recorded_checksum(ckpt)
    why = ("It is intact (it matches its own final.pt.sha256) but another run's than the one "
           "these results are of" if own == file_sha256(ckpt) else "It is damaged or replaced")
    return (f"{why}: point runs_root at the runs that made these results, restore it, or "
            "evaluate this checkpoint (notebooks 02/03: its results go to a new version, "
            "which figures then use).")


def write_run_rows(new: pd.DataFrame, path: Path, float_format: str | None = None
                   ) -> pd.DataFrame:
    """Write a per-run table (columns seed, fold, variant, ...) to ``path``, replacing the rows
    of the (seed, fold, variant) runs that ``new`` holds and keeping every other run's, so that
    measuring one run never drops another's. Returns the whole table."""
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
    is reported and None returned, so one untrained variant does not stop the other figures.
    The outcome is recorded in the :class:`Study` among ``args`` (:func:`figure_status`)."""
    name = getattr(fn, "__name__", str(fn))
    name = FIGURES.get(name, name)
    studies = [a for a in args if isinstance(a, Study)]
    for study in studies:  # drawn again: what was missing before may be there now
        study.check_outputs()
        study.skipped.pop(name, None)
    try:
        return fn(*args, **kwargs)
    except FigureError as e:
        if not skip_missing:
            raise
        for study in studies:
            study.skipped[name] = str(e)
        print(f"skipped {name}: {e}")
        return None


def figure_status(study: Study) -> pd.DataFrame:
    """One row per figure drawn or skipped since ``study`` was opened: ``figure``,
    ``status`` ("drawn", "skipped", or "drawn in part" for one that lacks a row), and for a
    skipped one what is missing and how to get it (``how``)."""
    rows = [dict(figure=name, status="drawn in part" if name in study.skipped else "drawn",
                 how=study.skipped.get(name, "")) for name in dict.fromkeys(study.drawn)]
    rows += [dict(figure=name, status="skipped", how=how) for name, how in study.skipped.items()
             if name not in study.drawn]
    return pd.DataFrame(rows, columns=["figure", "status", "how"])


def show(study: Study, name: str):
    """The saved PNG of figure ``name``, for display in a notebook."""
    from IPython.display import Image

    return Image(filename=str(study.out_dir / f"{name}.png"))
