"""The C++ CPU kernels of ``group_conv`` (``ops/group_conv_cpu.cpp``, its backward's
``ops/group_conv_backward_cpu.cpp``): equal to the stock reference for every kind of call MUXNet
makes, forward and gradients, chosen by the op only where they serve, off or unbuildable without
wrong numbers, and the CPU deploy and training forms they give MUXNet."""
import copy
import random
import sys
import warnings

import pytest
import torch

from mux_backbones import MUXNet
from mux_backbones.deploy import switch_to_deploy
from mux_backbones.layers import (KERNEL_GRADIENTS, DepthwiseSeparable, FusedGroupConv, GroupConv2d,
                                  InvertedResidual, MixedConv2d, PairwiseGroupConv, SpatialMuxConv,
                                  SqueezeExcite)
from mux_backbones.layers.block_call import set_block_calls
from mux_backbones.ops import _cpu_kernels, group_conv, pack_weights
from ..helpers import randomise_bn, set_op_switches
from .conftest import calls_of

gc = sys.modules['mux_backbones.ops.group_conv']

# (splits, kernel sizes, dilations, stride, channels per group, input size): vector blocks of 16
# and 8 channels and the channel tail after them (89, 92, 22, 6), pixel blocks cut by the map's
# edge, dilations, several kernel sizes in one call, a kernel larger than the map.
CASES = [
    ([48], [3], [1], 1, 2, (13, 11)),
    ([89, 92], [3, 5], [1, 1], 2, 1, (15, 16)),
    ([34, 32, 30], [3, 5, 7], [1, 2, 3], 1, 1, (9, 10)),
    ([20, 18, 16, 14, 12], [3, 5, 7, 9, 11], [1] * 5, 2, 1, (7, 7)),
    ([22, 10], [5, 3], [2, 1], 2, 2, (17, 5)),
    ([6], [3], [1], 1, 2, (4, 4)),
    ([16], [11], [1], 1, 2, (3, 4)),
]


def _call(splits, kernel_sizes, channels_per_group, size, with_bias=True, seed=0):
    torch.manual_seed(seed)
    c = sum(splits)
    x = torch.randn(2, c, *size).contiguous(memory_format=torch.channels_last)
    weight = pack_weights([torch.randn(n, channels_per_group, k, k)
                           for n, k in zip(splits, kernel_sizes)])
    return x, weight, torch.randn(c) if with_bias else None


def _random_call(rng, dilations):
    """A seeded random call: 1-5 groups of any size (vector blocks and scalar tails), kernels
    1-11, the given dilations (1 twice as often), either stride, 1 or 2 channels per group,
    batch 1-3, maps of 1-12 pixels a side. Returns the input, the packed weight, the splits,
    kernel sizes, dilations, stride and channels per group."""
    cpg, groups = rng.choice([1, 2]), rng.randint(1, 5)
    splits = [rng.randint(1, 24) * cpg for _ in range(groups)]
    kernel_sizes = [rng.choice([1, 3, 5, 7, 9, 11]) for _ in range(groups)]
    dilations = [rng.choice((1, ) + tuple(dilations)) for _ in range(groups)]
    x = torch.randn(rng.randint(1, 3), sum(splits), rng.randint(1, 12),
                    rng.randint(1, 12)).contiguous(memory_format=torch.channels_last)
    weight = pack_weights([torch.randn(n, cpg, k, k) for n, k in zip(splits, kernel_sizes)])
    return x, weight, splits, kernel_sizes, dilations, rng.choice([1, 2]), cpg


def _conv_calls(calls):
    return calls_of(calls, 'group_conv_forward')


