#!/usr/bin/env bash
# Set up mux_backbones and its OpenMMLab stack in the current Python environment.
#
# Idempotent: a second run only checks. Works on a fresh machine with nothing but the package
# registries. Keeps an installed torch (CPU or CUDA); installs torch 2.13.0 (the CPU wheel on
# this machine kind) only where none is present. mmcv 2.1.0 has no Linux wheel on PyPI, so it is
# built from the sdist with its C++/CUDA ops (12-28 min on 2 cores; pip caches the wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
PIP="$PYTHON -m pip install --disable-pip-version-check -q"

if ! $PYTHON -c 'import torch' 2>/dev/null; then
    echo '[install] torch not found: installing torch==2.13.0'
    $PIP torch==2.13.0
fi
# setuptools<82: mmcv's setup.py and mmengine's `mmdet::` config lookup import pkg_resources.
$PIP 'setuptools<82' wheel ninja numpy 'mmengine==0.10.7'

if ! $PYTHON -c 'import mmcv, mmcv.ops; assert mmcv.__version__ == "2.1.0"' 2>/dev/null; then
    echo '[install] building mmcv 2.1.0 with ops (takes 12-28 min on 2 cores the first time)'
    # --no-build-isolation: otherwise the build cannot see torch and silently skips the ops.
    MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} $PIP --no-build-isolation mmcv==2.1.0
fi
# pytest-xdist: the test command runs one worker per core (the kernels' interpreter is one thread).
# mmseg 1.2.2 imports ftfy and regex without declaring them.
$PIP 'mmdet==3.3.0' 'mmsegmentation==1.2.2' pycocotools ftfy regex scikit-image pytest \
    'pytest-xdist==3.*' onnx onnxruntime 'flake8==7.*' 'isort==5.*' 'pymoo==0.6.2' tqdm
# Triton: the fused kernels of mux_backbones.ops (CUDA), and their CPU tests in its interpreter.
# A CUDA torch brings its own matching Triton; only a torch without one gets this release.
$PYTHON -c 'import triton' 2>/dev/null || $PIP 'triton==3.9.0'
# opencv-python needs libGL, which a bare machine lacks; the headless build does not.
if ! $PYTHON -c 'import cv2' 2>/dev/null; then
    $PYTHON -m pip uninstall -y -q opencv-python || true
    $PIP --force-reinstall --no-deps opencv-python-headless
fi
$PIP --no-build-isolation --no-deps -e .
$PYTHON -c 'import mux_backbones, mmcv.ops, mmdet, mmseg; print("[install] ready:", \
"mux_backbones", mux_backbones.__version__, "mmcv", mmcv.__version__, "mmdet", mmdet.__version__, \
"mmseg", mmseg.__version__)'
