"""Device functions in another module than the kernel calling them, one naming
``triton.language.core`` as well (tests/test_interpreter_speed.py)."""
import triton
import triton.language as tl
from triton.language import core


@triton.jit
def core_scaled(x, scale):
    return core.where(x == x, x * scale, tl.zeros_like(x))


@triton.jit
def nested_scaled(x):
    return core_scaled(x, 2.0) + core_scaled(x, 3.0)
