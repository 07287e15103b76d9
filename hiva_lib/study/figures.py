"""Figures 4-7 of the paper, regenerated from saved results and checkpoints, plus Grad-CAM.

* Fig. 4: per-AU F1 gain of HiVA over the vision-only Baseline against the AU's frequency in
  the training data (from ``results/<dataset>/<variant>/seed*/fold*/metrics.json``): the
  relative gain (% of the Baseline's F1, as the paper) and the absolute one (F1 points).
* Fig. 5: cosine similarity of the text AU embeddings H_i (the rows L_diff of Eq. 1 acts on)
  at several stage-2 epochs, HiVA vs HiVA w/o L_diff (``runs/.../text_emb/epochNNN.pt``; the
  embeddings drawn are copied to ``results/<dataset>/fig5_text_embeddings_seed<s>_fold<k>.npz``
  so the figure can be redrawn without runs/).
* Fig. 6: DDCA maps (Eq. 5 and its dual) of three AUs and the CDCA composite (Eq. 6, mean over
  the AUs shown) on test faces, beside Grad-CAM of an AU logit; on SynthFACS every map is also
  scored against the ground-truth AU regions (:func:`score_attention`,
  :mod:`hiva_lib.study.attention_scoring`). A flat map (no maximum to show) is labelled as such.
* Fig. 7: the top-K AU graphs (Sec. III-C) that each model computes from its AU features U_i on
  test faces, HiVA vs Baseline, as circular node-link diagrams with ground-truth and predicted
  AUs marked. The Baseline (stage 1) predicts from its graph; HiVA's stage-2 prediction does
  not use the graph by default (ambiguity 2), each panel says which.

Everything goes through :class:`Study`, which knows where a data set's data, runs, results and
figures live (the same folders as the training notebooks). Figures are written as PNG and PDF
to ``figures_root/<dataset>/``.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from hiva_lib.data.au import au_keys
from hiva_lib.data.loader import FrameDataset, load_size_for, prepare_batch
from hiva_lib.data.prepared import PreparedDataset
from hiva_lib.engine.checkpoint import atomic_write_text, latest_versions, run_version
from hiva_lib.engine.config import TrainConfig, default_figures_root, make_config, project_root
from hiva_lib.model.text import cached_text
from hiva_lib.study import attention_scoring as scoring
from hiva_lib.study.maps import gradcam, model_maps

MAP_CMAP = "jet"
OVERLAY_ALPHA = 0.45


class FigureError(FileNotFoundError):
    """What a figure needs (results, checkpoints, text embeddings) is missing."""


# ----------------------------------------------------------------------------- the study
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
        smoke = " -p smoke True" if self.cfg.model_preset == "test-tiny" else ""
        return (f"Train it first: papermill notebooks/03_train_stage2.ipynb out.ipynb -p dataset "
                f"{self.dataset} -p variant {variant} -p fold {self.cfg.fold} -p seed "
                f"{self.cfg.seed}{smoke} (Baseline: notebooks/02_train_stage1.ipynb), or pass "
                "runs_root / results_root pointing at the folders that hold it.")

    def checkpoint(self, variant: str) -> Path:
        """The final.pt evaluated for ``variant`` (its metrics.json names it), or the run's."""
        from hiva_lib import variants
        from hiva_lib.engine import train

        base = Path(self.cfg.results_root) / self.dataset / variant / f"seed{self.cfg.seed}"
        # this fold's versions only (fold1, fold1-v2; not fold10), the newest by number
        runs = [p.parent for p in base.glob("fold*/metrics.json")
                if run_version(p.parent.name)[0] == f"fold{self.cfg.fold}"]
        for run in latest_versions(runs):
            ckpt = json.loads((run / "metrics.json").read_text()).get("checkpoint")
            ckpt = ckpt and project_root() / ckpt  # relative to the project (or absolute)
            if ckpt and ckpt.exists():
                return ckpt
        cfg = dataclasses.replace(self.cfg, variant=variant)
        stage = 2 if 2 in variants.VARIANTS[variant].stages else 1
        run = train.finished_run(cfg, stage)  # trained with this study's settings
        path = (run or (train.stage2_dir(cfg) if stage == 2 else train.stage1_dir(cfg))
                ) / "final.pt"
        if not path.exists():
            raise FigureError(f"{path}: no trained {variant!r} model for {self.dataset}, fold "
                              f"{self.cfg.fold}, seed {self.cfg.seed}. "
                              + self._train_hint(variant))
        return path

    def model(self, variant: str) -> torch.nn.Module:
        if variant not in self._models:
            from hiva_lib.engine.train import load_trained

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


