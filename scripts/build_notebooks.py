"""Write the numbered notebooks from the cell sources below (the single source of truth).

Notebooks hold narrative, a papermill ``parameters`` cell and calls into hiva_lib; no logic.
Run ``python scripts/build_notebooks.py`` after editing a notebook's cells here.
"""
from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NOTEBOOKS: dict[str, list[tuple[str, str]]] = {}

NOTEBOOKS["01_prepare_data"] = [
    ("md", """# 01 Prepare a data set

Writes a *prepared data set* (index table + face images, the contract of
`hiva_lib/data/prepared.py`) under `data_root/<dataset>/`.

* `synth-bp4d`, `synth-disfa`, `synth-gft`: the embedded SynthFACS data set, rendered here.
* `bp4d`, `disfa`, `gft`: your licensed copy at `raw_root` (layouts: `docs/data.md`), or
  ME-GraphAU's list files and aligned images (`megraphau_list_dir`, `megraphau_image_root`).

A finished data set is reused, never overwritten silently (`overwrite=True` prepares it again).
For SynthFACS a contact sheet of faces and labels goes to `figures_root/<dataset>/`."""),
    ("params", """dataset = "synth-disfa"
raw_root = None  # the licensed copy, for bp4d / disfa / gft
data_root = None  # default: data/prepared under the project root
align = "auto"  # face alignment: "auto", "mtcnn", or "skip" (already cropped faces)
image_size = 256  # real data sets (the loader crops 224 from 256); SynthFACS renders at 128 px
overwrite = False
smoke = False  # a tiny version, for tests
split_file = None  # GFT: the official train/test split (default: raw_root/split.csv)
first_frame = None  # GFT videos: the number of a video's first frame in its labels (None: 1)
frames_dir = None  # non-standard raw folder names, relative to raw_root (None: the usual ones)
labels_dir = None
videos_dir = None
megraphau_list_dir = None  # import ME-GraphAU's data/<DS>/list instead of preparing raw_root
megraphau_image_root = None  # the images its lists name (None: data/<DS>/img beside the lists)
figures_root = None  # SynthFACS contact sheet; default figures/ (smoke: figures/_smoke/)"""),
    ("code", """from hiva_lib.engine.config import make_config
from hiva_lib.data.prepared import summary_table
from hiva_lib.data.prepare import contact_sheet_figure, prepare_dataset

cfg = make_config(dataset, data_root=data_root)
data = prepare_dataset(dataset, cfg.data_root, raw_root=raw_root, align=align,
                       image_size=image_size, overwrite=overwrite, smoke=smoke,
                       split_file=split_file, first_frame=first_frame, frames_dir=frames_dir,
                       labels_dir=labels_dir, videos_dir=videos_dir,
                       megraphau_list_dir=megraphau_list_dir,
                       megraphau_image_root=megraphau_image_root)
print(f"{data.name}: {len(data.index)} frames, AUs {list(data.au_ids)}, "
      f"protocol {data.meta['protocol']}, test folds {data.test_folds}, at {data.root}")"""),
    ("md", "Subjects, frames and AU base rates (%) per fold:"),
    ("code", "summary_table(data)"),
    ("md", "SynthFACS only (licensed faces stay out of figures/): faces with their active AUs."),
    ("code", """sheet = contact_sheet_figure(data, figures_root, smoke=smoke, overwrite=overwrite)
print(sheet or "no contact sheet for licensed data")"""),
]

_TRAIN_PARAMS = """dataset = "synth-disfa"
fold = 1
variant = "full"  # a row of Tables IV-VI: see hiva_lib/variants.py
epochs = None  # None: the preset's (paper: 30; synth-cpu: see hiva_lib/engine/config.py)
batch_size = None
lr = None
data_root = None  # default: data/prepared under the project root
runs_root = None  # checkpoints; default: runs/
results_root = None  # metrics; default: results/
device = "auto"  # "auto" (cuda if available), "cpu", "cuda"
seed = 0
smoke = False  # a few steps of a tiny model, for tests
if_exists = "skip"  # a finished run: "skip" (reuse), "version" (rerun into -v2), "error"
model_overrides = None  # ModelConfig fields, e.g. {"pretrained": "/path/swin_b.safetensors",
#                         "text_model": "/path/bert-large-uncased"} for offline machines"""

