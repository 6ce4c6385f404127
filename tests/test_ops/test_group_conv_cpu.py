"""The C++ CPU kernel of ``group_conv`` (``ops/group_conv_cpu.cpp``): equal to the stock
reference for every kind of call MUXNet makes, chosen by the op only where it serves, off or
unbuildable without wrong numbers, and the CPU deploy forms it gives MUXNet."""
import copy
import random
import sys
import warnings

import pytest
import torch

from mux_backbones import MUXNet
from mux_backbones.deploy import switch_to_deploy
from mux_backbones.layers import FusedGroupConv, InvertedResidual, PairwiseGroupConv
from mux_backbones.ops import _cpu_kernels, _triton, group_conv, pack_weights

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


@pytest.fixture
def outside_interpreter(monkeypatch):
    """The op as a CPU deployment runs it: no Triton interpreter, the C++ kernel built."""
    monkeypatch.setenv('TRITON_INTERPRET', '0')
    monkeypatch.delenv('MUX_BACKBONES_CPU_KERNELS', raising=False)
    monkeypatch.setattr(_triton, '_warned', set())
    assert _cpu_kernels.cpu_kernels() is not None, 'the CPU kernel did not build'


@pytest.fixture
def kernel_calls(monkeypatch, outside_interpreter):
    """The calls the op makes of the C++ kernel."""
    calls, kernels = [], _cpu_kernels.cpu_kernels()

    class Spy:
        @staticmethod
        def group_conv_forward(*args):
            calls.append(args)
            return kernels.group_conv_forward(*args)

    monkeypatch.setattr(gc, 'cpu_kernels', lambda: Spy)
    return calls


@pytest.mark.parametrize('with_bias', [True, False])
@pytest.mark.parametrize('splits,kernel_sizes,dilations,stride,cpg,size', CASES)
def test_kernel_equals_reference(outside_interpreter, splits, kernel_sizes, dilations, stride,
                                 cpg, size, with_bias):
    x, weight, bias = _call(splits, kernel_sizes, cpg, size, with_bias)
    y = _cpu_kernels.cpu_kernels().group_conv_forward(x, weight, bias, splits, kernel_sizes,
                                                      dilations, stride, cpg, 0)
    ref = gc.reference_group_conv(x, weight, bias, splits, kernel_sizes, dilations, stride, cpg)
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, ref, atol=1e-4, rtol=1e-5)


