"""The interpreter's speed-ups for the suite (tests/interpreter_speed.py): installed, and kernels
calling device functions -- from the kernel's module, from a module that names
``triton.language.core`` too, nested, one raising -- compute what they did without them."""
import pytest
import torch

from mux_backbones.ops import _triton
from tests import interpreter_speed

triton = pytest.importorskip('triton')
tl = pytest.importorskip('triton.language')
from tests.interpreter_speed_helpers import core_scaled, nested_scaled  # noqa: E402

pytestmark = pytest.mark.skipif(not _triton.interpreting(), reason='needs TRITON_INTERPRET=1')


@triton.jit
def _twice(x):
    return x * 2


@triton.jit
def _helpers_kernel(x_ptr, out_ptr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs)
    tl.store(out_ptr + offs, _twice(x) + core_scaled(x, 3.0) + nested_scaled(x))


@triton.jit
def _raising_kernel(x_ptr, BLOCK: tl.constexpr):
    tl.store(x_ptr + tl.arange(0, BLOCK), _twice(tl.zeros((BLOCK, ), tl.float32)), mask=1.5)


def test_installed_and_kernels_with_device_functions_compute_the_same():
    from triton.runtime import interpreter
    assert interpreter_speed.install()  # tests/conftest.py installed it: nothing twice
    assert not interpreter.interpreter_builder.options.sanitize_overflow
    x = torch.randn(64)
    out = torch.empty_like(x)
    for _ in range(2):  # the language's builtins are restored between launches
        _helpers_kernel[(4, )](x, out, BLOCK=16)
        torch.testing.assert_close(out, 2 * x + 3 * x + 5 * x)
    with pytest.raises(interpreter.InterpreterError):
        _raising_kernel[(1, )](x, BLOCK=16)
    _helpers_kernel[(4, )](x, out, BLOCK=16)  # and after a failing launch
    torch.testing.assert_close(out, 10 * x)
    with pytest.raises(ValueError, match='triton.jit'):  # outside a launch: the language as it is
        tl.program_id(0)
