#!/usr/bin/env bash
# Install everything the project needs (the README's commands call this).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -r requirements.txt
# facenet-pytorch ships the MTCNN face detector's weights inside the wheel (offline alignment);
# its pinned torch/numpy versions are stale, so it is installed without its dependencies.
python -m pip install --no-deps "facenet-pytorch==2.6.0"
