#!/usr/bin/env bash
# Run the test suite here, on the CPU, under the GPU machine's torch and Triton, before a lease.
#
# CI tests with the torch and Triton tools/install.sh installs here; the H200 machine has its own
# (torch 2.11 + CUDA 13, Triton 3.6; ../shared/REFERENCE.md), and a lease's 15 minutes are the
# wrong place to learn that the code uses something its torch lacks. This installs that torch
# wheel (the CUDA build: PyPI has no CPU one of it) with the CUDA libraries and the Triton its
# metadata pins into a separate folder, puts the folder first on the path, and runs the suite.
# The kernels run in Triton's interpreter as in CI; the CUDA libraries only let torch import.
# (This machine's Python; the device's is 3.12.)
#
# mmcv's extension here is built against this machine's torch and does not load under another,
# so mmcv._ext is the lease's stand-in (tools/gpu/mmcv_ext_stub.py, as gpu_check.sh SPEED_ONLY=1
# uses), and a test that calls an mmcv op (NMS: detection predict and evaluation) is reported
# skipped, by the message the stand-in raises; every other failure is real.
#
#   bash tools/gpu/rehearse_device_stack.sh [pytest arguments]   (default: -n auto tests)
# DEVICE_TORCH (2.11.0) and STACK_DIR (/tmp/device_stack) override; ~3.3 GB, first run ~2 min
# of downloads on this machine's registry, the suite as long as CI's.
set -euo pipefail
cd "$(dirname "$0")/../.."
DEVICE_TORCH=${DEVICE_TORCH:-2.11.0}
STACK_DIR=${STACK_DIR:-/tmp/device_stack}
PIP="python3 -m pip install --disable-pip-version-check -q"
site="$STACK_DIR/torch-$DEVICE_TORCH"
shim="$STACK_DIR/shim"

if [ ! -f "$site/.complete" ]; then
    mkdir -p "$STACK_DIR/wheels"
    python3 -m pip download --no-deps -q -d "$STACK_DIR/wheels" "torch==$DEVICE_TORCH"
    wheel=$(ls "$STACK_DIR"/wheels/torch-"$DEVICE_TORCH"-*.whl | head -1)
    # The wheel's own pins (its CUDA libraries, its Triton), for Linux.
    mapfile -t pins < <(python3 - "$wheel" <<'EOF'
import sys, zipfile
from email.parser import Parser
with zipfile.ZipFile(sys.argv[1]) as z:
    name = next(n for n in z.namelist() if n.endswith('.dist-info/METADATA'))
    meta = Parser().parsestr(z.read(name).decode())
for req in meta.get_all('Requires-Dist') or []:
    spec, _, marker = req.partition(';')
    if 'platform_system == "Linux"' in marker and 'extra ==' not in marker:
        print(spec.strip().replace(' ', ''))
EOF
)
    echo "[rehearse] torch $DEVICE_TORCH with: ${pins[*]}"
    $PIP --no-deps --target "$site" "$wheel"
    $PIP --target "$site/deps" "${pins[@]}"
    touch "$site/.complete"
fi

mkdir -p "$shim"
cat > "$shim/sitecustomize.py" <<EOF
# Written by tools/gpu/rehearse_device_stack.sh: mmcv._ext is the lease's stand-in (every
# process, the tools' subprocesses included).
import importlib.util as _util
import sys as _sys
_spec = _util.spec_from_file_location('mmcv._ext', '$PWD/tools/gpu/mmcv_ext_stub.py')
_stub = _util.module_from_spec(_spec)
_spec.loader.exec_module(_stub)
_sys.modules['mmcv._ext'] = _stub
EOF
cat > "$shim/mmcv_stub_skips.py" <<'EOF'
"""pytest plugin of rehearse_device_stack.sh: a test that failed only because it called an mmcv
op (the stand-in's message) is reported skipped."""
import sys

import pytest

STUB_MESSAGE = sys.modules['mmcv._ext'].NOT_BUILT  # the stand-in sitecustomize installed


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and STUB_MESSAGE in str(report.longrepr):
        report.outcome = 'skipped'
        report.longrepr = (str(item.path), item.location[1] or 0,
                           'calls an mmcv op: needs mmcv\'s extension for this torch')
EOF

export PYTHONPATH="$shim:$site:$site/deps${PYTHONPATH:+:$PYTHONPATH}"
export TORCH_EXTENSIONS_DIR="$STACK_DIR/torch_extensions"  # this torch's builds of ours, apart
python3 -c 'import numpy, torch, triton; print(f"[rehearse] torch {torch.__version__}, Triton \
{triton.__version__}, numpy {numpy.__version__}")'
[ $# -gt 0 ] || set -- -n auto tests
exec python3 -m pytest -p mmcv_stub_skips "$@"
