"""The interpreter-side check of the kernels' Triton hints (tests/triton_hints.py): what each
hint promises, and that a kernel breaking one fails instead of passing on the CPU."""
import numpy as np
import pytest
import torch

from mux_backbones.ops import _triton
from tests import triton_hints
from tests.triton_hints import HintViolation, aligned_run_length, check

triton = pytest.importorskip('triton')
tl = pytest.importorskip('triton.language')


def test_hint_semantics():
    ramp = np.arange(16) + 32
    assert aligned_run_length(ramp, 0) == 16
    assert aligned_run_length(np.array([0, 1, 2, 3, 8, 9, 10, 11]), 0) == 4
    assert aligned_run_length(np.array([0, 1, 2, 3, 8, 9, 10, 12]), 0) == 1
    check(ramp, divisibility=[32], contiguity=[16])  # only each run's first value counts
    check(np.arange(8) * 24, divisibility=[8])  # runs of one: every value
    check(np.array(48), divisibility=[16])  # a scalar
    check(np.stack([ramp, ramp + 16]), divisibility=[1, 16], contiguity=[1, 16])
    check(np.linspace(0, 1, 8), divisibility=[16])  # not integers: not checked
    with pytest.raises(HintViolation, match='multiple_of'):
        check(ramp + 1, divisibility=[16], contiguity=[16])
    with pytest.raises(HintViolation, match=r'multiple_of\(8\) along axis 0 \(runs of 1\)'):
        check(np.arange(8) * 20, divisibility=[8])
    with pytest.raises(HintViolation, match=r'max_contiguous\(4\)'):
        check(np.array([0, 1, 2, 3, 8, 9, 10, 12]), contiguity=[4])
    with pytest.raises(HintViolation, match='along axis 1'):
        check(np.stack([ramp, ramp + 8]), divisibility=[1, 16], contiguity=[1, 16])
    triton_hints.violations.clear()  # raised on purpose


@triton.jit
def _copy_kernel(x_ptr, out_ptr, start, BLOCK: tl.constexpr, ALIGN: tl.constexpr):
    offs = tl.max_contiguous(tl.multiple_of(start + tl.arange(0, BLOCK), ALIGN), BLOCK)
    tl.store(out_ptr + tl.arange(0, BLOCK), tl.load(x_ptr + offs))


@pytest.mark.skipif(not _triton.interpreting(), reason='needs TRITON_INTERPRET=1')
def test_a_kernel_breaking_a_hint_fails_in_the_interpreter():
    x = torch.arange(64, dtype=torch.float32)
    out = torch.empty(16)
    _copy_kernel[(1, )](x, out, 32, BLOCK=16, ALIGN=16)  # 32 is a multiple of 16: holds
    torch.testing.assert_close(out, x[32:48])
    with pytest.raises(Exception, match=r'multiple_of\(16\)'):
        _copy_kernel[(1, )](x, out, 36, BLOCK=16, ALIGN=16)  # would read 32.. on a GPU
    assert triton_hints.violations, 'kept for the fixture that fails the test'
    triton_hints.violations.clear()  # raised on purpose
