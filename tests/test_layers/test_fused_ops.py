"""MUXNet with ``fused_ops=True`` equals the stock path: training (outputs and gradients), deploy
mode (BN, activation and SE pooling in the kernel; residual and channel interleave in the project
GEMM's epilogue), checkpoints in both directions, compile; the GPU's launch plans."""
import copy
import sys

import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from mux_backbones import MUXNet
from mux_backbones.layers import (KERNEL_GRADIENTS, ChannelMux, ConvAct, FusedGroupConv,
                                  GroupConv2d, InvertedResidual, MixedConv2d, PointwiseConv2d,
                                  SpatialMuxConv, channel_mux, conv_bn, interleave_halves,
                                  squeeze_excite)
from mux_backbones.layers.block_call import set_block_calls
from mux_backbones.layers.squeeze_excite import SqueezeExcite
from mux_backbones.ops import _triton, pointwise_conv, se_gate
from mux_backbones.ops.launch_config import recorded_calls
from ..helpers import OperatorCounts, set_op_switches

pytest.importorskip('triton')
pytestmark = pytest.mark.skipif(not _triton.interpreting(),
                                reason='CPU kernel tests need TRITON_INTERPRET=1')


def _pair(arch='tiny', **kwargs):
    torch.manual_seed(0)
    stock = MUXNet(arch, **kwargs)
    for m in stock.modules():  # non-trivial BN statistics and affine parameters
        if isinstance(m, _BatchNorm):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    fused = MUXNet(arch, fused_ops=True, **kwargs)
    fused.load_state_dict(stock.state_dict())  # the same keys and shapes either way
    assert list(fused.state_dict()) == list(stock.state_dict())
    return stock, fused


def _input(size=(37, 45), batch=2):
    torch.manual_seed(1)
    return torch.randn(batch, 3, *size).contiguous(memory_format=torch.channels_last)


def _assert_same_forward_and_backward(stock, fused, x, out_atol, grad_atol):
    """Outputs, input and parameter gradients of ``fused`` equal ``stock``'s; returns the
    outputs."""
    xs, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
    outs, outf = stock(xs), fused(xf)
    for a, b in zip(outs, outf):
        torch.testing.assert_close(b, a, atol=out_atol, rtol=1e-4)
    sum((o * o).mean() for o in outs).backward()
    sum((o * o).mean() for o in outf).backward()
    torch.testing.assert_close(xf.grad, xs.grad, atol=grad_atol, rtol=1e-3)
    for (name, p), q in zip(stock.named_parameters(), fused.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-3, msg=name)
    return outs


