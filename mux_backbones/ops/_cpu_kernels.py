"""The CPU kernels of :mod:`mux_backbones.ops`: built on first use, for the machine that runs them.

One source per op (``group_conv_cpu.cpp`` and its backward's ``group_conv_backward_cpu.cpp``,
``pointwise_conv_cpu.cpp``, ``se_gate_cpu.cpp``, ``norm_act_cpu.cpp``; ``fused_block_cpu.cpp``
calls their forward kernels (and oneDNN's conv where a block keeps it) back to back for a whole
block; the code they
share in headers: ``cpu_vector.h``, ``group_conv_cpu.h``, ``fused_block_cpu.h``; the Python
bindings in ``_cpu_kernels.cpp``) is compiled
into one extension by :func:`torch.utils.cpp_extension.load` (with the C++ compiler mmcv's build
needs too, and ninja from ``tools/install.sh``; ~30 s once, then torch's extension cache) with
``-march=native``: the build is keyed by this CPU's instruction-set flags,
so a cache shared between machines never runs code built for another CPU. Like Triton on CUDA,
the kernels are optional: where the build fails the ops run their stock PyTorch path after one
warning, and ``MUX_BACKBONES_CPU_KERNELS=0`` (set before the import) switches them off.
"""
import glob
import hashlib
import os
import os.path as osp
import platform
import shutil
import warnings
from typing import Optional

import torch

from . import _triton
from ._triton import CPU_KERNEL_DTYPE

_HERE = osp.dirname(osp.abspath(__file__))
_SOURCES = [osp.join(_HERE, name)
            for name in ('_cpu_kernels.cpp', 'group_conv_cpu.cpp', 'group_conv_backward_cpu.cpp',
                         'pointwise_conv_cpu.cpp', 'se_gate_cpu.cpp', 'norm_act_cpu.cpp',
                         'fused_block_cpu.cpp')]
_HEADERS = sorted(glob.glob(osp.join(_HERE, '*.h')))
_module = None
_failed: Optional[str] = None
# Read once, at import, as TRITON_INTERPRET is (see _triton).
_switched_off = os.environ.get('MUX_BACKBONES_CPU_KERNELS', '1') == '0'


def _machine_key() -> str:
    """A short hash of this CPU's architecture and instruction-set flags: part of the extension's
    name, since torch caches builds by name and ``-march=native`` code is only good for the CPU
    it was built on (a home directory may be shared by different machines)."""
    flags = ''
    try:
        with open('/proc/cpuinfo') as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith(('flags', 'Features'))), '')
    except OSError:  # not Linux: the machine type alone
        pass
    return hashlib.sha1(f'{platform.machine()} {flags}'.encode()).hexdigest()[:10]


def _build():
    from torch.utils.cpp_extension import load

    if shutil.which('ninja') is None:
        # pip's ninja package puts its binary next to the interpreter, which is not on PATH
        # when a virtual environment's python runs without being activated.
        try:
            import ninja
            os.environ['PATH'] = ninja.BIN_DIR + os.pathsep + os.environ.get('PATH', '')
        except ImportError:
            pass  # load() then says that ninja is missing
    # torch rebuilds a cached extension when its sources or flags change, not its headers: their
    # hash rides along as a flag.
    digest = hashlib.sha1()
    for header in _HEADERS:
        with open(header, 'rb') as f:
            digest.update(f.read())
    headers = digest.hexdigest()[:12]
    return load(name=f'mux_backbones_cpu_{_machine_key()}', sources=_SOURCES,
                extra_cflags=['-O3', '-march=native', '-fopenmp',
                              f'-DMUX_BACKBONES_HEADERS={headers}'],
                extra_ldflags=['-fopenmp'], verbose=False)


def cpu_kernels():
    """The compiled extension, or None where it is switched off (``MUX_BACKBONES_CPU_KERNELS=0``
    when :mod:`mux_backbones.ops` was imported) or cannot be built (after one warning saying
    why)."""
    global _module, _failed
    if _switched_off:
        return None
    if _module is not None or _failed is not None:
        return _module
    try:
        _module = _build()
    except Exception as error:  # no compiler, no ninja, a build error: the stock path serves
        _failed = f'{type(error).__name__}: {error}'.splitlines()[0]
        warnings.warn(f'mux_backbones.ops: the CPU kernels could not be built ({_failed}); '
                      f'running the stock PyTorch path instead', RuntimeWarning, stacklevel=2)
    return _module


def cpu_kernels_take(*tensors: Optional[torch.Tensor]) -> bool:
    """Whether an op's C++ kernel computes a call on these tensors (None: an absent argument):
    all CPU tensors of :data:`~._triton.CPU_KERNEL_DTYPE` (fp32) that Triton's kernels do not
    take (they do under its interpreter), the extension built. (Called per op call: written for
    ~1 us, not for brevity.)"""
    for t in tensors:
        if t is not None and not (t.is_cpu and t.dtype is CPU_KERNEL_DTYPE):
            return False
    return _kernels_in_use()


def _kernels_in_use() -> bool:
    # (what _triton.unsupported_reason decides for fp32 CPU tensors, read through the module as
    # it does, so whatever switches one switches both)
    return not (_triton.HAS_TRITON and _triton.interpreting()) and cpu_kernels() is not None


# Under torch.compile, run at trace time and kept as a constant: the first call may build or load
# the extension (file system calls Dynamo cannot trace: a graph break, an error with fullgraph,
# when a compiled model's trace is the extension's first use). The mark
# torch.compiler.assume_constant_result sets, set without importing Dynamo (~1 s) in every process
# (tests check that the two agree).
_kernels_in_use._dynamo_marked_constant = True
