"""The C++ CPU kernel of ``pointwise_conv`` (``ops/pointwise_conv_cpu.cpp``) against the stock
reference: every epilogue (bias, activation, residual, interleave), the squeeze-excite scale
folded into each sample's weight panel, channel slices of wider maps as inputs, channel counts
off the vector width and the panel width, row counts off the tile height, both weight layouts,
batches; the op's routing to it, and calls it refuses."""
import random
import sys

import pytest
import torch

from mux_backbones.layers import PointwiseConv2d
from mux_backbones.ops import _cpu_kernels, pointwise_conv, reference_pointwise_conv
from mux_backbones.ops.group_conv import ACTIVATIONS
from ..helpers import torch_threads
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
        act = rng.choice(ACTIVATIONS)
        got = kernels.pointwise_conv_forward(rows, weight, args[0], args[1], args[2],
                                             ACTIVATIONS.index(act), args[3])
        want = reference_pointwise_conv(rows, weight, *args[:3], act=act, scale=args[3])
        assert got.is_contiguous() and got.shape == want.shape
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5, msg=lambda m: (
            f'{m}\ncall {i}: {tuple(rows.shape)} x {tuple(weight.shape)}, {act}, given '
            f'{[a is not None for a in args]}'))


@pytest.mark.parametrize('weight_rows', [True, False])
def test_gemm_panels_tiles_and_threads(outside_interpreter, two_threads, weight_rows):
    """The GEMM's blocking: output channels over several 32-wide panels and a partial one (down
    to one lane), rows off the 6-row tile, long reductions, samples whose rows split into
    chunks (each with its own scaled panel); the weight read in place (its channels
    consecutive, as a deployed layer stores it) or packed (the transposed view, a column
    slice). Each output is one tile's sum in a fixed order: the same to the bit on 1 thread."""
    kernels = _cpu_kernels.cpu_kernels()
    for samples, pixels, k, c in [(1, 49, 200, 97), (1, 1, 3, 1), (2, 37, 24, 64), (3, 13, 7, 33),
                                  (1, 200, 480, 40), (4, 7, 12, 20), (1, 300, 9, 160)]:
        rows, weight, bias, residual, kept = pointwise_inputs(samples, pixels, k, c,
                                                              weight_rows=weight_rows)
        if not weight_rows:  # every other column of a wider matrix
            weight = torch.randn(k, 2 * c)[:, ::2]
        scale = torch.rand(samples, k)
        for args, act in [((bias, residual, kept, scale), 'silu'),
                          ((bias, None, None, None), 'relu'),
                          ((None, residual, None, scale), 'none'),
                          ((bias, None, kept, None), 'relu6')]:
            code = ACTIVATIONS.index(act)
            got = kernels.pointwise_conv_forward(rows, weight, *args[:3], code, args[3])
            want = reference_pointwise_conv(rows, weight, *args[:3], act=act, scale=args[3])
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)
            with torch_threads(1):
                alone = kernels.pointwise_conv_forward(rows, weight, *args[:3], code, args[3])
            assert torch.equal(got, alone), (samples, pixels, k, c, act)


@pytest.mark.parametrize('act', ['relu', 'silu', 'relu6'])
def test_activations_in_the_epilogue_pass(outside_interpreter, act):
    """The activation in the GEMM's epilogue (SiLU's own exponential) over the whole float
    range, on vector lanes and the channel tail."""
    special = [0.0, -0.0, -87.5, -104.0, 1e4, -1e4, float('inf'), float('-inf'), float('nan')]
    values = torch.cat([torch.linspace(-100, 100, 520), torch.tensor(special)])  # 529 channels
    c = values.numel()
    # The values reach the activation as the bias of a zero product (a product would turn inf
    # into NaN).
    got = _cpu_kernels.cpu_kernels().pointwise_conv_forward(
        torch.zeros(1, 1), torch.zeros(1, c), values, torch.zeros(1, c), None,
        ACTIVATIONS.index(act), None)
    torch.testing.assert_close(got[0], gemm._activate_torch(values, act), atol=1e-6, rtol=2e-6,
                               equal_nan=True)


@pytest.mark.parametrize('act', ['silu', 'relu6'])
def test_epilogue_activation_is_the_same_on_every_vector(outside_interpreter, act):
    """Vectors activated two at a time (SiLU on 16 lanes where that pays: cpu_vector.h) and one
    at a time (a tile's odd last vector: one row of three) give the same bits: output channels
    0-7 and 16-23 have the same weights."""
    torch.manual_seed(0)
    weight, bias = torch.randn(16, 8), torch.randn(8)
    weight = torch.cat([weight, torch.randn(16, 8), weight], 1)
    bias = torch.cat([bias, torch.randn(8), bias])
    for _ in range(32):
        row = torch.randn(1, 16) * 5  # (one row: a tile of 1 x 3 vectors)
        out = _cpu_kernels.cpu_kernels().pointwise_conv_forward(
            row, weight, bias, None, None, ACTIVATIONS.index(act), None)
        assert torch.equal(out[:, :8], out[:, 16:])


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


def test_pointwise_conv_cpu_kernel_form(outside_interpreter, cpu_kernel_calls):
    """A 1x1 conv's CPU kernel form keeps its weight's memory as the (C_in, C_out) matrix the
    GEMM reads in place -- through conversions, with its values and state dict unchanged --
    and runs each eager call on channels-last input as the op (others: the stock conv), with
    the conv's outputs."""
    conv = torch.nn.Conv2d(24, 40, 1)
    fast = PointwiseConv2d(24, 40, 1)
    fast.load_state_dict(conv.state_dict())
    fast.use_cpu_kernel()
    assert fast.matrix().is_contiguous() and fast.weight.shape == conv.weight.shape
    fast.to(memory_format=torch.channels_last).float()
    assert fast.matrix().is_contiguous()
    for key, value in fast.state_dict().items():
        assert torch.equal(value, conv.state_dict()[key])
    fast.load_state_dict(conv.state_dict())  # (in place, into the same memory)
    assert fast.matrix().is_contiguous()
    x = torch.randn(2, 24, 7, 9).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), conv(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fast(x.contiguous()), conv(x), atol=1e-5, rtol=1e-5)
    assert len(calls_of(cpu_kernel_calls, 'pointwise_conv_forward')) == 1