# ----------------------------------------------------------------------------- Fig. 4
def f1_gains(study: Study, variant: str = "full", reference: str = "baseline") -> pd.DataFrame:
    """Per AU: training frequency (%), F1 of ``variant`` and ``reference`` (%) and the gain,
    averaged over the (seed, fold) runs both have. The frequency is the AU's base rate in the
    training rows of those folds (averaged over them)."""
    from hiva_lib.study.report import ReportError, collect_results

    try:
        runs = collect_results(study.cfg.results_root, study.dataset)
    except ReportError as e:
        raise FigureError(str(e)) from None
    keys = au_keys(study.data.au_ids)
    a = runs[runs.variant == variant].set_index(["seed", "fold"])
    b = runs[runs.variant == reference].set_index(["seed", "fold"])
    both = a.index.intersection(b.index)
    if not len(both):
        raise FigureError(f"{study.cfg.results_root}/{study.dataset}: no (seed, fold) with "
                          f"results of both {variant!r} and {reference!r}. "
                          + study._train_hint(variant if variant not in runs.variant.values
                                              else reference))
    folds = sorted({f for _, f in both})
    freq = np.mean([study.data.labels(study.data.split(f)[0]).mean(0) for f in folds], axis=0)
    f1_a = a.loc[both, keys].to_numpy(float).mean(0) * 100
    f1_b = b.loc[both, keys].to_numpy(float).mean(0) * 100
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(f1_b > 0, (f1_a - f1_b) / f1_b * 100, np.nan)
    return pd.DataFrame({"au": keys, "frequency": freq * 100, f"f1_{variant}": f1_a,
                         f"f1_{reference}": f1_b, "gain": f1_a - f1_b, "relative_gain": rel,
                         "n_runs": len(both)})


# Fig. 4 panels: column of f1_gains() and y-axis label. The paper plots the relative gain.
GAIN_KINDS = {"relative": ("relative_gain", "relative F1 gain, {label} vs {reference}\n"
                                            "(% of {reference}'s F1; the paper's Fig. 4)"),
              "absolute": ("gain", "F1 gain, {label} - {reference} (points)")}


def _gain_panel(ax, gains: pd.DataFrame, kind: str, label: str, reference: str) -> None:
    """One Fig. 4 panel: gain against training frequency, AU labels, least-squares trend."""
    column, ylabel = GAIN_KINDS[kind]
    finite = np.isfinite(gains[column].to_numpy(float))
    x = gains["frequency"].to_numpy(float)[finite]
    y = gains[column].to_numpy(float)[finite]
    ax.axhline(0, color="grey", lw=0.8, ls=":")
    ax.scatter(x, y, s=60, c=np.where(y >= 0, "tab:green", "tab:red"), edgecolor="black",
               zorder=3)
    for xi, yi, au in zip(x, y, gains["au"][finite], strict=True):
        ax.annotate(au, (xi, yi), textcoords="offset points", xytext=(5, 5), fontsize=9)
    if len(x) > 1 and np.ptp(x) > 0:
        slope, icpt = np.polyfit(x, y, 1)
        xs = np.linspace(x.min(), x.max(), 50)
        r = np.corrcoef(x, y)[0, 1] if np.ptp(y) > 0 else float("nan")
        unit = "%" if kind == "relative" else "pts"
        ax.plot(xs, slope * xs + icpt, color="tab:blue", lw=1.5,
                label=f"trend: {slope:+.2f} {unit} per % (r = {r:+.2f})")
        ax.legend(loc="best", fontsize=9)
    title = f"{kind} gain: mean {y.mean():+.1f}{' %' if kind == 'relative' else ' points'}" \
        if len(y) else f"{kind} gain"
    if (~finite).any():  # relative to an F1 of 0: undefined, not plotted
        title += (f"\nleft out ({reference} F1 = 0): "
                  + ", ".join(gains["au"][~finite]))
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("AU frequency in the training data (%)")
    ax.set_ylabel(ylabel.format(label=label, reference=reference), fontsize=9)
    ax.grid(alpha=0.3)


