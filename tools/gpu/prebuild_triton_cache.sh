#!/usr/bin/env bash
# Compile the next lease's fused kernels here, for the H200, into .triton_cache.tar.gz (carried
# to the device with .whl; tools/gpu/gpu_check.sh unpacks it). See
# tools/gpu/prebuild_triton_cache.py for what it compiles and why.
#
# Triton files a kernel under a key that covers its own build (the libtriton of one Python
# version), so this runs the tool under the device's Python (3.12) and Triton (3.6.0, pinned by
# its torch 2.11.0) in a stack of its own: a Python 3.12 venv (PYTHON312, default python3.12;
# e.g. pyenv's) with that torch wheel (the CUDA build: PyPI has no CPU one; its CUDA libraries
# only let it import) and Triton, the OpenMMLab packages, mmcv's Python files from its sdist
# with the lease's stand-in extension (tools/gpu/mmcv_ext_stub.py), this tree on the path.
#
#   bash tools/gpu/prebuild_triton_cache.sh [prebuild_triton_cache.py arguments]
# STACK_DIR (/tmp/device_stack/py312) overrides; the CUDA libraries are taken from
# rehearse_device_stack.sh's stack where it exists (~3 GB otherwise). ~15-25 min on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
PYTHON312=${PYTHON312:-python3.12}
STACK_DIR=${STACK_DIR:-/tmp/device_stack/py312}
REHEARSAL_DEPS=/tmp/device_stack/torch-2.11.0/deps
PY=$STACK_DIR/venv/bin/python
PIP="$PY -m pip install --disable-pip-version-check -q"

if [ ! -f "$STACK_DIR/.complete" ]; then
    command -v "$PYTHON312" >/dev/null || { echo "need Python 3.12 (PYTHON312=...)"; exit 1; }
    "$PYTHON312" -m venv "$STACK_DIR/venv"
    $PY -m pip download --disable-pip-version-check --no-deps -q -d "$STACK_DIR/wheels" \
        torch==2.11.0
    $PIP --no-deps "$STACK_DIR"/wheels/torch-2.11.0-*.whl
    libs=$STACK_DIR/libs
    mkdir -p "$libs"
    if [ -d "$REHEARSAL_DEPS/nvidia" ]; then
        ln -sfn "$REHEARSAL_DEPS/nvidia" "$libs/nvidia"
    else  # the wheel's CUDA libraries (pure data, any Python), as the rehearsal installs them
        mapfile -t pins < <($PY -c "
import importlib.metadata as m
for r in m.requires('torch') or []:
    spec, _, marker = r.partition(';')
    if 'platform_system == \"Linux\"' in marker and 'extra ==' not in marker \\
            and not spec.startswith('triton'):
        print(spec.strip().replace(' ', ''))")
        $PIP --target "$libs" "${pins[@]}"
    fi
    site_pth=$($PY -c 'import site; print(site.getsitepackages()[0])')/mux_stack.pth
    echo "$libs" > "$site_pth"
    $PIP triton==3.6.0 numpy 'setuptools<82' 'mmengine==0.10.7' addict yapf pillow \
        opencv-python-headless 'mmdet==3.3.0' 'mmsegmentation==1.2.2' ftfy regex pycocotools \
        scipy typing_extensions sympy networkx jinja2 fsspec filelock
    # mmcv 2.1.0: its Python files (no Linux wheel on PyPI; nothing here calls its ops). Its
    # setup.py imports pkg_resources, which an isolated build's newest setuptools lacks.
    sdist=.whl/mmcv-2.1.0.tar.gz
    [ -s "$sdist" ] || { mkdir -p "$STACK_DIR/sdist"; $PY -m pip download -q --no-deps \
        --no-build-isolation --no-binary=:all: mmcv==2.1.0 -d "$STACK_DIR/sdist"; sdist=$STACK_DIR/sdist/mmcv-2.1.0.tar.gz; }
    tar xzf "$sdist" -C "$STACK_DIR" mmcv-2.1.0/mmcv
    cp tools/gpu/mmcv_ext_stub.py "$STACK_DIR/mmcv-2.1.0/mmcv/_ext.py"
    echo "$STACK_DIR/mmcv-2.1.0" >> "$site_pth"
    touch "$STACK_DIR/.complete"
fi

PYTHONPATH=$REPO TRITON_CACHE_DIR=/tmp/mux_triton_cache \
    "$PY" tools/gpu/prebuild_triton_cache.py "$@"
