"""The fused blocks' CPU deploy form as one C++ call (mux_backbones/layers/block_call.py): the
modules' output to the bit, and the modules themselves wherever something needs them."""
import copy
import io

import pytest
import torch
from torch.overrides import TorchFunctionMode

from mux_backbones import MUXNet
from mux_backbones.deploy import switch_to_deploy
from mux_backbones.layers import ChannelMux, FusedGroupConv, GroupConv2d, SpatialMuxConv
from mux_backbones.layers import block_call as block_call_module
from mux_backbones.layers.block_call import (BlockCall, DeployedInvertedResidual, OneCallStage,
                                             set_block_calls)
from mux_backbones.layers.inverted_residual import _ResidualBlock
from mux_backbones.ops import _cpu_kernels
from mux_backbones.ops.group_conv import cpu_kernel_serves
from tests.helpers import channels_last_input, deployed_muxnet, randomise_bn


@pytest.fixture
def stage_calls(monkeypatch, outside_interpreter):
    """The stages that ran as one call (:class:`OneCallStage`)."""
    ran = []
    original = OneCallStage._run

    def counted(self, chain, fused, x):
        ran.append(self)
        return original(self, chain, fused, x)

    monkeypatch.setattr(OneCallStage, '_run', counted)
    return ran


@pytest.fixture
def calls(monkeypatch, stage_calls):
    """The block calls that ran, on their own or as steps of their stage's call (the extension's
    own calls are out of Python's sight)."""
    ran = []
    original_block, original_stage = BlockCall.__call__, OneCallStage._run

    def counted_block(self, *args):
        ran.append(self)
        return original_block(self, *args)

    def counted_stage(self, chain, fused, x):
        ran.extend(call for _, (_, call) in chain.steps)
        return original_stage(self, chain, fused, x)

    monkeypatch.setattr(BlockCall, '__call__', counted_block)
    monkeypatch.setattr(OneCallStage, '_run', counted_stage)
    return ran