@pytest.mark.parametrize('with_bias', [True, False])
@pytest.mark.parametrize('splits,kernel_sizes,dilations,stride,cpg,size', CASES)
def test_kernel_equals_reference(outside_interpreter, splits, kernel_sizes, dilations, stride,
                                 cpg, size, with_bias):
    x, weight, bias = _call(splits, kernel_sizes, cpg, size, with_bias)
    kernels = _cpu_kernels.cpu_kernels()
    y, pool = kernels.group_conv_forward(x, weight, bias, splits, kernel_sizes, dilations,
                                         stride, cpg, 0)
    ref = gc.reference_group_conv(x, weight, bias, splits, kernel_sizes, dilations, stride, cpg)
    assert y.is_contiguous(memory_format=torch.channels_last) and pool.numel() == 0
    torch.testing.assert_close(y, ref, atol=1e-4, rtol=1e-5)
    # The squeeze-excite's pooling: tiles wider and narrower than a pixel block, cut by the
    # map's edge, one tile for the whole map.
    for tile in [(1, 1), (2, 4), (3, 2), (4, 8), (16, 16)]:
        y_pooled, pool = kernels.group_conv_forward(x, weight, bias, splits, kernel_sizes,
                                                    dilations, stride, cpg, 0, *tile)
        assert torch.equal(y_pooled, y)
        torch.testing.assert_close(pool, gc._tile_sums(ref, *tile), atol=1e-3, rtol=1e-5)


def test_kernel_equals_reference_on_random_calls(outside_interpreter, two_threads):
    """50 seeded random calls: 1-5 groups, kernels 1-11, dilations 1-3, both strides, 1 or 2
    channels per group, any group and map size, batch 1-3, every activation."""
    rng = random.Random(0)
    kernels = _cpu_kernels.cpu_kernels()
    for _ in range(50):
        x, weight, splits, kernel_sizes, dilations, stride, cpg = _random_call(rng, (1, 2, 3))
        act = rng.choice(gc.ACTIVATIONS)
        bias = torch.randn(x.shape[1]) if rng.random() < 0.5 else None
        tile = (rng.choice([1, 2, 3, 4, 8]), rng.choice([1, 2, 4, 8, 16]))
        y, pool = kernels.group_conv_forward(x, weight, bias, splits, kernel_sizes, dilations,
                                             stride, cpg, gc.ACTIVATIONS.index(act), *tile)
        ref = gc.reference_group_conv(x, weight, bias, splits, kernel_sizes, dilations, stride,
                                      cpg, act)
        torch.testing.assert_close(y, ref, atol=1e-4, rtol=1e-5, msg=lambda m: (
            f'{m}\nsplits {splits} k {kernel_sizes} d {dilations} s {stride} cpg {cpg} {act}'))
        torch.testing.assert_close(pool, gc._tile_sums(ref, *tile), atol=1e-3, rtol=1e-5)


@pytest.mark.parametrize('act', ['relu', 'silu', 'relu6'])
def test_kernel_activations_match_torch(outside_interpreter, act):
    """The epilogue's activations (SiLU's own exponential) over the whole float range, on vector
    lanes and on the scalar channel tail (a 1x1 identity conv: the output is the input)."""
    special = [0.0, -0.0, 1e-30, -1e-30, -86.9, -87.0, -87.5, -88.0, -104.0, -1e4, 1e4, 3.4e38,
               -3.4e38, float('inf'), float('-inf'), float('nan')]
    channels = 21  # per pixel: two vectors of 8 lanes and a tail of 5
    pixels = torch.cat([torch.linspace(-120, 120, 100 * channels).view(-1, channels),
                        torch.tensor(special)[:, None].expand(-1, channels)])  # one pixel each
    x = pixels.t()[None, :, :, None].contiguous(memory_format=torch.channels_last)
    y, _ = _cpu_kernels.cpu_kernels().group_conv_forward(
        x, torch.ones(channels), None, [channels], [1], [1], 1, 1, gc.ACTIVATIONS.index(act))
    torch.testing.assert_close(y, gc._activate_torch(x, act), atol=1e-6, rtol=2e-6,
                               equal_nan=True)