def test_training_outputs_and_gradients_equal_stock():
    """...with the blocks' activation before their squeeze-excite inside the SE's training node
    (its module is not called), where the stock path calls it."""
    stock, fused = _pair(out_indices=(2, 4, 7))
    calls = {'stock': 0, 'fused': 0}
    for name, model in (('stock', stock), ('fused', fused)):
        for block in model.modules():
            if isinstance(getattr(block, 'se', None), SqueezeExcite):
                block.depthwise_act.register_forward_hook(
                    lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    _assert_same_forward_and_backward(stock, fused, _input(), 1e-4, 1e-5)
    assert calls['stock'] > 0 and calls['fused'] == 0


@pytest.mark.parametrize('kernels', ['triton', 'cpu'])
@pytest.mark.parametrize('size', [(1, 1), (2, 3), (5, 1)])
def test_training_on_the_smallest_maps_equals_stock(size, kernels, request):
    """Inputs that leave every stage one pixel or a few wide (stride 2 of one pixel, tiles larger
    than the map, the spatial multiplexing's padding to a fold): the kernels' training form equals
    the stock path. (BN on running statistics: batch statistics of two pixels make gradients
    ill-conditioned for either path.)"""
    if kernels == 'cpu':
        request.getfixturevalue('outside_interpreter')
    stock, fused = _pair(out_indices=(2, 7), norm_eval=True)
    stock.train(), fused.train()  # (norm_eval applies in train())
    _assert_same_forward_and_backward(stock, fused, _input(size), 1e-4, 1e-5)


def test_gpu_launch_plans_over_a_whole_model(monkeypatch):
    """The launches a GPU gets (smaller pixel tiles and more programs, pair partners swapped in
    registers, 64-row GEMM tiles; the interpreter otherwise plans fewer, larger programs), run by
    the interpreter over a whole model -- the training forms forward and backward, then the
    deploy form -- equal to the stock path, every alignment and contiguity hint held to its
    values, no two programs storing to one address, nothing accessed outside its tensors
    (tests/interpreter_checks.py)."""
    from mux_backbones.ops._triton import PLANNING_MODULES
    for name in PLANNING_MODULES:
        monkeypatch.setattr(sys.modules[name], 'interpreting', lambda: False)
    monkeypatch.setattr(sys.modules['mux_backbones.ops.group_conv'], 'PAIR_SWAP', True)
    gemm_plans = sys.modules['mux_backbones.ops.pointwise_conv']._plan
    gemm_plans.cache_clear()  # (keyed by signature, not by the planner's mode)
    try:
        stock, fused = _pair(out_indices=(2, 4, 7))
        stock.eval(), fused.eval()  # running statistics: a batch of 2 stays well-conditioned
        x = _input((33, 29))
        outs = _assert_same_forward_and_backward(stock, fused, x, 1e-5, 1e-6)
        with torch.no_grad():
            fused.switch_to_deploy(channels_last=True, fused_ops=True)
            for a, b in zip(outs, fused(x)):
                torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)
    finally:
        gemm_plans.cache_clear()


def test_kernel_gradients_form_equals_stock():
    """Every spatial conv in the ``'gradients'`` training form (the stock forward inside the op,
    the kernels' gradients): outputs and gradients equal the stock path's; without gradients
    asked for, the layers run their stock convs and never call the op."""
    stock, fused = _pair(out_indices=(2, 4, 7))
    convs = [m for m in fused.modules() if isinstance(m, (GroupConv2d, MixedConv2d))]
    for conv in convs:
        conv.fused_ops = KERNEL_GRADIENTS
    x = _input()
    with recorded_calls('group_conv') as calls:
        _assert_same_forward_and_backward(stock, fused, x, 1e-4, 1e-5)
    assert len(calls) == len(convs)
    with recorded_calls('group_conv') as calls, torch.no_grad():
        fused(x)
    assert not calls


@pytest.mark.parametrize('value', ['auto', 'backward', 2, None])
def test_layers_refuse_an_unknown_training_form(value):
    with pytest.raises(ValueError, match='fused_ops must be one of'):
        GroupConv2d(8, 8, 3, padding=1, groups=8, fused_ops=value)
    with pytest.raises(ValueError, match='fused_ops must be one of'):
        MixedConv2d(8, (3, 5), fused_ops=value)


def test_activation_checkpointing_with_fused_ops():
    stock, fused = _pair(out_indices=(3, ), with_cp=True)
    x = _input((24, 24), 1).requires_grad_()
    fused(x)[0].sum().backward()
    ref = x.grad.clone()
    x.grad = None
    stock(x)[0].sum().backward()
    torch.testing.assert_close(ref, x.grad, atol=1e-5, rtol=1e-3)


@pytest.mark.parametrize('arch,kwargs', [('tiny', {}), ('m', {}),
                                         ('m', dict(output_stride=8, out_indices=(4, 6)))])
