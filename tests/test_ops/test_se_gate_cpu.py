"""The C++ CPU kernel of ``se_gate`` (``ops/se_gate_cpu.cpp``) against the stock reference:
(N, C) sums and (N, T, C) partial sums, squeeze widths off the vector width, every activation,
logits over the whole float range; the op's routing to it, and calls it refuses."""
import random
import sys

import pytest
import torch

from mux_backbones.ops import _cpu_kernels, reference_se_gate, se_gate
from mux_backbones.ops.group_conv import ACTIVATIONS
from .conftest import calls_of
from .conftest import se_gate_params as _params

gate_op = sys.modules['mux_backbones.ops.se_gate']


def test_kernel_equals_reference_on_random_calls(outside_interpreter, two_threads):
    """40 seeded random calls: batch 1-4, 1-300 channels, squeeze 1-45, sums whole or in 1-30
    tiles, each activation; means large enough to saturate the sigmoid."""
    rng = random.Random(0)
    kernels = _cpu_kernels.cpu_kernels()
    for i in range(40):
        batch, channels, squeeze = rng.randint(1, 4), rng.randint(1, 300), rng.randint(1, 45)
        params = _params(channels, squeeze, seed=i)
        tiles = rng.choice([None, rng.randint(1, 30)])
        shape = (batch, channels) if tiles is None else (batch, tiles, channels)
        sums, pixels = torch.randn(*shape) * 200, rng.randint(1, 3000)
        act = rng.choice(ACTIVATIONS)
        got = kernels.se_gate_forward(sums, 1 / pixels, *params, ACTIVATIONS.index(act))
        want = reference_se_gate(sums, 1 / pixels, *params, act)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5, msg=lambda m: (
            f'{m}\ncall {i}: sums {shape}, squeeze {squeeze}, {act}'))


def test_sigmoid_over_the_float_range(outside_interpreter):
    special = [0.0, -0.0, 80.0, -80.0, 89.0, -89.0, 1e4, -1e4, float('inf'), float('-inf'),
               float('nan')]
    logits = torch.cat([torch.linspace(-120, 120, 500), torch.tensor(special)])
    c = logits.numel()
    # One squeeze unit: hidden = relu(1 * mean) = 1, so each gate's logit is its expand bias.
    got = _cpu_kernels.cpu_kernels().se_gate_forward(
        torch.ones(1, c), 1.0, torch.full((1, c), 1 / c), torch.zeros(1), torch.zeros(c, 1),
        logits, 1)
    torch.testing.assert_close(got[0], torch.sigmoid(logits), atol=1e-7, rtol=2e-6,
                               equal_nan=True)


def test_op_takes_the_kernel_on_a_cpu(cpu_kernel_calls):
    params = _params(40, 6)
    sums = torch.randn(2, 7, 40)
    got = se_gate(sums, 49, *params, act='silu')
    torch.testing.assert_close(got, reference_se_gate(sums, 1 / 49, *params, 'silu'))
    assert len(calls_of(cpu_kernel_calls, 'se_gate_forward')) == 1
    with pytest.warns(RuntimeWarning, match='no Triton kernels'):  # fp64: the stock path
        got = se_gate(sums.double(), 49, *(p.double() for p in params))
    assert got.dtype == torch.float64 and len(cpu_kernel_calls) == 1


def test_kernel_rejects_what_it_cannot_compute(outside_interpreter):
    kernels = _cpu_kernels.cpu_kernels()
    params = _params(8, 2)
    with pytest.raises(RuntimeError, match='do not match'):
        kernels.se_gate_forward(torch.randn(1, 9), 1.0, *params, 0)
    with pytest.raises(RuntimeError, match='fp32'):
        kernels.se_gate_forward(torch.randn(1, 8).double(), 1.0, *params, 0)
    with pytest.raises(RuntimeError, match=r'\(N, C\)'):
        kernels.se_gate_forward(torch.randn(8), 1.0, *params, 0)
    with pytest.raises(RuntimeError, match='activation'):
        kernels.se_gate_forward(torch.randn(1, 8), 1.0, *params, 9)


def test_gradients_through_the_op(cpu_kernel_calls):
    """The kernel computes the forward; gradients are the stock reference's."""
    inputs = [t.requires_grad_() for t in [torch.randn(2, 5, 24)] + _params(24, 4)]
    se_gate(inputs[0], 30, *inputs[1:], act='relu6').square().sum().backward()
    assert calls_of(cpu_kernel_calls, 'se_gate_forward')
    ref = [t.detach().requires_grad_() for t in inputs]
    reference_se_gate(ref[0], 1 / 30, *ref[1:], 'relu6').square().sum().backward()
    for got, want in zip(inputs, ref):
        torch.testing.assert_close(got.grad, want.grad)
