"""The squeeze-excite's training form on the Triton kernels (``gated_map``; interpreter on CPU)
against autograd through the stock expression: outputs and every gradient over random shapes,
layouts and activations, an fp16 map with fp32 weights (AMP), the launch plans, the node's
limits, and the layer's routing to it. (The C++ form's tests: test_se_gate_cpu.py.)"""
import random
import sys
import warnings

import pytest
import torch

from mux_backbones.ops import _triton, launch_config
from mux_backbones.ops.group_conv import ACTIVATIONS
from .conftest import se_gate_params as _params
from .conftest import se_trains_as_stock, stock_se_map

triton = pytest.importorskip('triton')
pytestmark = pytest.mark.skipif(not _triton.interpreting(),
                                reason='CPU kernel tests need TRITON_INTERPRET=1')
map_op = sys.modules['mux_backbones.ops.gated_map']


def _map(n, c, h, w, layout, dtype=torch.float32):
    """An (n, c, h, w) map in ``layout``: 'contiguous', 'channels_last', 'slice' (channels of a
    wider map: strided, its pixels still one stride apart) or 'transposed' (H and W swapped in
    memory: the kernels take a contiguous copy)."""
    if layout == 'slice':
        return (torch.randn(n, c + 3, h, w) * 2)[:, 2:c + 2].to(dtype)
    if layout == 'transposed':
        return (torch.randn(n, c, w, h) * 2).transpose(2, 3).to(dtype)
    x = (torch.randn(n, c, h, w) * 2).to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if layout == 'channels_last' else x