def test_kernel_rejects_what_it_cannot_compute(outside_interpreter):
    kernels = _cpu_kernels.cpu_kernels()
    x, weight, bias = _call([16], [3], 2, (5, 5))
    with pytest.raises(RuntimeError, match='channels-last'):
        kernels.group_conv_forward(x.contiguous(), weight, bias, [16], [3], [1], 1, 2, 0)
    with pytest.raises(RuntimeError, match='fp32'):
        kernels.group_conv_forward(x.double(), weight, bias, [16], [3], [1], 1, 2, 0)
    with pytest.raises(RuntimeError, match='do not match'):
        kernels.group_conv_forward(x, weight, bias, [16], [5], [1], 1, 2, 0)
    with pytest.raises(RuntimeError, match='activation'):
        kernels.group_conv_forward(x, weight, bias, [16], [3], [1], 1, 2, 4)
    with pytest.raises(RuntimeError, match='pool tile'):
        kernels.group_conv_forward(x, weight, bias, [16], [3], [1], 1, 2, 0, 2, 0)


@pytest.mark.parametrize('act', ['relu', 'silu', 'relu6'])
@pytest.mark.parametrize('splits,kernel_sizes,cpg', [
    ([24], [3], 2), ([16, 17], [3, 5], 1), ([16], [3], 1),
    ([4], [3], 2), ([30], [3], 2), ([16, 10], [3, 5], 1),  # groups with channels left over
])
@pytest.mark.parametrize('with_pool', [True, False])
def test_op_takes_the_kernel_where_it_serves(cpu_kernel_calls, act, splits, kernel_sizes, cpg,
                                             with_pool):
    """2 channels per group, MixConvs, and a plain depth-wise conv with its activation in the
    epilogue -- groups of any size, the channels past their last whole vector in a partial
    one: the kernel, activation and the SE's pooling sums as the op's other paths give
    them."""
    x, weight, bias = _call(splits, kernel_sizes, cpg, (9, 7))
    dilations = [1] * len(splits)
    out = group_conv(x, weight, bias, splits, kernel_sizes, dilations, 2, cpg, act, with_pool)
    y, sums = out if with_pool else (out, None)
    assert len(_conv_calls(cpu_kernel_calls)) == 1
    ref = gc.reference_group_conv(x, weight, bias, splits, kernel_sizes, dilations, 2, cpg, act)
    torch.testing.assert_close(y, ref, atol=1e-4, rtol=1e-5)
    if with_pool:
        torch.testing.assert_close(sums.sum(1), ref.sum((2, 3)), atol=1e-3, rtol=1e-5)


def test_op_leaves_a_plain_depthwise_conv_alone_to_onednn(cpu_kernel_calls):
    """A plain depth-wise conv with no activation or pooling: oneDNN's (faster at stride 1)."""
    x, weight, bias = _call([16], [3], 1, (6, 6))
    assert not gc.cpu_kernel_serves(x, [16], 1)
    with pytest.warns(RuntimeWarning, match='no Triton kernels'):
        y = group_conv(x, weight, bias, [16], [3], [1], 1, 1)
    assert not cpu_kernel_calls
    torch.testing.assert_close(y, gc.reference_group_conv(x, weight, bias, [16], [3], [1], 1, 1))


@pytest.mark.parametrize('splits,kernel_sizes,cpg', [([4], [3], 2), ([30], [3], 2),
                                                     ([16, 10], [3, 5], 1)])
