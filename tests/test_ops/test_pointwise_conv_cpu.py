"""The C++ CPU kernel of ``pointwise_conv`` (``ops/pointwise_conv_cpu.cpp``) against the stock
reference: every epilogue (bias, activation, residual, interleave), the squeeze-excite scale on
the weights and on the rows, channel slices of wider maps as inputs, channel counts off the
vector width, batches; the op's routing to it, and calls it refuses."""
import random
import sys

import pytest
import torch

from mux_backbones.ops import _cpu_kernels, pointwise_conv, reference_pointwise_conv
from .conftest import calls_of, pointwise_inputs

gemm = sys.modules['mux_backbones.ops.pointwise_conv']


def _inputs(samples, pixels, k, c, seed=None):
    """:func:`~.conftest.pointwise_inputs` (channel slices of wider maps, the transposed weight
    view PointwiseConv2d passes) and an SE gate: ``rows, weight, bias, residual, kept, scale``."""
    return (*pointwise_inputs(samples, pixels, k, c, seed=seed), torch.rand(samples, k))


def test_kernel_equals_reference_on_random_calls(outside_interpreter):
    """60 seeded random calls: 1-3 samples, maps of 1-60 pixels (the scale folded into the
    weights where they have fewer values than the rows, else into the rows), 1-50 input and
    1-40 output channels (vector blocks and tails), each argument present or not."""
    rng = random.Random(0)
    kernels = _cpu_kernels.cpu_kernels()
    for i in range(60):
        samples, pixels = rng.randint(1, 3), rng.randint(1, 60)
        rows, weight, bias, residual, kept, scale = _inputs(
            samples, pixels, rng.randint(1, 50), rng.randint(1, 40), seed=i)
        args = [t if rng.random() < 0.6 else None for t in (bias, residual, kept, scale)]
        act = rng.choice(gemm.ACTIVATIONS)
        got = kernels.pointwise_conv_forward(rows, weight, args[0], args[1], args[2],
                                             gemm.ACTIVATIONS.index(act), args[3])
        want = reference_pointwise_conv(rows, weight, *args[:3], act=act, scale=args[3])
        assert got.is_contiguous() and got.shape == want.shape
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5, msg=lambda m: (
            f'{m}\ncall {i}: {tuple(rows.shape)} x {tuple(weight.shape)}, {act}, given '
            f'{[a is not None for a in args]}'))


@pytest.mark.parametrize('act', ['relu', 'silu', 'relu6'])
def test_activations_in_the_epilogue_pass(outside_interpreter, act):
    """With a residual the activation runs in the kernel's own pass (SiLU's own exponential),
    over the whole float range, on vector lanes and the channel tail."""
    special = [0.0, -0.0, -87.5, -104.0, 1e4, -1e4, float('inf'), float('-inf'), float('nan')]
    values = torch.cat([torch.linspace(-100, 100, 520), torch.tensor(special)])  # 529 channels
    c = values.numel()
    # The values reach the activation as the bias of a zero product (a GEMM would turn inf into
    # NaN), the zero residual sends them through the kernel's own pass.
    got = _cpu_kernels.cpu_kernels().pointwise_conv_forward(
        torch.zeros(1, 1), torch.zeros(1, c), values, torch.zeros(1, c), None,
        gemm.ACTIVATIONS.index(act), None)
    torch.testing.assert_close(got[0], gemm._activate_torch(values, act), atol=1e-6, rtol=2e-6,
                               equal_nan=True)


def test_op_takes_the_kernel_on_a_cpu(cpu_kernel_calls):
    rows, weight, bias, residual, kept, scale = _inputs(2, 9, 24, 16)
    got = pointwise_conv(rows, weight, bias, residual, kept, 'relu', scale)
    torch.testing.assert_close(got, reference_pointwise_conv(rows, weight, bias, residual, kept,
                                                             'relu', scale))
    assert len(calls_of(cpu_kernel_calls, 'pointwise_conv_forward')) == 1
    # A layout the kernel does not take (channels not consecutive) is made consecutive first.
    strided = torch.randn(18, 32)[:, ::2]
    got = pointwise_conv(rows, weight, bias, strided, None)
    torch.testing.assert_close(got, reference_pointwise_conv(rows, weight, bias, strided))


def test_op_on_other_dtypes_keeps_the_stock_path(cpu_kernel_calls):
    rows, weight, bias, residual, kept, scale = (t.double() for t in _inputs(1, 5, 8, 8))
    with pytest.warns(RuntimeWarning, match='no Triton kernels'):
        got = pointwise_conv(rows, weight, bias, residual, kept)
    torch.testing.assert_close(got, reference_pointwise_conv(rows, weight, bias, residual, kept))
    assert not cpu_kernel_calls


def test_kernel_rejects_what_it_cannot_compute(outside_interpreter):
    kernels = _cpu_kernels.cpu_kernels()
    rows, weight, bias, residual, kept, scale = _inputs(2, 4, 8, 8)
    with pytest.raises(RuntimeError, match='unit channel stride'):
        kernels.pointwise_conv_forward(rows, weight, None, torch.randn(8, 16)[:, ::2], None, 0,
                                       None)
    with pytest.raises(RuntimeError, match='fp32'):
        kernels.pointwise_conv_forward(rows.double(), weight, None, None, None, 0, None)
    with pytest.raises(RuntimeError, match=r'\(M, K\)'):
        kernels.pointwise_conv_forward(rows, weight[:4], None, None, None, 0, None)
    with pytest.raises(RuntimeError, match='N dividing M'):
        kernels.pointwise_conv_forward(rows, weight, None, None, None, 0, torch.rand(3, 8))
    with pytest.raises(RuntimeError, match='activation'):
        kernels.pointwise_conv_forward(rows, weight, None, None, None, 7, None)


def test_gradients_through_the_op(cpu_kernel_calls):
    """The kernel computes the forward; gradients are the stock reference's (the op's autograd
    formula recomputes it), for every input."""
    inputs = [t.detach().requires_grad_() for t in _inputs(2, 6, 12, 10)]
    rows, weight, bias, residual, kept, scale = inputs
    pointwise_conv(rows, weight, bias, residual, kept, 'silu', scale).square().sum().backward()
    assert calls_of(cpu_kernel_calls, 'pointwise_conv_forward')
    ref = [t.detach().requires_grad_() for t in inputs]
    reference_pointwise_conv(ref[0], ref[1], ref[2], ref[3], ref[4], 'silu',
                             ref[5]).square().sum().backward()
    for got, want in zip(inputs, ref):
        torch.testing.assert_close(got.grad, want.grad)
