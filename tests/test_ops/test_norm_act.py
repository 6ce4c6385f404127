"""The ``norm_act`` op (``ops/norm_act.py``): a per-channel scale and shift, the activation and
the channel sums in one pass -- its C++ kernel against the stock reference (every activation,
channel counts off the vector width, in place as the fused block calls it), the op's routing,
registration, gradients and bad arguments; and the deploy form of spatial multiplexing that uses
it (:meth:`SpatialMuxConv.fold_norm`)."""
import random
import sys

import pytest
import torch

from mux_backbones.layers import SpatialMuxConv
from mux_backbones.ops import _cpu_kernels, norm_act, reference_norm_act
from mux_backbones.ops.group_conv import ACTIVATIONS
from ..helpers import torch_threads
from .conftest import calls_of

op_module = sys.modules['mux_backbones.ops.norm_act']


def _inputs(batch, channels, h, w, seed=0, grads=False):
    torch.manual_seed(seed)
    x = (torch.randn(batch, channels, h, w) * 3).contiguous(memory_format=torch.channels_last)
    scale, shift = torch.rand(channels) + 0.5, torch.randn(channels)
    return [t.requires_grad_(grads) for t in (x, scale, shift)]


def test_kernel_equals_reference_on_random_calls(outside_interpreter):
    """30 seeded random calls: batch 1-3, 1-70 channels (whole, pairs and parts of 8-channel
    vectors), maps 1x1 to 17x23, each activation, with and without sums; values past the
    exponential's range for SiLU."""
    rng = random.Random(0)
    kernels = _cpu_kernels.cpu_kernels()
    for i in range(30):
        batch, channels = rng.randint(1, 3), rng.randint(1, 70)
        h, w = rng.randint(1, 17), rng.randint(1, 23)
        x, scale, shift = _inputs(batch, channels, h, w, seed=i)
        x.permute(0, 2, 3, 1).view(-1)[::7] *= 40  # (the storage of a channels-last map)
        act, with_sums = rng.choice(ACTIVATIONS), rng.random() < 0.7
        y, sums = kernels.norm_act_forward(x, scale, shift, ACTIVATIONS.index(act), with_sums)
        want_y, want_sums = reference_norm_act(x, scale, shift, act, with_sums)
        assert y.is_contiguous(memory_format=torch.channels_last)
        msg = f'call {i}: {tuple(x.shape)} {act} sums={with_sums}'
        torch.testing.assert_close(y, want_y, atol=1e-5, rtol=1e-5, msg=msg)
        torch.testing.assert_close(sums, want_sums, atol=1e-3, rtol=1e-5, msg=msg)


def test_in_place_as_the_fused_block_calls_it_and_nan_passes(outside_interpreter, two_threads):
    """The kernel's sums come row by row, then over the rows: the same bits whatever the
    threads; NaN and infinities pass through as the stock activations let them."""
    x, scale, shift = _inputs(2, 24, 6, 5)
    x[0, 3, 2, 2], x[1, 5, 0, 0], x[1, 9, 1, 4] = float('nan'), float('inf'), -float('inf')
    kernels = _cpu_kernels.cpu_kernels()
    for act in ACTIVATIONS:
        code = ACTIVATIONS.index(act)
        y, sums = kernels.norm_act_forward(x, scale, shift, code, True)
        want_y, _ = reference_norm_act(x, scale, shift, act, True)
        torch.testing.assert_close(y, want_y, equal_nan=True, atol=1e-5, rtol=1e-5)
        with torch_threads(1):
            y1, sums1 = kernels.norm_act_forward(x, scale, shift, code, True)
        assert torch.equal(y1.nan_to_num(), y.nan_to_num()) and \
            torch.equal(sums1.nan_to_num(), sums.nan_to_num())


def test_op_takes_the_kernel_on_a_cpu(cpu_kernel_calls):
    x, scale, shift = _inputs(2, 20, 7, 7)
    y, sums = norm_act(x, scale, shift, 'silu', with_sums=True)
    want = reference_norm_act(x, scale, shift, 'silu', True)
    torch.testing.assert_close((y, sums), want, atol=1e-5, rtol=1e-5)
    assert len(calls_of(cpu_kernel_calls, 'norm_act_forward')) == 1
    # channels not innermost, or another dtype: the stock computation, no warning (it is the
    # op's path there, as on CUDA)
    y, sums = norm_act(x.contiguous(), scale, shift, 'relu')
    torch.testing.assert_close(y, reference_norm_act(x, scale, shift, 'relu', False)[0])
    assert sums.numel() == 0
    y, _ = norm_act(x.double(), scale.double(), shift.double(), 'relu6')
    assert y.dtype == torch.float64 and len(calls_of(cpu_kernel_calls, 'norm_act_forward')) == 1


