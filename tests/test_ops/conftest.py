"""What the ops' tests share: the inputs of the GEMM and gate ops and a record of the ops' calls
of the C++ extension (``outside_interpreter``, the ops as a CPU user runs them, is the suite's:
tests/conftest.py)."""
import sys

import pytest
import torch
import torch.nn.functional as F

from mux_backbones.ops import _cpu_kernels


def pointwise_inputs(samples, pixels, k, c, weight_rows=False, dtype=torch.float32, grads=False,
                     seed=None):
    """``pointwise_conv``'s rows and the block's residual / kept halves as channel slices of
    wider maps (the views a channel-multiplexed block passes), its bias, and the weight as a
    contiguous (K, C) matrix (``weight_rows``: C consecutive) or the transposed view
    PointwiseConv2d passes (K consecutive); seeded by ``seed`` (default: ``k + c``)."""
    torch.manual_seed(k + c if seed is None else seed)
    rows = torch.randn(samples * pixels, 2 * k, dtype=dtype)[:, :k]
    weight = (torch.randn(k, c, dtype=dtype) if weight_rows else
              torch.randn(c, k, dtype=dtype).t())
    bias = torch.randn(c, dtype=dtype)
    block = torch.randn(samples * pixels, 2 * c, dtype=dtype)
    tensors = [rows, weight, bias, block[:, :c], block[:, c:]]
    if grads:
        tensors = [t.detach().requires_grad_() for t in tensors]
    return tensors


def se_gate_params(channels, squeeze, dtype=torch.float32, grads=False, seed=None):
    """``se_gate``'s reduce weight and bias, expand weight and bias; seeded by ``seed`` (default:
    ``channels + squeeze``)."""
    torch.manual_seed(channels + squeeze if seed is None else seed)
    return [torch.randn(*shape, dtype=dtype, requires_grad=grads)
            for shape in ((squeeze, channels), (squeeze, ), (channels, squeeze), (channels, ))]


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
    for op in ('group_conv', 'pointwise_conv', 'se_gate', 'gated_map', 'norm_act'):
        monkeypatch.setattr(sys.modules[f'mux_backbones.ops.{op}'], 'cpu_kernels', lambda: spy)
    return calls


_ACTS = dict(none=lambda z: z, relu=F.relu, silu=F.silu, relu6=F.relu6)


def stock_se_map(x, params, act, map_act='none'):
    """The squeeze-excite's stock expression on the map ``map_act(x)``, computed in fp32 (a
    no-op cast for fp32 tensors: autograd reaches them), with autograd through it."""
    w1, b1, w2, b2 = (p.float() for p in params)
    y = _ACTS[map_act](x.float())
    hidden = _ACTS[act](F.linear(y.mean((2, 3)), w1.flatten(1), b1))
    return y * torch.sigmoid(F.linear(hidden, w2.flatten(1), b2))[:, :, None, None]


def se_trains_as_stock(act_cfg, kernel_calls, map_act_cfg=None):
    """One eager training pass of ``SqueezeExcite(fused_ops=True)`` and of its stock twin with
    the same weights, on the map ``map_act(x)`` (``map_act_cfg``: the block's activation
    before the SE; None: none): the fused one makes one kernel call (``kernel_calls()`` counts
    them) where the kernels have the activation, none otherwise, with the stock outputs and
    gradients. Returns the fused layer and the input."""
    from mmcv.cnn import build_activation_layer

    from mux_backbones.layers.squeeze_excite import SqueezeExcite
    torch.manual_seed(0)
    stock = SqueezeExcite(24, 6, act_cfg)
    fused = SqueezeExcite(24, 6, act_cfg, fused_ops=True)
    fused.load_state_dict(stock.state_dict())
    map_act = build_activation_layer(map_act_cfg) if map_act_cfg else None
    x = torch.randn(2, 24, 5, 6, requires_grad=True)
    out = fused(x, map_act=map_act)
    ref = stock(map_act(x) if map_act else x)
    assert kernel_calls() == (act_cfg is None or act_cfg['type'] != 'HSwish')
    got = torch.autograd.grad(out.sum(), [x, *fused.parameters()])
    want = torch.autograd.grad(ref.sum(), [x, *stock.parameters()])
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    stock(x)
    return fused, x


def calls_of(calls, name):
    """The argument tuples of the recorded calls of extension function ``name``."""
    return [args for called, args in calls if called == name]