def test_narrow_groups_take_the_forward_kernel_and_stock_gradients(cpu_kernel_calls, splits,
                                                                   kernel_sizes, cpg):
    """Groups with many channels left past their vectors: the forward kernel (partial vectors),
    oneDNN's gradients (the gradient kernels compute those channels one by one)."""
    x, weight, bias = _call(splits, kernel_sizes, cpg, (6, 6))
    dilations = [1] * len(splits)
    assert gc.kernel_passes(x, splits, kernel_sizes, dilations, cpg, needs_grad=True) == \
        (True, False)
    x.requires_grad_(True)
    weight.requires_grad_(True)
    y = group_conv(x, weight, bias, splits, kernel_sizes, dilations, 1, cpg)  # (as in training)
    y.square().sum().backward()
    assert [name for name, _ in cpu_kernel_calls] == ['group_conv_forward']
    x_ref, w_ref = x.detach().requires_grad_(True), weight.detach().requires_grad_(True)
    ref = gc.reference_group_conv(x_ref, w_ref, bias, splits, kernel_sizes, dilations, 1, cpg)
    ref.square().sum().backward()
    torch.testing.assert_close(y, ref)
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(weight.grad, w_ref.grad, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('kernel_size,dilation,stride,served', [
    (5, 1, 1, True), (3, 2, 1, True), (7, 4, 2, True), (5, 1, 2, True),
    (3, 1, 1, False), (3, 1, 2, False),  # oneDNN's backward is the faster there too
])
def test_plain_depthwise_gradients_on_the_kernels_where_onednn_is_slow(
        cpu_kernel_calls, kernel_size, dilation, stride, served):
    """A plain depth-wise conv in a training step: oneDNN's forward inside the op (no warning),
    the gradients on the C++ kernels where it is above 3x3 or dilated; equal to the stock
    conv's. Without gradients the layers keep their stock conv (``kernel_passes``)."""
    splits, kernel_sizes, dilations = [24], [kernel_size], [dilation]
    x, weight, _ = _call(splits, kernel_sizes, 1, (11, 9))
    assert gc.cpu_backward_serves(x, splits, kernel_sizes, dilations, 1) == served
    assert gc.kernel_passes(x, splits, kernel_sizes, dilations, 1, needs_grad=True) == \
        (False, served)
    assert gc.kernel_passes(x, splits, kernel_sizes, dilations, 1) == (False, False)
    inputs = [t.detach().requires_grad_() for t in (x, weight)]
    ref_inputs = [t.detach().requires_grad_() for t in (x, weight)]
    with warnings.catch_warnings():
        warnings.simplefilter('error' if served else 'ignore')
        y = group_conv(*inputs, None, splits, kernel_sizes, dilations, stride, 1)
        grad = torch.randn_like(y)
        y.backward(grad)
    forwards = len(_conv_calls(cpu_kernel_calls))
    assert forwards == (served and stride == 1)  # only the stride-1 input gradient's
    assert len(calls_of(cpu_kernel_calls, 'group_conv_weight_grad')) == served
    assert len(calls_of(cpu_kernel_calls, 'group_conv_input_grad_s2')) == (served and stride == 2)
    ref = gc.reference_group_conv(*ref_inputs, None, splits, kernel_sizes, dilations, stride, 1)
    ref.backward(grad)
    torch.testing.assert_close(y, ref)
    for got, want in zip(inputs, ref_inputs):
        torch.testing.assert_close(got.grad, want.grad, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('stride', [1, 2])
def test_stock_forward_with_the_kernels_gradients(cpu_kernel_calls, stride):
    """``stock_forward`` on a call the C++ kernels serve (a MixConv): oneDNN's forward (no
    warning, no kernel call), the C++ gradients; equal to the reference's."""
    splits, kernel_sizes, dilations = [16, 16], [3, 5], [1, 2]
    x, weight, bias = _call(splits, kernel_sizes, 1, (11, 9))
    assert gc.cpu_kernel_serves(x, splits, 1)
    inputs = [t.detach().requires_grad_() for t in (x, weight, bias)]
    ref_inputs = [t.detach().requires_grad_() for t in (x, weight, bias)]
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        y = group_conv(*inputs, splits, kernel_sizes, dilations, stride, 1, 'silu',
                       stock_forward=True)
        assert not cpu_kernel_calls
        grad = torch.randn_like(y)
        y.backward(grad)
    assert len(calls_of(cpu_kernel_calls, 'group_conv_weight_grad')) == 1
    ref = gc.reference_group_conv(*ref_inputs, splits, kernel_sizes, dilations, stride, 1, 'silu')
    ref.backward(grad)
    torch.testing.assert_close(y, ref)
    for got, want in zip(inputs, ref_inputs):
        torch.testing.assert_close(got.grad, want.grad, atol=1e-4, rtol=1e-4)


def test_switched_off_or_unbuildable_runs_the_stock_path(monkeypatch, outside_interpreter):
    set_op_switches(monkeypatch, cpu_kernels=False)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert _cpu_kernels.cpu_kernels() is None
    set_op_switches(monkeypatch, cpu_kernels='unset')

    def no_compiler():
        raise RuntimeError('Error building extension: no compiler\nmore lines')

    monkeypatch.setattr(_cpu_kernels, '_module', None)
    monkeypatch.setattr(_cpu_kernels, '_failed', None)
    monkeypatch.setattr(_cpu_kernels, '_build', no_compiler)
    with pytest.warns(RuntimeWarning, match='could not be built .RuntimeError: Error building '
                      'extension: no compiler.; running the stock'):
        assert _cpu_kernels.cpu_kernels() is None
    with warnings.catch_warnings():  # one warning, not one per call
        warnings.simplefilter('error', RuntimeWarning)
        assert _cpu_kernels.cpu_kernels() is None
    x, weight, bias = _call([24], [3], 2, (5, 6))
    with pytest.warns(RuntimeWarning, match='no Triton kernels'):
        y = group_conv(x, weight, bias, [24], [3], [1], 1, 2, 'silu')
    torch.testing.assert_close(y, gc.reference_group_conv(x, weight, bias, [24], [3], [1], 1, 2,
                                                          'silu'))


@pytest.mark.parametrize('arch', ['tiny', 'xs'])
def test_cpu_deploy_runs_the_kernels_for_pairs_and_mixconvs(cpu_kernel_calls, arch):
    """``switch_to_deploy(fused_ops=True)`` on a CPU model: blocks whose spatial conv is a
    2-channels-per-group conv, a MixConv or a plain depth-wise conv take the fused form on the
    C++ kernels (the conv with its activation, pooling for the SE, the gate, the project conv
    with the gate, residual and interleave), spatially multiplexed ones the kernel for each
    scale's conv and the norm_act kernel for their folded BN, activation and the SE's sums, and
    every block with an SE the same tail (pooled by a sum where the conv is stock); same
    outputs."""
    model = randomise_bn(MUXNet(arch, out_indices=(2, 4, 7)))
    torch.manual_seed(1)
    x = torch.randn(2, 3, 45, 37).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = model(x)
        switch_to_deploy(model, channels_last=True, fused_ops=True)
        outputs = set_block_calls(model, False)(x)  # the modules one by one (see block_call)
    for out, ref in zip(outputs, expected):
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    # the scales' convs on the kernel keep packed weights (no norm, no activation: norm_act's)
    scale_convs = {id(c) for m in model.modules() if isinstance(m, SpatialMuxConv)
                   for c in m.convs if isinstance(c, FusedGroupConv)}
    assert scale_convs
    fused = [m for m in model.modules() if isinstance(m, FusedGroupConv)]
    assert all(m.act == 'none' and len(m.splits) == 1 for m in fused if id(m) in scale_convs)
    fused = [m for m in fused if id(m) not in scale_convs]
    kinds = {(m.channels_per_group, len(m.splits) > 1) for m in fused}
    assert (1, True) in kinds and (1, False) in kinds  # MixConvs, plain depth-wise (and pairs)
    assert all(m.act in ('relu', 'silu') for m in fused)
    assert not any(isinstance(m, PairwiseGroupConv) for m in model.modules())
    blocks = [m for m in model.modules() if isinstance(m, (InvertedResidual, DepthwiseSeparable))]
    pooling = [m for m in blocks if m.pool_in_kernel]
    assert pooling and all(isinstance(m.depthwise_conv, FusedGroupConv) for m in pooling)
    tails = [m for m in blocks if m.tail_in_ops]  # every block with an SE
    muxes = [m for m in tails if isinstance(m.depthwise_conv, SpatialMuxConv)]
    assert muxes and all(m.depthwise_conv.norm_scale is not None and
                         isinstance(m.depthwise_norm, torch.nn.Identity) for m in muxes)
    assert tails == [m for m in blocks if isinstance(m.se, SqueezeExcite)]
    # Every 1x1 conv on the op's GEMM, the expand conv's activation in its epilogue.
    expands = [m.expand_conv for m in blocks if isinstance(m, InvertedResidual)]
    assert all(m.epilogue_act in ('relu', 'silu') and m.conv.kernel_form for m in expands)
    assert all(m.project_conv.conv.kernel_form for m in blocks)
    convs = _conv_calls(cpu_kernel_calls)
    assert {args[7] for args in convs} == {1, 2}  # channels per group: MixConvs, pairs
    assert sum(args[9] > 0 for args in convs) == len(pooling)  # pool tiles given
    assert len(calls_of(cpu_kernel_calls, 'se_gate_forward')) == len(tails)
    # spatial multiplexing: the folded BN, activation and the SE's sums in one pass
    norm_acts = calls_of(cpu_kernel_calls, 'norm_act_forward')
    assert len(norm_acts) == len(muxes) and all(args[4] for args in norm_acts)
    gemms = calls_of(cpu_kernel_calls, 'pointwise_conv_forward')
    projects = [args for args in gemms if args[6] is not None]  # with the SE's scale
    assert len(projects) == len(tails)
    assert sum(args[5] in (1, 2) for args in gemms) >= len(expands)  # (and the head's)
    # channel-multiplexed blocks: residual and interleave in the epilogue
    assert any(args[3] is not None and args[4] is not None for args in projects)


@pytest.mark.parametrize('kwargs', [dict(out_indices=(2, 4)),
                                    dict(out_indices=(2, 7), output_stride=8)])
def test_training_form_runs_the_kernels_forward_and_backward(cpu_kernel_calls, kwargs):
    """``MUXNet(fused_ops=True)`` training on the CPU: the pair convs and MixConvs forward on the
    C++ kernel, their gradients on the backward kernels (the stride-1 input gradient on the
    forward kernel; groups with many channels past their vectors: oneDNN's gradients), the
    dilated plain depth-wise convs (output stride 8) only their gradients (oneDNN's forward),
    the rest stock, without a warning; outputs and gradients the stock model's."""
    torch.manual_seed(0)
    model = randomise_bn(MUXNet('tiny', fused_ops=True, **kwargs))
    stock = MUXNet('tiny', **kwargs)
    stock.load_state_dict(model.state_dict())
    model.train(), stock.train()
    x = torch.randn(2, 3, 35, 29).contiguous(memory_format=torch.channels_last)
    xs, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        outf = model(xf)
        sum((o * o).mean() for o in outf).backward()
    outs = stock(xs)
    sum((o * o).mean() for o in outs).backward()
    for a, b in zip(outs, outf):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(xf.grad, xs.grad, atol=1e-5, rtol=1e-3)
    for (name, p), q in zip(stock.named_parameters(), model.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-3, msg=name)
    forwards = _conv_calls(cpu_kernel_calls)
    weight_grads = calls_of(cpu_kernel_calls, 'group_conv_weight_grad')
    input_grads_s2 = calls_of(cpu_kernel_calls, 'group_conv_input_grad_s2')
    strides = [args[5] for args in weight_grads]
    assert weight_grads and 1 in strides and 2 in strides
    assert len(input_grads_s2) == strides.count(2)
    # (args: grad, input, splits, kernel sizes, dilations, stride, channels per group)
    plain = [args for args in weight_grads if args[6] == 1 and len(args[2]) == 1]
    assert bool(plain) == ('output_stride' in kwargs)
    assert all(max(args[4]) > 1 for args in plain)  # (tiny's plain ones are 3x3)
    # one forward per conv but the plain ones, and the stride-1 convs' input gradients; convs
    # with groups of few channels (spatial multiplexing's) the forward alone
    narrow = [args for args in forwards if not gc._cpu_vectors_fit(args[3])]
    assert narrow and len(forwards) - len(narrow) == \
        len(weight_grads) - len(plain) + strides.count(1)
    # and every squeeze-excite as one autograd node of the kernels (ops/se_gate.py)
    squeeze_excites = [m for m in model.modules() if isinstance(m, SqueezeExcite)]
    assert squeeze_excites and len(calls_of(cpu_kernel_calls, 'gated_map')) == \
        len(squeeze_excites)


@pytest.mark.parametrize('form', [True, KERNEL_GRADIENTS])
def test_training_form_compiles_whole_on_the_kernels(cpu_kernel_calls, monkeypatch, form):
    """``torch.compile(fullgraph=True)`` of a training MUXNet with ``fused_ops`` on the CPU, the
    compile's trace the extension's first use in the process (loading it is file system work
    Dynamo cannot trace: the check runs at trace time, its answer kept as a constant); the
    kernels run forward and backward (in the ``'gradients'`` form the backward only), outputs
    and gradients the stock model's."""
    monkeypatch.setattr(_cpu_kernels, '_module', None)

    def probe():
        return True
    assert torch.compiler.assume_constant_result(probe)._dynamo_marked_constant is True
    assert _cpu_kernels._kernels_in_use._dynamo_marked_constant is True  # the mark it sets
    torch.manual_seed(0)
    model = MUXNet('tiny', fused_ops=True, out_indices=(4, ))
    for m in model.modules():
        if isinstance(m, (GroupConv2d, MixedConv2d)):
            m.fused_ops = form
    stock = MUXNet('tiny', out_indices=(4, ))
    stock.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 33, 40).contiguous(memory_format=torch.channels_last)
    compiled = torch.compile(model, backend='aot_eager', fullgraph=True)
    out, ref = compiled(x)[0], stock(x)[0]
    assert bool(_conv_calls(cpu_kernel_calls)) == (form is True)
    out.square().mean().backward()
    ref.square().mean().backward()
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    for (name, p), q in zip(stock.named_parameters(), model.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-3, msg=name)
    assert calls_of(cpu_kernel_calls, 'group_conv_forward')
    assert calls_of(cpu_kernel_calls, 'group_conv_weight_grad')


@pytest.mark.parametrize('act', ['none', 'silu'])
@pytest.mark.parametrize('splits,kernel_sizes,dilations,stride,cpg,size', CASES)
def test_op_gradients_on_the_kernels_equal_reference(cpu_kernel_calls, splits, kernel_sizes,
                                                     dilations, stride, cpg, size, act):
    """The op's autograd formula on the C++ kernels where they serve (else the stock conv's),
    with bias, activation and pooled sums in the graph: input, weight and bias gradients as the
    stock reference's."""
    x, weight, bias = _call(splits, kernel_sizes, cpg, size)
    inputs = [t.detach().requires_grad_() for t in (x, weight, bias)]
    ref_inputs = [t.detach().requires_grad_() for t in (x, weight, bias)]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)  # where the stock conv serves
        y, sums = group_conv(*inputs, splits, kernel_sizes, dilations, stride, cpg, act, True)
    ref = gc.reference_group_conv(*ref_inputs, splits, kernel_sizes, dilations, stride, cpg, act)
    torch.manual_seed(2)
    grad_y, grad_sums = torch.randn_like(ref), torch.randn(x.shape[:2])
    ((y * grad_y).sum() + (sums.sum(1) * grad_sums).sum()).backward()
    ((ref * grad_y).sum() + (ref.sum((2, 3)) * grad_sums).sum()).backward()
    for got, want in zip(inputs, ref_inputs):
        torch.testing.assert_close(got.grad, want.grad, atol=1e-4, rtol=1e-4)
    served = gc.cpu_backward_serves(x, splits, kernel_sizes, dilations, cpg)
    assert bool(calls_of(cpu_kernel_calls, 'group_conv_weight_grad')) == served
    s2_calls = calls_of(cpu_kernel_calls, 'group_conv_input_grad_s2')
    assert bool(s2_calls) == (served and stride == 2)


