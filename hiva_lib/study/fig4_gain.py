"""Fig. 4: per-AU F1 gain of HiVA over the vision-only Baseline against the AU's frequency in
the training data (from ``results/<dataset>/<variant>/seed*/fold*/metrics.json``): the relative
gain (% of the Baseline's F1, as the paper's Fig. 4) and the absolute one (F1 points).
"""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from hiva_lib.data.au import au_keys
from hiva_lib.integrity import atomic_write_text
from hiva_lib.study.study import FigureError, Study


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


def _label_offsets(ax, x: np.ndarray, y: np.ndarray, labels: list[str],
                   size: float = 9.0) -> list[float]:
    """Vertical offsets (points) of the AU labels so that none covers another: AUs with
    nearly the same frequency and gain (all of them at smoke size) are stacked, not drawn on
    top of each other. Greedy, in the order of the points; sizes from the panel's extent."""
    if not len(x):
        return []
    box = ax.get_window_extent()
    width, height = box.width * 72 / ax.figure.dpi, box.height * 72 / ax.figure.dpi
    px = (x - x.min()) / (np.ptp(x) or 1.0) * width
    py = (y - y.min()) / (np.ptp(y) or 1.0) * height
    placed: list[tuple[float, float, float]] = []  # left, bottom, right of each label
    offsets = []
    for xi, yi, text in zip(px, py, labels, strict=True):
        left, right, dy = xi + 5, xi + 5 + 0.65 * size * len(text), 5.0
        while any(left < r and right > le and abs(yi + dy - b) < size + 1
                  for le, b, r in placed):
            dy += size + 2
        placed.append((left, yi + dy, right))
        offsets.append(dy)
    return offsets


def _gain_panel(ax, gains: pd.DataFrame, kind: str, label: str, reference: str) -> None:
    """One Fig. 4 panel: gain against training frequency, AU labels, least-squares trend."""
    column, ylabel = GAIN_KINDS[kind]
    finite = np.isfinite(gains[column].to_numpy(float))
    x = gains["frequency"].to_numpy(float)[finite]
    y = gains[column].to_numpy(float)[finite]
    ax.axhline(0, color="grey", lw=0.8, ls=":")
    ax.scatter(x, y, s=60, c=np.where(y >= 0, "tab:green", "tab:red"), edgecolor="black",
               zorder=3)
    names = list(gains["au"][finite])
    for xi, yi, au, dy in zip(x, y, names, _label_offsets(ax, x, y, names), strict=True):
        ax.annotate(au, (xi, yi), textcoords="offset points", xytext=(5, dy), fontsize=9)
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
