"""The fused blocks' GPU deploy form as planned launches (mux_backbones/layers/block_launches.py)
and the ops' direct kernel launches (mux_backbones/ops/_launch.py), in Triton's interpreter: the
modules' output to the bit, the modules wherever something needs them, and the launch
arguments Triton's own binder would give the compiled kernel."""
import inspect
import os
import subprocess
import sys

import pytest
import torch

from mux_backbones.layers import FusedGroupConv, block_launches
from mux_backbones.layers.block_call import set_block_calls
from mux_backbones.layers.block_launches import BlockLaunches
from mux_backbones.layers.inverted_residual import _ResidualBlock
from mux_backbones.ops import _launch, launch_config
from mux_backbones.ops._launch import KernelLaunch, bound_values
from mux_backbones.ops.launch_config import LaunchConfig, recorded_calls
from mux_backbones.ops.pointwise_conv import call_key
from tests.helpers import channels_last_input, deployed_muxnet


def _input(batch=2, size=(29, 23)):
    return channels_last_input(batch, size)


@pytest.fixture
def launched(monkeypatch):
    """The blocks whose forward ran as their planned launches."""
    ran = []
    original = BlockLaunches._run

    def counted(self, program, x, kept):
        ran.append(self._block)
        return original(self, program, x, kept)

    monkeypatch.setattr(BlockLaunches, '_run', counted)
    return ran


def _assert_equal(outputs, expected):
    for out, ref in zip(outputs, expected, strict=True):
        assert out.shape == ref.shape and torch.equal(out, ref)


@pytest.mark.parametrize('arch,kwargs,batch,size,gate_in_gemm', [
    ('tiny', {}, 2, (29, 23), '1'), ('tiny', {}, 2, (29, 23), '0'),
    ('tiny', {}, 2, (29, 23), 'auto'), ('m', dict(output_stride=16), 1, (16, 16), '1')])
def test_block_launches_equal_the_modules(launched, monkeypatch, arch, kwargs, batch, size,
                                          gate_in_gemm):
    """Every block in the fused form on the Triton kernels -- MixConvs (windowed weights too),
    2 channels per group, stride 2, dilation, with and without expand conv, residual and
    channel multiplexing's kept channels -- runs as its launches, twice (planned once), and
    the output is the modules' to the bit: with the SE gate computed by the project GEMM (in
    the gate op's order, rounded as the op's output), with the gate op's own launch, and
    ('auto') each by the GEMM's programs (here: one project GEMM launched in 16-row tiles,
    a tuned config, has more programs than the limit)."""
    monkeypatch.setattr(block_launches, 'GATE_IN_GEMM', gate_in_gemm)
    monkeypatch.setattr(block_launches, 'GATE_IN_GEMM_PROGRAMS', 4)
    model = deployed_muxnet(arch, **kwargs)
    x = _input(batch, size)
    if gate_in_gemm == 'auto':
        with torch.no_grad(), recorded_calls('pointwise_conv') as calls:
            set_block_calls(model, False)(x)
        project = next(call for call in calls if call[6] is not None)  # (with an SE scale)
        monkeypatch.setattr(launch_config, '_table', {})
        launch_config.record(call_key(*project), LaunchConfig(16, 16, 4, 1))
    with torch.no_grad():
        expected = set_block_calls(model, False)(x)
        assert not launched
        outputs = set_block_calls(model, True)(x)
        again = model(x) if arch == 'tiny' else outputs  # (m: the interpreter's minutes)
    _assert_equal(outputs, expected)
    _assert_equal(again, expected)
    blocks = [m for m in model.modules() if isinstance(m, _ResidualBlock) and
              isinstance(m.depthwise_conv, FusedGroupConv) and m.tail_in_ops]
    assert len(blocks) > 0 and len(launched) == (2 if arch == 'tiny' else 1) * len(blocks)
    assert {id(b) for b in launched} == {id(b) for b in blocks}
    programs = [p for b in blocks for p in b._block_call._programs.values()]
    assert len(programs) == len(blocks) and None not in programs
    gated = [p.project.gate is not None for p in programs]
    assert all((p.gate is None) == g for p, g in zip(programs, gated))
    if gate_in_gemm == 'auto':
        grids = [p.project.plan.kernel_launch(p.project.config).grid for p in programs]
        assert gated == [g[0] * g[1] <= 4 for g in grids] and 0 < sum(gated) < len(gated)
    else:
        assert all(gated) == (gate_in_gemm == '1') and any(gated) == all(gated)
    if arch == 'm':
        assert any(not hasattr(b, 'expand_conv') for b in blocks)
        assert any(b.depthwise_conv.channels_per_group == 2 for b in blocks)


