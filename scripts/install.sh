#!/usr/bin/env bash
# Install everything the project needs (the README's first command calls this).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -r requirements.txt
