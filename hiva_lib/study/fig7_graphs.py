"""Fig. 7: the top-K AU graphs (Sec. III-C) that each model computes from its AU features U_i
on test faces, HiVA vs Baseline, as circular node-link diagrams with ground-truth and
predicted AUs marked. The Baseline (stage 1) predicts from its graph; HiVA's stage-2
prediction does not use the graph by default (ambiguity 2): each panel says which.
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from hiva_lib.data.au import au_keys
from hiva_lib.study.drawing import au_list
from hiva_lib.study.faces import load_views, sample_faces
from hiva_lib.study.maps import model_maps
from hiva_lib.study.study import Study


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
        axes[r, 0].set_title("active:\n" + au_list(labels[r], au_keys(au_ids)), fontsize=8)
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
    fig.legend(handles=_legend_handles(), loc="lower center", ncol=3, fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(f"Fig. 7 ({study.dataset}): top-K AU graphs from each model's AU features "
                 "U_i (Sec. III-C; node size: in-degree)", fontsize=10)
    fig.tight_layout(rect=(0, 0.6 / (3.1 * len(rows) + 0.8), 1, 1))
    study.save(fig, "fig7_au_graphs")
    return fig


def _legend_handles() -> list:
    """Fig. 7's legend: node fill (ground truth), ring (prediction), edge colour (mutual)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    return [Patch(facecolor="tab:orange", edgecolor="black", label="active (ground truth)"),
            Patch(facecolor="whitesmoke", edgecolor="silver", label="inactive"),
            Line2D([], [], marker="o", ls="", markerfacecolor="white", markeredgecolor="black",
                   markeredgewidth=2.5, markersize=10, label="predicted active (thick ring)"),
            Line2D([], [], marker="o", ls="", markerfacecolor="white", markeredgecolor="red",
                   markeredgewidth=2.0, markersize=10, label="wrong prediction (red ring)"),
            Line2D([], [], color="tab:blue", lw=2, label="mutual top-K edge"),
            Line2D([], [], color="tab:gray", lw=2, label="one-way top-K edge")]


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
