#!/usr/bin/env bash
# Install braintumor and what it needs into the current Python.
#   bash scripts/install.sh          the package (CLI, CNN, watershed, web app)
#   bash scripts/install.sh --dev    plus everything the test suite needs (Chromium too)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
dev=0
[ "${1:-}" = "--dev" ] && dev=1

# PyTorch first, pinned: an unpinned torch would pull a multi-GB CUDA build; this CPU
# build is what the package is tested with (the package itself accepts torch>=2.3).
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q "torch==2.13.0"
fi
if [ "$dev" = 1 ]; then
  # Chromium for the browser tests, and a small CJK font (about 5 MB) with which the PDF
  # reports draw Chinese, Japanese and Korean case names (tests/test_fonts.py)
  if [ -x "$(command -v apt-get)" ]; then
    pkgs=()
    command -v chromium >/dev/null 2>&1 || pkgs+=(chromium)
    dpkg -s fonts-wqy-microhei >/dev/null 2>&1 || pkgs+=(fonts-wqy-microhei)
    if [ "${#pkgs[@]}" -gt 0 ]; then
      SUDO=""; [ "$(id -u)" != 0 ] && SUDO="sudo"
      $SUDO apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${pkgs[@]}" >/dev/null
    fi
  fi
  "$PY" -m pip install -q -e ".[dev]"
else
  "$PY" -m pip install -q -e ".[web]"
fi
