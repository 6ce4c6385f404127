"""The fused group-wise conv kernels against the stock PyTorch reference (Triton interpreter on
CPU): forward and gradients, every kernel-size mix of the arch tables, strides, dilations, odd
sizes, epilogues, the custom-op registration, and the fallback for unsupported inputs."""
import math
import sys
import warnings

import pytest
import torch

from mux_backbones import arch_settings
from mux_backbones.backbones.block_spec import decode_stage
from mux_backbones.layers import FusedGroupConv
from mux_backbones.ops import _triton, group_conv, launch_config, pack_weights, reference_group_conv
from mux_backbones.ops.group_conv import (MIN_PROGRAMS, _forward_tile, _group_conv, _groups,
                                          _pixel_tile, _tile_sums, compile_jobs, forward_candidates,
                                          forward_launches, kernel_weights, pool_tiles,
                                          transposed_weights, tune_forward, tuned_config,
                                          unwindow_weights, weight_grad_launches)
from mux_backbones.ops.launch_config import LaunchConfig, _run_compile_jobs, precompile
from ..helpers import DispatchRecorder, set_op_switches

triton = pytest.importorskip('triton')
pytestmark = pytest.mark.skipif(not _triton.interpreting(),
                                reason='CPU kernel tests need TRITON_INTERPRET=1')


def _arch_mixes():
    """Every (kernel sizes, channels per group, stride) of the registered archs' spatial convs."""
    mixes = set()
    for arch in arch_settings.values():
        for stage in arch['stages']:
            for spec in decode_stage(stage):
                if not spec.scales or not any(spec.scales):
                    mixes.add((spec.kernel_sizes, spec.channels_per_group, spec.stride))
    return sorted(mixes)


def test_pack_weights_of_one_conv_skips_the_concatenation():
    """One weight packs as its own permuted copy (no ``cat``: one copy, not two, per training
    step), in the layout of several, with its gradient; the deploy form owns its copy even
    where the packed form is a view (one channel)."""
    weight = torch.randn(6, 2, 5, 5, requires_grad=True)
    with DispatchRecorder() as ops:
        packed = pack_weights([weight])
    assert torch.ops.aten.cat not in [func.overloadpacket for func, _ in ops.calls]
    together = pack_weights([weight, torch.randn(4, 2, 3, 3)])
    assert torch.equal(packed, together[:packed.numel()]) and packed.is_contiguous()
    packed.sum().backward()
    assert torch.equal(weight.grad, torch.ones_like(weight))

    conv = torch.nn.Conv2d(1, 1, 3, padding=1, bias=False)
    fused = FusedGroupConv.from_convs([conv], None, torch.nn.Identity())
    with torch.no_grad():
        conv.weight.add_(1.0)
    assert not torch.equal(fused.weight.view(-1), conv.weight.view(-1))


