#!/usr/bin/env bash
# One-command install of pskd's whole real stack into ./.venv (see ../shared/INSTALL-NOTES.md for the measurements).
# Called by `make setup`, by the Dockerfiles in docker/, and by CI: this file is the single source of truth.
# Re-running is cheap: each step is skipped when what it produces is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
VENV=${VENV:-$ROOT/.venv}
TORCH_VER=2.14.1
TV_VER=0.29.1
# Wheels we build ourselves are kept here: pip's cache does not keep wheels built from a local folder, and these
# wheels only fit the torch they were compiled against, hence the torch version in the folder name.
WHEELS=$ROOT/.wheels/torch-$TORCH_VER
mkdir -p "$WHEELS"
log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
VPY="$VENV/bin/python"
has() { "$VPY" - "$@" <<'PYEOF' 2>/dev/null
import sys
from importlib.metadata import version
for spec in sys.argv[1:]:
    name, _, want = spec.partition("==")
    try:
        got = version(name)
    except Exception:
        sys.exit(1)
    if want and got != want:
        sys.exit(1)
PYEOF
}

# setuptools is pinned to 80.9: mmcv 2.1.0's setup.py imports pkg_resources, which setuptools >= 81 no longer ships.
has setuptools==80.9.0 wheel || { log "pip/wheel/setuptools"; "${PIP[@]}" install -U pip wheel setuptools==80.9.0; }
# torch and torchvision come from this machine's local wheel folder (pip's global constraint file caps them there).
has torch==$TORCH_VER torchvision==$TV_VER || { log "torch $TORCH_VER"; "${PIP[@]}" install torch==$TORCH_VER torchvision==$TV_VER; }
has mmengine==0.10.7 || { log "mmengine"; "${PIP[@]}" install mmengine==0.10.7; }

# mmcv 2.1.0: the newest mmcv that mmdet 3.3.0 accepts; PyPI has no Linux wheel, so build it with its CPU ops.
if ! has mmcv==2.1.0; then
  whl=$(ls "$WHEELS"/mmcv-2.1.0-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$whl" ]; then
    log "building mmcv 2.1.0 with its ops (5 to 16 min on 2 cores)"
    "${PIP[@]}" install ninja psutil
    tmp=$(mktemp -d)
    "${PIP[@]}" download --no-deps --no-build-isolation --no-binary :all: mmcv==2.1.0 -d "$tmp"
    tar -xzf "$tmp"/mmcv-2.1.0.tar.gz -C "$tmp"
    # torch 2.14's ATen headers refuse to compile below C++20; mmcv's setup.py hard-codes -std=c++17.
    sed -i 's/-std=c++17/-std=c++20/g' "$tmp"/mmcv-2.1.0/setup.py
    # -g0: no debug info, ~4x faster build and a 2 MB instead of 32 MB wheel; --no-build-isolation so the build
    # sees our torch (an isolated build would fetch another one) and our setuptools 80.9.
    (cd "$tmp"/mmcv-2.1.0 && CFLAGS=-g0 CXXFLAGS=-g0 MMCV_WITH_OPS=1 MAX_JOBS=2 \
      "$VPY" -m pip wheel --no-build-isolation --no-deps -q . -w "$WHEELS")
    rm -rf "$tmp"
    whl=$(ls "$WHEELS"/mmcv-2.1.0-*.whl | head -n1)
  fi
  "${PIP[@]}" install "$whl"
fi
has mmdet==3.3.0 pycocotools || { log "mmdet"; "${PIP[@]}" install mmdet==3.3.0 pycocotools; }

# fairseq 0.12.2 does not import on Python 3.11; fairseq-fixed 0.12.3.1 (fairseq's later main branch) does.
if ! has fairseq-fixed==0.12.3.1; then
  whl=$(ls "$WHEELS"/fairseq_fixed-0.12.3.1-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$whl" ]; then
    log "building fairseq-fixed 0.12.3.1 (2 to 6 min on 2 cores)"
    "${PIP[@]}" install 'cython>=3' 'numpy>=2' cffi
    tmp=$(mktemp -d)
    "${PIP[@]}" download --no-deps --no-build-isolation --no-binary :all: fairseq-fixed==0.12.3.1 -d "$tmp"
    # No build isolation: its build requirements name torch, which pip would fetch past this machine's cap.
    "$VPY" -m pip wheel --no-build-isolation --no-deps -q "$tmp"/fairseq*-0.12.3.1.tar.gz -w "$WHEELS"
    rm -rf "$tmp"
    whl=$(ls "$WHEELS"/fairseq_fixed-0.12.3.1-*.whl | head -n1)
  fi
  # --no-deps: it requires torchaudio, and every torchaudio release on PyPI pins another torch. Translation needs
  # none of torchaudio; its other requirements are installed below (so `pip check` reports torchaudio missing).
  "${PIP[@]}" install --no-deps "$whl"
fi

log "pskd and the remaining requirements"
"${PIP[@]}" install -e "$ROOT[all,dev]"
log "done: $("$VPY" -c 'import torch, mmcv, mmdet, fairseq; print("torch", torch.__version__, "mmcv", mmcv.__version__, "mmdet", mmdet.__version__, "fairseq", fairseq.__version__)' 2>/dev/null)"
