"""Why the language branch does little here: per-run diagnostics of the text
embeddings and of the attention maps, written to ``results/<dataset>/mechanism.csv`` and
``mechanism_layers.csv`` and drawn by :func:`plot_mechanism` (notebook 09).

``mechanism.csv``: one row per (run, variant, stage-2 epoch), from the H and Z that stage 2
saves after every epoch (``runs/.../text_emb/epochNNN.pt``; epoch 0 = before stage 2):

* ``h_cosine``, ``z_cosine``: mean off-diagonal cosine of the AU embeddings H (N, d') and Z
  (N, d) (1: one vector for every AU);
* ``h_specific``, ``z_specific``: the AU-specific part, ||X - 1 m^T||_F / (sqrt(N) ||m||) with m
  the mean over AUs: the root-mean-square distance of the AUs' embeddings to their mean,
  relative to the mean's norm (0: every AU the same vector);
* ``h_spread``, ``z_spread``: the AU-specific part's own size, sqrt(mean_i ||X_i - m||^2) (the
  numerator of ``<x>_specific``), and ``h_shared_norm``, ``z_shared_norm``: ||m||, its
  denominator; the cosine and ``<x>_specific`` are ratios of the two, so a shared part that
  grows reads as a collapse there while the spread stays: these two say which one moved;
* ``h_specific_rank``, ``z_specific_rank``: scale-free and blind to the shared part, the
  participation ratio (sum l)^2 / sum l^2 of the eigenvalues l of the centred embeddings'
  Gram matrix, divided by N - 1 (:func:`specific_rank`): 1 when the AU-specific parts span N - 1
  equal directions, 1/(N - 1) when they lie on one line (0: all AUs equal). The mean cosine
  after centring is not used: the centred rows sum to 0, so with equal norms it is
  -1/(N - 1) whatever the embeddings are;
* at the last epoch only, on a fixed subset of test frames (the frames the attention scores
  use), for ``ddca`` (Z_i queries F_i) and ``cdca`` (Z_i queries X_g): ``<m>_entropy`` (nats,
  mean over frames and AUs of each AU's map over the HW image tokens) and ``<m>_entropy_norm``
  (divided by log HW: 1 = uniform); ``<m>_argmax_pairs``: the share of AU pairs whose maps peak
  on the same token (mean over frames; 1/HW for independent uniform peaks);
  ``<m>_argmax_frames``: the share of frames where at least two AUs peak on the same token;
  ``<m>_argmax_all``: the share where all AUs peak on one token; ``tokens``: HW;
  ``<m>_peak_at_largest``: the share of maps that peak on the token of largest feature norm
  (F_i's tokens for DDCA, X_g's for CDCA; 1/HW by chance);
* at epoch 0 (the model as stage 2 started: the seed's initialisation and the run's stage-1
  weights) and at the last epoch, on a fixed subset of training frames: ``z_grad_shared``,
  ``h_grad_shared``, the share of dL_au/dZ_i (dL_au/dH_i) in the direction common to all AUs
  (:func:`shared_share`; 1/N for unrelated pulls): how much the AU loss pulls every AU's
  embedding the same way.

``mechanism_layers.csv``: the text branch stage by stage (``H``, ``proj`` = the Transformer's
input W_p H (+ the AU-identity embedding of ambiguity 7), ``layer1`` ... (the last is Z)),
each with its cosine and AU-specific part, for the model as stage 2 started (``when`` =
``before``) and the final model (``final``): where the AUs' embeddings merge.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from hiva_lib.errors import CheckpointError
from hiva_lib.study.fig5_text import cosine_matrix, mean_off_diagonal, read_text_embeddings
from hiva_lib.study.study import FigureError, Study, write_run_rows

MECHANISM = "mechanism.csv"
LAYERS = "mechanism_layers.csv"
METHODS = ("ddca", "cdca")
EMBEDDING_MEASURES = ("cosine", "specific", "spread", "shared_norm", "specific_rank")
ATTENTION_STATS = ("entropy", "entropy_norm", "argmax_pairs", "argmax_frames", "argmax_all")


# ----------------------------------------------------------------------------- measures
def off_diagonal_cosine(emb: np.ndarray | torch.Tensor) -> float:
    """Mean cosine between the rows of ``emb`` (N, D), the diagonal left out."""
    return mean_off_diagonal(cosine_matrix(np.asarray(emb, np.float64)))


def au_specific_part(emb: np.ndarray | torch.Tensor) -> float:
    """||X - 1 m^T||_F / (sqrt(N) ||m||), m the mean row of ``emb`` (N, D)."""
    x = np.asarray(emb, np.float64)
    mean = x.mean(0)
    spread = np.sqrt(((x - mean) ** 2).sum(1).mean())
    return float(spread / max(np.linalg.norm(mean), 1e-12))


def specific_spread(emb: np.ndarray | torch.Tensor) -> tuple[float, float]:
    """(sqrt(mean_i ||x_i - m||^2), ||m||) of ``emb`` (N, D), m its mean row: the sizes of
    the AU-specific and of the shared part."""
    x = np.asarray(emb, np.float64)
    mean = x.mean(0)
    return float(np.sqrt(((x - mean) ** 2).sum(1).mean())), float(np.linalg.norm(mean))


def specific_rank(emb: np.ndarray | torch.Tensor) -> float:
    """(sum l)^2 / (sum l^2) / (N - 1), l the eigenvalues of C C^T with C = ``emb`` (N, D)
    minus its mean row: how many equal directions the AU-specific parts span, as a share of
    the N - 1 they can span; 0 when every row is the same."""
    x = np.asarray(emb, np.float64)
    centred = x - x.mean(0)
    eig = np.clip(np.linalg.eigvalsh(centred @ centred.T), 0.0, None)
    total = eig.sum()
    if total <= 1e-24 * max(1.0, (x**2).sum()) or len(x) < 2:
        return 0.0
    return float(total**2 / (eig**2).sum() / (len(x) - 1))


def embedding_measures(emb: np.ndarray | torch.Tensor, prefix: str) -> dict[str, float]:
    """The columns ``<prefix>_cosine``, ``_specific``, ``_spread``, ``_shared_norm`` and
    ``_specific_rank`` of one embedding matrix (N, D)."""
    spread, shared = specific_spread(emb)
    return {f"{prefix}_cosine": off_diagonal_cosine(emb),
            f"{prefix}_specific": au_specific_part(emb), f"{prefix}_spread": spread,
            f"{prefix}_shared_norm": shared, f"{prefix}_specific_rank": specific_rank(emb)}


def map_entropy(maps: np.ndarray) -> np.ndarray:
    """Entropy (nats) of each map over its last axis: maps (..., T), each row a distribution
    (rows are renormalised to sum 1; 0 log 0 = 0)."""
    p = np.asarray(maps, np.float64)
    p = p / p.sum(-1, keepdims=True)
    logs = np.log(np.where(p > 0, p, 1.0))
    return -(p * logs).sum(-1)


def argmax_sharing(maps: np.ndarray) -> dict[str, float]:
    """How often the AUs' maps (B, N, T) peak on the same token: ``argmax_pairs`` (share of
    the N(N-1)/2 AU pairs, mean over frames), ``argmax_frames`` (share of frames with at least
    one such pair), ``argmax_all`` (share of frames where all N peak on one token)."""
    peaks = np.asarray(maps).argmax(-1)  # (B, N)
    n = peaks.shape[1]
    same = peaks[:, :, None] == peaks[:, None, :]  # (B, N, N)
    pairs = (same.sum((1, 2)) - n) / max(1, n * (n - 1))
    return dict(argmax_pairs=float(pairs.mean()), argmax_frames=float((pairs > 0).mean()),
                argmax_all=float((peaks == peaks[:, :1]).all(1).mean()))


def shared_share(grads: np.ndarray | torch.Tensor) -> float:
    """N ||mean_i g_i||^2 / sum_i ||g_i||^2 of per-AU vectors g (N, D): the share of their
    energy in the direction common to all AUs (1: all equal; 1/N: orthogonal, equal norms)."""
    g = np.asarray(grads, np.float64)
    return float(len(g) * (g.mean(0) ** 2).sum() / max((g**2).sum(), 1e-300))


def attention_stats(maps: np.ndarray, prefix: str) -> dict[str, float]:
    """The entropy and arg-max sharing columns of one method's maps (B, N, T)."""
    ent = map_entropy(maps)
    tokens = maps.shape[-1]
    out = dict(entropy=float(ent.mean()),
               entropy_norm=float(ent.mean() / math.log(tokens)) if tokens > 1 else np.nan,
               **argmax_sharing(maps))
    return {f"{prefix}_{k}": v for k, v in out.items()}