def test_backward_kernels_equal_reference_on_random_calls(outside_interpreter, two_threads):
    """40 seeded random calls of the extension's gradients (the stride-1 input gradient is the
    forward kernel's, tested above): 1-5 groups, kernels 1-11, dilations 1-4, both strides,
    1 or 2 channels per group, any group size (vector blocks and scalar tails) and map size."""
    rng = random.Random(1)
    kernels = _cpu_kernels.cpu_kernels()
    for _ in range(40):
        x, weight, splits, kernel_sizes, dilations, stride, cpg = _random_call(rng,
                                                                               (1, 2, 3, 4))
        xr, wr = x.clone().requires_grad_(), weight.clone().requires_grad_()
        ref = gc.reference_group_conv(xr, wr, None, splits, kernel_sizes, dilations, stride, cpg)
        grad = torch.randn_like(ref).contiguous(memory_format=torch.channels_last)
        ref.backward(grad)
        msg = f'splits {splits} k {kernel_sizes} d {dilations} s {stride} cpg {cpg} {x.shape}'
        grad_w = kernels.group_conv_weight_grad(grad, x, splits, kernel_sizes, dilations, stride,
                                                cpg)
        torch.testing.assert_close(grad_w, wr.grad, atol=1e-4, rtol=1e-4,
                                   msg=lambda m: f'{m}\nweight gradient, {msg}')
        if stride == 2:
            weight_t = gc.transposed_weights(weight, splits, kernel_sizes, cpg, flip=False)
            grad_x = kernels.group_conv_input_grad_s2(grad, weight_t, x.shape[2], x.shape[3],
                                                      splits, kernel_sizes, dilations, cpg)
            assert grad_x.is_contiguous(memory_format=torch.channels_last)
            torch.testing.assert_close(grad_x, xr.grad, atol=1e-4, rtol=1e-4,
                                       msg=lambda m: f'{m}\ninput gradient, {msg}')