def plot_f1_gain(gains: pd.DataFrame, dataset: str, label: str = "HiVA",
                 reference: str = "Baseline",
                 kinds: tuple[str, ...] = ("relative", "absolute")) -> Figure:
    """Fig. 4: per-AU gain against training frequency, one panel per kind of gain
    (``"relative"``: % of the reference's F1, as the paper; ``"absolute"``: F1 points)."""
    unknown = [k for k in kinds if k not in GAIN_KINDS]
    if unknown or not kinds:
        raise ValueError(f"kinds must be taken from {list(GAIN_KINDS)}, not {list(kinds)}")
    fig, axes = plt.subplots(1, len(kinds), figsize=(6.0 * len(kinds), 4.4), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        _gain_panel(ax, gains, kind, label, reference)
    fig.suptitle(f"Fig. 4 ({dataset}): per-AU F1 gain of {label} over the vision-only "
                 f"{reference}, {len(gains)} AUs, {int(gains['n_runs'].iat[0])} run(s)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def fig4(study: Study, variant: str = "full", reference: str = "baseline",
         kinds: tuple[str, ...] = ("relative", "absolute")) -> pd.DataFrame:
    """Compute, plot and save Fig. 4 (the paper's relative gain first, then the absolute
    one); the table is also written as fig4_f1_gain.csv."""
    from hiva_lib.variants import VARIANTS

    gains = f1_gains(study, variant, reference)
    fig = plot_f1_gain(gains, study.dataset, VARIANTS[variant].row_name,
                       VARIANTS[reference].row_name, kinds)
    study.save(fig, "fig4_f1_gain")
    atomic_write_text(gains.to_csv(index=False), study.out_dir / "fig4_f1_gain.csv")
    return gains


# ----------------------------------------------------------------------------- Fig. 5
def read_text_embeddings(run_dir: Path) -> tuple[dict[int, dict[str, np.ndarray]], list[int]]:
    """({epoch: {"H": ..., "Z": ...}}, AU ids) as saved by stage 2 in
    ``run_dir/text_emb/epochNNN.pt``; ({}, []) when none were saved."""
    out, au_ids = {}, []
    for path in sorted((run_dir / "text_emb").glob("epoch*.pt")):
        saved = torch.load(path, map_location="cpu")
        out[int(path.stem[5:])] = {k: saved[k].float().numpy() for k in ("H", "Z")}
        au_ids = [int(a) for a in saved["au_ids"]]
    return out, au_ids


def _pooled(emb: np.ndarray) -> np.ndarray:
    """Token-level embeddings (N, T, D) are mean-pooled over tokens to (N, D)."""
    return emb.mean(1) if emb.ndim == 3 else emb


def load_text_embeddings(run_dir: Path, which: str = "H") -> dict[int, np.ndarray]:
    """{epoch: (N, D) embedding} from ``run_dir/text_emb/epochNNN.pt``; token-level
    embeddings (N, T, D) are mean-pooled over tokens."""
    return {e: _pooled(embs[which]) for e, embs in read_text_embeddings(run_dir)[0].items()}


def cosine_matrix(emb: np.ndarray) -> np.ndarray:
    """(N, D) -> (N, N) cosine similarities of the rows."""
    e = np.asarray(emb, np.float64)
    e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
    return e @ e.T


def mean_off_diagonal(sim: np.ndarray) -> float:
    n = len(sim)
    return float((sim.sum() - np.trace(sim)) / max(1, n * (n - 1)))


def pick_epochs(epochs: list[int], n: int) -> list[int]:
    """``n`` epochs spread from the first to the last saved one."""
    if len(epochs) <= n:
        return list(epochs)
    idx = np.unique(np.round(np.linspace(0, len(epochs) - 1, n)).astype(int))
    return [epochs[i] for i in idx]


def plot_text_similarity(sims: dict[str, dict[int, np.ndarray]], au_ids: list[int],
                         dataset: str, which: str = "H") -> Figure:
    """Fig. 5: one row per model (label -> {epoch: (N, N) cosine matrix}), one column per
    epoch, a shared colour scale."""
    labels = list(sims)
    n_cols = max(len(v) for v in sims.values())
    keys = au_keys(au_ids)
    values = np.concatenate([m[~np.eye(len(m), dtype=bool)] for v in sims.values()
                             for m in v.values()])
    vmin = min(float(values.min()), 0.9) if values.size else 0.0
    fig, axes = plt.subplots(len(labels), n_cols, squeeze=False,
                             figsize=(2.6 * n_cols + 0.8, 3.0 * len(labels) + 0.6))
    im = None
    for r, label in enumerate(labels):
        for c in range(n_cols):
            ax = axes[r, c]
            items = list(sims[label].items())
            if c >= len(items):
                ax.axis("off")
                continue
            epoch, sim = items[c]
            im = ax.imshow(sim, cmap="viridis", vmin=vmin, vmax=1.0)
            ax.set_xticks(range(len(keys)), keys, rotation=90, fontsize=6)
            ax.set_yticks(range(len(keys)), keys, fontsize=6)
            ax.set_title(f"{label}\nepoch {epoch}: mean off-diag {mean_off_diagonal(sim):.3f}",
                         fontsize=8)
    fig.suptitle(f"Fig. 5 ({dataset}): cosine similarity of the text AU embeddings {which}_i",
                 fontsize=10)
    fig.tight_layout()
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), fraction=0.025, pad=0.02,
                     label="cosine similarity")
    return fig


def fig5_inputs_path(study: Study) -> Path:
    """Where Fig. 5's inputs are kept: results/<dataset>/fig5_text_embeddings_seed<s>_fold<k>.npz
    (newer, different copies go to ``-v2``, ``-v3``...: a saved input is never overwritten)."""
    return (Path(study.cfg.results_root) / study.dataset
            / f"fig5_text_embeddings_seed{study.cfg.seed}_fold{study.cfg.fold}.npz")


