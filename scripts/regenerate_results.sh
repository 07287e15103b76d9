#!/usr/bin/env bash
# The runs and derived files behind the committed results/ and figures/ of the embedded study,
# on 2 CPU cores (two runs at once, one thread each): several hours of training (about 245 runs
# of one to fifteen minutes each), then about an hour of measurements. Everything goes under
# ROOT (default study_out/regenerate); nothing of the project is written until you copy it in
# yourself (the last lines print how: each preset's folder replaced whole, so that every
# committed run is of one code and data version).
#
#   bash scripts/regenerate_results.sh [ROOT]          # all of it (finished runs are reused)
#   ONLY=derive bash scripts/regenerate_results.sh     # measurements, ledger, report, figures
#   ONLY=derive PRESETS=synth-gft bash ...             # those of one preset (its runs finished)
#   ONLY=design bash scripts/regenerate_results.sh     # the ledger design's runs only (below)
#
# What is trained (notebook 04; (seed, fold) runs):
#   synth-bp4d  the eight rows of Table IV, seeds 0-2 x folds 1-3; the controls
#               (shuffled_text, no_language, the lambda sweep's 1e-5 ... 100) fold 1 x seeds
#               0-2; ambiguity 7: full_ldiff_z seeds 0-1 x folds 1-3, full_au_id fold 1 x
#               seeds 0-2
#   synth-disfa the eight rows of Table V, seed 0 x folds 1-3; Baseline, HiVA and full_ldiff_z
#               also seeds 1-2 (9 pairs: C1's interval within 2 F1 points of its centre)
#   synth-gft   the eight rows of Table VI, seed 0 x fold 1; Baseline, HiVA and full_ldiff_z
#               also seeds 1-2 x its three subject-disjoint test folds
# and for the ledger's design (python scripts/plan_runs.py --runs lists them, with the time):
#   every preset  Baseline, HiVA, the matched-training control baseline_s2 and no_language on
#               seeds 0-2 x the three subject-disjoint folds
#   synth-bp4d  the causal tests of the collapse, fold 1 x seeds 0-2: L_diff's site x weight
#               (lambda_1, full_ldiff_z, ldiff_z_lambda_0.01; HiVA is the fourth cell), the
#               stop-gradients stop_grad_cdca_z, stop_grad_ddca_z, and text_frozen_s2
# Then, per preset: notebook 09 (mechanism.csv), 06 (figures, attention scores), 10 (per-run
# measurements and the ledger), 05 (report), two presets at once on one thread each (the
# notebooks 10 one after the other: each rewrites the family columns of every preset's
# ledger); last the summary (results/SUMMARY.md, the README block, docs/model.md's diagnosis
# tables).
set -euo pipefail
cd "$(dirname "$0")/.."
R=$(realpath -m "${1:-study_out/regenerate}")
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
ROOTS=(-p data_root "$R/data" -p runs_root "$R/runs" -p results_root "$R/results")
NB="$R/notebooks"
mkdir -p "$NB"
stamp() { echo "== $(date +%T) $*"; }

nb() {  # nb NOTEBOOK NAME ARGS...: one notebook, its executed copy in $NB
    local notebook=$1 name=$2; shift 2
    papermill "notebooks/$notebook.ipynb" "$NB/$name.ipynb" --no-progress-bar "$@"
    stamp "$name done"
}

train() {  # train PRESET NAME YAML: notebook 04 with the variants and seeds of YAML
    nb 04_ablations "04_$1_$2" -p dataset "$1" "${ROOTS[@]}" -p workers 2 -y "$3"
}

if [ -z "${ONLY:-}" ]; then
    for ds in synth-bp4d synth-disfa synth-gft; do
        python scripts/run_study.py --dataset "$ds" --root "$R" --only 01_prepare_data --no-check
    done
    train synth-bp4d rows '{seeds: [0, 1, 2]}'
    train synth-bp4d controls '{variants: [shuffled_text, no_language, lambda_1e-05, lambda_0.1,
        lambda_1, lambda_10, lambda_100], folds: [1], seeds: [0, 1, 2]}'
    train synth-bp4d ldiff_z '{variants: [full_ldiff_z], seeds: [0, 1]}'
    train synth-bp4d au_id '{variants: [full_au_id], folds: [1], seeds: [0, 1, 2]}'
    train synth-disfa rows '{seeds: [0]}'
    train synth-disfa c1 '{variants: [baseline, full, full_ldiff_z], seeds: [0, 1, 2]}'