def test_backward_kernels_reject_what_they_cannot_compute(outside_interpreter):
    kernels = _cpu_kernels.cpu_kernels()
    x, weight, _ = _call([16], [3], 2, (6, 6))
    grad = torch.randn(2, 16, 3, 3).contiguous(memory_format=torch.channels_last)
    with pytest.raises(RuntimeError, match='channels-last'):
        kernels.group_conv_weight_grad(grad.contiguous(), x, [16], [3], [1], 2, 2)
    with pytest.raises(RuntimeError, match='not the conv.s output'):
        kernels.group_conv_weight_grad(grad, x, [16], [3], [1], 1, 2)
    with pytest.raises(RuntimeError, match='do not match'):
        kernels.group_conv_weight_grad(grad, x, [8], [3], [1], 2, 2)
    with pytest.raises(RuntimeError, match='stride 1 or 2'):
        kernels.group_conv_weight_grad(grad, x, [16], [3], [1], 3, 2)
    with pytest.raises(RuntimeError, match='not the stride-2 output'):
        kernels.group_conv_input_grad_s2(grad, weight, 7, 8, [16], [3], [1], 2)
    with pytest.raises(RuntimeError, match='do not match'):
        kernels.group_conv_input_grad_s2(grad, weight, 6, 6, [16], [5], [1], 2)
    with pytest.raises(RuntimeError, match='fp32'):
        kernels.group_conv_input_grad_s2(grad.double(), weight, 6, 6, [16], [3], [1], 2)


