"""Fig. 6: DDCA maps (Eq. 5 and its dual) of three AUs and the CDCA composite (Eq. 6, mean over
the AUs shown) on test faces, beside Grad-CAM of an AU logit; a flat map (no maximum to show)
is labelled as such. On SynthFACS every map is also scored against the ground-truth AU regions
(:func:`score_attention`, written to ``results/<dataset>/attention_scores.csv``; the scores
themselves are :mod:`hiva_lib.study.attention_scoring`) and the scores plotted
(:func:`plot_attention_scores`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from hiva_lib.data.au import au_keys
from hiva_lib.data.loader import load_size_for
from hiva_lib.model.text import cached_text
from hiva_lib.study import attention_scoring as scoring
from hiva_lib.study.drawing import MAP_CMAP, au_list, overlay
from hiva_lib.study.faces import load_views, region_in_view, sample_faces
from hiva_lib.study.maps import gradcam, maps_with_gradcam, model_maps
from hiva_lib.study.study import FigureError, Study, write_run_rows

# test frames per (seed, fold) scored against the AU regions: notebooks 06 and 10 score the
# same frames, so that the rows each writes to attention_scores.csv are the same
SCORED_FRAMES = 128


def _aus_to_show(labels: np.ndarray, probs: np.ndarray, k: int = 3) -> list[int]:
    """Up to ``k`` AU columns: the active ones first, then the most probable others."""
    active = [int(j) for j in np.flatnonzero(labels > 0.5)]
    others = [int(j) for j in np.argsort(-probs) if j not in active]
    return (active + others)[:k]


@dataclass
class Fig6Maps:
    """What Fig. 6 draws: the faces as the model sees them and every map on them."""

    rgb: np.ndarray  # (B, crop, crop, 3) centre crops
    labels: np.ndarray  # (B, N) ground truth
    regions: np.ndarray | None  # (B, N, crop, crop) AU regions in view; None off SynthFACS
    out: dict  # model_maps() of the model shown: probs, ddca, cdca
    shown: list[list[int]]  # per face, the AU columns shown (the first one gets Grad-CAM)
    cam: np.ndarray  # (B, crop, crop) Grad-CAM of the model shown
    cam_ref: np.ndarray | None  # the same for the reference; None when it is not trained


def fig6_maps(study: Study, variant: str, reference: str, n_faces: int) -> Fig6Maps:
    """Sample the faces and compute every map Fig. 6 shows."""
    model = study.model(variant)
    crop = model.cfg.img_size
    rows = sample_faces(study, n_faces)
    x, rgb = load_views(study, rows, crop)
    labels = study.data.labels(rows)
    regions = region_in_view(study, rows, crop)
    with cached_text(model):
        out = model_maps(model, x)
        shown = [_aus_to_show(labels[i], out["probs"][i]) for i in range(len(rows))]
        cam = gradcam(model, x, [s[0] for s in shown])
    try:
        cam_ref = gradcam(study.model(reference), x, [s[0] for s in shown])
    except FigureError:
        cam_ref = None
    return Fig6Maps(rgb, labels, regions, out, shown, cam, cam_ref)


def _fig6_row(axes: np.ndarray, maps: Fig6Maps, r: int, keys: list[str], name: str,
              ref_name: str) -> None:
    """Face ``r``'s row: the face, DDCA maps of up to three AUs, their CDCA composite, and
    Grad-CAM of the first AU for the model shown and the reference."""
    aus, rgb, labels = maps.shown[r], maps.rgb[r], maps.labels
    out, regions = maps.out, maps.regions
    overlay(axes[0], rgb, None, "face, active:\n" + au_list(labels[r], keys), plain=True)
    for c in range(3):
        ax = axes[1 + c]
        if c >= len(aus):
            ax.axis("off")
            continue
        j = aus[c]
        m = None if out["ddca"] is None else out["ddca"][r, j]
        state = "on" if labels[r, j] > 0.5 else "off"
        overlay(ax, rgb, m, f"DDCA {keys[j]} ({state}, p={out['probs'][r, j]:.2f})",
                None if regions is None else regions[r, j])
    comp = None if out["cdca"] is None else out["cdca"][r, aus].mean(0)
    union = None if regions is None else regions[r, aus].any(0)
    overlay(axes[4], rgb, comp, "CDCA composite\n(" + "+".join(keys[j] for j in aus) + ")",
            union)
    j0 = aus[0]
    region0 = None if regions is None else regions[r, j0]
    overlay(axes[5], rgb, maps.cam[r], f"Grad-CAM {keys[j0]}\n{name}", region0)
    overlay(axes[6], rgb, None if maps.cam_ref is None else maps.cam_ref[r],
            f"Grad-CAM {keys[j0]}\n{ref_name}", region0)


def fig6(study: Study, variant: str = "full", reference: str = "baseline",
         n_faces: int = 3) -> Figure:
    """Fig. 6: per face, DDCA maps of three AUs, the CDCA composite (mean of the three AUs'
    CDCA maps) and Grad-CAM of the first AU's logit for HiVA and the Baseline. White
    contours: the ground-truth region of the AU (SynthFACS only)."""
    from hiva_lib.variants import VARIANTS

    maps = fig6_maps(study, variant, reference, n_faces)
    keys = au_keys(study.data.au_ids)
    name, ref_name = VARIANTS[variant].row_name, VARIANTS[reference].row_name
    n_rows, n_cols = len(maps.rgb), 1 + 3 + 1 + 2
    fig, axes = plt.subplots(n_rows, n_cols, squeeze=False,
                             figsize=(1.9 * n_cols, 2.1 * n_rows + 0.5))
    for r in range(n_rows):
        _fig6_row(axes[r], maps, r, keys, name, ref_name)
    sm = plt.cm.ScalarMappable(cmap=MAP_CMAP, norm=plt.Normalize(0, 1))
    fig.suptitle(f"Fig. 6 ({study.dataset}): {name} attention maps (each map min-max scaled)"
                 + ("; white: ground-truth AU region" if maps.regions is not None else ""),
                 fontsize=10)
    fig.tight_layout()
    fig.colorbar(sm, ax=axes.ravel().tolist(), fraction=0.015, pad=0.01,
                 label="attention (scaled)")
    study.save(fig, "fig6_attention")
    return fig


# ----------------------------------------------------------------------------- scores
def test_subset(study: Study, max_frames: int) -> np.ndarray:
    """A fixed random subset (seeded by the study's seed) of at most ``max_frames`` rows of
    the study's test fold, sorted."""
    _, test = study.data.split(study.cfg.fold)
    rng = np.random.default_rng(study.cfg.seed)
    return np.sort(rng.permutation(test)[:max_frames])


def _frames_to_score(study: Study, max_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """The full-image AU region masks of every frame, and the rows scored
    (:func:`test_subset`)."""
    masks_all = study.data.region_masks()
    if masks_all is None:
        raise FigureError(f"{study.data.root}: no regions.npz; attention maps can only be scored "
                          "on SynthFACS (synth-*), whose AU regions are known.")
    return masks_all, test_subset(study, max_frames)


def maps_of(study: Study, model: torch.nn.Module, rows: np.ndarray, batch_size: int,
            gradcam_maps: bool) -> dict[str, np.ndarray]:
    """{method: (n, N, h, w)} of ``model`` on ``rows``: DDCA and CDCA where the model has
    them, Grad-CAM of every AU with ``gradcam_maps`` (from the same forward pass)."""
    parts: dict[str, list] = {}
    with cached_text(model):  # the text branch is image-independent: run it once
        for start in range(0, len(rows), batch_size):
            x, _ = load_views(study, rows[start:start + batch_size], model.cfg.img_size)
            out = maps_with_gradcam(model, x) if gradcam_maps else model_maps(model, x)
            for method in ("ddca", "cdca", "gradcam"):
                if out.get(method) is not None:
                    parts.setdefault(method, []).append(out[method])
    return {method: np.concatenate(p) for method, p in parts.items()}


def _score_records(study: Study, variant: str, maps: dict[str, np.ndarray],
                   labels: np.ndarray, masks: np.ndarray) -> list[dict]:
    """One record per (method, AU): the AU's maps scored on the frames where it is active."""
    from hiva_lib.variants import VARIANTS

    records = []
    for method, per_au in maps.items():
        for j, key in enumerate(au_keys(study.data.au_ids)):
            on = np.flatnonzero((labels[:, j] > 0.5) & masks[:, j].any((-1, -2)))
            s = scoring.score_maps(per_au[on, j], masks[on, j])
            records.append(dict(dataset=study.dataset, variant=variant,
                                row_name=VARIANTS[variant].row_name, seed=study.cfg.seed,
                                fold=study.cfg.fold, method=method, au=key, n_frames=len(on),
                                n_flat=int(s["flat"].sum()),
                                pointing=np.nanmean(s["pointing"]) if len(on) else np.nan,
                                energy=np.nanmean(s["energy"]) if len(on) else np.nan,
                                chance=np.nanmean(s["area"]) if len(on) else np.nan))
    return records


def _with_means(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` and, per (variant, method), a row ``au == "mean"`` averaging over AUs."""
    means = (table.groupby(["dataset", "variant", "row_name", "seed", "fold", "method"],
                           sort=False)[["n_frames", "n_flat", "pointing", "energy",
                                        "chance"]]
             .mean().reset_index().assign(au="mean"))
    return pd.concat([table, means[table.columns]], ignore_index=True)


def score_attention(study: Study, variants: list[str] | None = None,
                    max_frames: int = SCORED_FRAMES,
                    batch_size: int = 16, gradcam_maps: bool = True) -> pd.DataFrame:
    """Score DDCA, CDCA and Grad-CAM maps against the ground-truth AU regions (SynthFACS).

    Test-fold frames (at most ``max_frames``, a fixed random subset) are scored for each AU
    that is active in them: pointing game and energy inside the region, per AU and per variant
    (every variant with a trained model). ``chance`` is the mean region area: what a uniform
    map scores on both. ``n_flat`` counts the scored maps that are degenerate
    (:func:`hiva_lib.study.attention_scoring.is_flat`: constant or without positive mass), which
    score exactly ``chance`` by construction. Rows with ``au == "mean"`` average over AUs.
    Written to ``results/<dataset>/attention_scores.csv`` (the rows of other runs kept).
    """
    from hiva_lib.variants import VARIANTS

    masks_all, rows = _frames_to_score(study, max_frames)
    labels = study.data.labels(rows)
    records = []
    for v in variants or list(VARIANTS):
        try:
            model = study.model(v)
        except FigureError:
            continue  # a variant not trained is simply not scored
        crop = model.cfg.img_size
        masks = scoring.masks_in_view(masks_all[rows], load_size_for(crop), crop)
        maps = maps_of(study, model, rows, batch_size, gradcam_maps)
        records += _score_records(study, v, maps, labels, masks)
    table = pd.DataFrame(records)
    if table.empty:
        raise FigureError(f"{study.cfg.runs_root}: no trained model of {study.dataset} to score. "
                          + study._train_hint("full"))
    table = _with_means(table)
    out = Path(study.cfg.results_root) / study.dataset / "attention_scores.csv"
    write_run_rows(table, out, float_format="%.4f")
    return table


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