def save_fig5_inputs(study: Study, embs: dict[str, dict[int, dict[str, np.ndarray]]],
                     au_ids: list[int]) -> Path:
    """Copy the per-epoch H and Z of each variant (``{variant: {epoch: {"H", "Z"}}}``) next to
    the results, unless the newest copy already holds exactly these arrays. Returns the file
    that holds them."""
    from hiva_lib.engine.checkpoint import free_version, newest_version

    arrays: dict[str, np.ndarray] = {"dataset": np.array(study.dataset),
                                     "seed": np.array(study.cfg.seed),
                                     "fold": np.array(study.cfg.fold),
                                     "au_ids": np.array(au_ids)}
    for v, per_epoch in embs.items():
        epochs = sorted(per_epoch)
        arrays[f"{v}.epochs"] = np.array(epochs)
        for which in ("H", "Z"):
            arrays[f"{v}.{which}"] = np.stack([per_epoch[e][which] for e in epochs])
    path = fig5_inputs_path(study)
    newest = newest_version(path)
    if newest is not None:
        with np.load(newest) as old:
            if set(old.files) == set(arrays) and all(
                    np.array_equal(old[k], a) for k, a in arrays.items()):
                return newest
    target = free_version(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.stem}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(target)  # atomic: a killed kernel leaves no half-written copy
    return target


def load_fig5_inputs(study: Study, variants: tuple[str, ...]
                     ) -> tuple[dict[str, dict[int, dict[str, np.ndarray]]], list[int], Path]:
    """The newest saved copy of Fig. 5's inputs: ({variant: {epoch: {"H", "Z"}}}, AU ids,
    file), or one FigureError saying what is missing."""
    from hiva_lib.engine.checkpoint import newest_version

    path = newest_version(fig5_inputs_path(study))
    if path is None:
        raise FigureError(f"{fig5_inputs_path(study)}: no saved Fig. 5 inputs either (06_figures "
                          "writes it when it draws Fig. 5 from runs/).")
    try:
        with np.load(path) as f:
            embs = {v: {int(e): {w: f[f"{v}.{w}"][i] for w in ("H", "Z")}
                        for i, e in enumerate(f[f"{v}.epochs"])} for v in variants}
            au_ids = [int(a) for a in f["au_ids"]]
            where = (str(f["dataset"]), int(f["seed"]), int(f["fold"]))
    except (KeyError, ValueError, OSError) as e:
        raise FigureError(f"{path}: unusable Fig. 5 inputs ({type(e).__name__}: {e}); it needs "
                          f"the per-epoch H and Z of {list(variants)}. Delete it and redraw Fig. 5 "
                          "from runs/ (06_figures).") from None
    if where != (study.dataset, study.cfg.seed, study.cfg.fold):
        raise FigureError(f"{path}: holds {where[0]}, seed {where[1]}, fold {where[2]}, not "
                          f"{study.dataset}, seed {study.cfg.seed}, fold {study.cfg.fold}. Move it "
                          "to the results folder of that run.")
    return embs, au_ids, path


def fig5(study: Study, variants: tuple[str, str] = ("wo_ldiff", "full"), which: str = "H",
         n_epochs: int = 4) -> dict[str, dict[int, np.ndarray]]:
    """Fig. 5 from the text embeddings the stage-2 runs saved per epoch (top: w/o L_diff,
    bottom: HiVA, as in the paper). Returns {row label: {epoch: cosine matrix}}.

    Drawn from runs/ when both variants' embeddings are there, and then copied to
    :func:`fig5_inputs_path` (a few hundred kB at most); without runs/ (a fresh clone) it is
    drawn from that saved copy."""
    from hiva_lib.variants import VARIANTS

    if which not in ("H", "Z"):
        raise ValueError(f"which must be 'H' or 'Z', not {which!r}")
    embs: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    au_ids: list[int] | None = None
    try:
        for v in variants:
            run_dir = study.checkpoint(v).parent
            embs[v], au_ids = read_text_embeddings(run_dir)
            if not embs[v]:
                raise FigureError(f"{run_dir / 'text_emb'}: no saved text embeddings "
                                  "(save_text_embeddings was off?). " + study._train_hint(v))
    except FigureError as missing:
        try:
            embs, au_ids, path = load_fig5_inputs(study, variants)
        except FigureError as no_copy:
            raise FigureError(f"{missing} {no_copy}") from None
        print(f"Fig. 5 drawn from the saved copy {path} ({missing})")
    else:
        print(f"Fig. 5 inputs kept in {save_fig5_inputs(study, embs, au_ids)}")
    sims = {}
    for v in variants:
        chosen = pick_epochs(sorted(embs[v]), n_epochs)
        sims[VARIANTS[v].row_name] = {e: cosine_matrix(_pooled(embs[v][e][which]))
                                      for e in chosen}
    study.save(plot_text_similarity(sims, au_ids, study.dataset, which), "fig5_text_similarity")
    return sims


