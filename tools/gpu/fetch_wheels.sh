#!/usr/bin/env bash
# Download (here, with network) what tools/gpu/gpu_check.sh installs on an offline GPU machine
# (Python 3.12, torch preinstalled): the OpenMMLab wheels, their small pure-Python needs, a
# setuptools that still has pkg_resources, and the mmcv 2.1.0 sdist to build with CUDA ops there.
# The folder .whl/ is git-ignored; pass it to the device run as a carried path.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .whl
PLAT="--no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
 --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl -q"
for pkg in mmengine==0.10.7 mmdet==3.3.0 mmsegmentation==1.2.2 setuptools==81.0.0 addict yapf \
    platformdirs termcolor terminaltables pycocotools shapely ftfy wcwidth prettytable; do
    python3 -m pip download $PLAT "$pkg"
done
python3 -m pip download --no-deps --no-binary=:all: mmcv==2.1.0 -d .whl -q
ls -la .whl
