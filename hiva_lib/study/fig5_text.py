"""Fig. 5: cosine similarity of the text AU embeddings H_i (the rows L_diff of Eq. 1 acts on)
at several stage-2 epochs, HiVA vs HiVA w/o L_diff (``runs/.../text_emb/epochNNN.pt``). The
embeddings drawn are copied to ``results/<dataset>/fig5_text_embeddings_seed<s>_fold<k>.npz``
so that the figure can be redrawn without runs/ (a fresh clone).
"""
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from hiva_lib.data.au import au_keys
from hiva_lib.engine.checkpoint import load_checkpoint
from hiva_lib.study.study import FIGURES, FigureError, Study


def read_text_embeddings(run_dir: Path) -> tuple[dict[int, dict[str, np.ndarray]], list[int]]:
    """({epoch: {"H": ..., "Z": ...}}, AU ids) as saved by stage 2 in
    ``run_dir/text_emb/epochNNN.pt``; ({}, []) when none were saved."""
    out, au_ids = {}, []
    for path in sorted((run_dir / "text_emb").glob("epoch*.pt")):
        saved = load_checkpoint(path, "text embeddings", "Train that stage-2 run again "
                                "(notebook 03 with -p if_exists version).")
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
    from hiva_lib.integrity import free_version, newest_version

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
    from hiva_lib.integrity import newest_version

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


def _embeddings_from_runs(study: Study, variants: tuple[str, ...]
                          ) -> tuple[dict[str, dict[int, dict[str, np.ndarray]]], list[int],
                                     dict[str, str]]:
    """The per-epoch H and Z that each variant's stage-2 run saved: ({variant: {epoch:
    {"H", "Z"}}}, AU ids, {variant: what is missing and how to get it})."""
    embs, au_ids, missing = {}, [], {}
    for v in variants:
        try:
            run_dir = study.checkpoint(v).parent
        except FigureError as e:
            missing[v] = str(e)
            continue
        saved, ids = read_text_embeddings(run_dir)
        if saved:
            embs[v], au_ids = saved, ids
        else:
            missing[v] = (f"{run_dir / 'text_emb'}: no saved text embeddings "
                          "(save_text_embeddings was off?). " + study._train_hint(v))
    return embs, au_ids, missing


def fig5(study: Study, variants: tuple[str, str] = ("wo_ldiff", "full"), which: str = "H",
         n_epochs: int = 4) -> dict[str, dict[int, np.ndarray]]:
    """Fig. 5 from the text embeddings the stage-2 runs saved per epoch (top: w/o L_diff,
    bottom: HiVA, as in the paper). Returns {row label: {epoch: cosine matrix}}.

    Drawn from runs/ when both variants' embeddings are there, and then copied to
    :func:`fig5_inputs_path` (a few hundred kB at most); without runs/ (a fresh clone) it is
    drawn from that saved copy; with neither, from the variants that runs/ holds (a row per
    variant; the missing rows are recorded in ``study.skipped`` with how to get them)."""
    from hiva_lib.variants import VARIANTS

    if which not in ("H", "Z"):
        raise ValueError(f"which must be 'H' or 'Z', not {which!r}")
    embs, au_ids, missing = _embeddings_from_runs(study, variants)
    if not missing:
        print(f"Fig. 5 inputs kept in {save_fig5_inputs(study, embs, au_ids)}")
    else:
        why = " ".join(missing.values())
        try:
            embs, au_ids, path = load_fig5_inputs(study, variants)
            print(f"Fig. 5 drawn from the saved copy {path} ({why})")
        except FigureError as no_copy:
            if not embs:
                raise FigureError(f"{why} {no_copy}") from None
            rows = ", ".join(VARIANTS[v].row_name for v in missing)
            study.skipped[FIGURES["fig5"]] = f"the row of {rows} is not drawn: {why}"
            print(f"Fig. 5 drawn without the row of {rows}: {why}")
    sims = {}
    for v in (v for v in variants if v in embs):
        chosen = pick_epochs(sorted(embs[v]), n_epochs)
        sims[VARIANTS[v].row_name] = {e: cosine_matrix(_pooled(embs[v][e][which]))
                                      for e in chosen}
    study.save(plot_text_similarity(sims, au_ids, study.dataset, which), FIGURES["fig5"])
    return sims