def test_cpu_deploy_auto_and_compiled(cpu_kernel_calls):
    """``fused_ops='auto'`` times each block's stock and kernel form on the CPU and keeps the
    faster; under ``torch.compile`` the spatial convs run the kernel (a custom-op node), the
    blocks' tails their stock forms (Inductor fuses those itself)."""
    model = randomise_bn(MUXNet('tiny', out_indices=(4, 7)))
    x = torch.randn(1, 3, 40, 40).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = model(x)
        auto = switch_to_deploy(copy.deepcopy(model), channels_last=True, fused_ops='auto',
                                example_input=x)
        for out, ref in zip(auto(x), expected):
            torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
        switch_to_deploy(model, channels_last=True, fused_ops=True)
        cpu_kernel_calls.clear()
        compiled = torch.compile(model, backend='aot_eager', fullgraph=True)
        for out, ref in zip(compiled(x), expected):
            torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    # (spatial multiplexing's folded BN and activation: the norm_act op's node, no sums)
    assert {name for name, _ in cpu_kernel_calls} == {'group_conv_forward', 'norm_act_forward'}
    assert all(args[9] == 0 for args in calls_of(cpu_kernel_calls, 'group_conv_forward'))
    assert not any(args[4] for args in calls_of(cpu_kernel_calls, 'norm_act_forward'))
    cpu_kernel_calls.clear()
    with torch.no_grad():  # eager, the same model: the fused tail again
        set_block_calls(model, False)(x)
    called = {name for name, _ in cpu_kernel_calls}
    assert called == {'group_conv_forward', 'norm_act_forward', 'se_gate_forward',
                      'pointwise_conv_forward'}