def _case(splits, kernel_sizes, dilations, stride, cpg, act='none', bias=False, pool=False,
          size=(11, 9), batch=2, dtype=torch.float32, grads=True, stock_forward=False):
    torch.manual_seed(sum(splits) + len(kernel_sizes))
    channels = sum(splits)
    x = torch.randn(batch, channels, *size, dtype=dtype)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_(grads)
    weights = [torch.randn(c, cpg, k, k, requires_grad=grads) for c, k in zip(splits, kernel_sizes)]
    b = torch.randn(channels, requires_grad=grads) if bias else None
    packed = pack_weights(weights)
    out = group_conv(x, packed, b, splits, kernel_sizes, dilations, stride, cpg, act, pool,
                     stock_forward)
    y, sums = out if pool else (out, None)
    ref = reference_group_conv(x.float(), packed, b, splits, kernel_sizes, dilations, stride,
                               cpg, act)
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
    assert y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y.float(), ref, **tol)
    if pool:  # per-tile partial sums (a tuned config's tiles, if any), adding up to the sums
        config = tuned_config(x, splits, kernel_sizes, dilations, stride, cpg)
        ref_parts = _tile_sums(ref, *_forward_tile(splits, batch, *ref.shape[-2:], config))
        assert sums.shape == (batch, pool_tiles(splits, batch, *ref.shape[-2:], config), channels)
        torch.testing.assert_close(sums, ref_parts, **tol)
        torch.testing.assert_close(sums.sum(1), ref.sum((2, 3)), **tol)
    if not grads:
        return
    params = [x] + weights + ([b] if bias else [])
    g = torch.randn_like(ref)
    loss = (y * g).sum() + (sums.square().sum() * 1e-2 if pool else 0)
    ref_loss = (ref * g).sum() + (ref_parts.square().sum() * 1e-2 if pool else 0)
    for got, want in zip(torch.autograd.grad(loss, params), torch.autograd.grad(ref_loss, params)):
        torch.testing.assert_close(got, want, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize('kernel_sizes,cpg,stride', _arch_mixes())
def test_every_arch_kernel_mix(kernel_sizes, cpg, stride):
    splits = [4 * cpg] * len(kernel_sizes)
    splits[0] += 2 * cpg  # unequal groups, as split_channels makes them
    _case(splits, kernel_sizes, [1] * len(kernel_sizes), stride, cpg, size=(13, 11))


@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('cpg', [1, 2])
def test_per_group_dilation_and_odd_sizes(stride, cpg):
    """The segmentation configs' dilated kernels (one dilation per kernel size)."""
    _case([6, 4], [3, 5], [4, 2], stride, cpg, size=(15, 7), batch=1)


@pytest.mark.parametrize('act', ['relu', 'silu', 'relu6'])
def test_epilogue_bias_activation_pool(act):
    _case([10, 6], [3, 5], [1, 1], 2, 2, act=act, bias=True, pool=True, size=(9, 10))


def test_pool_partial_sums_over_several_tiles():
    """One partial sum per tile and channel (no atomics), ragged edge tiles, their gradient."""
    _case([4, 4], [3, 5], [1, 1], 1, 1, act='relu', bias=True, pool=True, size=(37, 21), batch=1)
    assert pool_tiles([4, 4], 1, 37, 21) > 4


@pytest.mark.parametrize('cpg,pair_swap', [(1, None), (2, True), (2, False)])
def test_vector_path_aligned_groups(cpg, pair_swap, monkeypatch):
    """Groups that are multiples of 8 take the mask-free, vectorised channel blocks; pair
    partners come from swapping the loaded vector (as compiled) or from a second load."""
    monkeypatch.setattr(sys.modules['mux_backbones.ops.group_conv'], 'PAIR_SWAP', pair_swap)
    _case([16, 8, 8], [3, 5, 7], [1, 2, 1], 2, cpg, act='silu', bias=True, pool=True,
          size=(13, 11))
    _case([6, 4], [3, 5], [1, 1], 1, cpg, size=(20, 33), batch=1)  # several tiles, masked


@pytest.mark.parametrize('cpg,stride', [(1, 2), (2, 1), (2, 2)])
def test_gpu_launch_plans(cpg, stride, monkeypatch):
    """The tiles, channel blocks, alignment hints and weight-gradient tiles the kernels get on a
    GPU (the interpreter otherwise plans fewer, larger programs), run by the interpreter."""
    monkeypatch.setattr(sys.modules['mux_backbones.ops.group_conv'], 'interpreting', lambda: False)
    # 72 channels: 16-channel blocks, the last half masked (vector loads under a vector mask)
    _case([72, 8], [3, 5], [1, 2], stride, cpg, act='silu', bias=True, pool=True, size=(10, 9),
          batch=1)


def test_one_kernel_size_launches_the_one_group_kernel():
    """A layer of one kernel size launches the one-group kernel (fewer arguments for Triton's
    launcher to bind per launch); a MixConv the slotted one, its groups' code paths being the
    one-group launches ``forward_slots`` gives; both compute the reference (the arch-mix tests)."""
    ops = sys.modules['mux_backbones.ops.group_conv']
    one, = forward_launches((2, 24, 9, 9), [24], [5], [1], 1, 2, 'relu', True, True)
    kernel = ops.kernels()['forward_one']
    assert one.kernel == 'forward_one' and ops.forward_slots(one) == (one, )
    assert len(kernel.arg_names) == 5 + len(one.scalars) + len(one.meta) < 40
    mix, = forward_launches((2, 24, 9, 9), [8, 8, 8], [3, 5, 7], [1, 1, 1], 1, 1, 'relu', True,
                            True)
    assert mix.kernel == 'forward' and mix.grid[2] == one.grid[2] == 2  # images
    slots = ops.forward_slots(mix)
    assert [s.kernel for s in slots] == ['forward_one'] * 3
    assert [s.meta['K0'] for s in slots] == [3, 5, 7]
    assert sum(s.grid[1] for s in slots) == mix.grid[1]
    _case([24], [5], [1], 1, 2, act='relu', bias=True, pool=True, size=(9, 9), grads=False)


@pytest.mark.parametrize('gpu_plans', [False, True])
@pytest.mark.parametrize('cpg,stride', [(1, 1), (1, 2), (2, 1), (2, 2)])
def test_unaligned_groups_in_aligned_windows(cpg, stride, gpu_plans, monkeypatch):
    """Groups whose first channel or size is no multiple of 8 (MUXNet-m's [92, 89, ...] MixConv)
    are computed over the aligned window around them: forward, pooling and both gradients."""
    if gpu_plans:
        monkeypatch.setattr(sys.modules['mux_backbones.ops.group_conv'], 'interpreting',
                            lambda: False)
    splits = [12, 9, 11] if cpg == 1 else [12, 10, 10]
    groups = _groups(splits, [3, 5, 7], [1, 1, 1], cpg)
    assert [(g.start, g.size, g.keep_from) for g in groups] == (
        [(0, 16, 0), (8, 16, 4), (16, 16, 5)] if cpg == 1 else
        [(0, 16, 0), (8, 16, 4), (16, 16, 6)])
    _case(splits, [3, 5, 7], [1, 2, 1], stride, cpg, act='silu', bias=True, pool=True,
          size=(9, 10), batch=1)


def test_window_weights_round_trip():
    """The windowed packing holds each group's taps at its own lanes, zeros on the others."""
    splits, ks = [12, 9, 11], [3, 5, 7]
    weights = [torch.randn(c, 1, k, k) for c, k in zip(splits, ks)]
    packed = pack_weights(weights)
    windowed = kernel_weights(packed, splits, ks, 1)
    assert windowed.numel() == 16 * (9 + 25 + 49)
    second = windowed[16 * 9:16 * 34].view(25, 16)  # group 2: channels 12..20 of window 8..24
    torch.testing.assert_close(second[:, 4:13], weights[1].flatten(1).t())
    assert not second[:, :4].any() and not second[:, 13:].any()
    torch.testing.assert_close(unwindow_weights(windowed, splits, ks, 1), packed)
    aligned = pack_weights([torch.randn(8, 1, 3, 3), torch.randn(16, 1, 5, 5)])
    assert kernel_weights(aligned, [8, 16], [3, 5], 1) is aligned  # nothing to window


@pytest.mark.parametrize('splits,cpg', [([8, 16], 1), ([12, 9, 11], 1), ([8, 16], 2),
                                        ([12, 10, 10], 2)])
@pytest.mark.parametrize('flip', [True, False])
def test_transposed_kernel_weights_in_one_gather(splits, cpg, flip):
    """The backward's weights (taps flipped, 2 x 2 pair blocks transposed, windowed) are one
    index of the packed weights, equal to the per-group reference."""
    ks = [3, 5, 7][:len(splits)]
    packed = pack_weights([torch.randn(c, cpg, k, k) for c, k in zip(splits, ks)])
    want = kernel_weights(transposed_weights(packed, splits, ks, cpg, flip), splits, ks, cpg)
    got = kernel_weights(packed, splits, ks, cpg, transpose=True, flip=flip)
    torch.testing.assert_close(got, want)
    # unflipped depth-wise weights are their own transpose: the packing itself unless windowed
    assert (got is packed) == (cpg == 1 and not flip and splits == [8, 16])


@pytest.mark.filterwarnings('ignore:invalid value:RuntimeWarning')  # numpy, on the inf lanes
def test_window_lanes_of_neighbours_never_leak():
    """A window reads its neighbours' channels with zero weights: their inf/nan stay theirs."""
    splits, ks = [12, 9, 11], [3, 5, 7]
    x = torch.randn(1, 32, 8, 8).contiguous(memory_format=torch.channels_last)
    x[:, 5] = float('inf')
    x[:, 25] = float('nan')
    w = pack_weights([torch.randn(c, 1, k, k) for c, k in zip(splits, ks)])
    y = group_conv(x, w, None, splits, ks, [1, 1, 1])
    ref = reference_group_conv(x, w, None, splits, ks, [1, 1, 1], 1, 1)
    assert y[:, 12:21].isfinite().all()  # group 2's window spans channels 8..23
    torch.testing.assert_close(y, ref, equal_nan=True)


def test_small_launches_take_smaller_tiles(monkeypatch):
    """Launches with few programs (batch 1, 7x7 maps) get smaller pixel tiles, so more SMs share
    them, down to 1024 outputs per program (a 16-byte vector per thread); big launches and the
    weight gradient keep theirs."""
    monkeypatch.setattr(sys.modules['mux_backbones.ops.group_conv'], 'interpreting', lambda: False)
    assert _pixel_tile([480], 7, 7) == (4, 8)  # 32 pixels of 64 channels fit the registers
    assert _pixel_tile([480], 7, 7, images=1) == (4, 4)  # 16 pixels x 64 channels: the floor
    assert _pixel_tile([480], 7, 7, images=128) == (4, 8)  # 128 x 2 tiles x 8 blocks: enough
    assert _pixel_tile([24], 112, 112, images=1) == (8, 16)  # 8-channel blocks: 128 pixels
    assert pool_tiles([480], 1, 7, 7) == 4 and pool_tiles([480], 128, 7, 7) == 2
    # The weight gradient fills the GPU with chunks of tiles: MUXNet-m's first layer at batch 32
    (launch, ) = weight_grad_launches((32, 24, 112, 112), [24], [3], [1], 1, 1)
    assert math.prod(launch.grid) >= MIN_PROGRAMS and launch.grid[1:] == (3, 9)


def test_any_odd_kernel_size():
    """Kernel sizes outside the arch tables (13) are unrolled like the others."""
    _case([8, 6], [13, 3], [1, 1], 1, 2, bias=True, size=(15, 14), batch=1)


def test_many_channel_blocks_and_tiny_maps():
    """More channels than one program block, a 1x1 and a 2x3 map."""
    _case([70, 66], [3, 7], [1, 1], 1, 1, bias=True, size=(1, 1), batch=1)
    _case([70, 66], [3, 7], [1, 1], 2, 2, size=(2, 3), batch=1)


@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('act,bias,pool', [('none', False, False), ('silu', True, True)])
def test_stock_forward_with_kernel_gradients(stride, act, bias, pool, monkeypatch):
    """``stock_forward``: the stock conv's forward inside the op (also where the backward
    recomputes the pre-activation), the kernels' gradients; equal to the reference."""
    ops = sys.modules['mux_backbones.ops.group_conv']
    calls = []

    def spy(name, fn):
        def record(*args, **kwargs):
            calls.append(name)
            return fn(*args, **kwargs)
        monkeypatch.setattr(ops, name, record)

    for name in ('reference_group_conv', 'reference_group_conv_backward', '_weight_grad',
                 '_launch_forward'):
        spy(name, getattr(ops, name))
    _case([6, 4], [3, 5], [1, 2], stride, 2, act=act, bias=bias, pool=pool, size=(9, 10),
          stock_forward=True)
    assert calls.count('reference_group_conv') == 1 + (act != 'none')
    assert 'reference_group_conv_backward' not in calls and calls.count('_weight_grad') == 1
    # the stride-1 input gradient is the forward kernel's, with transposed weights
    assert calls.count('_launch_forward') == (stride == 1)


def test_half_precision_forward():
    _case([8, 8], [3, 5], [1, 1], 1, 1, act='silu', bias=True, dtype=torch.float16, grads=False)


def test_custom_op_registration():
    """Fake (meta) implementation and autograd formula agree with the real kernel."""
    x = torch.randn(1, 8, 6, 7).contiguous(memory_format=torch.channels_last)
    w = torch.randn(3 * 3 * 4 + 5 * 5 * 4)
    torch.library.opcheck(_group_conv, (x, w, torch.randn(8), [4, 4], [3, 5], [1, 1], 2, 1,
                                        'silu', True),
                          test_utils=('test_schema', 'test_faketensor', 'test_aot_dispatch_static'))
    torch.library.opcheck(_group_conv, (x, w, torch.randn(8), [4, 4], [3, 5], [1, 1], 1, 1,
                                        'relu', False, True),
                          test_utils=('test_schema', 'test_faketensor', 'test_aot_dispatch_static'))


def test_torch_compile_sees_one_node():
    conv_w = torch.randn(6, 1, 3, 3)

    def fn(x):
        return group_conv(x, pack_weights([conv_w]), None, [6], [3], [1], 1, 1, 'relu') * 2

    x = torch.randn(1, 6, 8, 8).contiguous(memory_format=torch.channels_last)
    compiled = torch.compile(fn, backend='aot_eager', fullgraph=True)
    torch.testing.assert_close(compiled(x), fn(x))


def test_unsupported_input_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(_triton, '_warned', set())
    x = torch.randn(1, 4, 5, 5, dtype=torch.float64)
    w = pack_weights([torch.randn(4, 1, 3, 3, dtype=torch.float64)])
    with pytest.warns(RuntimeWarning, match='float64 is not supported.*stock PyTorch'):
        y = group_conv(x, w, None, [4], [3], [1], 1, 1)
    torch.testing.assert_close(y, reference_group_conv(x, w, None, [4], [3], [1], 1, 1))
    with warnings.catch_warnings():
        warnings.simplefilter('error')  # only once per reason
        group_conv(x, w, None, [4], [3], [1], 1, 1)
    set_op_switches(monkeypatch, interpret=False, cpu_kernels=False)  # (no C++ kernel either)
    with pytest.warns(RuntimeWarning, match='device cpu has no Triton kernels'):
        y, parts = group_conv(x.float(), w.float(), None, [4], [3], [1], 1, 1, with_pool=True)
    # The fallback's pooled sums come in the kernel's tiles too (its fake has one shape).
    assert parts.shape == (1, pool_tiles([4], 1, 5, 5), 4)
    torch.testing.assert_close(parts.sum(1), y.sum((2, 3)))


def test_bad_arguments():
    x = torch.randn(1, 8, 5, 5)
    w = torch.randn(8 * 9)
    with pytest.raises(ValueError, match='do not add up'):
        group_conv(x, w, None, [4], [3], [1])
    with pytest.raises(ValueError, match='odd'):
        group_conv(x, torch.randn(8 * 16), None, [8], [4], [1])
    with pytest.raises(ValueError, match='channels_per_group'):
        group_conv(x, w, None, [8], [3], [1], channels_per_group=3)
    with pytest.raises(ValueError, match='packed weight'):
        group_conv(x, w[:-1], None, [8], [3], [1])
    with pytest.raises(ValueError, match='act must be'):
        group_conv(x, w, None, [8], [3], [1], act='gelu')


@pytest.fixture
def clean_launch_configs():
    launch_config.forget()
    yield
    launch_config.forget()


def _timer_preferring(wanted, x, splits, kernel_sizes, dilations, stride, cpg):
    """A stand-in for the GPU timer: ``wanted`` (a config predicate) is fast, the rest slow."""
    def time_us(fn):
        fn()
        return 1.0 if wanted(tuned_config(x, splits, kernel_sizes, dilations, stride, cpg)) \
            else 5.0
    return time_us


@pytest.mark.parametrize('cpg,stride', [(1, 1), (2, 2)])
def test_tuned_config_drives_forward_pooling_and_gradients(cpg, stride, clean_launch_configs,
                                                           monkeypatch):
    """``tune_forward`` keeps the fastest candidate for the call's signature; every later call
    with that signature launches it (tile and warps), the SE's partial sums come in its tiles,
    and the forward, the pooled sums and both gradients still equal the reference."""
    monkeypatch.setattr(sys.modules['mux_backbones.ops.group_conv'], 'interpreting', lambda: False)
    splits, ks, dil = [16, 8], [3, 5], [1, 2]
    x = torch.randn(1, 24, 11, 13).contiguous(memory_format=torch.channels_last)
    weight = pack_weights([torch.randn(c, cpg, k, k) for c, k in zip(splits, ks)])
    candidates = forward_candidates(x.shape, splits, stride)
    planner = candidates[0]
    assert len(candidates) >= 3 and len(set(candidates)) == len(candidates)
    assert {c.num_warps for c in candidates} >= {2, 4, 8}
    assert {c.num_stages for c in candidates} == {1, 3} and planner.num_stages == 1
    # Prefer the pipelined candidate with the smallest tile: the pooled sums change shape.
    smallest = min(candidates, key=lambda c: (c.tile_h * c.tile_w, c.num_warps, -c.num_stages))
    times = tune_forward(x, weight, torch.randn(24), splits, ks, dil, stride, cpg, 'silu', True,
                         time_us=_timer_preferring(lambda c: c == smallest, x, splits, ks, dil,
                                                   stride, cpg))
    assert list(times) == candidates and min(times, key=times.get) == smallest
    assert tuned_config(x, splits, ks, dil, stride, cpg) == smallest
    launch, = forward_launches(x.shape, splits, ks, dil, stride, cpg, 'silu', True, True,
                               smallest)
    assert (launch.meta['TILE_H'], launch.meta['TILE_W'], launch.num_warps,
            launch.meta['STAGES']) == smallest[:4]
    out_h, out_w = -(-11 // stride), -(-13 // stride)
    assert pool_tiles(splits, 1, out_h, out_w, smallest) > pool_tiles(splits, 1, out_h, out_w)
    # Same signature (shape, dtype, device, layout): the tuned launch, checked end to end.
    _case(splits, ks, dil, stride, cpg, act='silu', bias=True, pool=True, size=(11, 13), batch=1)
    other = torch.randn(1, 24, 12, 13)  # another shape: the planner's own choice
    assert tuned_config(other, splits, ks, dil, stride, cpg) is None
    assert planner == LaunchConfig(*_pixel_tile(splits, out_h, out_w, 1), 4, 1)


def test_launch_plans_are_cached_and_follow_the_table(clean_launch_configs, monkeypatch):
    """A forward call signature is planned once (the eager forward's Python cost); the cached
    plan is replaced when the tuned table changes, and the launch follows it."""
    ops = sys.modules['mux_backbones.ops.group_conv']
    splits, ks, dil = [8, 8], [3, 5], [1, 1]
    x = torch.randn(1, 16, 9, 11).contiguous(memory_format=torch.channels_last)
    weight = pack_weights([torch.randn(8, 1, k, k) for k in ks])
    signature = (x.shape, x.dtype, x.device, splits, ks, dil, 1, 1, 'relu', True, False)
    plan = ops.forward_plan(*signature)
    assert ops.forward_plan(*signature) is plan and plan.config is None
    assert plan.pool_shape == (1, pool_tiles(splits, 1, 9, 11), 16)
    config = min(forward_candidates(x.shape, splits), key=lambda c: c.tile_h * c.tile_w)
    launch_config.record(ops.tuning_key(x.shape, x.dtype, x.device, splits, ks, dil, 1, 1),
                         config)
    tuned = ops.forward_plan(*signature)
    assert tuned.config == config and tuned.pool_shape == (1, pool_tiles(splits, 1, 9, 11,
                                                                         config), 16)
    launched = []
    real_run = ops._run
    monkeypatch.setattr(ops, '_run', lambda launches, *t: launched.append(launches) or
                        real_run(launches, *t))
    y, sums = group_conv(x, weight, None, splits, ks, dil, 1, 1, 'relu', True)
    assert launched[-1] == tuned.launches and sums.shape == tuned.pool_shape
    torch.testing.assert_close(y, reference_group_conv(x, weight, None, splits, ks, dil, 1, 1,
                                                       'relu'), atol=1e-4, rtol=1e-4)
    launch_config.forget()
    group_conv(x, weight, None, splits, ks, dil, 1, 1, 'relu', True)
    assert launched[-1] == ops.forward_plan(*signature).launches == plan.launches


def test_tuning_skips_configs_that_fail(clean_launch_configs, monkeypatch):
    """A config the compiler cannot build (e.g. out of registers) is skipped with a warning;
    with none left, nothing is recorded."""
    ops = sys.modules['mux_backbones.ops.group_conv']
    real_run, failing = ops._run, {8}

    def run(launches, *tensors):
        if any(launch.num_warps in failing for launch in launches):
            raise RuntimeError('out of resources: registers')
        return real_run(launches, *tensors)

    monkeypatch.setattr(ops, '_run', run)
    splits, ks, dil = [8], [3], [1]
    x = torch.randn(1, 8, 9, 9).contiguous(memory_format=torch.channels_last)
    weight = pack_weights([torch.randn(8, 1, 3, 3)])
    with pytest.warns(RuntimeWarning, match=r'config \(\d+, \d+, 8, \d\) failed.*registers'):
        times = tune_forward(x, weight, None, splits, ks, dil, 1, 1,
                             time_us=_timer_preferring(lambda c: c.num_warps == 8, x, splits, ks,
                                                       dil, 1, 1))
    assert times and all(c.num_warps != 8 for c in times)
    assert tuned_config(x, splits, ks, dil, 1, 1) == min(times, key=times.get)
    failing.update({2, 4})  # nothing builds: the planner's own choice stays
    launch_config.forget()
    with pytest.warns(RuntimeWarning, match='failed'):
        assert tune_forward(x, weight, None, splits, ks, dil, 1, 1, time_us=lambda fn: 1.0) == {}
    assert launch_config.empty()


def test_compiled_call_sees_the_tuned_pool_shape(clean_launch_configs):
    """The fake implementation (what ``torch.compile`` traces) gives the pooled sums the tuned
    tiles' shape, as the kernel does."""
    conv_w = torch.randn(8, 1, 3, 3)
    x = torch.randn(1, 8, 13, 11).contiguous(memory_format=torch.channels_last)

    def fn(x):
        y, sums = group_conv(x, pack_weights([conv_w]), None, [8], [3], [1], 1, 1, 'relu', True)
        return y * 2, sums

    smallest = min(forward_candidates(x.shape, [8]), key=lambda c: c.tile_h * c.tile_w)
    tune_forward(x, pack_weights([conv_w]), None, [8], [3], [1], 1, 1, 'relu', True,
                 time_us=_timer_preferring(lambda c: c == smallest, x, [8], [3], [1], 1, 1))
    tuned = tuned_config(x, [8], [3], [1], 1, 1)
    assert tuned == smallest
    compiled = torch.compile(fn, backend='aot_eager', fullgraph=True)
    got, want = compiled(x), fn(x)
    assert got[1].shape == want[1].shape == (1, pool_tiles([8], 1, 13, 11, tuned), 8)
    assert pool_tiles([8], 1, 13, 11, tuned) > pool_tiles([8], 1, 13, 11)
    torch.testing.assert_close(got, want)


def test_candidates_compile_ahead_in_worker_processes(monkeypatch):
    """``compile_jobs`` lists the launches tuning will run (one per candidate), and
    ``launch_config.precompile`` runs them in spawned worker processes (on a GPU: compiled into
    Triton's disk cache for the tuning that follows); here the workers run them in the
    interpreter."""
    x = torch.randn(1, 24, 9, 10, dtype=torch.float16).contiguous(
        memory_format=torch.channels_last)
    weight = pack_weights([torch.randn(16, 2, 3, 3), torch.randn(8, 2, 5, 5)]).half()
    jobs = compile_jobs(x, weight, torch.randn(24).half(), [16, 8], [3, 5], [1, 2], 2, 2,
                        'relu6', True)
    candidates = forward_candidates(x.shape, [16, 8], 2)
    assert [job[-1] for job in jobs] == [tuple(c) for c in candidates]
    assert _run_compile_jobs(jobs[:2]) == 2  # in this process
    broken = jobs[0][:3] + ('no_such_device', ) + jobs[0][4:]
    assert _run_compile_jobs([broken, jobs[1]]) == 1  # one failing job does not stop the rest
    assert precompile(jobs, 2) == 0  # the interpreter has nothing to compile
    monkeypatch.setattr(launch_config, 'interpreting', lambda: False)
    assert precompile(jobs[:3], 2) == 3
    monkeypatch.setattr(_triton, '_warned', set())
    with pytest.warns(RuntimeWarning, match='float64'):  # nothing the kernels would run
        assert compile_jobs(x.double(), weight.double(), None, [16, 8], [3, 5], [1, 2], 2,
                            2) == []


def test_precompile_runs_cached_jobs_here_and_hands_compiles_to_workers(monkeypatch, tmp_path):
    """``precompile`` runs the jobs in this process while each finds its kernel in Triton's
    cache (no entry added); the first that adds one (a compile) hands the rest to workers.
    Stand-in jobs: checking a folder (cached), copying the running process's ``stat`` (its pid
    first) into the cache (a compile, which says where it ran)."""
    import os
    import shutil
    pytest.importorskip('triton.knobs')
    if not os.path.exists('/proc/self/stat'):
        pytest.skip('needs /proc')
    cache = tmp_path / 'cache'
    cache.mkdir()
    monkeypatch.setenv('TRITON_CACHE_DIR', str(cache))
    monkeypatch.setattr(launch_config, 'interpreting', lambda: False)
    cached = [(os.path.isdir, str(cache))] * 3
    compiles = [(shutil.copy, '/proc/self/stat', str(cache / name)) for name in 'abc']
    assert launch_config.precompile(cached + compiles, 2) == 6
    ran_in = {name: int((cache / name).read_text().split()[0]) for name in 'abc'}
    assert ran_in['a'] == os.getpid()  # the first compile here, the rest in workers
    assert ran_in['b'] != os.getpid() and ran_in['c'] != os.getpid()
    # a warm cache: every job runs here
    assert launch_config.precompile(cached + [(os.path.isdir, str(cache))], 2) == 4
