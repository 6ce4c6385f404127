"""The C++ CPU kernels of ``ops/se_gate_cpu.cpp`` against the stock reference: the gate
(``se_gate``; (N, C) sums and (N, T, C) partial sums, squeeze widths off the vector width, every
activation, logits over the whole float range; the op's routing to it, and calls it refuses),
and the squeeze-excite's training form as one autograd node (``gated_map``; outputs and
gradients, layouts, thread counts, what it refuses, the layer's routing to it)."""
import random
import sys

import pytest
import torch

from mux_backbones.ops import _cpu_kernels, reference_se_gate, se_gate
from mux_backbones.ops.group_conv import ACTIVATIONS
from tests.helpers import torch_threads
from .conftest import calls_of
from .conftest import se_gate_params as _params
from .conftest import se_trains_as_stock, stock_se_map

map_op = sys.modules['mux_backbones.ops.gated_map']


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
    with pytest.warns(RuntimeWarning,
                      match='no Triton kernels.*take torch.float32, not torch.float64'):
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


def test_gated_map_equals_the_stock_expression_on_random_calls(outside_interpreter, two_threads):
    """The SE's training form as one C++ autograd node (``gated_map``) against autograd through
    the stock expression: 30 seeded random calls, batch 1-4, 1-150 channels, squeeze 1-40,
    maps 1x1 to 15x15, contiguous and channels-last, 2-d and 1x1-conv weights, each
    activation in the gate and on the map before it, the input or the weights frozen; the
    gradients in their tensors' shapes, the input's in its layout."""
    rng = random.Random(1)
    for i in range(30):
        n, c, s = rng.randint(1, 4), rng.randint(1, 150), rng.randint(1, 40)
        h, w = rng.randint(1, 15), rng.randint(1, 15)
        act = rng.choice(ACTIVATIONS)
        channels_last, conv_weights = rng.random() < 0.5, rng.random() < 0.5
        frozen = rng.choice([None, 'input', 'weights'])
        map_act = ACTIVATIONS[i % len(ACTIVATIONS)]
        params = _params(c, s, seed=i)
        if conv_weights:
            params[0], params[2] = params[0][:, :, None, None], params[2][:, :, None, None]
        params = [p.mul(0.3).requires_grad_(frozen != 'weights') for p in params]
        x = torch.randn(n, c, h, w) * 2
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x.requires_grad_(frozen != 'input')
        wanted = [t for t in [x, *params] if t.requires_grad]
        grad = torch.randn_like(x)
        out = map_op.gated_map(x, *params, act, map_act)
        got = torch.autograd.grad(out, wanted, grad)
        ref = stock_se_map(x, params, act, map_act)
        want = torch.autograd.grad(ref, wanted, grad)

        def where(m):
            return f'{m}\ncall {i}: {(n, c, h, w)}, squeeze {s}, {act}, map {map_act}, ' \
                   f'channels-last {channels_last}, frozen {frozen}'

        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5, msg=where)
        assert out.stride() == x.stride()
        for a, b in zip(got, want):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-5 * b.abs().max().item(),
                                       msg=where)
        if x.requires_grad:
            assert got[0].stride() == x.stride()


def test_gated_map_on_one_pixel_maps_of_either_stride(outside_interpreter):
    """A 1x1 map is contiguous and channels-last at once, whatever the strides of its size-1
    dimensions; its gradient may come with the other strides (a MUXNet-m trained at 32x32
    ends on 1x1 maps): the node takes it, as the same offsets."""
    params = [p.requires_grad_() for p in _params(8, 2)]
    for x_strides, grad_strides in [((8, 1, 8, 8), (8, 1, 1, 1)), ((8, 1, 1, 1), (8, 1, 8, 8))]:
        x = torch.empty_strided((2, 8, 1, 1), x_strides).normal_().requires_grad_()
        grad = torch.empty_strided((2, 8, 1, 1), grad_strides).normal_()
        out = map_op.gated_map(x, *params, 'relu', 'silu')
        got = torch.autograd.grad(out, [x, *params], grad)
        want = torch.autograd.grad(stock_se_map(x, params, 'relu', 'silu'), [x, *params], grad)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b)