NOTEBOOKS["02_train_stage1"] = [
    ("md", """# 02 Training stage 1: visual encoding and AU graph

Stage 1 of Alg. 1 trains (a) the visual encoder and (c) the AU branches with the dynamic
graph, with the weighted L_au of Eq. 4 (inverse-frequency weights from the training fold).
Its checkpoint is shared by every stage-2 variant of the same data set, fold and seed, and
evaluated as is it is the vision-only **Baseline** ("VLU" in Table IV). Killed runs resume."""),
    ("params", _TRAIN_PARAMS),
    ("code", """from hiva_lib.engine.config import make_config
from hiva_lib.engine.train import evaluate_run, train_stage1

cfg = make_config(dataset, smoke=smoke, fold=fold, seed=seed, epochs_stage1=epochs,
                  batch_size=batch_size, lr_stage1=lr, data_root=data_root, runs_root=runs_root,
                  results_root=results_root, device=device, if_exists=if_exists,
                  model_overrides=model_overrides)
result = train_stage1(cfg)
result.run_dir"""),
    ("md", "Training log (loss per epoch):"),
    ("code", """import pandas as pd

pd.read_csv(result.run_dir / "log.csv")"""),
    ("md", "The stage-1 model on the test fold: the Baseline row of Tables IV-VI (F1 per AU)."),
    ("code", """import dataclasses

baseline_cfg = dataclasses.replace(cfg, variant="baseline")
metrics, out_dir = evaluate_run(baseline_cfg, result.checkpoint, result.run_dir)
print(f"mean F1 {metrics['mean_f1']:.3f} (all-positive detector: "
      f"{metrics['all_positive_mean_f1']:.3f}); written to {out_dir}")
pd.DataFrame([metrics["f1"]]).round(3)"""),
]

NOTEBOOKS["03_train_stage2"] = [
    ("md", """# 03 Training stage 2: the full HiVA model

Stage 2 of Alg. 1 starts from the stage-1 checkpoint (notebook 02) and trains the full
model of the chosen variant, with L_tot = L_au + lambda L_diff (Eq. 7): text encoder (b), the
hierarchical vision-language interaction (d: DDCA and CDCA). Results go to
`results/<dataset>/<variant>/seed<seed>/fold<k>/`."""),
    ("params", _TRAIN_PARAMS),
    ("code", """from hiva_lib.engine.config import make_config
from hiva_lib.engine.train import evaluate_run, train_stage2

cfg = make_config(dataset, smoke=smoke, fold=fold, seed=seed, variant=variant,
                  epochs_stage2=epochs, batch_size=batch_size, lr_stage2=lr, data_root=data_root,
                  runs_root=runs_root, results_root=results_root, device=device,
                  if_exists=if_exists, model_overrides=model_overrides)
result = train_stage2(cfg)
result.run_dir"""),
    ("md", "Training log (L_au, L_diff per epoch):"),
    ("code", """import pandas as pd

pd.read_csv(result.run_dir / "log.csv")"""),
    ("md", "Per-AU F1 on the test fold:"),
    ("code", """metrics, out_dir = evaluate_run(cfg, result.checkpoint, result.run_dir)
print(f"{metrics['row_name']}: mean F1 {metrics['mean_f1']:.3f} (all-positive detector: "
      f"{metrics['all_positive_mean_f1']:.3f}); written to {out_dir}")
pd.DataFrame([metrics["f1"]]).round(3)"""),
]