def test_kernel_equals_reference_on_random_calls(outside_interpreter):
    """50 seeded random calls: 1-5 groups, kernels 1-11, dilations 1-3, both strides, 1 or 2
    channels per group, any group and map size, batch 1-3, every activation."""
    rng = random.Random(0)
    kernels = _cpu_kernels.cpu_kernels()
    for _ in range(50):
        cpg, groups = rng.choice([1, 2]), rng.randint(1, 5)
        splits = [rng.randint(1, 24) * cpg for _ in range(groups)]
        kernel_sizes = [rng.choice([1, 3, 5, 7, 9, 11]) for _ in range(groups)]
        dilations = [rng.choice([1, 1, 2, 3]) for _ in range(groups)]
        stride, act = rng.choice([1, 2]), rng.choice(gc.ACTIVATIONS)
        x = torch.randn(rng.randint(1, 3), sum(splits), rng.randint(1, 12),
                        rng.randint(1, 12)).contiguous(memory_format=torch.channels_last)
        weight = pack_weights([torch.randn(n, cpg, k, k) for n, k in zip(splits, kernel_sizes)])
        bias = torch.randn(x.shape[1]) if rng.random() < 0.5 else None
        y = kernels.group_conv_forward(x, weight, bias, splits, kernel_sizes, dilations, stride,
                                       cpg, gc.ACTIVATIONS.index(act))
        ref = gc.reference_group_conv(x, weight, bias, splits, kernel_sizes, dilations, stride,
                                      cpg, act)
        torch.testing.assert_close(y, ref, atol=1e-4, rtol=1e-5, msg=lambda m: (
            f'{m}\nsplits {splits} k {kernel_sizes} d {dilations} s {stride} cpg {cpg} {act}'))


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
    y = _cpu_kernels.cpu_kernels().group_conv_forward(
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


@pytest.mark.parametrize('act', ['relu', 'silu', 'relu6'])
@pytest.mark.parametrize('splits,kernel_sizes,cpg', [([24], [3], 2), ([10, 14], [3, 5], 1)])
def test_op_takes_the_kernel_where_it_serves(kernel_calls, act, splits, kernel_sizes, cpg):
    """2 channels per group and MixConvs: the kernel, activation and the SE's pooling sums as
    the op's other paths give them."""
    x, weight, bias = _call(splits, kernel_sizes, cpg, (9, 7))
    dilations = [1] * len(splits)
    y, sums = group_conv(x, weight, bias, splits, kernel_sizes, dilations, 2, cpg, act, True)
    assert len(kernel_calls) == 1
    ref = gc.reference_group_conv(x, weight, bias, splits, kernel_sizes, dilations, 2, cpg, act)
    torch.testing.assert_close(y, ref, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(sums.sum(1), ref.sum((2, 3)), atol=1e-3, rtol=1e-5)


def test_op_leaves_plain_depthwise_convs_to_onednn(kernel_calls):
    x, weight, bias = _call([16], [3], 1, (6, 6))
    with pytest.warns(RuntimeWarning, match='no Triton kernels'):
        y = group_conv(x, weight, bias, [16], [3], [1], 1, 1, 'relu')
    assert not kernel_calls
    ref = gc.reference_group_conv(x, weight, bias, [16], [3], [1], 1, 1, 'relu')
    torch.testing.assert_close(y, ref)


def test_switched_off_or_unbuildable_runs_the_stock_path(monkeypatch, outside_interpreter):
    monkeypatch.setenv('MUX_BACKBONES_CPU_KERNELS', '0')
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        assert _cpu_kernels.cpu_kernels() is None
    monkeypatch.delenv('MUX_BACKBONES_CPU_KERNELS')

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


def _randomize_norms(model):
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.mark.parametrize('arch', ['tiny', 'xs'])
def test_cpu_deploy_runs_the_kernel_for_pairs_and_mixconvs(kernel_calls, arch):
    """``switch_to_deploy(fused_ops=True)`` on a CPU model: the C++ kernel for 2-channels-per-
    group convs (spatially multiplexed ones too) and MixConvs, the rest stock; same outputs."""
    model = _randomize_norms(MUXNet(arch, out_indices=(2, 4, 7)))
    torch.manual_seed(1)
    x = torch.randn(2, 3, 45, 37).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = model(x)
        switch_to_deploy(model, channels_last=True, fused_ops=True)
        outputs = model(x)
    for out, ref in zip(outputs, expected):
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    fused = [m for m in model.modules() if isinstance(m, FusedGroupConv)]
    assert fused and all(m.channels_per_group == 2 or len(m.splits) > 1 for m in fused)
    assert not any(isinstance(m, PairwiseGroupConv) for m in model.modules())
    assert not any(m.pool_in_kernel for m in model.modules() if isinstance(m, InvertedResidual))
    assert {args[7] for args in kernel_calls} == {1, 2}  # channels per group: MixConvs, pairs


def test_training_form_uses_the_kernel_only_without_gradients(kernel_calls):
    model = _randomize_norms(MUXNet('tiny', fused_ops=True, out_indices=(4, )))
    stock = _randomize_norms(MUXNet('tiny', out_indices=(4, )))
    stock.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], stock(x)[0], atol=1e-4, rtol=1e-4)
    assert kernel_calls
    kernel_calls.clear()
    with pytest.warns(RuntimeWarning, match='no Triton kernels'):
        model(x.requires_grad_())[0].sum().backward()
    assert not kernel_calls  # its backward would be the stock conv's: stock forward too


def test_cpu_deploy_auto_and_compiled(kernel_calls):
    """``fused_ops='auto'`` times each block's stock and kernel form on the CPU and keeps the
    faster; the kernel forms trace as one custom-op node under ``torch.compile``."""
    model = _randomize_norms(MUXNet('tiny', out_indices=(4, 7)))
    x = torch.randn(1, 3, 40, 40).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = model(x)
        auto = switch_to_deploy(copy.deepcopy(model), channels_last=True, fused_ops='auto',
                                example_input=x)
        for out, ref in zip(auto(x), expected):
            torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
        switch_to_deploy(model, channels_last=True, fused_ops=True)
        kernel_calls.clear()
        compiled = torch.compile(model, backend='aot_eager', fullgraph=True)
        for out, ref in zip(compiled(x), expected):
            torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    assert kernel_calls  # the compiled graph runs the op, and the op the kernel