# ----------------------------------------------------------------------------- model outputs
def load_views(study: Study, rows: np.ndarray, crop: int) -> tuple[torch.Tensor, np.ndarray]:
    """Rows of the data set as the model sees them at evaluation: [0, 1] tensors
    (B, 3, crop, crop; the model normalises them) and the same centre crops as uint8 RGB
    (B, crop, crop, 3)."""
    ds = FrameDataset(study.data, rows, load_size_for(crop))
    images = torch.stack([ds[i][0] for i in range(len(ds))])
    x = prepare_batch(images, crop, train=False)
    o = (images.shape[-1] - crop) // 2
    rgb = images[:, :, o:o + crop, o:o + crop].permute(0, 2, 3, 1).numpy()
    return x, rgb


def _upsample(m: np.ndarray, size: int) -> np.ndarray:
    up = scoring.upsample_map(m, (size, size))
    lo, hi = up.min(), up.max()
    return (up - lo) / (hi - lo) if hi > lo else np.zeros_like(up)


# ----------------------------------------------------------------------------- sample faces
def sample_faces(study: Study, n: int = 3, min_active: int = 3) -> np.ndarray:
    """Test-fold rows to show: faces with many active AUs, from distinct subjects when
    possible, in a fixed order (seeded by the study's seed)."""
    _, test = study.data.split(study.cfg.fold)
    labels = study.data.labels(test)
    active = labels.sum(1)
    rng = np.random.default_rng(study.cfg.seed)
    order = rng.permutation(len(test))
    order = order[np.argsort(-np.minimum(active[order], min_active), kind="stable")]
    subjects = study.data.index["subject"].to_numpy()[test]
    chosen, seen = [], set()
    for i in order:  # first pass: distinct subjects
        if subjects[i] not in seen:
            chosen.append(i)
            seen.add(subjects[i])
        if len(chosen) == n:
            break
    for i in order:
        if len(chosen) == n:
            break
        if i not in chosen:
            chosen.append(i)
    return test[np.array(chosen, dtype=int)]


def _au_list(labels: np.ndarray, keys: list[str], per_line: int = 4) -> str:
    """Active AUs as text, ``per_line`` to a line (titles stay narrow)."""
    on = [k for k, y in zip(keys, labels, strict=True) if y > 0.5]
    lines = [", ".join(on[i:i + per_line]) for i in range(0, len(on), per_line)]
    return "\n".join(lines) or "none"


def _aus_to_show(labels: np.ndarray, probs: np.ndarray, k: int = 3) -> list[int]:
    """Up to ``k`` AU columns: the active ones first, then the most probable others."""
    active = [int(j) for j in np.flatnonzero(labels > 0.5)]
    others = [int(j) for j in np.argsort(-probs) if j not in active]
    return (active + others)[:k]


def _region_in_view(study: Study, rows: np.ndarray, crop: int) -> np.ndarray | None:
    masks = study.data.region_masks()
    if masks is None:
        return None
    return scoring.masks_in_view(masks[rows], load_size_for(crop), crop)


def _label(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center",
            color="white", fontsize=11, bbox=dict(facecolor="black", alpha=0.6))


def draw_map(ax, rgb: np.ndarray, m: np.ndarray) -> None:
    """``m`` min-max scaled over the face; a degenerate map (constant, e.g. an all-zero
    Grad-CAM) would show as a uniform tint that looks like a map: it is labelled instead."""
    ax.imshow(_upsample(m, rgb.shape[0]), cmap=MAP_CMAP, alpha=OVERLAY_ALPHA, vmin=0, vmax=1)
    if scoring.is_flat(m):
        _label(ax, "flat map")


def _overlay(ax, rgb: np.ndarray, m: np.ndarray | None, title: str,
             contour: np.ndarray | None = None, plain: bool = False) -> None:
    ax.imshow(rgb)
    if m is not None:
        draw_map(ax, rgb, m)
    elif not plain:  # a map this model does not have
        _label(ax, "n/a")
    if contour is not None and contour.any():
        ax.contour(contour.astype(float), levels=[0.5], colors="white", linewidths=1.0)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