NOTEBOOKS["04_ablations"] = [
    ("md", """# 04 Ablations: every row of Tables IV-VI

Runs the eight variant presets of `hiva_lib/variants.py` (the rows of Tables IV, V, VI) over the
folds and seeds of one data set: stage 1 once per fold and seed (it is also the Baseline row),
then stage 2 of each variant. Resumable: finished runs are reused, failed or killed ones rerun
when this notebook is run again. Status per run: `results/<dataset>/ablation_status.csv`,
updated after every run and merged with earlier calls (one row per variant, seed and fold; a
`started` row left behind is a run that was killed).

On a CPU, two runs train at once with one thread each (`workers`; on 2 cores 1.1-1.25x the
throughput of one run on two threads); their progress is one line per finished run. Training is
bit-reproducible for a given number of threads per run."""),
    ("params", """dataset = "synth-disfa"  # bp4d, disfa, gft, or a SynthFACS preset
variants = None  # None: all eight rows; or a list of slugs, e.g. ["full", "baseline"]
folds = None  # None: every test fold of the data set
seeds = [0]
data_root = None
runs_root = None
results_root = None
device = "auto"
workers = None  # runs at once; None: 2 on a CPU, 1 on a GPU
smoke = False"""),
    ("code", """from hiva_lib.engine.ablation import run_ablation

status = run_ablation(dataset, variants, folds, seeds, smoke=smoke, workers=workers,
                      data_root=data_root, runs_root=runs_root, results_root=results_root,
                      device=device)
status"""),
]

NOTEBOOKS["05_report"] = [
    ("md", """# 05 Report: our Tables I-VI beside the paper's

Collects every finished run of a data set (notebooks 02-04), summarises per-AU F1 (mean and
spread over folds and seeds), sets it beside the paper's numbers with deltas, compares each
variant's gain over the Baseline (paired per fold and seed, mean ± std, resolved or not) with
the paper's, audits the paper's own tables, and plots the deltas and the gains. Written to
`results/<dataset>/report/`."""),
    ("params", """dataset = "synth-disfa"
results_root = None  # default: results/ under the project root
smoke = False"""),
    ("code", """from pathlib import Path

from IPython.display import Markdown, display

from hiva_lib.engine.config import make_config
from hiva_lib.study.report import write_report

cfg = make_config(dataset, smoke=smoke, results_root=results_root)
out_dir = Path(cfg.results_root) / dataset / "report"
files = write_report(cfg.results_root, dataset, out_dir)
files"""),
    ("code", """for md in sorted(out_dir.glob("*.md")):
    display(Markdown(md.read_text()))"""),
]


_FIG_PARAMS = """dataset = "synth-disfa"
data_root = None  # default: data/prepared under the project root
runs_root = None  # checkpoints (and text embeddings); default: runs/
results_root = None  # metrics; default: results/
figures_root = None  # default: figures/ (smoke: figures/_smoke/)
smoke = False  # the smoke-size study of the tests
seed = 0
fold = 1"""