def test_gated_map_bits_do_not_depend_on_the_threads(outside_interpreter):
    torch.manual_seed(0)
    params = [p.requires_grad_() for p in _params(96, 24)]
    for layout in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(3, 96, 14, 14).contiguous(memory_format=layout).requires_grad_()
        results = []
        for threads in (1, 2, 3):
            with torch_threads(threads):
                out = map_op.gated_map(x, *params, 'silu', 'silu')
                results.append([out, *torch.autograd.grad(out.square().sum(), [x, *params])])
        for other in results[1:]:
            for a, b in zip(results[0], other):
                assert torch.equal(a, b)


def test_gated_map_is_differentiable_once(outside_interpreter):
    x = torch.randn(2, 8, 3, 3, requires_grad=True)
    params = [p.requires_grad_() for p in _params(8, 2)]
    out = map_op.gated_map(x, *params, 'relu')
    with pytest.raises(RuntimeError, match='differentiable once'):
        torch.autograd.grad(out.sum(), x, create_graph=True)


def test_gated_map_rejects_what_it_cannot_compute(outside_interpreter):
    """The extension's node refuses what it cannot compute; ``gated_map`` sends it no such
    call, and raises where no kernel takes the tensors."""
    params = _params(8, 2)
    fits, wide = torch.randn(2, 8, 3, 3), torch.randn(2, 16, 3, 3)
    node = _cpu_kernels.cpu_kernels().gated_map
    with pytest.raises(RuntimeError, match='contiguous or channels-last'):
        node(wide[:, ::2], *params, 1, 0)
    with pytest.raises(RuntimeError, match='do not match'):
        node(wide, *params, 1, 0)
    with pytest.raises(RuntimeError, match='4-d fp32'):
        node(fits.double(), *params, 1, 0)
    with pytest.raises(RuntimeError, match='unknown activation code'):
        node(fits, *params, 1, 4)
    assert map_op.cpu_kernel_takes(fits, *params)
    assert map_op.gated_map_kernel(fits, *params) is map_op._cpu_gated_map
    assert not map_op.cpu_kernel_takes(wide[:, ::2], *params)
    assert not map_op.cpu_kernel_takes(fits.double(), *params)
    assert not map_op.cpu_kernel_takes(fits[0], *params)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert not map_op.cpu_kernel_takes(fits, *params)
    with pytest.raises(ValueError, match='no kernel takes'):
        map_op.gated_map(fits.double(), *params, 'relu')
    with pytest.raises(ValueError, match='must be one of'):
        map_op.gated_map(fits, *params, 'relu', 'gelu')


@pytest.mark.parametrize('act_cfg', [dict(type='ReLU'), dict(type='SiLU'), dict(type='Swish'),
                                     dict(type='ReLU6'), None, dict(type='HSwish')],
                         ids=lambda cfg: cfg and cfg['type'])
@pytest.mark.parametrize('map_act_cfg', [None, dict(type='SiLU'), dict(type='HSwish')],
                         ids=lambda cfg: f'map {cfg and cfg["type"]}')
def test_squeeze_excite_trains_on_the_kernels_with_fused_ops(cpu_kernel_calls, act_cfg,
                                                             map_act_cfg):
    """``SqueezeExcite(fused_ops=True)`` in eager training runs ``gated_map`` (an activation the
    kernels have) with the stock form's outputs and gradients, the map activation before it
    inside the node where the kernels have it (else the module, then the node); without
    ``fused_ops``, with an activation the kernels lack, on fp64 or under autocast, the stock
    training form."""
    fused, x = se_trains_as_stock(act_cfg, lambda: len(calls_of(cpu_kernel_calls, 'gated_map')),
                                  map_act_cfg)
    map_codes = [args[-1] for args in calls_of(cpu_kernel_calls, 'gated_map')]
    assert map_codes == ([2] if map_act_cfg == dict(type='SiLU') else [0]) * len(map_codes)
    calls = len(cpu_kernel_calls)
    fused.double()(x.double())
    with torch.autocast('cpu', dtype=torch.bfloat16):
        fused.float()(x)
    with torch.no_grad():  # (no gradient recorded: the stock expression)
        fused(x)
    assert len(cpu_kernel_calls) == calls
