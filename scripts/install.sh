#!/usr/bin/env bash
# Install everything the project needs (the README's commands call this).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -r requirements.txt
# facenet-pytorch ships the MTCNN face detector's weights inside the wheel (offline alignment);
# its pinned torch/numpy versions are stale, so it is installed without its dependencies.
python -m pip install --no-deps "facenet-pytorch==2.6.0"
# Committed notebooks stay clean: when a notebook is staged, git strips the outputs and execution
# counts that JupyterLab saves into it (.gitattributes names this filter; git does not take a
# filter's command from the repository, so it is set here). tests/test_notebooks_clean.py checks.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git config filter.nbclean.clean \
    "python -m nbconvert --clear-output --to notebook --stdin --stdout --log-level=ERROR"
fi