def test_the_modules_run_wherever_something_needs_them(launched):
    """Gradients, a hook on a layer, the tuner's recording of the ops' calls, a block input
    whose channels are not innermost: the modules run (the same output)."""
    model = deployed_muxnet()
    x = _input()
    block = next(m for m in model.modules() if isinstance(m, _ResidualBlock) and
                 isinstance(m.depthwise_conv, FusedGroupConv) and m.tail_in_ops)
    inputs = []
    handle = block.register_forward_pre_hook(lambda module, args: inputs.append(args[0]))
    with torch.no_grad(), launch_config.recorded_calls('group_conv') as module_calls:
        expected = set_block_calls(model, False)(x)
    handle.remove()
    set_block_calls(model, True)
    with torch.enable_grad():
        _assert_equal([o.detach() for o in model(x)], expected)
    assert not launched
    with torch.no_grad():
        handle = block.depthwise_conv.register_forward_hook(lambda *args: None)
        _assert_equal(model(x), expected)
        handle.remove()
        assert launched and block not in launched  # (the other blocks are not hooked)
        launched.clear()
        with launch_config.recorded_calls('group_conv') as calls:
            _assert_equal(model(x), expected)
        assert len(calls) == len(module_calls) > 0 and not launched
        block_input = inputs[0]
        assert block_input.stride(1) == 1
        out = block(block_input.contiguous())  # (N, C, H, W) memory
        assert not launched
        torch.testing.assert_close(out, block(block_input), rtol=0, atol=0)
        assert launched == [block]


def test_an_empty_batch_runs_the_modules(launched):
    """No launch plan of no work: an empty batch's blocks run their modules (empty maps of the
    output shapes)."""
    model = deployed_muxnet()
    with torch.no_grad():
        expected = [o.shape[1:] for o in model(_input(1))]
        launched.clear()
        outs = model(_input(0))
    assert not launched
    assert [o.shape for o in outs] == [(0, *shape) for shape in expected]


def test_block_launches_follow_the_weights(launched):
    """A weight changed in place (what ``load_state_dict`` does) is planned again: the output
    follows the modules'."""
    model = deployed_muxnet()
    x = _input()
    with torch.no_grad():
        model(x)
        for m in model.modules():
            if isinstance(m, FusedGroupConv):
                m.weight.mul_(1.5)
        outputs = model(x)
        expected = set_block_calls(model, False)(x)
    _assert_equal(outputs, expected)
    assert launched


def test_weights_made_in_inference_mode_run_the_modules(launched):
    """Weights that are inference tensors (converted under ``torch.inference_mode``) have no
    version counter to follow them by: the modules run, with the same output."""
    model = deployed_muxnet()
    x = _input()
    with torch.no_grad():
        expected = model(x)
    launched.clear()
    with torch.inference_mode():
        model.float()  # (a conversion: the blocks' launches are built again)
        for p in model.parameters():
            p.data = p.data.clone()
        _assert_equal(model(x), expected)
    assert not launched


class _Compiled:
    """A compiled kernel as Triton returns it: ``[grid]`` gives its launcher."""

    packed_metadata = ()

    def __init__(self, launched):
        self.launched = launched

    def __getitem__(self, grid):
        def runner(*args):
            # as Triton 3.6's launcher: three dimensions, read as given (a 1-D grid raised
            # IndexError on the H200, session 40)
            self.launched.append(((grid[0], grid[1], grid[2]), args))
        return runner


class _Jit:
    """A ``@triton.jit`` kernel as the launch sees it: a signature and ``[grid]``."""

    def __init__(self):
        def kernel(x_ptr, out_ptr, n, scale, BLOCK: int, ACT: int = 0):
            pass
        self.signature = inspect.signature(kernel)
        self.through_triton, self.direct = [], []

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            self.through_triton.append((grid, args, kwargs))
            return _Compiled(self.direct)
        return run


def test_kernel_launch_goes_direct_once_compiled(monkeypatch):
    """Outside the interpreter the first launch per dtypes, pointer alignment and device goes
    through Triton's ``kernel[grid]``; the next ones through the compiled kernel's launcher,
    with every parameter in the signature's order (compile-time ones and defaults after the
    tensors and scalars, launch options left out)."""
    class Driver:
        @staticmethod
        def get_current_device():
            return 0

    monkeypatch.setattr(_launch, 'interpreting', lambda: False)
    monkeypatch.setattr(_launch, '_driver', lambda: Driver)
    jit = _Jit()
    launch = KernelLaunch(jit, (4,), (100, 0.5), dict(BLOCK=64, num_warps=4))
    x, out = torch.zeros(64), torch.zeros(64)
    launch(x, out)
    assert len(jit.through_triton) == 1 and not jit.direct
    assert jit.through_triton[0] == ((4, 1, 1), (x, out, 100, 0.5), dict(BLOCK=64, num_warps=4))
    launch(x, out)
    assert jit.direct == [((4, 1, 1), (x, out, 100, 0.5, 64, 0))]
    launch(x[1:], out)  # another alignment: Triton specialises on it, so Triton decides
    launch(x.half(), out)  # another dtype
    assert len(jit.through_triton) == 3 and len(jit.direct) == 1
    monkeypatch.setattr(_launch, 'DIRECT', False)  # MUX_BACKBONES_DIRECT_LAUNCH=0
    launch(x, out)
    assert len(jit.through_triton) == 4 and len(jit.direct) == 1


