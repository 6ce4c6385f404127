"""Fixtures of the CPU kernels' tests: the ops as a CPU deployment runs them (outside Triton's
interpreter, the C++ extension built), and a record of the ops' calls of that extension."""
import sys

import pytest

from mux_backbones.ops import _cpu_kernels, _triton


@pytest.fixture
def outside_interpreter(monkeypatch):
    """The ops as a CPU deployment runs them: no Triton interpreter, the C++ kernels built."""
    monkeypatch.setenv('TRITON_INTERPRET', '0')
    monkeypatch.delenv('MUX_BACKBONES_CPU_KERNELS', raising=False)
    monkeypatch.setattr(_triton, '_warned', set())
    assert _cpu_kernels.cpu_kernels() is not None, 'the CPU kernels did not build'


@pytest.fixture
def cpu_kernel_calls(monkeypatch, outside_interpreter):
    """``(function name, args)`` of every call the ops make of the C++ extension."""
    calls, kernels = [], _cpu_kernels.cpu_kernels()

    class Spy:
        def __getattr__(self, name):
            def record(*args):
                calls.append((name, args))
                return getattr(kernels, name)(*args)
            return record

    spy = Spy()
    for op in ('group_conv', 'pointwise_conv', 'se_gate'):
        monkeypatch.setattr(sys.modules[f'mux_backbones.ops.{op}'], 'cpu_kernels', lambda: spy)
    return calls


def calls_of(calls, name):
    """The argument tuples of the recorded calls of extension function ``name``."""
    return [args for called, args in calls if called == name]