def test_deploy_with_fused_kernels_equals_eval(arch, kwargs, monkeypatch):
    kwargs = {'out_indices': (2, 4, 7), **kwargs}
    stock, fused = _pair(arch, **kwargs)
    stock.eval()
    x = _input((33, 29), 1)
    gates = []  # the SE gates run as one op each, on the conv kernel's pooled partial sums

    def spy(*args, **kw):
        gates.append(args[0].dim())
        return se_gate(*args, **kw)

    monkeypatch.setattr(squeeze_excite, 'se_gate', spy)
    epilogues = []  # (residual, kept, act, scale) of each 1x1 conv run as the epilogue GEMM

    def gemm_spy(rows, weight, bias=None, residual=None, kept=None, act='none', scale=None):
        epilogues.append((residual is not None, kept is not None, act, scale is not None))
        return pointwise_conv(rows, weight, bias, residual, kept, act, scale)

    passes = []  # interleaves as a pass of their own

    def pass_spy(*args):
        passes.append(1)
        return interleave_halves(*args)

    with torch.no_grad():
        ref = stock(x)
    monkeypatch.setattr(conv_bn, 'pointwise_conv', gemm_spy)
    monkeypatch.setattr(channel_mux, 'interleave_halves', pass_spy)
    with torch.no_grad():
        fused.switch_to_deploy(channels_last=True)
        # the modules one by one, as the spies see them (run as its planned launches, a block
        # gives the same bits: tests/test_layers/test_block_launches.py)
        out = set_block_calls(fused, False)(x)
    pooled = [m for m in fused.modules() if getattr(m, 'pool_in_kernel', False)]
    assert pooled and all(isinstance(m.se, SqueezeExcite) for m in pooled)
    assert gates == [3] * len(pooled)
    for a, b in zip(ref, out):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)
    muxes = [m for m in fused.modules() if isinstance(m, ChannelMux) and m.interleave]
    in_gemm = sum(m.body.interleaves for m in muxes)
    assert sum(e[1] for e in epilogues) == in_gemm and len(passes) == len(muxes) - in_gemm
    assert arch == 'tiny' or in_gemm == len(muxes) > 0  # m: every shuffle is a store index map
    assert sum(e[0] for e in epilogues) == sum(m.has_residual for m in pooled)
    # every project conv reads its input through the SE gate as its GEMM loads it (no gated
    # copy of the map, no per-sample weights); the expand convs have no gate
    projects = [e for e in epilogues if e[2] == 'none']
    assert len(projects) == len(pooled) and all(e[3] for e in projects)
    assert not any(e[3] for e in epilogues if e[2] != 'none')
    # every fused inverted residual's expand conv applies its activation in the GEMM
    # and so does the head conv
    expands = [m for m in pooled if isinstance(m, InvertedResidual)]
    head = getattr(fused, 'conv_head', None)
    assert (head is not None) == (7 in kwargs['out_indices'])
    assert head is None or head.epilogue_act == 'silu'
    assert sum(e[2] != 'none' for e in epilogues) == len(expands) + (head is not None)
    assert len(expands) > 0 and all(m.expand_conv.epilogue_act in ('relu', 'silu')
                                    for m in expands)
    kernels = [m for m in fused.modules() if isinstance(m, FusedGroupConv)]
    assert kernels
    if arch == 'm':  # every spatial conv of m (MixConv, dwg2, dilated) takes the kernel
        blocks = [m for m in fused.modules() if isinstance(m, InvertedResidual)]
        assert len(kernels) == len(blocks) + 1  # + the depth-wise separable block
        assert all(m.pool_in_kernel for m in blocks)


def test_only_the_fused_deploy_form_takes_kept_channels():
    block = InvertedResidual(8, 8, [3], expand_ratio=2, se_ratio=0.25)
    x = torch.randn(1, 8, 6, 6)
    assert not block.interleaves
    with pytest.raises(ValueError, match='only the fused deploy form interleaves'):
        block(x, kept=x)
    block.eval().switch_to_deploy(fused_ops=True)
    assert block.interleaves
    with torch.no_grad():
        out = block(x, kept=-x)
        torch.testing.assert_close(out[:, 1::2], -x)
        torch.testing.assert_close(out[:, 0::2], block(x))


def test_activation_in_the_gemm_epilogue_only_where_it_fits():
    pointwise = PointwiseConv2d(8, 16, 1)
    assert not ConvAct(torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.SiLU()) \
        .activate_in_epilogue('silu')  # not a 1x1 GEMM
    assert not ConvAct(pointwise, torch.nn.GELU()).activate_in_epilogue(None)  # no kernel act
    layer = ConvAct(pointwise, torch.nn.SiLU())
    x = torch.randn(2, 8, 5, 7).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        ref = layer(x)
        assert layer.activate_in_epilogue('silu') and layer.epilogue_act == 'silu'
        torch.testing.assert_close(layer(x), ref, atol=1e-5, rtol=1e-5)