@pytest.mark.parametrize('gate_in_gemm', [True, False])
def test_direct_launch_arguments_are_tritons(monkeypatch, gate_in_gemm):
    """For every launch of a fused MUXNet forward, the arguments the direct path hands the
    compiled kernel are those Triton's own binder gives it (Triton's JIT code, for an sm_90
    target, on the launch's real arguments), the project GEMMs computing the SE gate or
    taking it from the gate op's launch."""
    triton = pytest.importorskip('triton')
    try:
        from triton.backends.compiler import GPUTarget
        from triton.compiler import make_backend
        from triton.runtime.jit import JITFunction, create_function_from_signature
    except ImportError:  # pragma: no cover - depends on the Triton version
        pytest.skip(f'Triton {triton.__version__} has other JIT internals')
    seen = []
    original = KernelLaunch.__call__

    def recorded(self, *tensors):
        seen.append((self, tensors))
        return original(self, *tensors)

    monkeypatch.setattr(KernelLaunch, '__call__', recorded)
    monkeypatch.setattr(block_launches, 'GATE_IN_GEMM', '1' if gate_in_gemm else '0')
    model = deployed_muxnet()
    with torch.no_grad():
        model(_input(batch=1, size=(16, 16)))
    kernels = {s[0]._jit().fn.__name__ for s in seen}
    assert kernels >= {'_forward_one_kernel', '_pointwise_kernel'}
    assert ('_se_gate_kernel' in kernels) != gate_in_gemm
    assert any(s[0].meta['SE_GATE'] for s in seen if 'SE_GATE' in s[0].meta) == gate_in_gemm
    backend = make_backend(GPUTarget('cuda', 90, 32))
    binders = {}
    for launch, tensors in seen:
        fn = launch._jit().fn
        if fn not in binders:
            jit = JITFunction(fn)
            binders[fn] = jit, create_function_from_signature(jit.signature, jit.params, backend)
        jit, binder = binders[fn]
        args = tensors + launch.scalars
        expected = tuple(binder(*args, **launch.meta)[0].values())
        got = bound_values(jit, args, launch.meta)
        assert len(got) == len(expected) and all(a is b or a == b for a, b in zip(got, expected))


def test_launch_observers_see_every_launch_in_issue_order(monkeypatch):
    """``observe_launches`` (the layer profile's attribution of Triton's kernels on the GPU) is
    told of every planned launch of a fused forward, in the order they are issued, with the
    kernel's name; outside its block nothing is observed."""
    issued, observed = [], []
    original = KernelLaunch.__call__

    def recorded(self, *tensors):
        issued.append(self)
        return original(self, *tensors)

    monkeypatch.setattr(KernelLaunch, '__call__', recorded)
    model = deployed_muxnet()
    x = _input(batch=1, size=(16, 16))
    with torch.no_grad():
        with _launch.observe_launches(observed.append):
            model(x)
        assert observed == issued and len(issued) > 3
        assert {launch.name for launch in observed} >= {'_forward_one_kernel',
                                                        '_pointwise_kernel'}
        model(x)
    assert len(observed) == len(issued) // 2 and not _launch._observers


def test_gate_in_gemm_policy_from_the_environment():
    """``MUX_BACKBONES_GATE_IN_GEMM``: 'auto' (by the GEMM's programs), '1', '0'; anything else
    is 'auto' after a warning."""
    code = ('from mux_backbones.layers import block_launches as b; '
            'print(b.GATE_IN_GEMM, b.gate_in_gemm(1), b.gate_in_gemm(10 ** 6))')
    for value, printed, warned in (('1', '1 True True', False), ('0', '0 False False', False),
                                   ('auto', 'auto True False', False),
                                   ('yes', 'auto True False', True)):
        proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                              check=True, env=dict(os.environ, MUX_BACKBONES_GATE_IN_GEMM=value))
        assert proc.stdout.split('\n')[-2] == printed
        assert ('none of auto, 0, 1' in proc.stderr) == warned