fi
if [ "${ONLY:-}" != derive ]; then
    if [ "${ONLY:-}" = design ]; then
        for ds in synth-bp4d synth-disfa synth-gft; do
            python scripts/run_study.py --dataset "$ds" --root "$R" --only 01_prepare_data --no-check
        done
    fi
    # the matched-training control and no_language beside every HiVA / Baseline pair, on
    # three subject-disjoint folds of every preset
    for ds in synth-bp4d synth-disfa synth-gft; do
        train "$ds" matched '{variants: [baseline, full, baseline_s2, no_language],
            seeds: [0, 1, 2], folds: [1, 2, 3]}'
    done
    # the causal tests of the collapse, with the checkpoints and text embeddings notebook 09
    # measures
    train synth-bp4d causal '{variants: [full, lambda_1, full_ldiff_z, ldiff_z_lambda_0.01,
        stop_grad_cdca_z, stop_grad_ddca_z, text_frozen_s2], folds: [1], seeds: [0, 1, 2]}'
    # synth-gft's other rows on its three-fold data version
    train synth-gft rows '{seeds: [0], folds: [1]}'
    train synth-gft c1 '{variants: [baseline, full, full_ldiff_z], seeds: [0, 1, 2],
        folds: [1, 2, 3]}'
fi
if [ "${ONLY:-}" = design ]; then
    stamp "design runs done; their results are under $R/results"
    exit 0
fi

FIG=(-p figures_root "$R/figures")
derive() {  # derive PRESET: its measurements, ledger, report and figures; log in $NB
    local ds=$1 seeds
    seeds=$(python -c "import sys, pathlib; print(sorted({int(p.name[4:]) for p in
        pathlib.Path(sys.argv[1]).glob('*/seed*')}))" "$R/results/$ds")
    nb 09_mechanism "09_$ds" -p dataset "$ds" "${ROOTS[@]}" "${FIG[@]}" -y "{seeds: $seeds}"
    nb 06_figures "06_$ds" -p dataset "$ds" "${ROOTS[@]}" "${FIG[@]}"
    # the ledger after every measurement it reads (the attention scores of 06 among them)
    { flock 9; nb 10_claims "10_$ds" -p dataset "$ds" "${ROOTS[@]}" "${FIG[@]}" \
        -p measure True; } 9>"$R/.ledger.lock"
    nb 05_report "05_$ds" -p dataset "$ds" -p results_root "$R/results"
}
running=0 failed=0
for ds in ${PRESETS:-synth-bp4d synth-disfa synth-gft}; do
    [ "$running" -lt 2 ] || { wait -n || failed=$((failed + 1)); running=$((running - 1)); }
    stamp "measuring $ds (log: $NB/derive_$ds.log)"
    (export OMP_NUM_THREADS=1; derive "$ds") > "$NB/derive_$ds.log" 2>&1 &
    running=$((running + 1))
done
while [ "$running" -gt 0 ]; do wait -n || failed=$((failed + 1)); running=$((running - 1)); done
if [ "$failed" -gt 0 ]; then
    echo "regenerate_results.sh: $failed preset(s) failed; the last lines of" \
         "$NB/derive_<preset>.log say where. Rerun the same command to redo them." >&2
    exit 1
fi
python -m hiva_lib.study.summary --results-root "$R/results"
stamp "done (${PRESETS:-every preset}). To make it the committed reference:" \
      "rm -rf results/synth-* figures/synth-* && cp -r $R/results/. results/ &&" \
      "cp -r $R/figures/. figures/ && python scripts/adopt_data_version.py --relative-checkpoints" \
      "&& python -m hiva_lib.study.summary --readme"