# ----------------------------------------------------------------------------- Fig. 6
def fig6(study: Study, variant: str = "full", reference: str = "baseline",
         n_faces: int = 3) -> Figure:
    """Fig. 6: per face, DDCA maps of three AUs, the CDCA composite (mean of the three AUs'
    CDCA maps) and Grad-CAM of the first AU's logit for HiVA and the Baseline. White
    contours: the ground-truth region of the AU (SynthFACS only)."""
    from hiva_lib.variants import VARIANTS

    model = study.model(variant)
    crop = model.cfg.img_size
    rows = sample_faces(study, n_faces)
    x, rgb = load_views(study, rows, crop)
    labels = study.data.labels(rows)
    regions = _region_in_view(study, rows, crop)
    with cached_text(model):
        out = model_maps(model, x)
        shown = [_aus_to_show(labels[i], out["probs"][i]) for i in range(len(rows))]
        cam = gradcam(model, x, [s[0] for s in shown])
    try:
        cam_ref = gradcam(study.model(reference), x, [s[0] for s in shown])
    except FigureError:
        cam_ref = None
    keys = au_keys(study.data.au_ids)
    name, ref_name = VARIANTS[variant].row_name, VARIANTS[reference].row_name
    n_cols = 1 + 3 + 1 + 2
    fig, axes = plt.subplots(len(rows), n_cols, squeeze=False,
                             figsize=(1.9 * n_cols, 2.1 * len(rows) + 0.5))
    for r in range(len(rows)):
        aus = shown[r]
        _overlay(axes[r, 0], rgb[r], None, "face, active:\n" + _au_list(labels[r], keys),
                 plain=True)
        for c in range(3):
            ax = axes[r, 1 + c]
            if c >= len(aus):
                ax.axis("off")
                continue
            j = aus[c]
            m = None if out["ddca"] is None else out["ddca"][r, j]
            state = "on" if labels[r, j] > 0.5 else "off"
            _overlay(ax, rgb[r], m, f"DDCA {keys[j]} ({state}, p={out['probs'][r, j]:.2f})",
                     None if regions is None else regions[r, j])
        comp = None if out["cdca"] is None else out["cdca"][r, aus].mean(0)
        union = None if regions is None else regions[r, aus].any(0)
        _overlay(axes[r, 4], rgb[r], comp, "CDCA composite\n(" + "+".join(keys[j] for j in aus)
                 + ")", union)
        j0 = aus[0]
        region0 = None if regions is None else regions[r, j0]
        _overlay(axes[r, 5], rgb[r], cam[r], f"Grad-CAM {keys[j0]}\n{name}", region0)
        _overlay(axes[r, 6], rgb[r], None if cam_ref is None else cam_ref[r],
                 f"Grad-CAM {keys[j0]}\n{ref_name}", region0)
    sm = plt.cm.ScalarMappable(cmap=MAP_CMAP, norm=plt.Normalize(0, 1))
    fig.suptitle(f"Fig. 6 ({study.dataset}): {name} attention maps (each map min-max scaled)"
                 + ("; white: ground-truth AU region" if regions is not None else ""),
                 fontsize=10)
    fig.tight_layout()
    fig.colorbar(sm, ax=axes.ravel().tolist(), fraction=0.015, pad=0.01,
                 label="attention (scaled)")
    study.save(fig, "fig6_attention")
    return fig


def score_attention(study: Study, variants: list[str] | None = None, max_frames: int = 128,
                    batch_size: int = 16, gradcam_maps: bool = True) -> pd.DataFrame:
    """Score DDCA, CDCA and Grad-CAM maps against the ground-truth AU regions (SynthFACS).

    Test-fold frames (at most ``max_frames``, a fixed random subset) are scored for each AU
    that is active in them: pointing game and energy inside the region, per AU and per variant
    (every variant with a trained model). ``chance`` is the mean region area: what a uniform
    map scores on both. ``n_flat`` counts the scored maps that are degenerate
    (:func:`hiva_lib.study.attention_scoring.is_flat`: constant or without positive mass), which
    score exactly ``chance`` by construction. Rows with ``au == "mean"`` average over AUs.
    Written to ``results/<dataset>/attention_scores.csv``.
    """
    from hiva_lib.variants import VARIANTS

    masks_all = study.data.region_masks()
    if masks_all is None:
        raise FigureError(f"{study.data.root}: no regions.npz; attention maps can only be scored "
                          "on SynthFACS (synth-*), whose AU regions are known.")
    _, test = study.data.split(study.cfg.fold)
    rng = np.random.default_rng(study.cfg.seed)
    rows = np.sort(rng.permutation(test)[:max_frames])
    labels = study.data.labels(rows)
    keys = au_keys(study.data.au_ids)
    records = []
    for v in variants or list(VARIANTS):
        try:
            model = study.model(v)
        except FigureError:
            continue  # a variant not trained is simply not scored
        crop = model.cfg.img_size
        masks = scoring.masks_in_view(masks_all[rows], load_size_for(crop), crop)
        scores: dict[str, list] = {}
        n_aus = len(keys)
        with cached_text(model):  # the text branch is image-independent: run it once
            for start in range(0, len(rows), batch_size):
                sl = slice(start, start + batch_size)
                x, _ = load_views(study, rows[sl], crop)
                out = model_maps(model, x)
                for method in ("ddca", "cdca"):
                    if out[method] is not None:
                        scores.setdefault(method, []).append(out[method])
                if gradcam_maps:  # every AU of every image in one pass: images repeated per AU
                    cams = gradcam(model, x.repeat(n_aus, 1, 1, 1),
                                   [j for j in range(n_aus) for _ in range(len(x))])
                    scores.setdefault("gradcam", []).append(
                        cams.reshape(n_aus, len(x), *cams.shape[1:]).swapaxes(0, 1))
        for method, parts in scores.items():
            maps = np.concatenate(parts)  # (n, N, h, w)
            for j, key in enumerate(keys):
                on = np.flatnonzero((labels[:, j] > 0.5) & masks[:, j].any((-1, -2)))
                s = scoring.score_maps(maps[on, j], masks[on, j])
                records.append(dict(dataset=study.dataset, variant=v,
                                    row_name=VARIANTS[v].row_name, seed=study.cfg.seed,
                                    fold=study.cfg.fold, method=method, au=key, n_frames=len(on),
                                    n_flat=int(s["flat"].sum()),
                                    pointing=np.nanmean(s["pointing"]) if len(on) else np.nan,
                                    energy=np.nanmean(s["energy"]) if len(on) else np.nan,
                                    chance=np.nanmean(s["area"]) if len(on) else np.nan))
    table = pd.DataFrame(records)
    if table.empty:
        raise FigureError(f"{study.cfg.runs_root}: no trained model of {study.dataset} to score. "
                          + study._train_hint("full"))
    means = (table.groupby(["dataset", "variant", "row_name", "seed", "fold", "method"],
                           sort=False)[["n_frames", "n_flat", "pointing", "energy",
                                        "chance"]]
             .mean().reset_index().assign(au="mean"))
    table = pd.concat([table, means[table.columns]], ignore_index=True)
    out = Path(study.cfg.results_root) / study.dataset / "attention_scores.csv"
    atomic_write_text(table.to_csv(index=False, float_format="%.4f"), out)
    return table