def test_stock_weights_load_into_fused_and_back():
    stock, fused = _pair()
    fused.set_fused_ops(False)
    assert not any(getattr(m, 'fused_ops', False) for m in fused.modules())
    stock.load_state_dict(fused.state_dict())


def test_fused_layers_keep_their_weights_in_the_kernels_order():
    """With ``fused_ops`` a spatial conv's weights lie in the op's packed order (same values):
    packing them is a view and their gradients reach the parameters with no copy -- no
    ``clone`` or ``copy_`` in a training step; the order survives ``.to`` (channels-last,
    dtype) and goes back to the standard layout without ``fused_ops``; a stock layer keeps the
    layout it is given; checkpoints load either way."""
    from mux_backbones.layers.fused_group_conv import in_kernel_order
    torch.manual_seed(0)
    layers = [MixedConv2d(12, (3, 5, 7), fused_ops=True),
              GroupConv2d(8, 8, 3, padding=1, groups=4, fused_ops=True)]
    for layer in layers:
        weights = [m.weight for m in layer.modules() if isinstance(m, torch.nn.Conv2d)]
        stock = type(layer)(*_layer_args(layer))
        stock.load_state_dict(layer.state_dict())
        assert all(in_kernel_order(w) and not w.is_contiguous() for w in weights)
        x = torch.randn(2, layer.in_channels, 9, 7).contiguous(
            memory_format=torch.channels_last)
        with OperatorCounts() as ops:
            layer(x).square().sum().backward()
        assert not set(ops.counts) & {'aten.clone', 'aten.copy_'}
        stock(x).square().sum().backward()
        for w, ref in zip(weights, stock.parameters()):
            torch.testing.assert_close(w.grad, ref.grad, atol=1e-5, rtol=1e-4)
            assert w.grad.stride() == w.stride()
        layer.to(memory_format=torch.channels_last).double()
        assert all(in_kernel_order(w) and w.dtype == torch.float64 for w in weights)
        layer.fused_ops = False
        assert all(w.is_contiguous() for w in weights)
        layer.to(memory_format=torch.channels_last)
        assert all(w.is_contiguous(memory_format=torch.channels_last) for w in weights)
        layer.fused_ops = KERNEL_GRADIENTS
        assert all(in_kernel_order(w) for w in weights)
        stock.double().load_state_dict(layer.state_dict())
        for w, ref in zip(weights, stock.parameters()):
            assert torch.equal(w, ref) and ref.is_contiguous()


def _layer_args(layer):
    """The positional arguments that build a stock twin of a spatial conv layer."""
    if isinstance(layer, MixedConv2d):
        return layer.in_channels, layer.kernel_sizes
    return (layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
            layer.padding, layer.dilation, layer.groups, layer.bias is not None)


def test_compiled_fused_deploy_model():
    stock, fused = _pair(out_indices=(4, ))
    stock.eval()
    x = _input((32, 32), 1)
    compiled = torch.compile(fused.switch_to_deploy(channels_last=True), backend='aot_eager')
    with torch.no_grad():
        torch.testing.assert_close(compiled(x)[0], stock(x)[0], atol=1e-4, rtol=1e-4)