# ----------------------------------------------------------------------------- one run
@torch.no_grad()
def layer_embeddings(model: torch.nn.Module) -> list[tuple[str, np.ndarray]]:
    """The text branch's AU embeddings stage by stage, evaluation descriptions, dropout off:
    H, the Transformer's input W_p H (+ E), and the output of each Transformer layer (the
    last is Z)."""
    text = model.text
    was_training = text.training
    text.eval()
    try:
        h = text(None).h
        x = text.proj(h)
        if getattr(text, "au_identity", None) is not None:
            x = text.au_identity(x)
        stages = [("H", h), ("proj", x)]
        x = x.unsqueeze(0)
        for i, layer in enumerate(text.context.layers, 1):
            x = layer(x)
            stages.append((f"layer{i}", x[0]))
    finally:
        text.train(was_training)
    return [(name, e.float().cpu().numpy()) for name, e in stages]


def gradient_sharing(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict:
    """How much L_au (Eq. 4) pulls the AUs' text embeddings the same way: :func:`shared_share`
    of dL_au/dZ_i and dL_au/dH_i on images ``x`` with labels ``y`` (training mode, evaluation
    descriptions, one forward and backward; the model's weights are not changed)."""
    from hiva_lib.losses import au_loss

    text, caught = model.text, {}
    forward = text.forward

    def keep(step=None):
        out = forward(step)
        out.h.retain_grad()
        out.z.retain_grad()
        caught["out"] = out
        return out

    text.forward = keep
    was_training = model.training
    # a text branch frozen in stage 2 (text_frozen_s2) is pulled all the same: its gradient
    # is measured with its weights made differentiable for this one backward
    frozen = [p for p in text.parameters() if not p.requires_grad]
    try:
        model.train()
        for p in frozen:
            p.requires_grad_(True)
        au_loss(model(x).logits.float(), y.float()).backward()
    finally:
        del text.forward
        for p in frozen:
            p.requires_grad_(False)
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    out = caught["out"]
    return dict(z_grad_shared=shared_share(out.z.grad.numpy()),
                h_grad_shared=shared_share(out.h.grad.numpy()))


def embedding_rows(run_dir: Path) -> list[dict]:
    """One record per saved stage-2 epoch of ``run_dir``: cosines and AU-specific parts."""
    per_epoch, _ = read_text_embeddings(run_dir)
    rows = []
    for e, v in sorted(per_epoch.items()):
        both = {**embedding_measures(v["H"], "h"), **embedding_measures(v["Z"], "z")}
        # h_cosine, z_cosine, h_specific, z_specific (the earlier tables' order), then the rest
        rows.append({"epoch": e, **{f"{x}_{m}": both[f"{x}_{m}"] for m in EMBEDDING_MEASURES
                                    for x in ("h", "z")}})
    return rows


def _train_frames(study: Study, n: int, crop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed subset (seeded by the study's seed) of ``n`` training-fold frames as the model
    sees them at evaluation, and their labels."""
    from hiva_lib.study.faces import load_views

    train, _ = study.data.split(study.cfg.fold)
    rows = np.sort(np.random.default_rng(study.cfg.seed).permutation(train)[:n])
    x, _ = load_views(study, rows, crop)
    return x, torch.as_tensor(study.data.labels(rows))


def initial_model(study: Study, variant: str) -> torch.nn.Module:
    """The stage-2 model of ``variant`` as its run started: initialised as training does for
    the study's seed, with the run's stage-1 weights."""
    import dataclasses

    from hiva_lib.engine.train import _build, load_stage1_checkpoint

    cfg = dataclasses.replace(study.cfg, variant=variant)
    model = _build(cfg, study.data, variant, torch.device("cpu"), backbone_weights=False)
    model.load_stage1(load_stage1_checkpoint(cfg, study.data)["model"])
    model.set_stage(2)
    return model


def _initial_or_none(study: Study, variant: str) -> torch.nn.Module | None:
    """:func:`initial_model`, or None (said) when the run's stage-1 checkpoint is gone."""
    try:
        return initial_model(study, variant)
    except CheckpointError as e:
        print(f"{variant} seed {study.cfg.seed} fold {study.cfg.fold}: nothing measured before "
              f"stage 2 ({str(e).splitlines()[0][:160]})")
        return None


def _layer_rows(key: dict, when: str, model: torch.nn.Module) -> list[dict]:
    return [{**key, "when": when, "stage": name, "cosine": off_diagonal_cosine(e),
             "specific": au_specific_part(e)} for name, e in layer_embeddings(model)]


def _run_maps(study: Study, model: torch.nn.Module, max_frames: int
              ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """({method: (B, N, HW)} DDCA and CDCA maps (where the model has them), {method: (B, N or
    1, HW)} the norms of the image tokens each attends over: F_i's for DDCA, X_g's for CDCA)
    on the fixed test subset of :func:`hiva_lib.study.fig6_attention.test_subset`."""
    from hiva_lib.study.fig6_attention import maps_of, test_subset

    norms: dict[str, list] = {"ddca": [], "cdca": []}

    def keep(method: str, channels: int):
        def hook(_module, _inputs, out: torch.Tensor) -> None:
            n = out.detach().flatten(-2).norm(dim=channels)  # (B, N, HW) or (B, HW)
            norms[method].append(n if n.dim() == 3 else n[:, None])
        return hook

    hooks = [model.branches.register_forward_hook(keep("ddca", 2)),  # F (B, N, C, H, W)
             model.backbone.register_forward_hook(keep("cdca", 1))]  # X_g (B, C, H, W)
    try:
        maps = maps_of(study, model, test_subset(study, max_frames), batch_size=16,
                       gradcam_maps=False)
    finally:
        for h in hooks:
            h.remove()
    maps = {k: m.reshape(*m.shape[:2], -1) for k, m in maps.items() if k in METHODS}
    return maps, {k: torch.cat(v).float().numpy() for k, v in norms.items() if k in maps}


def peak_at_largest(maps: np.ndarray, token_norms: np.ndarray) -> float:
    """The share of maps (B, N, T) that peak on the token of largest feature norm
    (``token_norms`` (B, N or 1, T)): how far the map follows the features' magnitude
    rather than what the query asks for."""
    peaks = np.asarray(maps).argmax(-1)
    return float((peaks == np.broadcast_to(np.asarray(token_norms).argmax(-1),
                                           peaks.shape)).mean())


def measure_run(study: Study, variant: str, max_frames: int = 64, grad_frames: int = 32
                ) -> tuple[list[dict], list[dict]]:
    """(rows of mechanism.csv, rows of mechanism_layers.csv) of one trained run of
    ``variant`` (``study``'s seed and fold). Raises FigureError when the run has no final
    checkpoint or no saved text embeddings."""
    ckpt = study.checkpoint(variant)
    rows = embedding_rows(ckpt.parent)
    if not rows:
        raise FigureError(f"{ckpt.parent / 'text_emb'}: no saved text embeddings (the run was "
                          "trained with save_text_embeddings=False); train it again with it on")
    model = study.model(variant)
    key = dict(dataset=study.dataset, variant=variant, seed=study.cfg.seed, fold=study.cfg.fold)
    rows = [{**key, **r} for r in rows]
    all_maps, norms = _run_maps(study, model, max_frames)
    for method, maps in all_maps.items():
        rows[-1].update(attention_stats(maps, method), tokens=maps.shape[-1])
        rows[-1][f"{method}_peak_at_largest"] = peak_at_largest(maps, norms[method])
    initial = _initial_or_none(study, variant)
    layers = (_layer_rows(key, "before", initial) if initial is not None else []) + _layer_rows(
        key, "final", model)
    if grad_frames:
        x, y = _train_frames(study, grad_frames, model.cfg.img_size)
        rows[-1].update(gradient_sharing(model, x, y))
        if initial is not None and rows[0]["epoch"] == 0:
            rows[0].update(gradient_sharing(initial, x, y))
    return rows, layers


# ----------------------------------------------------------------------------- all runs
def text_variants() -> list[str]:
    """Every variant with a language branch (a stage 2 and text: not ``baseline_s2``)."""
    from hiva_lib.variants import VARIANTS

    return [slug for slug, v in VARIANTS.items()
            if 2 in v.stages and v.overrides.get("use_text", True)]


def measure(dataset: str, seeds: list[int], folds: list[int] | None = None,
            variants: list[str] | None = None, max_frames: int = 64, grad_frames: int = 32,
            **roots
            ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Measure every (seed, fold, variant) run with a language branch that has a checkpoint
    under ``roots`` (data_root, runs_root, results_root, smoke: as :meth:`Study.open`); write
    results/<dataset>/mechanism.csv and mechanism_layers.csv (other runs' rows kept).
    Returns (mechanism, layers, status): status lists every run measured or skipped, why."""
    study = Study.open(dataset, **roots)
    folds = folds or study.data.test_folds
    rows, layers, status = [], [], []
    for seed in seeds:
        for fold in folds:
            study = Study.open(dataset, seed=seed, fold=fold, **roots)
            for v in variants or text_variants():
                try:
                    r, lay = measure_run(study, v, max_frames, grad_frames)
                    rows += r
                    layers += lay
                    what = "measured"
                except FigureError as e:
                    what = "skipped: " + str(e).splitlines()[0][:200]
                status.append(dict(seed=seed, fold=fold, variant=v, status=what))
    status = pd.DataFrame(status)
    if not rows:
        raise FigureError(f"{study.cfg.runs_root}: no trained run of {dataset} with a language "
                          f"branch for seeds {seeds}, folds {folds}. " + study._train_hint("full"))
    out = Path(study.cfg.results_root) / dataset
    table = write_run_rows(pd.DataFrame(rows), out / MECHANISM, float_format="%.5f")
    layer_table = write_run_rows(pd.DataFrame(layers), out / LAYERS, float_format="%.5f")
    return table, layer_table, status


# ----------------------------------------------------------------------------- figure
def _label(variant: str) -> str:
    from hiva_lib.variants import VARIANTS

    return VARIANTS[variant].row_name if variant in VARIANTS else variant


def _tracks(ax, table: pd.DataFrame, column: str, colours: dict) -> None:
    """``column`` per epoch: each run a thin line, the mean over runs a thick one."""
    for v, part in table.groupby("variant", sort=False):
        for _, run in part.groupby(["seed", "fold"]):
            ax.plot(run["epoch"], run[column], color=colours[v], lw=0.6, alpha=0.4)
        mean = part.groupby("epoch")[column].mean()
        ax.plot(mean.index, mean.values, color=colours[v], lw=2.2, marker="o", ms=3,
                label=f"{_label(v)} ({part.groupby(['seed', 'fold']).ngroups} runs)")
    ax.set_xlabel("stage-2 epoch (0: before)")
    ax.set_xticks(sorted(table["epoch"].unique()))


def _final_points(ax, table: pd.DataFrame, stat: str, colours: dict) -> None:
    """``<method>_<stat>`` at each run's last epoch: a dot per run, a bar for the mean."""
    last = table.dropna(subset=[f"{m}_{stat}" for m in METHODS], how="all")
    names = list(dict.fromkeys(last["variant"]))
    width = 0.8 / len(METHODS)
    for k, method in enumerate(METHODS):
        for i, v in enumerate(names):
            vals = last.loc[last["variant"] == v, f"{method}_{stat}"].dropna()
            if vals.empty:
                continue
            x = i + (k - (len(METHODS) - 1) / 2) * width
            ax.bar(x, vals.mean(), width * 0.9, color=colours[v], alpha=0.35 + 0.45 * k,
                   edgecolor="k", lw=0.5)
            ax.scatter(np.full(len(vals), x), vals, s=8, color="k", zorder=3)
            ax.text(x, 0.01, method.upper(), rotation=90, ha="center", va="bottom", fontsize=6)
    ax.set_xticks(range(len(names)), [_label(v) for v in names], rotation=30, ha="right",
                  fontsize=7)


def plot_mechanism(table: pd.DataFrame, layers: pd.DataFrame, dataset: str) -> Figure:
    """The collapse of the AU text embeddings: H and Z cosine and Z's AU-specific part per
    stage-2 epoch (runs thin, mean thick), where along the text branch the AUs merge (final
    models), and the attention maps' normalised entropy and arg-max sharing (last epoch)."""
    names = list(dict.fromkeys(table["variant"]))
    cmap = plt.get_cmap("tab10")
    colours = {v: cmap(i % 10) for i, v in enumerate(names)}
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    for ax, col, title in zip(axes[0], ("h_cosine", "z_cosine", "z_specific"),
                              ("H: mean off-diagonal cosine", "Z: mean off-diagonal cosine",
                               "Z: AU-specific part ||Z - mean|| / ||mean||"), strict=True):
        _tracks(ax, table, col, colours)
        ax.set_title(title, fontsize=10)
    axes[0, 2].set_yscale("log")
    axes[0, 0].legend(fontsize=7, loc="best")
    ax = axes[1, 0]
    for (v, when), part in layers.groupby(["variant", "when"], sort=False):
        order = list(dict.fromkeys(part["stage"]))
        style = dict(color=colours.get(v, "k"), ls="-" if when == "final" else ":")
        for _, run in part.groupby(["seed", "fold"]):
            ax.plot(order, run.set_index("stage")["cosine"].reindex(order), lw=0.6, alpha=0.4,
                    **style)
        mean = part.groupby("stage")["cosine"].mean().reindex(order)
        ax.plot(order, mean.values, lw=2.2, marker="o", ms=3, **style)
    ax.set_title("where the AUs merge: cosine (dotted: before stage 2, solid: final)",
                 fontsize=10)
    _final_points(axes[1, 1], table, "entropy_norm", colours)
    axes[1, 1].set_title("attention entropy / log(#tokens) (1: uniform)", fontsize=10)
    _final_points(axes[1, 2], table, "argmax_pairs", colours)
    axes[1, 2].set_title("AU pairs peaking on the same token (dashed: 1/#tokens)", fontsize=10)
    if "tokens" in table and table["tokens"].notna().any():
        axes[1, 2].axhline(1 / table["tokens"].dropna().iloc[0], color="k", ls="--", lw=0.8)
    fig.suptitle(f"{dataset}: the AU text embeddings and the attention (mechanism.csv)",
                 fontsize=11)
    fig.tight_layout()
    return fig


def mechanism_figure(study: Study, table: pd.DataFrame, layers: pd.DataFrame) -> list[Path]:
    """:func:`plot_mechanism` saved as figures/<dataset>/mechanism.png and .pdf."""
    return study.save(plot_mechanism(table, layers, study.dataset), "mechanism")
