"""When the Triton kernels of :mod:`mux_backbones.ops` may run, and the one-time fallback warning.

Triton is an optional dependency: the kernels run on CUDA tensors when it imports, and on CPU
tensors only under its interpreter (``TRITON_INTERPRET=1``, how CI checks them). Anything else --
no Triton, another device, a dtype the kernels do not take -- runs the stock PyTorch reference of
the op, after one warning per reason, so a request for the fused path never gives wrong numbers.
"""
import os
import warnings
from typing import Optional

import torch

try:  # Triton is optional; the reference path needs nothing beyond torch.
    import triton  # noqa: F401
    import triton.language as tl  # noqa: F401
    HAS_TRITON = True
except ImportError:  # pragma: no cover - depends on the machine
    triton = tl = None
    HAS_TRITON = False

_CUDA_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# The interpreter computes in numpy, which has no bfloat16.
_INTERPRETER_DTYPES = (torch.float32, torch.float16)
# The one dtype the C++ CPU kernels (see _cpu_kernels) take; said here, where the fallback
# warning names it, since _cpu_kernels imports this module.
CPU_KERNEL_DTYPE = torch.float32
_warned = set()


# Read once, when this module is imported (Triton reads it when it defines the kernels), not per
# op call: a read of the environment costs ~0.7 us, and the ops' dispatch made ~90 of these and
# ~100 of the CPU kernels' switch per MUXNet-m forward (both: 0.3 ms of its 9.4 ms on the CPU).
_interpreting = os.environ.get('TRITON_INTERPRET', '0') == '1'


# The modules whose launch planners ask their own ``interpreting`` (under the interpreter they
# plan fewer, larger programs). Replaying a GPU's launch plans in the interpreter means setting
# it to ``lambda: False`` in each (tools/gpu/fault_probe.py --gpu-plans, and the tests' replay
# over a whole model); the launches themselves stay interpreted.
PLANNING_MODULES = ('mux_backbones.ops.group_conv', 'mux_backbones.ops.pointwise_conv')


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1`` when
    :mod:`mux_backbones.ops` was imported)."""
    return _interpreting


def unsupported_reason(x: torch.Tensor) -> Optional[str]:
    """Why the Triton kernels cannot take ``x`` (None when they can)."""
    if not HAS_TRITON:
        return 'Triton is not installed'
    if x.device.type == 'cuda':
        return None if x.dtype in _CUDA_DTYPES else f'dtype {x.dtype} is not supported'
    if x.device.type == 'cpu' and interpreting():
        return None if x.dtype in _INTERPRETER_DTYPES else \
            f'dtype {x.dtype} is not supported by the Triton interpreter'
    reason = (f'device {x.device.type} has no Triton kernels (CUDA only; CPU under '
              f'TRITON_INTERPRET=1)')
    if x.device.type == 'cpu' and x.dtype is not CPU_KERNEL_DTYPE:
        # Else a float64 model reads as if only a missing Triton kept it off the kernels.
        reason += f', and the CPU kernels take {CPU_KERNEL_DTYPE}, not {x.dtype}'
    return reason


def can_use_triton(x: torch.Tensor, op_name: str) -> bool:
    """True when the kernels take ``x``; otherwise warn once per reason and return False."""
    reason = unsupported_reason(x)
    if reason is None:
        return True
    key = (op_name, reason)
    if key not in _warned:
        _warned.add(key)
        warnings.warn(f'mux_backbones.ops.{op_name}: {reason}; running the stock PyTorch path '
                      f'instead', RuntimeWarning, stacklevel=3)
    return False


def next_power_of_2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())