def test_equals_the_stock_expression_on_random_calls():
    """16 seeded calls: batch 1-3, 1-150 channels (over one program's 64), squeeze 1-40, maps
    1x1 to 19x19 (several 64-pixel tiles: partial sums), every layout, 2-d and 1x1-conv
    weights, each activation in the gate and on the map before it, the input or the weights
    frozen; the gradients in their tensors' shapes, the map's and its gradient in the input's
    layout."""
    rng = random.Random(3)
    for i in range(16):
        n, c, s = rng.randint(1, 3), rng.randint(1, 150), rng.randint(1, 40)
        h, w = rng.randint(1, 19), rng.randint(1, 19)
        act = ACTIVATIONS[i % len(ACTIVATIONS)]
        map_act = ACTIVATIONS[(i // 2 + 1) % len(ACTIVATIONS)]
        layout = ('contiguous', 'channels_last', 'slice', 'transposed')[i // 4]
        frozen = rng.choice([None, 'input', 'weights'])
        params = _params(c, s, seed=i)
        if rng.random() < 0.5:
            params[0], params[2] = params[0][:, :, None, None], params[2][:, :, None, None]
        params = [p.mul(0.3).requires_grad_(frozen != 'weights') for p in params]
        x = _map(n, c, h, w, layout).requires_grad_(frozen != 'input')
        assert map_op.triton_kernels_take(x, *params)
        wanted = [t for t in [x, *params] if t.requires_grad]
        grad = torch.randn(n, c, h, w)
        out = map_op.gated_map(x, *params, act, map_act)
        got = torch.autograd.grad(out, wanted, grad)
        ref = stock_se_map(x, params, act, map_act)
        want = torch.autograd.grad(ref, wanted, grad)

        def where(m):
            return f'{m}\ncall {i}: {(n, c, h, w)}, squeeze {s}, {act}, map {map_act}, ' \
                   f'{layout}, frozen {frozen}'

        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5, msg=where)
        if layout != 'slice':  # (a slice's output is a dense map)
            assert out.stride() == x.contiguous().stride() if layout == 'transposed' else \
                out.stride() == x.stride()
        for a, b in zip(got, want):
            assert a.shape == b.shape and a.dtype == b.dtype
            torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-5 * b.abs().max().item(),
                                       msg=where)


@pytest.mark.parametrize('layout,h,w',
                         [('channels_last', 9, 11), ('contiguous', 8, 8), ('contiguous', 5, 5)])
def test_a_half_precision_map_with_fp32_weights(layout, h, w):
    """The AMP case: an fp16 map, fp32 parameters. The map's output and gradient come back in
    fp16, the weights' gradients in fp32, all near the fp32 computation. (8-element vectors
    along the channels, along the pixels, and none: 25 pixels.) The block's SiLU before the SE
    runs inside, in fp32, as MUXNet trains it."""
    torch.manual_seed(0)
    params = [p.mul(0.3).requires_grad_() for p in _params(40, 10)]
    x = _map(2, 40, h, w, layout, torch.float16).requires_grad_()
    grad = torch.randn(2, 40, h, w).half()
    out = map_op.gated_map(x, *params, 'silu', 'silu')
    got = torch.autograd.grad(out, [x, *params], grad)
    x32 = x.detach().float().requires_grad_()
    ref = stock_se_map(x32, params, 'silu', 'silu')
    want = torch.autograd.grad(ref, [x32, *params], grad.float())
    assert out.dtype == got[0].dtype == torch.float16
    assert all(g.dtype == torch.float32 for g in got[1:])
    torch.testing.assert_close(out.float(), ref, rtol=2e-3, atol=2e-3)
    for a, b in zip(got, want):
        torch.testing.assert_close(a.float(), b, rtol=2e-3, atol=2e-3 * b.abs().max().item())


def test_layouts_the_kernels_walk():
    """Channels-last maps are walked along the channels, contiguous ones along the pixels, each
    with vectors as wide as the extent and every other stride allow (16 bytes at most); a
    layout with neither dimension unit-stride is copied, and a second map (the gradient) is
    brought to the first one's unit-stride dimension."""
    x = torch.randn(2, 40, 8, 8)
    last = x.contiguous(memory_format=torch.channels_last)
    assert map_op.map_layout(last) == (True, 64 * 40, 40)
    assert map_op.map_layout(x) == (False, 64 * 40, 64)
    assert map_op.map_layout(last[:, 3:20]) == (True, 64 * 40, 40)
    assert map_op.map_layout(x[:, :, :, :5]) is None
    assert map_op.map_layout(x.transpose(2, 3)) is None
    assert map_op.vectors(2, 40, 64, True, 64 * 40, 40) == 8
    assert map_op.vectors(4, 40, 64, True, 64 * 40, 40) == 4
    assert map_op.vectors(2, 40, 25, False, 25 * 40, 25) == 1
    assert map_op.vectors(2, 42, 64, True, 64 * 42, 42) == 2
    walked, layout = map_op._walkable(x.transpose(2, 3))
    assert layout == (False, 64 * 40, 64) and walked.is_contiguous()
    walked, layout = map_op._walkable(x, channels_inner=True)
    assert layout == (True, 64 * 40, 40) and torch.equal(walked, x)


def test_saturated_gates_and_a_single_pixel():
    """Gates at 0 and 1 (logits of +-60) pass no gradient to the logits; a 1x1 map is its own
    mean."""
    params = _params(6, 2)
    params[3] = torch.tensor([60., -60., 60., -60., 0., 0.])
    params = [p.requires_grad_() for p in params]
    x = torch.randn(3, 6, 1, 1, requires_grad=True)
    out = map_op.gated_map(x, *params, 'relu')
    got = torch.autograd.grad(out.sum(), [x, *params])
    want = torch.autograd.grad(stock_se_map(x, params, 'relu').sum(), [x, *params])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_map_plans_cover_each_pixel_once():
    for n, c, pixels in [(1, 1, 1), (2, 24, 63), (2, 24, 65), (24, 96, 160 * 160), (1, 1152, 49),
                         (8, 480, 64 * 64)]:
        plan = map_op.map_plan(n, c, pixels)
        assert plan.tile_p % map_op.BLOCK_P == 0 and plan.block_c <= map_op.MAX_BLOCK_C
        assert (plan.tiles - 1) * plan.tile_p < pixels <= plan.tiles * plan.tile_p
        programs = n * -(-c // plan.block_c) * plan.tiles
        assert programs >= map_op.MIN_MAP_PROGRAMS or plan.tile_p == map_op.BLOCK_P


def test_is_differentiable_once():
    x = torch.randn(2, 8, 3, 3, requires_grad=True)
    params = [p.requires_grad_() for p in _params(8, 2)]
    out = map_op.gated_map(x, *params, 'relu')
    grad_out = torch.randn_like(out, requires_grad=True)
    grad_x = torch.autograd.grad(out, x, grad_out, create_graph=True)[0]
    with pytest.raises(RuntimeError, match='once_differentiable'):
        grad_x.sum().backward()


def test_what_the_kernels_take():
    params = _params(8, 2)
    x = torch.randn(2, 8, 3, 3)
    assert map_op.triton_kernels_take(x, *params)
    assert map_op.gated_map_kernel(x, *params) == map_op._TritonGatedMap.apply
    assert map_op.gated_map_kernel(x.double(), *params) is None
    assert not map_op.cpu_kernel_takes(x, *params)  # (under the interpreter: Triton's)
    assert not map_op.triton_kernels_take(x[0], *params)
    assert not map_op.triton_kernels_take(x.double(), *params)
    assert not map_op.triton_kernels_take(x, params[0].double(), *params[1:])
    assert not map_op.triton_kernels_take(x[:0], *params)
    with launch_config.dry_run():  # (tuning: nothing compiles or launches)
        assert not map_op.triton_kernels_take(x, *params)


@pytest.mark.parametrize('act_cfg', [dict(type='ReLU'), dict(type='Swish'), None,
                                     dict(type='HSwish')], ids=lambda cfg: cfg and cfg['type'])
@pytest.mark.parametrize('map_act_cfg', [None, dict(type='SiLU')],
                         ids=lambda cfg: f'map {cfg and cfg["type"]}')
def test_squeeze_excite_trains_on_the_kernels_with_fused_ops(monkeypatch, act_cfg, map_act_cfg):
    """``SqueezeExcite(fused_ops=True)`` in eager training runs the Triton node (an activation
    the kernels have), the map activation before it inside, with the stock form's outputs and
    gradients; an activation the kernels lack, fp64, ``fused_ops=False`` and a forward without
    gradients take the stock forms, with no warning."""
    applied = []
    apply = map_op._TritonGatedMap.apply
    monkeypatch.setattr(map_op._TritonGatedMap, 'apply',
                        lambda *args: applied.append(args[-1]) or apply(*args))
    fused, x = se_trains_as_stock(act_cfg, lambda: len(applied), map_act_cfg)
    assert set(applied) <= {'silu' if map_act_cfg else 'none'}
    calls = len(applied)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        fused.double()(x.double())
        with torch.no_grad():
            fused.float()(x)
    assert len(applied) == calls