def test_fused_deploy_where_kernels_cannot_run_builds_stock_forms(monkeypatch):
    """A CPU model outside the interpreter, its C++ kernel switched off: one warning, then the
    (faster) stock deploy forms."""
    monkeypatch.setattr(_triton, '_warned', set())
    set_op_switches(monkeypatch, interpret=False, cpu_kernels=False)
    stock, fused = _pair(out_indices=(4, ))
    stock.eval()
    with pytest.warns(RuntimeWarning, match='device cpu has no Triton kernels'):
        fused.switch_to_deploy(fused_ops=True)
    assert not any(isinstance(m, FusedGroupConv) for m in fused.modules())
    x = _input((32, 32), 1)
    with torch.no_grad():
        torch.testing.assert_close(fused(x)[0], stock(x)[0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('prefer_fused', [True, False])
def test_auto_deploy_keeps_the_faster_form_per_block(monkeypatch, prefer_fused):
    """``fused_ops='auto'`` times both forms of every block and keeps the faster one."""
    import mux_backbones.deploy as deploy

    def fake_timer(fn, device):  # the fused form's module tree holds a FusedGroupConv
        fused = any(isinstance(m, FusedGroupConv) for m in fn.__defaults__[0].modules())
        return 1.0 if fused == prefer_fused else 2.0

    monkeypatch.setattr(deploy, 'device_time_us', fake_timer)
    logged = []
    monkeypatch.setattr(deploy, 'print_log', lambda msg, logger=None: logged.append(msg))
    stock, fused = _pair(out_indices=(4, ))
    stock.eval()
    x = _input((32, 32), 1)
    with pytest.raises(ValueError, match='needs example_input'):
        MUXNet('tiny').switch_to_deploy(fused_ops='auto')
    fused.switch_to_deploy(channels_last=True, fused_ops='auto', example_input=x)
    blocks = [m for m in fused.modules() if isinstance(m, InvertedResidual) and
              not isinstance(m.depthwise_conv, SpatialMuxConv)]  # which have no fused form
    kernels = [isinstance(b.depthwise_conv, FusedGroupConv) for b in blocks]
    assert kernels and (all(kernels) if prefer_fused else not any(kernels))
    # The log names each block kept on the stock form, with its fused and stock times.
    named = [name for name, m in fused.named_modules() if m in blocks]
    assert len(logged) == 1 and len(named) == len(blocks)
    assert all((f'{name} (fused 2 vs stock 1 us)' in logged[0]) != prefer_fused for name in named)
    # ... which is what stock_blocks_logged reads back from it (the first such line of a log)
    # (ties -- blocks the stand-in timer sees as neither -- are kept stock too)
    kept = deploy.stock_blocks_logged(f'other output\n{logged[0]}\n{logged[0]} x (fused 1 us)')
    assert kept and kept == [name for name, _ in fused.named_modules() if name in kept]
    assert [name for name in named if name in kept] == ([] if prefer_fused else named)
    assert deploy.stock_blocks_logged('no such line') == []
    with torch.no_grad():
        torch.testing.assert_close(fused(x)[0], stock(x)[0], atol=1e-4, rtol=1e-4)


def test_deploy_keeps_named_blocks_on_the_stock_form(monkeypatch):
    """``stock_blocks`` rebuilds a mix of forms by the names ``'auto'`` logs: those blocks stock,
    the others fused, the outputs unchanged; ``'auto'`` does not time them; a name that is no
    undeployed block is a ValueError naming the model's blocks."""
    import mux_backbones.deploy as deploy
    stock, fused = _pair(out_indices=(4, ))
    stock.eval()
    x = _input((32, 32), 1)
    blocks = {name: m for name, m in fused.named_modules() if isinstance(m, InvertedResidual)
              and not isinstance(m.depthwise_conv, SpatialMuxConv)}
    kept = [name for name in blocks if name.endswith('.body')][:1] + \
        [name for name in blocks if not name.endswith('.body')][:1]
    assert len(kept) == 2  # a channel-multiplexed block's body and a plain block
    with pytest.raises(ValueError, match=r"\['layer9.0'\] name no MUXNet block.*layer1"):
        deploy.switch_to_deploy(copy.deepcopy(fused), fused_ops=True, stock_blocks=['layer9.0'])
    timed = []

    def fused_faster(fn, device):  # (each form timed: the fused one faster)
        timed.append(fn)
        return 1.0 if any(isinstance(m, FusedGroupConv) for m in fn.__defaults__[0].modules()) \
            else 2.0

    monkeypatch.setattr(deploy, 'device_time_us', fused_faster)
    every = deploy.switch_to_deploy(copy.deepcopy(fused), channels_last=True, fused_ops='auto',
                                    example_input=x)
    timed_every, timed[:] = len(timed), []
    auto = deploy.switch_to_deploy(copy.deepcopy(fused), channels_last=True, fused_ops='auto',
                                   example_input=x, stock_blocks=kept)
    assert len(timed) == timed_every - 2 * len(kept)  # (two forms per block timed)
    fused.switch_to_deploy(channels_last=True, fused_ops=True, stock_blocks=kept)
    for model, stock_names in ((fused, kept), (auto, kept), (every, [])):
        for name, block in model.named_modules():
            if name in blocks:
                assert isinstance(block.depthwise_conv, FusedGroupConv) == \
                    (name not in stock_names), name
    with pytest.raises(ValueError, match='not yet deployed'):  # deployed: no block left
        deploy.switch_to_deploy(fused, fused_ops=True, stock_blocks=kept)
    with torch.no_grad():
        torch.testing.assert_close(fused(x)[0], stock(x)[0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(auto(x)[0], stock(x)[0], atol=1e-4, rtol=1e-4)


def _cycling_timer():
    """A stand-in for the GPU timer: runs the candidate, answers 3, 1, 2, 3, ... us."""
    import itertools
    fake_times = itertools.cycle([3.0, 1.0, 2.0])

    def time_us(fn):
        fn()
        return next(fake_times)

    return time_us


def _check_tuned(results, kernels):
    from mux_backbones.ops import launch_config
    chosen = [min(t, key=t.get) for r in results.values() for t in r.values()]
    # a spatial conv's kernels, or the 1x1 epilogue GEMM alone
    assert results and all(set(r) - {'input_grad_s2'} in (kernels, {'pointwise_conv'})
                           for r in results.values())
    # stride-2 calls' input gradients when the gradients are tuned (stride 1: the forward's)
    assert all(('input_grad_s2' in r) == ('weight_grad' in r and ' s2 ' in label)
               for label, r in results.items())
    assert all(len(t) >= 2 for r in results.values() for t in r.values())
    assert any(c != next(iter(t)) for c, t in zip(chosen, (t for r in results.values()
                                                           for t in r.values())))
    assert set(launch_config.entries().values()) <= set(chosen)
    assert len(launch_config.entries()) == len(chosen)  # one per call signature and kernel


@pytest.mark.parametrize('kernels', ['all', 'gemms'])
def test_tune_kernels_on_a_deployed_model(kernels):
    """``tune_kernels`` records every fused-kernel call of a deployed model, tunes each call
    signature and keeps the fastest config; the model computes the same outputs with them.
    ``kernels='gemms'`` tunes the 1x1 convs' GEMMs alone, the table's spatial-conv entries
    left as they were (new GEMM candidates over a committed table)."""
    from mux_backbones.ops import launch_config
    from mux_backbones.ops.launch_config import LaunchConfig
    from mux_backbones.tuning import tune_kernels
    stock, fused = _pair(out_indices=(4, ))
    stock.eval()
    x = _input((32, 32), 1)
    fused.switch_to_deploy(channels_last=True, fused_ops=True)
    launch_config.forget()
    loaded = ('group_conv', 'cpu', 'float32', (1, 8, 4, 4), (8, ), (3, ), (1, ), 1, 1)
    if kernels == 'gemms':  # a table's spatial-conv entry, to be left alone
        launch_config.record(loaded, LaunchConfig(4, 4, 2))
    try:
        with pytest.raises(ValueError, match='kernels must be one of'):
            tune_kernels(fused, x, kernels='spatial')
        results = tune_kernels(fused, x, time_us=_cycling_timer(), kernels=kernels)
        # the 1x1 convs with an epilogue (expand + act, project + residual / interleave)
        gemms = [label for label, r in results.items() if 'pointwise_conv' in r]
        assert any('+mux' in label for label in gemms)
        assert any('+silu' in label or '+relu' in label for label in gemms)
        convs = [r for r in results.values() if 'forward' in r]
        if kernels == 'all':
            _check_tuned(results, {'forward'})
            # the fused deploy forms and the spatially multiplexed convs' per-scale calls
            assert len(convs) > sum(isinstance(m, FusedGroupConv) for m in fused.modules())
        else:
            assert not convs and len(gemms) == len(results)
            assert {key for key in launch_config.entries() if key[0] == 'group_conv'} == \
                {loaded}
        with torch.no_grad():
            torch.testing.assert_close(fused(x)[0], stock(x)[0], atol=1e-4, rtol=1e-4)
    finally:
        launch_config.forget()


@pytest.mark.parametrize('training', [False, True])
def test_precompile_kernels_compiles_what_an_untuned_run_launches(monkeypatch, training):
    """``precompile_kernels`` hands the workers one job per kernel a model's calls launch
    (forward; in training the weight gradient and the stride-2 input gradient; the epilogue
    GEMMs of the deploy forms), each with the config it launches: without a tuned table the
    planner's -- the first candidate of each kernel's list, which launches exactly as the
    planner's own, so the compile it caches is the one the run needs -- else the tuned one."""
    from mux_backbones import tuning
    from mux_backbones.ops import launch_config
    conv_ops = sys.modules['mux_backbones.ops.group_conv']
    gemm_ops = sys.modules['mux_backbones.ops.pointwise_conv']
    _, fused = _pair(out_indices=(4, ))
    x = _input((32, 32), 2)
    if not training:
        fused.eval().switch_to_deploy(channels_last=True, fused_ops=True)
    handed = []
    monkeypatch.setattr(tuning, 'precompile', lambda jobs, processes: handed.extend(jobs) or 0)
    launch_config.forget()
    assert tuning.precompile_kernels(fused, x, backward=training) == 0
    convs, gemms = tuning._kernel_calls(fused, x)
    kernels = {'forward'} | ({'weight_grad', 'input_grad_s2'} if training else set())
    assert {job[1] for job in handed if job[0] is conv_ops._run_compile_job} == kernels
    # (a project GEMM its block's launches have compute the SE gate: that launch too)
    gated = [job for job in handed if job[0] is gemm_ops._run_compile_job and job[5] is not None]
    assert bool(gemms) != training and len(handed) == len(
        [j for call in convs.values() for j in conv_ops.compile_jobs(
            *call, backward=training, current_only=True)]) + len(gemms) + len(gated)
    assert len(gated) == sum(se_call is not None for _, se_call in gemms.values())
    assert bool(gated) != training
    for job in gated[:1]:  # it launches (on zeros) as the block's launches do
        job[0](*job[1:])
    for call in convs.values():
        x_, _, bias, splits, ks, dil, stride, cpg, act, pool = call[:10]
        args = (tuple(x_.shape), tuple(splits), tuple(ks), tuple(dil), stride, cpg)
        first = conv_ops.forward_candidates(x_.shape, splits, stride)[0]
        assert conv_ops.forward_launches(*args, act, pool, bias is not None) == \
            conv_ops.forward_launches(*args, act, pool, bias is not None, first)
        first = conv_ops.weight_grad_candidates(x_.shape, splits, stride, cpg)[0]
        assert conv_ops.weight_grad_launches(*args) == conv_ops.weight_grad_launches(*args, first)
        if stride == 2:
            first = conv_ops.input_grad_s2_candidates(x_.shape, splits)[0]
            args = (tuple(x_.shape), tuple(splits), tuple(ks), tuple(dil), cpg)
            assert conv_ops.input_grad_s2_launches(*args) == \
                conv_ops.input_grad_s2_launches(*args, first)
    for call, _ in gemms.values():
        plan, _ = gemm_ops._planned(*call)
        first = gemm_ops.candidates(plan.per_sample, plan.k, plan.c)[0]
        assert gemm_ops.launch_meta(*plan.args) == gemm_ops.launch_meta(*plan.args, config=first)
        assert (first.num_warps, first.num_stages) == (gemm_ops.NUM_WARPS, gemm_ops.NUM_STAGES)
    # a tuned entry is what gets compiled
    call = next(iter(convs.values()))
    x_, _, _, splits, ks, dil, stride, cpg = call[:8]
    tuned = conv_ops.forward_candidates(x_.shape, splits, stride)[-1]
    launch_config.record(conv_ops.tuning_key(x_.shape, x_.dtype, x_.device, splits, ks, dil,
                                             stride, cpg), tuned)
    try:
        jobs = conv_ops.compile_jobs(*call, current_only=True)
        assert [job[-1] for job in jobs] == [tuple(tuned)]
    finally:
        launch_config.forget()


def test_tune_kernels_for_training():
    """With ``backward=True`` the gradient kernels of every call are tuned too, and training
    with the tuned launches still equals the stock path (outputs and gradients)."""
    from mux_backbones.ops import launch_config
    from mux_backbones.tuning import tune_kernels
    stock, fused = _pair(out_indices=(2, ))  # the first stages: every kind of call, cheaper
    x = _input((16, 16), 1)
    launch_config.forget()
    try:
        results = tune_kernels(fused, x, backward=True, time_us=_cycling_timer())
        _check_tuned(results, {'forward', 'weight_grad'})
        # its calls were learnt in a dry run, whose random data never reached BN's statistics
        for (name, a), b in zip(stock.named_buffers(), fused.buffers()):
            torch.testing.assert_close(b, a, msg=name)
        assert not any('pointwise_conv' in r for r in results.values())  # inference forms only
        assert any('input_grad_s2' in r for r in results.values())
        xs, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
        outs, outf = stock(xs), fused(xf)
        torch.testing.assert_close(outf[0], outs[0], atol=1e-4, rtol=1e-4)
        outs[0].square().mean().backward()
        outf[0].square().mean().backward()
        torch.testing.assert_close(xf.grad, xs.grad, atol=1e-5, rtol=1e-3)
        for (name, p), q in zip(stock.named_parameters(), fused.parameters()):
            torch.testing.assert_close(q.grad, p.grad, atol=1e-5, rtol=1e-3, msg=name)
    finally:
        launch_config.forget()


def test_dry_run_records_calls_without_launching(monkeypatch):
    """Inside ``launch_config.dry_run`` a fused model launches no kernel: every op call is
    recorded and hands on random data of the real shapes, strides and dtypes (what the
    tuners then time candidates on)."""
    import sys

    from mux_backbones.ops import launch_config
    _, fused = _pair(out_indices=(4, 7))
    fused.eval().switch_to_deploy(channels_last=True, fused_ops=True)
    x = _input((32, 32), 2)
    with torch.no_grad(), launch_config.recorded_calls('group_conv') as calls, \
            launch_config.recorded_calls('pointwise_conv') as gemms:
        real = fused(x)

    def no_launch(*args, **kwargs):
        raise AssertionError('a kernel launched during a dry run')

    monkeypatch.setattr(sys.modules['mux_backbones.ops.group_conv'], '_run', no_launch)
    monkeypatch.setattr(sys.modules['mux_backbones.ops.pointwise_conv']._Call, 'launch',
                        no_launch)
    monkeypatch.setattr(sys.modules['mux_backbones.ops.se_gate'], 'can_use_triton', no_launch)
    with torch.no_grad(), launch_config.recorded_calls('group_conv') as dry_calls, \
            launch_config.recorded_calls('pointwise_conv') as dry_gemms, launch_config.dry_run():
        dry = fused(x)
    assert not launch_config.dry_running()
    assert len(dry_calls) == len(calls) > 0 and len(dry_gemms) == len(gemms) > 0
    for a, b in zip(dry_calls + dry_gemms, calls + gemms):
        for s, t in zip(a, b):
            if isinstance(t, torch.Tensor):
                assert (s.shape, s.stride(), s.dtype) == (t.shape, t.stride(), t.dtype)
                assert torch.isfinite(s).all()
            else:
                assert s == t
    assert [o.shape for o in dry] == [o.shape for o in real]