NOTEBOOKS["06_figures"] = [
    ("md", """# 06 Figures 4-7 and Grad-CAM

Regenerates the paper's qualitative figures from saved results and checkpoints (notebooks
02-04 first), as PNG and PDF under `figures_root/<dataset>/`:

* **Fig. 4** per-AU F1 gain of HiVA over the vision-only Baseline against AU frequency
  (relative, as the paper, and absolute);
* **Fig. 5** cosine similarity of the text AU embeddings over stage-2 epochs, w/o L_diff vs HiVA
  (its inputs are copied to `results/<dataset>/`, so it can be redrawn without `runs/`);
* **Fig. 6** DDCA maps, the CDCA composite and Grad-CAM on test faces; on SynthFACS every map
  is scored against the ground-truth AU regions (`results/<dataset>/attention_scores.csv`);
* **Fig. 7** the top-K AU graphs each model computes from its AU features, HiVA vs Baseline.

Details and definitions: `docs/figures.md`."""),
    ("params", _FIG_PARAMS + """
variant = "full"  # the model shown (HiVA)
reference = "baseline"  # the vision-only reference of Figs. 4, 6, 7
n_faces = 3
max_frames = 256  # test frames scored against the AU regions (SynthFACS)
device = "cpu"
skip_missing = False  # True: report a figure whose runs are missing and go on"""),
    ("code", """from hiva_lib.study import figures as F

study = F.Study.open(dataset, data_root=data_root, runs_root=runs_root,
                     results_root=results_root, figures_root=figures_root, smoke=smoke,
                     seed=seed, fold=fold, device=device)
study"""),
    ("md", """## Fig. 4: F1 gain against AU frequency
The paper: the rarer the AU, the larger HiVA's relative gain. Left: the relative gain (% of the
Baseline's F1, the paper's Fig. 4); right: the absolute gain (F1 points). Frequencies are the AU
base rates of the training folds; F1 is averaged over every (seed, fold) both models have."""),
    ("code", """gains = F.run_figure(F.fig4, study, variant, reference, skip_missing=skip_missing)
if gains is not None:
    display(F.show(study, "fig4_f1_gain"), gains.round(2))"""),
    ("md", """## Fig. 5: text AU embeddings over training
Cosine similarity of H_i (the rows L_diff of Eq. 1 pushes apart), saved after every stage-2
epoch; top: w/o L_diff, bottom: HiVA. Drawn from `runs/` when the two runs are there (and then
copied to `results/<dataset>/fig5_text_embeddings_seed<s>_fold<k>.npz`), else from that copy."""),
    ("code", """sims = F.run_figure(F.fig5, study, skip_missing=skip_missing)
if sims is not None:
    display(F.show(study, "fig5_text_similarity"))"""),
    ("md", """## Fig. 6: DDCA, CDCA and Grad-CAM maps
Three AUs per face (active ones first), the CDCA composite over them, and Grad-CAM of the first
AU's logit for HiVA and the Baseline. White contours: the ground-truth AU region (SynthFACS)."""),
    ("code", """fig = F.run_figure(F.fig6, study, variant, reference, n_faces,
                   skip_missing=skip_missing)
if fig is not None:
    display(F.show(study, "fig6_attention"))"""),
    ("md", """### Attention against the ground-truth AU regions (SynthFACS only)
Pointing game (is the map's maximum inside the AU's region?) and energy inside the region
(the fraction of the map's mass there), over test frames where the AU is active, per AU and
variant; `chance` is what a uniform map scores (the region's area). `n_flat` counts degenerate
maps (constant, e.g. an all-zero Grad-CAM), which score `chance` by construction."""),
    ("code", """if study.data.region_masks() is not None:
    scores = F.score_attention(study, max_frames=max_frames)
    study.save(F.plot_attention_scores(scores, dataset), "attention_scores")
    display(F.show(study, "attention_scores"))
    display(scores[scores.au == "mean"].round(3))
else:
    print(f"{dataset} has no ground-truth AU regions; only SynthFACS can be scored")"""),
    ("md", """## Fig. 7: AU graphs
Each AU linked to its top-K neighbours (from U_i); orange: active AUs, thick ring: predicted
active, red ring: a wrong prediction. The Baseline (stage 1) predicts from its graph; HiVA's
stage-2 prediction does not use the graph by default (ambiguity 2), so its graph is drawn from
its U_i for comparison only; each panel says which."""),
    ("code", """fig = F.run_figure(F.fig7, study, (variant, reference), n_faces,
                   skip_missing=skip_missing)
if fig is not None:
    display(F.show(study, "fig7_au_graphs"))"""),
]