# ----------------------------------------------------------------------------- Fig. 7
def draw_au_graph(ax, adjacency: np.ndarray, au_ids: list[int], truth: np.ndarray,
                  predicted: np.ndarray, title: str) -> None:
    """A circular node-link diagram of one top-K AU graph. An edge joins i and j when either
    picked the other among its neighbours (self-links are not drawn); its width grows with the
    weight. Node fill: ground truth (orange = active); ring: prediction (thick = predicted
    active), red where the prediction is wrong; node size: in-degree (how many AUs chose it)."""
    a = np.array(adjacency, dtype=float)
    np.fill_diagonal(a, 0)
    n = len(au_ids)
    angle = np.pi / 2 - 2 * np.pi * np.arange(n) / n
    xy = np.stack([np.cos(angle), np.sin(angle)], 1)
    sym = np.maximum(a, a.T)
    top = sym.max() if sym.max() > 0 else 1.0
    for i in range(n):
        for j in range(i + 1, n):
            if sym[i, j] > 0:
                mutual = a[i, j] > 0 and a[j, i] > 0
                ax.plot(*xy[[i, j]].T, color="tab:blue" if mutual else "tab:gray",
                        lw=0.6 + 2.4 * sym[i, j] / top, alpha=0.7, zorder=1)
    indeg = (a > 0).sum(0)
    for i, au in enumerate(au_ids):
        on, pred = truth[i] > 0.5, predicted[i] > 0.5
        ring = "red" if on != pred else ("black" if pred else "silver")
        ax.scatter(*xy[i], s=260 + 90 * indeg[i], zorder=2,
                   color="tab:orange" if on else "whitesmoke",
                   edgecolor=ring, linewidth=2.8 if pred else 1.6)
        ax.text(*xy[i], f"AU{au}", ha="center", va="center", fontsize=7, zorder=3)
    ax.set_title(title, fontsize=8)
    ax.set_xlim(-1.35, 1.35)
    ax.set_ylim(-1.35, 1.35)
    ax.set_aspect("equal")
    ax.axis("off")


