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
`hiva_lib/datasets.py`) under `data_root/<dataset>/`.

* `synth-bp4d`, `synth-disfa`, `synth-gft`: the embedded SynthFACS data set, rendered here.
* `bp4d`, `disfa`, `gft`: your licensed copy at `raw_root` (layouts: `docs/data.md`).

A finished data set is reused, never overwritten silently (`overwrite=True` prepares it again)."""),
    ("params", """dataset = "synth-disfa"
raw_root = None  # the licensed copy, for bp4d / disfa / gft
data_root = None  # default: data/prepared under the project root
align = "auto"  # face alignment: "auto", "mtcnn", or "skip" (already cropped faces)
image_size = 224  # real data sets; SynthFACS renders at 128 px
overwrite = False
smoke = False  # a tiny version, for tests"""),
    ("code", """from hiva_lib.config import make_config
from hiva_lib.datasets import summary_table
from hiva_lib.prepare import prepare_dataset

cfg = make_config(dataset, data_root=data_root)
data = prepare_dataset(dataset, cfg.data_root, raw_root=raw_root, align=align,
                       image_size=image_size, overwrite=overwrite, smoke=smoke)
print(f"{data.name}: {len(data.index)} frames, AUs {list(data.au_ids)}, "
      f"protocol {data.meta['protocol']}, test folds {data.test_folds}, at {data.root}")"""),
    ("md", "Subjects, frames and AU base rates (%) per fold:"),
    ("code", "summary_table(data)"),
]

_TRAIN_PARAMS = """dataset = "synth-disfa"
fold = 1
variant = "full"  # a row of Tables IV-VI: see hiva_lib/variants.py
epochs = None  # None: the preset's (paper: 30; synth-cpu: see hiva_lib/config.py)
batch_size = None
lr = None
data_root = None  # default: data/prepared under the project root
runs_root = None  # checkpoints; default: runs/
results_root = None  # metrics; default: results/
device = "auto"  # "auto" (cuda if available), "cpu", "cuda"
seed = 0
smoke = False  # a few steps of a tiny model, for tests
if_exists = "skip"  # a finished run: "skip" (reuse), "version" (rerun into -v2), "error\""""

NOTEBOOKS["02_train_stage1"] = [
    ("md", """# 02 Training stage 1: visual encoding and AU graph

Stage 1 of Alg. 1 trains (a) the visual encoder and (c) the AU branches with the dynamic
graph, with the weighted L_au of Eq. 4 (inverse-frequency weights from the training fold).
Its checkpoint is shared by every stage-2 variant of the same data set, fold and seed, and
evaluated as is it is the vision-only **Baseline** ("VLU" in Table IV). Killed runs resume."""),
    ("params", _TRAIN_PARAMS),
    ("code", """from hiva_lib.config import make_config
from hiva_lib.train import evaluate_run, train_stage1

cfg = make_config(dataset, smoke=smoke, fold=fold, seed=seed, epochs_stage1=epochs,
                  batch_size=batch_size, lr_stage1=lr, data_root=data_root, runs_root=runs_root,
                  results_root=results_root, device=device, if_exists=if_exists)
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
    ("code", """from hiva_lib.config import make_config
from hiva_lib.train import evaluate_run, train_stage2

cfg = make_config(dataset, smoke=smoke, fold=fold, seed=seed, variant=variant,
                  epochs_stage2=epochs, batch_size=batch_size, lr_stage2=lr, data_root=data_root,
                  runs_root=runs_root, results_root=results_root, device=device,
                  if_exists=if_exists)
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
when this notebook is run again. Status per run: `results/<dataset>/ablation_status.csv`."""),
    ("params", """dataset = "synth-disfa"  # bp4d, disfa, gft, or a SynthFACS preset
variants = None  # None: all eight rows; or a list of slugs, e.g. ["full", "baseline"]
folds = None  # None: every test fold of the data set
seeds = [0]
data_root = None
runs_root = None
results_root = None
device = "auto"
smoke = False"""),
    ("code", """from hiva_lib.ablation import run_ablation

status = run_ablation(dataset, variants, folds, seeds, smoke=smoke, data_root=data_root,
                      runs_root=runs_root, results_root=results_root, device=device)
status"""),
]

NOTEBOOKS["05_report"] = [
    ("md", """# 05 Report: our Tables I-VI beside the paper's

Collects every finished run of a data set (notebooks 02-04), summarises per-AU F1 (mean and
spread over folds and seeds), sets it beside the paper's numbers with deltas, audits the
paper's own tables, and plots the deltas. Written to `results/<dataset>/report/`."""),
    ("params", """dataset = "synth-disfa"
results_root = None  # default: results/ under the project root
smoke = False"""),
    ("code", """from pathlib import Path

from IPython.display import Markdown, display

from hiva_lib.config import make_config
from hiva_lib.report import write_report

cfg = make_config(dataset, smoke=smoke, results_root=results_root)
out_dir = Path(cfg.results_root) / dataset / "report"
files = write_report(cfg.results_root, dataset, out_dir)
files"""),
    ("code", """for md in sorted(out_dir.glob("*.md")):
    display(Markdown(md.read_text()))"""),
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
