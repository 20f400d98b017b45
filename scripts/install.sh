#!/usr/bin/env bash
# Install braintumor and what it needs.
#   bash scripts/install.sh          the package (CLI, CNN, watershed, web app)
#   bash scripts/install.sh --dev    plus everything the test suite needs (Chromium too)
#
# Where: into the Python named by $PYTHON (default python3), as it is, when that Python
# is a virtual environment or one pip may install into (pyenv, conda, a venv). A
# system's own Python that forbids it (PEP 668: Debian 12, Ubuntu 23.04 and later) gets
# a virtual environment of its own instead, $BRAINTUMOR_VENV (default
# ~/.local/share/braintumor/venv), with the braintumor command linked into
# $BRAINTUMOR_BIN (default /usr/local/bin when writable, else ~/.local/bin). --dev wants
# the tests' python3 to be the one it installs into, so on such a Python it asks for an
# activated virtual environment first.
#
# PyTorch: a CPU build, taken from pip's configured local wheels (find-links) when they
# hold one, else from PyTorch's CPU index; an unpinned or plain PyPI torch is a CUDA
# build of several GB. A torch already installed is kept: for a GPU, install the CUDA
# build of your choice first (https://pytorch.org/get-started/locally/) into the same
# environment, then run this script.
set -euo pipefail
# paths given relative to where the script is run from, before it moves to the clone
absolute() { case "$1" in /*) printf '%s' "$1" ;; *) printf '%s/%s' "$PWD" "$1" ;; esac; }
[ -n "${BRAINTUMOR_VENV:-}" ] && BRAINTUMOR_VENV=$(absolute "$BRAINTUMOR_VENV")
[ -n "${BRAINTUMOR_BIN:-}" ] && BRAINTUMOR_BIN=$(absolute "$BRAINTUMOR_BIN")
case "${PYTHON:-}" in */*) PYTHON=$(absolute "$PYTHON") ;; esac
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH=torch==2.13.0  # the build the package is tested with (it accepts torch>=2.3)
dev=0
[ "${1:-}" = "--dev" ] && dev=1

if ! command -v "$PY" >/dev/null 2>&1; then
  echo "error: $PY not found: install Python 3.10 or newer, or name one with PYTHON=/path/to/python3." >&2
  exit 1
fi
# "3.11 1 0": version, whether it is 3.10 or newer, whether pip may not install into it
# (an EXTERNALLY-MANAGED marker beside its standard library, outside a virtual environment)
version="" recent="" managed=""
read -r version recent managed < <("$PY" -c '
import os, sys, sysconfig
venv = sys.prefix != getattr(sys, "base_prefix", sys.prefix)
marker = os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
print("%d.%d %d %d" % (sys.version_info[0], sys.version_info[1],
                       sys.version_info >= (3, 10), not venv and os.path.isfile(marker)))') || true
if [ -z "$managed" ]; then
  echo "error: $PY did not run as a Python 3 interpreter: name one with PYTHON=/path/to/python3." >&2
  exit 1
fi
if [ "$recent" != 1 ]; then
  echo "error: braintumor needs Python 3.10 or newer and $PY is $version: install a newer one and run this again with PYTHON=/path/to/python3." >&2
  exit 1
fi

if [ "$managed" = 1 ] && [ "$dev" = 1 ]; then
  echo "error: $PY belongs to the system and pip may not install into it (PEP 668), and the tests must run with the Python they were installed into: make and activate a virtual environment first (python3 -m venv ~/.venvs/braintumor && . ~/.venvs/braintumor/bin/activate), then run bash scripts/install.sh --dev again." >&2
  exit 1
fi
venv=""
if [ "$managed" = 1 ]; then
  venv=${BRAINTUMOR_VENV:-$HOME/.local/share/braintumor/venv}
  # made before and still whole (a Python upgrade leaves its interpreter link dangling,
  # an interrupted run leaves it without pip): kept, else made anew
  if ! "$venv/bin/python" -c "import pip" >/dev/null 2>&1; then
    if ! "$PY" -c "import ensurepip, venv" 2>/dev/null; then
      # Debian and Ubuntu ship venv's pip apart, in python3.X-venv
      if [ "$(id -u)" = 0 ] && [ -x "$(command -v apt-get)" ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python$version-venv" >/dev/null
      else
        echo "error: $PY cannot make a virtual environment without its venv package: run sudo apt-get install python$version-venv, then run this again." >&2
        exit 1
      fi
    fi
    "$PY" -m venv --clear "$venv"
  fi
  PY=$venv/bin/python
fi

# PyTorch first, a CPU build (see above)
if ! "$PY" -c "import torch" 2>/dev/null; then
  wheels=$(mktemp -d)
  trap 'rm -rf "$wheels"' EXIT
  if "$PY" -m pip download -q --no-index --no-deps "$TORCH" -d "$wheels" >/dev/null 2>&1; then
    "$PY" -m pip install -q "$wheels"/torch-*.whl
  elif ! "$PY" -m pip install -q --timeout 20 --retries 1 \
      --index-url https://download.pytorch.org/whl/cpu \
      --extra-index-url https://pypi.org/simple "$TORCH" 2>/dev/null; then
    echo "note: PyTorch's CPU index cannot be reached; installing $TORCH from PyPI, which may be a large CUDA build (several GB)." >&2
    "$PY" -m pip install -q "$TORCH"
  fi
  rm -rf "$wheels"
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
elif [ -z "$venv" ]; then
  "$PY" -m pip install -q -e ".[web]"
else
  # a copy, not a link to this folder: the command keeps working when the clone goes
  "$PY" -m pip install -q ".[web]"
  bin=${BRAINTUMOR_BIN:-}
  if [ -z "$bin" ]; then
    bin=$HOME/.local/bin
    [ -d /usr/local/bin ] && [ -w /usr/local/bin ] && bin=/usr/local/bin
  fi
  mkdir -p "$bin"
  ln -sfn "$venv/bin/braintumor" "$bin/braintumor"
  case ":$PATH:" in
    *":$bin:"*)
      echo "braintumor installed in $venv, its command linked as $bin/braintumor." ;;
    *)
      echo "braintumor installed in $venv, its command linked as $bin/braintumor, a folder this shell's PATH lacks: run '$bin/braintumor' demo instead of braintumor demo (or first: export PATH=\"$bin:\$PATH\")." ;;
  esac
fi