@pytest.mark.parametrize('outputs', ['both', 'map', 'sums'])
def test_gradients_through_the_op(cpu_kernel_calls, outputs):
    """The kernel computes the forward; gradients (of the map, of its sums, of both: the eager
    path hands the backward None for an output nothing differentiates) are the stock
    reference's."""

    def loss(y, sums):
        return (y.square().sum() if outputs != 'sums' else 0) + \
            (sums.sin().sum() if outputs != 'map' else 0)

    inputs = _inputs(2, 12, 5, 4, grads=True)
    loss(*norm_act(*inputs, 'silu', with_sums=True)).backward()
    assert calls_of(cpu_kernel_calls, 'norm_act_forward')
    ref = [t.detach().requires_grad_() for t in inputs]
    loss(*reference_norm_act(*ref, 'silu', True)).backward()
    # (alone, the sums' gradient is sin' of the kernel's sums: their fp32 rounding shows)
    tol = dict(rtol=2e-5, atol=1e-5) if outputs == 'sums' else {}
    for got, want in zip(inputs, ref):
        torch.testing.assert_close(got.grad, want.grad, **tol)


def test_custom_op_registration():
    x, scale, shift = _inputs(2, 12, 4, 3)
    for with_sums in (False, True):
        torch.library.opcheck(op_module._norm_act, (x, scale, shift, 'relu', with_sums),
                              test_utils=('test_schema', 'test_faketensor',
                                          'test_aot_dispatch_static'))


def test_kernel_rejects_what_it_cannot_compute(outside_interpreter):
    kernels = _cpu_kernels.cpu_kernels()
    x, scale, shift = _inputs(1, 8, 3, 3)
    with pytest.raises(RuntimeError, match='channels-last fp32'):
        kernels.norm_act_forward(x.contiguous(), scale, shift, 0, False)
    with pytest.raises(RuntimeError, match=r'\(C,\)'):
        kernels.norm_act_forward(x, scale[:5], shift, 0, False)
    with pytest.raises(RuntimeError, match='activation'):
        kernels.norm_act_forward(x, scale, shift, 9, False)


def test_bad_arguments():
    x, scale, shift = _inputs(1, 6, 3, 3)
    with pytest.raises(ValueError, match=r'\(N, C, H, W\)'):
        norm_act(x[0], scale, shift)
    with pytest.raises(ValueError, match=r'must be \(6,\)'):
        norm_act(x, scale[:4], shift)
    with pytest.raises(ValueError, match='act must be'):
        norm_act(x, scale, shift, act='gelu')


@pytest.mark.parametrize('scales,act', [((-1, 0, 1), 'silu'), ((1, -1), 'relu'), ((0, ), 'none')])
def test_spatial_mux_deploy_form_folds_bn_and_activation(scales, act):
    """fold_norm: the layer's output is the BN's and activation's after it (any scales, odd map
    sizes, stride 2), its sums those of that output; the training form refuses ``with_pool``,
    a second fold is refused."""
    channels = 16 * len(scales)
    torch.manual_seed(0)
    layer = SpatialMuxConv(channels, 3, scales, stride=2, channels_per_group=2).eval()
    bn = torch.nn.BatchNorm2d(channels).eval()
    bn.running_mean.uniform_(-0.3, 0.3)
    bn.running_var.uniform_(0.5, 1.5)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-0.2, 0.2)
    activation = {'silu': torch.nn.SiLU(), 'relu': torch.nn.ReLU(),
                  'none': torch.nn.Identity()}[act]
    x = torch.randn(2, channels, 11, 9).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        with pytest.raises(ValueError, match='deploy form'):
            layer(x, with_pool=True)
        expected = activation(bn(layer(x)))
        layer.fold_norm(bn, act)
        y, sums = layer(x, with_pool=True)
    torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sums, expected.sum((2, 3)), atol=1e-4, rtol=1e-5)
    assert f'act={act}' in repr(layer)
    with pytest.raises(RuntimeError, match='folded already'):
        layer.fold_norm(bn, act)
    with pytest.raises(ValueError, match='running statistics'):
        SpatialMuxConv(channels, 3, scales).fold_norm(
            torch.nn.BatchNorm2d(channels, track_running_stats=False))
    with pytest.raises(ValueError, match='act must be'):
        SpatialMuxConv(channels, 3, scales).fold_norm(bn, 'gelu')