def fig7(study: Study, variants: tuple[str, ...] = ("full", "baseline"), n_faces: int = 3,
         threshold: float = 0.5) -> Figure:
    """Fig. 7: per test face, the top-K AU graph (``maps["graph"]``) of each model, each panel
    saying whether that graph feeds the model's prediction (:func:`_graph_role`)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from hiva_lib.variants import VARIANTS

    rows = sample_faces(study, n_faces)
    labels = study.data.labels(rows)
    au_ids = list(study.data.au_ids)
    outs, rgb, roles = {}, None, {}
    for v in variants:
        model = study.model(v)
        x, view = load_views(study, rows, model.cfg.img_size)
        rgb = view if rgb is None else rgb
        outs[v] = model_maps(model, x)
        roles[v] = _graph_role(model)
    fig, axes = plt.subplots(len(rows), 1 + len(variants), squeeze=False,
                             figsize=(2.2 + 3.0 * len(variants), 3.1 * len(rows) + 0.8))
    for r in range(len(rows)):
        axes[r, 0].imshow(rgb[r])
        axes[r, 0].axis("off")
        axes[r, 0].set_title("active:\n" + _au_list(labels[r], au_keys(au_ids)), fontsize=8)
        for c, v in enumerate(variants):
            ax = axes[r, 1 + c]
            probs, graph = outs[v]["probs"][r], outs[v]["graph"]
            pred = probs >= threshold
            f1 = _sample_f1(labels[r], pred)
            title = f"{VARIANTS[v].row_name}: sample F1 {f1:.2f}\n({roles[v]})"
            if graph is None:
                ax.axis("off")
                ax.text(0.5, 0.5, f"{VARIANTS[v].row_name}:\nno AU graph", ha="center",
                        va="center", transform=ax.transAxes)
                continue
            draw_au_graph(ax, graph[r], au_ids, labels[r], pred.astype(float), title)
    handles = [Patch(facecolor="tab:orange", edgecolor="black", label="active (ground truth)"),
               Patch(facecolor="whitesmoke", edgecolor="silver", label="inactive"),
               Line2D([], [], marker="o", ls="", markerfacecolor="white", markeredgecolor="black",
                      markeredgewidth=2.5, markersize=10, label="predicted active (thick ring)"),
               Line2D([], [], marker="o", ls="", markerfacecolor="white", markeredgecolor="red",
                      markeredgewidth=2.0, markersize=10, label="wrong prediction (red ring)"),
               Line2D([], [], color="tab:blue", lw=2, label="mutual top-K edge"),
               Line2D([], [], color="tab:gray", lw=2, label="one-way top-K edge")]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(f"Fig. 7 ({study.dataset}): top-K AU graphs from each model's AU features "
                 "U_i (Sec. III-C; node size: in-degree)", fontsize=10)
    fig.tight_layout(rect=(0, 0.6 / (3.1 * len(rows) + 0.8), 1, 1))
    study.save(fig, "fig7_au_graphs")
    return fig


def _graph_role(model: torch.nn.Module) -> str:
    """Whether the drawn graph feeds the model's prediction. Stage 1 (the Baseline) predicts
    from the graph-updated features (Eq. 3); a stage-2 model does only with
    ``graph_in_stage2`` (ambiguity 2; default off: the graph is then computed from its U_i
    for the figure, and the prediction does not use it)."""
    if getattr(model, "stage", 1) == 1 or model.cfg.graph_in_stage2:
        return "graph used for prediction"
    return "graph not used for prediction"


def _sample_f1(truth: np.ndarray, pred: np.ndarray) -> float:
    t = truth > 0.5
    tp, fp, fn = (t & pred).sum(), (~t & pred).sum(), (t & ~pred).sum()
    return float(2 * tp / (2 * tp + fp + fn)) if (tp + fp + fn) else 1.0


def plot_attention_scores(table: pd.DataFrame, dataset: str) -> Figure:
    """Mean pointing game and energy inside the region per variant and map, chance marked;
    a bar whose maps were partly flat (scored at chance by construction) says what share."""
    mean = table[table.au == "mean"]
    methods = list(dict.fromkeys(mean["method"]))
    names = list(dict.fromkeys(mean["row_name"]))
    per_au = table[table.au != "mean"].groupby(["method", "row_name"])[["n_flat", "n_frames"]]
    totals = per_au.sum()
    flat_share = totals["n_flat"] / totals["n_frames"].where(totals["n_frames"] > 0)
    fig, axes = plt.subplots(1, 2, figsize=(2.0 + 1.1 * len(names) * max(1, len(methods)) / 2,
                                            4.0), squeeze=False)
    width = 0.8 / max(1, len(methods))
    for ax, metric in zip(axes[0], ("pointing", "energy"), strict=True):
        for k, method in enumerate(methods):
            part = mean[mean.method == method].set_index("row_name").reindex(names)
            xs = np.arange(len(names)) + (k - (len(methods) - 1) / 2) * width
            ax.bar(xs, part[metric], width, label=method.upper() if method != "gradcam"
                   else "Grad-CAM")
            for x, name, top in zip(xs, names, part[metric], strict=True):
                share = flat_share.get((method, name), np.nan)
                if share > 0 and np.isfinite(top):
                    ax.text(x, top + 0.02, f"{share:.0%} flat", rotation=90, ha="center",
                            va="bottom", fontsize=6)
        ax.axhline(mean["chance"].mean(), color="black", ls="--", lw=1, label="chance (area)")
        ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title("pointing game" if metric == "pointing" else "energy inside the region",
                     fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 1].legend(fontsize=8, loc="upper right")
    fig.suptitle(f"{dataset}: attention vs ground-truth AU regions (mean over AUs)",
                 fontsize=10)
    fig.tight_layout()
    return fig
