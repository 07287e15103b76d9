#!/usr/bin/env bash
# Install everything the project needs (the README's commands call this).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -r requirements.txt
# facenet-pytorch ships the MTCNN face detector's weights inside the wheel (offline alignment);
# its pinned torch/numpy versions are stale, so it is installed without its dependencies.
python -m pip install --no-deps "facenet-pytorch==2.6.0"
# Committed notebooks stay clean: JupyterLab saves a user's edits and outputs of a committed
# notebook to study_out/notebooks/ (a Jupyter server hook, written into this environment's
# Jupyter configuration), and git's nbclean filter, run by this interpreter, strips outputs when a
# notebook is staged (.gitattributes names it; git does not take a filter's command from the
# repository). hiva_lib/jupyter_guard.py; tests/test_notebooks_clean.py checks.
python -m hiva_lib.jupyter_guard
