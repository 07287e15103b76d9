#!/usr/bin/env bash
# The headless browser of tests/test_browser.py (JupyterLab driven through its UI): Debian's
# chromium and chromium-driver. selenium, the Python side, comes from requirements.txt
# (scripts/install.sh). `start` installs them when missing; `stop` has nothing to stop (each
# test starts and quits its own browser and JupyterLab).
set -euo pipefail
case "${1:-}" in
  start)
    if command -v chromedriver >/dev/null && command -v chromium >/dev/null; then
      exit 0
    fi
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver
    ;;
  stop) ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
