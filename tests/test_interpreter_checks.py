"""The interpreter-side checks of what a GPU run would do differently (tests/interpreter_checks.py):
what each hint promises, that a kernel breaking one fails, that two programs storing to one
address fail (atomics, which are meant to meet, excepted), and that an access outside the
launch's tensors fails (masked lanes excepted)."""
import numpy as np
import pytest
import torch

from mux_backbones.ops import _triton
from tests import interpreter_checks
from tests.interpreter_checks import (HintViolation, OutOfBounds, StoreRace, aligned_run_length,
                                      check_hints, tensor_extents)

triton = pytest.importorskip('triton')
tl = pytest.importorskip('triton.language')
interpreting = pytest.mark.skipif(not _triton.interpreting(), reason='needs TRITON_INTERPRET=1')


def test_hint_semantics():
    ramp = np.arange(16) + 32
    assert aligned_run_length(ramp, 0) == 16
    assert aligned_run_length(np.array([0, 1, 2, 3, 8, 9, 10, 11]), 0) == 4
    assert aligned_run_length(np.array([0, 1, 2, 3, 8, 9, 10, 12]), 0) == 1
    check_hints(ramp, divisibility=[32], contiguity=[16])  # only each run's first value counts
    check_hints(np.arange(8) * 24, divisibility=[8])  # runs of one: every value
    check_hints(np.array(48), divisibility=[16])  # a scalar
    check_hints(np.stack([ramp, ramp + 16]), divisibility=[1, 16], contiguity=[1, 16])
    check_hints(np.linspace(0, 1, 8), divisibility=[16])  # not integers: not checked
    with pytest.raises(HintViolation, match='multiple_of'):
        check_hints(ramp + 1, divisibility=[16], contiguity=[16])
    with pytest.raises(HintViolation, match=r'multiple_of\(8\) along axis 0 \(runs of 1\)'):
        check_hints(np.arange(8) * 20, divisibility=[8])
    with pytest.raises(HintViolation, match=r'max_contiguous\(4\)'):
        check_hints(np.array([0, 1, 2, 3, 8, 9, 10, 12]), contiguity=[4])
    with pytest.raises(HintViolation, match='along axis 1'):
        check_hints(np.stack([ramp, ramp + 8]), divisibility=[1, 16], contiguity=[1, 16])
    interpreter_checks.violations.clear()  # raised on purpose


@triton.jit
def _copy_kernel(x_ptr, out_ptr, start, BLOCK: tl.constexpr, ALIGN: tl.constexpr):
    offs = tl.max_contiguous(tl.multiple_of(start + tl.arange(0, BLOCK), ALIGN), BLOCK)
    tl.store(out_ptr + tl.arange(0, BLOCK), tl.load(x_ptr + offs))


@triton.jit
def _sum_kernel(x_ptr, out_ptr, ATOMIC: tl.constexpr, BLOCK: tl.constexpr):
    """Each program adds its block of ``x`` into ``out``: as atomics, or as a racing store."""
    offs = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + tl.program_id(0) * BLOCK + offs)
    if ATOMIC:
        tl.atomic_add(out_ptr + offs, x)
    else:
        tl.store(out_ptr + offs, tl.load(out_ptr + offs) + x)


@interpreting
def test_a_kernel_breaking_a_hint_fails():
    x = torch.arange(64, dtype=torch.float32)
    out = torch.empty(16)
    _copy_kernel[(1, )](x, out, 32, BLOCK=16, ALIGN=16)  # 32 is a multiple of 16: holds
    torch.testing.assert_close(out, x[32:48])
    with pytest.raises(Exception, match=r'multiple_of\(16\)') as error:
        _copy_kernel[(1, )](x, out, 36, BLOCK=16, ALIGN=16)  # would read 32.. on a GPU
    assert isinstance(error.value.__cause__, HintViolation)  # (the interpreter wraps it)
    assert interpreter_checks.violations, 'kept for the fixture that fails the test'
    interpreter_checks.violations.clear()  # raised on purpose


@interpreting
def test_programs_storing_to_one_address_fail():
    """The interpreter runs programs in order, so the racing sum comes out right there; on a
    GPU its programs run together and it does not."""
    x = torch.arange(64, dtype=torch.float32)
    want = x.view(4, 16).sum(0)
    out = torch.zeros(16)
    _sum_kernel[(4, )](x, out, ATOMIC=True, BLOCK=16)
    torch.testing.assert_close(out, want)
    out.zero_()
    with pytest.raises(StoreRace, match=r'_sum_kernel: programs 0 and 1 .* \(48 clashes\)'):
        _sum_kernel[(4, )](x, out, ATOMIC=False, BLOCK=16)
    torch.testing.assert_close(out, want)  # what the interpreter's order hides
    interpreter_checks.violations.clear()  # raised on purpose


@triton.jit
def _shifted_copy_kernel(x_ptr, out_ptr, n, shift, MASKED: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    src = offs + shift
    if MASKED:
        y = tl.load(x_ptr + src, mask=src < n, other=0.0)
    else:
        y = tl.load(x_ptr + src)
    tl.store(out_ptr + offs, y)


def test_tensor_extents_merge_views_of_one_storage():
    block = torch.zeros(10, 8)
    base = block.data_ptr()
    extents = tensor_extents([block[:, :4], block[:, 4:], torch.zeros(0), block[2:3, 1:2]])
    assert extents.tolist() == [[base, base + 4 * 80]]


@interpreting
def test_an_access_outside_the_tensors_fails():
    """An unmasked lane past a tensor's end reads neighbouring CPU memory in the interpreter (a
    test may pass on it); on a GPU it faults or reads garbage. Masked lanes are never touched."""
    x = torch.arange(16, dtype=torch.float32)
    out = torch.empty(16)
    _shifted_copy_kernel[(1, )](x, out, 16, 4, MASKED=True, BLOCK=16)
    torch.testing.assert_close(out, torch.cat([x[4:], torch.zeros(4)]))
    with pytest.raises(Exception, match=r'load: 4 accesses outside') as error:
        _shifted_copy_kernel[(1, )](x, out, 16, 4, MASKED=False, BLOCK=16)
    assert isinstance(error.value.__cause__, OutOfBounds)  # (the interpreter wraps it)
    interpreter_checks.violations.clear()  # raised on purpose