NOTEBOOKS["07_efficiency"] = [
    ("md", """# 07 Efficiency: parameters, FLOPs, latency

The paper (Sec. IV-A): 156.08M parameters, 19.09 GFLOPs, 63.1 ms per inference at batch 32 on
an RTX 3090, 215.8 ms on a Xeon CPU. We read the latencies as one forward pass: 63.1 ms per
batch of 32 (1.97 ms per image), 215.8 ms per image at batch 1.
We measure the `paper` architecture (Swin-B + BERT-large, random weights: no download) and the
laptop preset, and say what each number counts (`hiva_lib/study/efficiency.py`, `docs/figures.md`).
The text branch depends only on the fixed descriptions, so at inference it can be computed
once: both costs are shown.
Written to `results_root/efficiency.csv` (a table already there is kept; the new one goes to
`efficiency-v2.csv`, `-v3`...)."""),
    ("params", """presets = ["paper", "cpu-small"]  # keys of hiva_lib.presets.MODEL_PRESETS
au_set = "bp4d"  # the AU count of a data set (BP4D: 12, as the paper's numbers)
device = "auto"  # batch-32 latency here ("auto": cuda if available); batch 1 always on CPU
batch_size = 32
reps = 3
cpu_reps = 5
results_root = None  # default: results/ (smoke: results/_smoke/)
smoke = False  # the tiny test preset only"""),
    ("code", """from pathlib import Path

from hiva_lib.study import efficiency as E
from hiva_lib.engine.config import make_config

if smoke:
    presets, batch_size, reps, cpu_reps = ["test-tiny"], 4, 1, 1
out_csv = Path(make_config(au_set, smoke=smoke, results_root=results_root).results_root)
out_csv = out_csv / "efficiency.csv"  # an existing table is kept: -v2, -v3...
table, written = E.efficiency_table(presets, au_set, device, batch_size, reps, cpu_reps,
                                    out_csv)
print(f"written to {written}")
E.comparison(table)"""),
    ("md", "Parameters per module (millions) and everything measured:"),
    ("code", """table.set_index("preset").T"""),
]

NOTEBOOKS["08_inference"] = [
    ("md", """# 08 AU detection on your own faces

`hiva_lib.study.inference.infer` takes an image, a folder of images or a video, detects and aligns
each face (MTCNN, the 5-point template of the prepared data sets; `align="skip"` for inputs
that are already face crops), and writes per-frame AU probabilities (`au_probabilities.csv`)
and attention overlays (`overlays/*.png`) from a trained checkpoint.

Without `source`, a few test frames of the prepared data set are used as a demo."""),
    ("params", """checkpoint = None  # a final.pt; None: the trained `variant` of the study below
source = None  # an image, a folder or a video; None: test frames of `dataset`
out_dir = None  # default: results_root/<dataset>/inference
align = "auto"  # "auto" (MTCNN), "mtcnn", or "skip" (inputs are face crops)
every = 1  # video: every n-th frame
max_frames = None
device = "cpu"
""" + _FIG_PARAMS + """
variant = "full\""""),
    ("code", """from pathlib import Path

import pandas as pd
from IPython.display import Image, display

from hiva_lib.study.figures import Study
from hiva_lib.study.inference import infer

study = Study.open(dataset, data_root=data_root, runs_root=runs_root,
                   results_root=results_root, figures_root=figures_root, smoke=smoke,
                   seed=seed, fold=fold)
if checkpoint is None:
    checkpoint = study.checkpoint(variant)
if source is None:  # demo: a few test-fold frames of the prepared data set
    _, test_rows = study.data.split(fold)
    source = [study.data.image_path(int(r)) for r in test_rows[:6]]
if out_dir is None:
    out_dir = Path(study.cfg.results_root) / dataset / "inference"
table = infer(checkpoint, source, out_dir, align=align, device=device, every=every,
              max_frames=max_frames)
print(f"{len(table)} frames, {int(table.face_found.sum())} with a face; written to "
      f"{table.attrs['out_dir']}")
table.round(3)"""),
    ("md", "Attention overlays of the first faces:"),
    ("code", """for png in sorted(Path(table.attrs["out_dir"], "overlays").rglob("*.png"))[:3]:
    display(Image(filename=str(png)))"""),
]


def build(names: list[str] | None = None, folder: Path | None = None) -> None:
    folder = folder or Path(__file__).resolve().parents[1] / "notebooks"
    for name, cells in NOTEBOOKS.items():
        if names and name not in names:
            continue
        nb = new_notebook()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}
        for kind, src in cells:
            if kind == "md":
                nb.cells.append(new_markdown_cell(src))
            else:
                cell = new_code_cell(src)
                if kind == "params":
                    cell.metadata["tags"] = ["parameters"]
                nb.cells.append(cell)
        for i, cell in enumerate(nb.cells):  # stable ids: no diff noise on rebuild
            cell["id"] = f"{name[:2]}-{i:02d}"
        nbformat.write(nb, folder / f"{name}.ipynb")


if __name__ == "__main__":
    build()