class _PassThrough(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def _assert_equal(outputs, expected):
    for out, ref in zip(outputs, expected, strict=True):
        assert torch.equal(out, ref)


@pytest.mark.parametrize('arch,kwargs,stock_depthwise', [
    ('tiny', {}, False), ('xs', {}, False), ('m', {}, False), ('m', dict(output_stride=8), False),
    ('m', {}, True)])
def test_block_calls_equal_the_modules(calls, two_threads, monkeypatch, arch, kwargs,
                                       stock_depthwise):
    """Every block with the fused tail runs as one call, whatever its spatial conv -- the
    kernel's (pair convs, MixConvs, dilated too, plain depth-wise with its activation), oneDNN's
    (plain depth-wise, where the deploy form keeps it: ``stock_depthwise``), spatial
    multiplexing's (shuffles, a conv per scale on the kernel or oneDNN, BN) -- and so does the
    depth-wise separable block; no layer of theirs runs as a module; the output is the
    modules' to the bit."""
    if stock_depthwise:  # the rule before the kernel took plain depth-wise convs
        monkeypatch.setattr(FusedGroupConv, 'cpu_kernel_serves', lambda self: cpu_kernel_serves(
            self.weight, self.splits, self.channels_per_group))
    model = deployed_muxnet(arch, **kwargs)
    x = channels_last_input()
    convs = []
    for conv_type in (FusedGroupConv, GroupConv2d, torch.nn.Conv2d):
        original = conv_type.forward
        monkeypatch.setattr(conv_type, 'forward', lambda self, *a, _f=original, **k:
                            convs.append(self) or _f(self, *a, **k))
    with torch.no_grad():
        expected = set_block_calls(model, False)(x)
        assert not calls
        convs.clear()
        outputs = set_block_calls(model, True)(x)
    _assert_equal(outputs, expected)
    blocks = [m for m in model.modules() if isinstance(m, _ResidualBlock) and m.tail_in_ops]
    assert len(calls) == len(blocks) > 0 and {id(c) for c in calls} == \
        {id(m._block_call) for m in blocks}
    forms = {type(m.depthwise_conv) for m in blocks}
    assert FusedGroupConv in forms and (SpatialMuxConv in forms) == (arch != 'm')
    assert (torch.nn.Conv2d in forms) == stock_depthwise
    if arch != 'm':  # the scales' 2-channels-per-group convs on the group-conv kernel
        muxes = [m._block_call._fused for m in blocks if type(m.depthwise_conv) is SpatialMuxConv]
        assert all(on for fused in muxes if fused.channels_per_group == 2
                   for on in fused.scale_on_kernel)
    blocks_convs = {id(c) for m in blocks for c in m.modules()}
    assert not any(id(c) in blocks_convs for c in convs)  # (the stem's conv is a module)


def test_the_modules_run_wherever_something_needs_them(calls):
    """Gradients, a hook on a layer (its own or a global one), a tracer, a function mode, an
    input whose channels are not innermost, another dtype, training mode: the modules (the same
    output)."""
    model = deployed_muxnet()
    x = channels_last_input()
    with torch.no_grad():
        expected = model(x)
    blocks = len(calls)
    assert blocks > 0

    def ran_modules(run, **close):
        calls.clear()
        outputs = run()
        for out, ref in zip(outputs, expected, strict=True):
            torch.testing.assert_close(out, ref, **close)
        return len(calls)

    assert ran_modules(lambda: model(x)) == 0  # gradients on
    seen = []
    block = next(m for m in model.modules() if isinstance(m, _ResidualBlock) and m.tail_in_ops)
    handle = block.project_conv.conv.register_forward_hook(lambda *args: seen.append(1))
    with torch.no_grad():
        assert ran_modules(lambda: model(x)) == blocks - 1 and seen == [1]
        handle.remove()
        handle = torch.nn.modules.module.register_module_forward_pre_hook(lambda *a: None)
        assert ran_modules(lambda: model(x)) == 0
        handle.remove()
        with _PassThrough():
            assert ran_modules(lambda: model(x)) == 0
        calls.clear()
        traced = torch.jit.trace(model, x, check_trace=False)
        assert not calls
        assert ran_modules(lambda: traced(x)) == 0
        # a block's input whose channels are not innermost; CPU autocast
        block_input = torch.randn(2, block.in_channels, 9, 7)
        assert not block._block_call.takes(block_input, None)
        block_input_cl = block_input.contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(block(block_input), block(block_input_cl))
        with torch.autocast('cpu', dtype=torch.bfloat16):
            assert not block._block_call.takes(block_input_cl, None)
            calls.clear()
            block(block_input_cl)  # (the modules, under autocast's rules)
            assert not calls
        assert ran_modules(lambda: model.double()(x.double()), atol=1e-5, rtol=1e-5,
                           check_dtype=False) == 0
        assert ran_modules(lambda: model.float()(x), atol=0, rtol=0) == blocks
        calls.clear()
        model.train()(x)  # (a deployed model in training mode: BN would use the batch's stats)
        assert not calls


def test_block_calls_follow_the_weights(calls):
    """Weights loaded in place or assigned, a deep copy, a pickled model: the calls compute with
    the modules' current tensors."""
    source, x = deployed_muxnet(seed=1), channels_last_input()
    with torch.no_grad():
        expected = source(x)
        for assign in (False, True):
            model = deployed_muxnet(seed=0)
            before = model(x)
            model.load_state_dict(source.state_dict(), assign=assign)
            _assert_equal(model(x), expected)
            assert not torch.equal(before[-1], expected[-1])
        _assert_equal(copy.deepcopy(source)(x), expected)
        buffer = io.BytesIO()
        torch.save(source, buffer)
        buffer.seek(0)
        _assert_equal(torch.load(buffer, weights_only=False)(x), expected)
    assert len(calls) > 0


def test_extension_refuses_what_it_cannot_compute(outside_interpreter):
    block = _cpu_kernels.cpu_kernels().FusedBlockCPU()
    with pytest.raises(RuntimeError, match='fp32'):
        block.forward(torch.randn(1, 8, 4, 4, dtype=torch.float64), None)


def test_no_call_without_the_extension(monkeypatch, outside_interpreter):
    """The extension switched off (or not built): the blocks keep their modules."""
    model = deployed_muxnet()
    monkeypatch.setattr(block_call_module, 'cpu_kernels', lambda: None)
    block = next(m for m in model.modules() if isinstance(m, _ResidualBlock) and m.tail_in_ops)
    assert BlockCall.build(block) is None


def test_mobilenetv2_blocks_get_the_same_runner(calls):
    """The baseline's treatment: mmdet's MobileNetV2 blocks, deployed with ``fused_ops`` on the
    CPU, run as one call each too (no SE), their depth-wise convs on the group-conv kernel with
    ReLU6 in its epilogue, as MUXNet's; their modules otherwise; the same outputs."""
    from mmdet.models.backbones import MobileNetV2
    model = randomise_bn(MobileNetV2(out_indices=(2, 4, 7)))
    x = channels_last_input()
    fresh = copy.deepcopy(model)
    with torch.no_grad():
        expected = model(x)
        stock = switch_to_deploy(copy.deepcopy(model), channels_last=True)
        assert not any(isinstance(m, DeployedInvertedResidual) for m in stock.modules())
        switch_to_deploy(model, channels_last=True, fused_ops=True)
        blocks = [m for m in model.modules() if isinstance(m, DeployedInvertedResidual)]
        assert len(blocks) == 17 and sum(hasattr(m, 'expand_conv') for m in blocks) == 16
        assert all(isinstance(m.depthwise_conv, FusedGroupConv) and m.depthwise_conv.act == 'relu6'
                   and isinstance(m.depthwise_act, torch.nn.Identity) for m in blocks)
        modules = set_block_calls(model, False)(x)
        assert not calls
        outputs = set_block_calls(model, True)(x)
    assert len(calls) == len(blocks)
    _assert_equal(outputs, modules)
    for out, ref in zip(outputs, expected, strict=True):
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    # Compiled before any eager forward (nothing built yet): the modules, as one graph.
    calls.clear()
    switch_to_deploy(fresh, channels_last=True, fused_ops=True)
    with torch.no_grad():
        compiled = torch.compile(fresh, backend='aot_eager', fullgraph=True)(x)
    assert not calls
    for out, ref in zip(compiled, expected, strict=True):
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def _stages(model):
    return [m for m in model.modules() if isinstance(m, OneCallStage)]


@pytest.mark.parametrize('arch', ['tiny', 'xs', 'm'])
def test_stages_run_as_one_call(calls, stage_calls, arch):
    """Deployed with ``fused_ops`` on the CPU, every stage of blocks runs as one call from its
    second forward of a shape on (the first builds it, running the blocks' calls one by one):
    the modules' output to the bit, every block a step, the stage's names and state-dict keys
    unchanged."""
    torch.manual_seed(0)
    stock = randomise_bn(MUXNet(arch, out_indices=(2, 4, 7)))
    keys = set(switch_to_deploy(copy.deepcopy(stock), fused_ops=True).state_dict())
    model = switch_to_deploy(stock, channels_last=True, fused_ops=True)
    assert set(model.state_dict()) == keys
    stages = _stages(model)
    assert [name for name, m in model.named_children() if isinstance(m, OneCallStage)] == \
        [name for name in model.layers if name != 'conv_head']
    x = channels_last_input()
    with torch.no_grad():
        expected = set_block_calls(model, False)(x)
        set_block_calls(model, True)
        first = model(x)
        blocks = len(calls)
        assert not stage_calls and blocks == sum(len(stage) for stage in stages)
        calls.clear()
        _assert_equal(model(x), expected)
    _assert_equal(first, expected)
    assert stage_calls == stages and len(calls) == blocks
    # Another input size: built for it on its first forward, then run as one call, as is the
    # first size still.
    y = channels_last_input(batch=1, size=(32, 40))
    with torch.no_grad():
        expected_y = set_block_calls(model, False)(y)
        set_block_calls(model, True)(x)
        stage_calls.clear()
        model(y)
        assert not stage_calls
        _assert_equal(model(y), expected_y)
        assert stage_calls == stages
        _assert_equal(model(x), expected)
    assert stage_calls == stages * 2


def test_stages_step_aside_where_something_needs_the_blocks(calls, stage_calls):
    """A hook on any module of a stage (a layer, a block, channel multiplexing's body), a global
    hook, gradients, training mode, the blocks switched to their modules: that stage runs block
    by block (the others as one call), the same output; a block replaced: built again."""
    model = deployed_muxnet()
    x = channels_last_input()
    with torch.no_grad():
        model(x)
        expected = model(x)
    stages = _stages(model)
    stage = next(s for s in stages if any(isinstance(m, ChannelMux) for m in s))
    for hooked in (stage[-1], stage[-1].body, stage[-1].body.project_conv.conv):
        handle = hooked.register_forward_pre_hook(lambda *args: None)
        stage_calls.clear()
        with torch.no_grad():
            _assert_equal(model(x), expected)
        handle.remove()
        assert stage_calls == [s for s in stages if s is not stage]
    handle = torch.nn.modules.module.register_module_forward_hook(lambda *args: None)
    stage_calls.clear()
    with torch.no_grad():
        _assert_equal(model(x), expected)
    handle.remove()
    assert not stage_calls
    model(x)  # gradients on
    assert not stage_calls
    with torch.no_grad():
        set_block_calls(model, False)
        calls.clear()
        _assert_equal(model(x), expected)
        _assert_equal(model(x), expected)
        assert not stage_calls and not calls
        set_block_calls(model, True)
        model(x)
        _assert_equal(model(x), expected)
        assert stage_calls == stages
        # a block replaced by a copy of itself: the stage's call is built again around it
        stage[0] = copy.deepcopy(stage[0])
        stage_calls.clear()
        _assert_equal(model(x), expected)
        assert stage not in stage_calls
        _assert_equal(model(x), expected)
        assert stage in stage_calls
        stage_calls.clear()
        model.train()(x)  # (last: BN in training mode updates its statistics)
    assert not stage_calls


def test_stages_follow_the_weights(stage_calls):
    """Weights loaded in place or assigned, a deep copy, a pickled model, a model moved and
    back: the stages' calls compute with the modules' current tensors."""
    source, x = deployed_muxnet(seed=1), channels_last_input()
    with torch.no_grad():
        expected = source(x)
        for assign in (False, True):
            model = deployed_muxnet(seed=0)
            model(x)
            before = model(x)
            model.load_state_dict(source.state_dict(), assign=assign)
            model(x)
            _assert_equal(model(x), expected)
            assert not torch.equal(before[-1], expected[-1])
        twin = copy.deepcopy(source)
        assert all(stage._chain is None for stage in _stages(twin))
        twin(x)
        _assert_equal(twin(x), expected)
        buffer = io.BytesIO()
        torch.save(source, buffer)
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=False)
        loaded(x)
        _assert_equal(loaded(x), expected)
        source.double().float()
        assert all(stage._chain is None for stage in _stages(source))
        source(x)
        _assert_equal(source(x), expected)
    assert len(stage_calls) >= 4 * len(_stages(source))


