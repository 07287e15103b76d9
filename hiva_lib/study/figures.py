"""Figures 4-7 of the paper, regenerated from saved results and checkpoints: one import for
notebook 06 (``from hiva_lib.study import figures as F; F.fig4(F.Study.open(...))``).

Each figure lives in its own module; this one only gathers their public names:

* :mod:`hiva_lib.study.study`: :class:`Study` (where a data set's data, runs, results and
  figures live), :func:`run_figure`, :func:`show`, :func:`figure_status` (drawn and skipped),
  :class:`FigureError`, ``FIGURES`` (every figure of notebook 06);
* :mod:`hiva_lib.study.fig4_gain`: Fig. 4, per-AU F1 gain against AU frequency;
* :mod:`hiva_lib.study.fig5_text`: Fig. 5, text AU embeddings over training (and their saved copy);
* :mod:`hiva_lib.study.fig6_attention`: Fig. 6, DDCA / CDCA maps beside Grad-CAM, and their
  scores against SynthFACS' AU regions (:func:`score_attention`, :func:`plot_attention_scores`;
  the scores themselves: :mod:`hiva_lib.study.attention_scoring`);
* :mod:`hiva_lib.study.fig7_graphs`: Fig. 7, the top-K AU graphs;
* shared: :mod:`hiva_lib.study.faces` (the test faces shown, as the model sees them),
  :mod:`hiva_lib.study.drawing` (map overlays), :mod:`hiva_lib.study.maps` (attention maps and
  Grad-CAM of a model).
"""
from __future__ import annotations

from hiva_lib.study.drawing import MAP_CMAP, OVERLAY_ALPHA, draw_map, overlay
from hiva_lib.study.faces import load_views, sample_faces
from hiva_lib.study.fig4_gain import GAIN_KINDS, f1_gains, fig4, plot_f1_gain
from hiva_lib.study.fig5_text import (
    cosine_matrix,
    fig5,
    fig5_inputs_path,
    load_fig5_inputs,
    load_text_embeddings,
    mean_off_diagonal,
    pick_epochs,
    plot_text_similarity,
    read_text_embeddings,
    save_fig5_inputs,
)
from hiva_lib.study.fig6_attention import fig6, plot_attention_scores, score_attention
from hiva_lib.study.fig7_graphs import draw_au_graph, fig7
from hiva_lib.study.maps import gradcam, model_maps
from hiva_lib.study.study import FIGURES, FigureError, Study, figure_status, run_figure, show

__all__ = [
    "FIGURES", "GAIN_KINDS", "MAP_CMAP", "OVERLAY_ALPHA", "FigureError", "Study",
    "cosine_matrix", "draw_au_graph", "draw_map", "f1_gains", "fig4", "fig5", "fig5_inputs_path",
    "fig6", "fig7", "figure_status",
    "gradcam", "load_fig5_inputs", "load_text_embeddings", "load_views", "mean_off_diagonal",
    "model_maps", "overlay", "pick_epochs", "plot_attention_scores", "plot_f1_gain",
    "plot_text_similarity", "read_text_embeddings", "run_figure", "sample_faces",
    "save_fig5_inputs", "score_attention", "show",
]
