#!/usr/bin/env bash
# Install everything the project needs (the README's commands call this).
#   bash scripts/install.sh            the locked reference environment (requirements.lock: the
#                                      versions that made the committed results; CI tests these)
#   bash scripts/install.sh --latest   the newest versions requirements.txt allows instead (then
#                                      the reproduction check says which versions differ)
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
  "") python -m pip install -r requirements.lock
      python -m pip install --no-deps -e . ;;  # the project itself: hiva_lib, editable
  --latest) python -m pip install --upgrade -r requirements.txt ;;  # its last line: -e .
  *) echo "scripts/install.sh: unknown option '$1'. Use no option (the locked versions of" \
          "requirements.lock) or --latest (the newest that requirements.txt allows)." >&2
     exit 2 ;;
esac
# facenet-pytorch ships the MTCNN face detector's weights inside the wheel (offline alignment);
# its pinned torch/numpy versions are stale, so it is installed without its dependencies.
python -m pip install --no-deps "facenet-pytorch==2.6.0"
# Committed notebooks stay clean: JupyterLab saves a user's edits and outputs of a committed
# notebook to study_out/notebooks/ (a Jupyter server hook, written into this environment's
# Jupyter configuration), and git's nbclean filter, run by this interpreter, strips outputs when a
# notebook is staged (.gitattributes names it; git does not take a filter's command from the
# repository). hiva_lib/jupyter_guard.py; tests/test_notebooks_clean.py checks.
python -m hiva_lib.jupyter_guard