def test_mobilenetv2_stages_get_the_same_runner(calls, stage_calls):
    """MobileNetV2's stages (mmdet's ``nn.Sequential`` of blocks) run as one call too."""
    from mmdet.models.backbones import MobileNetV2
    model = randomise_bn(MobileNetV2(out_indices=(2, 4, 7)))
    x = channels_last_input()
    switch_to_deploy(model, channels_last=True, fused_ops=True)
    stages = _stages(model)
    assert [name for name, m in model.named_children() if isinstance(m, OneCallStage)] == \
        [f'layer{i}' for i in range(1, 8)]
    with torch.no_grad():
        expected = set_block_calls(model, False)(x)
        set_block_calls(model, True)(x)
        calls.clear()
        _assert_equal(model(x), expected)
    assert stage_calls == stages and len(calls) == 17


def test_only_plain_sequences_of_block_calls_become_stages(outside_interpreter):
    """A stage with a block that cannot run as a call, or a subclass of ``nn.Sequential`` (its
    forward may be its own), keeps its class."""
    model = deployed_muxnet()
    stage = _stages(model)[0]
    plain = torch.nn.Sequential(*stage)
    assert OneCallStage.fits(plain)
    assert not OneCallStage.fits(torch.nn.Sequential(*stage, torch.nn.ReLU()))
    assert not OneCallStage.fits(torch.nn.Sequential())

    class Custom(torch.nn.Sequential):
        pass

    assert not OneCallStage.fits(Custom(*stage))
    set_block_calls(plain, False)
    assert not OneCallStage.fits(plain)
    stock = switch_to_deploy(MUXNet('tiny'), fused_ops=False)
    assert not _stages(stock)
