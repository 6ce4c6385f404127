"""Host time of a fused deploy MUXNet's eager forward, measured without a GPU.

The eager goal (deploy mode, batch 32 fp16, <= 1.2x MobileNetV2; docs/speed.md) is a host-time
goal: on the H200 machine both nets' eager deploy forwards took their host time (MobileNetV2
2.88 ms, MUXNet-m 6.51 ms) against ~1 ms of GPU work. What MUXNet's fused forward costs the host
is Python -- the layers' glue, the ops' planning and allocation -- and Triton's own preparation
of every launch (binding the arguments, specialising each integer and pointer, hashing the cache
key) before its C launcher; none of it needs a GPU. This tool runs the fused deploy model on the
CPU with every kernel launch replaced by exactly that preparation (Triton's JIT code for an
sm_90 target, on each launch's real arguments) and nothing launched, and prints:

* the forward's host time up to the C launcher in two forms: module by module with every
  launch through Triton's ``kernel[grid]`` (what the H200 measured in session 24), and as the
  tree runs it now -- each fused block as its planned launches
  (:mod:`mux_backbones.layers.block_launches`), each launch after its first straight to the
  compiled kernel's launcher (:mod:`mux_backbones.ops._launch`; here its host steps: the
  device and stream lookups, stood in by constants, and Triton's launch-hook checks); the
  stem conv, a stock conv the CPU computes here, timed alone and taken off;
* per kernel, its launches per forward and Triton's preparation per launch.

    TRITON_INTERPRET=1 python tools/gpu/host_time.py [--arch m] [--batch 1] [--shape 224]
                                                     [--runs 200] [--train]

``--train``: the host time of a ``fused_ops`` training step instead (forward, backward, every
launch direct after its first), with the squeeze-excites on their Triton training form and, in
the same process, on their stock form (``fused_ops=False`` on them alone), each kernel's
launches per step, and -- against mmdet's MobileNetV2 (the goal's baseline) -- the step's time
in the same harness, interleaved, and the operators per step that launch a GPU kernel (a step as
training runs it, gradients into ``.grad``). The stock operators of both steps (batch norm, 1x1
convs, activations; all of MobileNetV2's) compute on the CPU here: use a small ``--shape``,
where their compute is small next to their dispatch.

``TRITON_INTERPRET=1`` lets the ops take their kernel path on CPU tensors; Triton's JIT internals
(``create_function_from_signature``, ``compute_cache_key``; Triton 3.6-3.9) supply the launch
preparation. A CPU is not the GPU machine's host: compare trees, paths or models on one machine.
The archs with spatial multiplexing (tiny, xs, s) keep its pixel shuffles as stock ops, which
the CPU computes here and which count too; MUXNet-m (the goal's net) and l have none.
"""
import argparse
import collections
import importlib
import os
import sys
import timeit
import warnings

if os.environ.get('TRITON_INTERPRET') != '1':
    sys.exit('host_time.py runs the ops\' kernel path on the CPU: set TRITON_INTERPRET=1')

import torch  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

try:
    from triton import knobs  # noqa: E402
    from triton.backends.compiler import GPUTarget  # noqa: E402
    from triton.compiler import make_backend  # noqa: E402
    from triton.runtime.jit import (JITFunction, compute_cache_key,  # noqa: E402
                                    create_function_from_signature)
except ImportError as err:  # pragma: no cover - depends on the Triton version
    sys.exit(f'host_time.py needs Triton 3.6-3.9\'s JIT internals ({err})')

from mux_backbones import MUXNet, arch_settings  # noqa: E402
from mux_backbones.cli import positive_int  # noqa: E402
from mux_backbones.layers.block_call import set_block_calls  # noqa: E402
from mux_backbones.layers.squeeze_excite import SqueezeExcite  # noqa: E402
from mux_backbones.ops import _launch  # noqa: E402

# (the package exports the op functions under their modules' names)
_KERNELS = {'mux_backbones.ops.group_conv': ('_forward_kernel', '_forward_one_kernel',
                                             '_input_grad_s2_kernel', '_weight_grad_kernel'),
            'mux_backbones.ops.pointwise_conv': ('_pointwise_kernel', ),
            'mux_backbones.ops.se_gate': ('_se_gate_kernel', ),
            'mux_backbones.ops.gated_map': ('_map_sums_kernel', '_scale_map_kernel',
                                            '_gate_backward_kernel', '_gate_weight_grad_kernel')}


class LaunchPreparation:
    """Stands in for a Triton kernel: ``kernel[grid](*args, **kwargs)`` does what Triton's JIT
    does on the host before its C launcher (options, binding, specialisation, cache key) and
    launches nothing; each launch's arguments are kept while :attr:`recording`."""

    def __init__(self, kernel, backend):
        jit = JITFunction(kernel.fn)  # the interpreter's wrapper keeps the Python function
        self.name = kernel.fn.__name__
        self.signature = jit.signature  # (what the direct launch binds its arguments with)
        self.binder = create_function_from_signature(jit.signature, jit.params, backend)
        self.key_cache = {}
        self.recording, self.launches = False, []

    def __getitem__(self, grid):  # the grid only matters to the C launcher
        return self.prepare

    def prepare(self, *args, **kwargs):
        if self.recording:
            self.launches.append((args, dict(kwargs)))
        kwargs['debug'] = kwargs.get('debug', False) or knobs.runtime.debug
        for name in ('instrumentation_mode', 'fpsan_homomorphic_casts'):  # by Triton version
            if hasattr(knobs.compilation, name):
                kwargs[name] = getattr(knobs.compilation, name)
        bound, specialization, options = self.binder(*args, **kwargs)
        compute_cache_key(self.key_cache, specialization, options)
        return _COMPILED


class _Driver:
    """Stands in for Triton's CUDA driver where the direct launch asks it (constants: on a
    GPU these are ~1 us calls into torch.cuda)."""

    @staticmethod
    def get_current_device():
        return 0

    @staticmethod
    def get_current_stream(device):
        return 0


class CompiledStandIn:
    """Stands in for the kernel Triton compiled: ``[grid]`` gives what its launcher does on
    the host before the C launch (Triton 3.6-3.9's ``CompiledKernel.__getitem__``: device and
    stream, the launch hooks, which ``launch_metadata`` checks too)."""

    packed_metadata = ()

    def __getitem__(self, grid):
        def launch(*args):
            device = _Driver.get_current_device()
            _Driver.get_current_stream(device)
            metadata = None if knobs.runtime.launch_enter_hook is None else {}  # (its check)
            return metadata, knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook

        return launch


_COMPILED = CompiledStandIn()


def install_launch_preparation() -> list:
    """Every kernel of the ops replaced by its :class:`LaunchPreparation`; returns them."""
    backend = make_backend(GPUTarget('cuda', 90, 32))
    stand_ins = []
    for module_name, names in _KERNELS.items():
        module = importlib.import_module(module_name)
        for name in names:
            if not hasattr(module, name):  # e.g. an older tree, to compare with
                continue
            stand_in = LaunchPreparation(getattr(module, name), backend)
            setattr(module, name, stand_in)
            stand_ins.append(stand_in)
    return stand_ins


def best_of(fn, runs: int, repeats: int = 7) -> float:
    """Microseconds per ``fn()``: the best of ``repeats`` rounds of ``runs`` calls."""
    return min(timeit.repeat(fn, number=runs, repeat=repeats)) / runs * 1e6


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--arch', default='m', choices=sorted(arch_settings))
    parser.add_argument('--batch', type=positive_int, default=1)
    parser.add_argument('--shape', type=positive_int, default=224)
    parser.add_argument('--runs', type=positive_int, default=200,
                        help='forwards per timing round (7 rounds, the best kept)')
    parser.add_argument('--train', action='store_true',
                        help='a fused_ops training step\'s host time (see the module docstring)')
    return parser.parse_args(argv)


def direct_launches() -> None:
    """Every planned launch straight to the stand-in compiled kernel after its first (outside the
    interpreter as far as the launches are concerned)."""
    _launch.DIRECT, _launch.interpreting, _launch._driver = True, lambda: False, lambda: _Driver


# Operators that write no memory on a GPU: views, allocations, metadata.
_NO_KERNEL = frozenset(
    'aten.' + name for name in (
        'view', '_unsafe_view', '_reshape_alias', 'reshape', 'as_strided', 'alias', 'detach',
        't', 'transpose', 'permute', 'expand', 'unsqueeze', 'squeeze', 'unflatten', 'flatten',
        'slice', 'select', 'narrow', 'split', 'split_with_sizes', 'unbind', 'empty',
        'empty_like', 'empty_strided', 'new_empty', 'new_empty_strided', 'is_same_size',
        'lift_fresh'))


class KernelOperators(TorchDispatchMode):
    """Counts, by name, the stock operators dispatched in its block that launch a GPU kernel:
    none of :data:`_NO_KERNEL`, none with an empty output, none that hands back an input
    unchanged (``to`` a tensor's own dtype). This package's custom ops run their Python
    implementations under the count, whose stock operators (the group conv's weight layouts,
    its gradient's zeroed buffer) go to :attr:`inside_ops`; their Triton launches are the
    stand-ins' to count. Keeps no tensor: a kept output would make autograd copy a gradient it
    stores."""

    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()
        self.inside_ops = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        kwargs = kwargs or {}
        own = _own_function(name) if name.startswith('mux_backbones.') else None
        if own is not None:
            counts, self.counts = self.counts, self.inside_ops
            try:
                with self:  # (the op's own function: dispatching the op would come back here)
                    return own(*args, **kwargs)
            finally:
                self.counts = counts
        out = func(*args, **kwargs)
        outs = out if isinstance(out, (list, tuple)) else (out, )
        if name.startswith('aten.') and name not in _NO_KERNEL and \
                not all(isinstance(t, torch.Tensor) and t.numel() == 0 for t in outs) and \
                (name.endswith('_') or not any(o is a for o in outs for a in args)):
            self.counts[name] += 1
        return out


def _own_function(name: str):
    """The Python function a ``torch.library.custom_op`` was made from (``name`` as the
    dispatcher prints it, ``ns.op``), or None where this PyTorch keeps no such registry (the
    operators inside the op then go uncounted)."""
    try:
        from torch._library.custom_ops import OPDEFS
    except ImportError:  # pragma: no cover - depends on the PyTorch version
        return None
    return getattr(OPDEFS.get(name.replace('.', '::', 1)), '_init_fn', None)


def kernel_operators(model, x) -> KernelOperators:
    """:class:`KernelOperators` of one training step of ``model`` on ``x`` (forward, backward
    into ``.grad``)."""
    model.zero_grad(set_to_none=True)
    with KernelOperators() as ops:
        sum(o.float().sum() for o in model(x)).backward()
    model.zero_grad(set_to_none=True)
    return ops


def train_step_host_time(args, stand_ins) -> None:
    """Print a fused_ops training step's host time, its squeeze-excites on their Triton form and
    on their stock form, and the launches per step of each kernel."""
    torch.manual_seed(0)
    model = MUXNet(args.arch, out_indices=(7, ), fused_ops=True).train()
    params = [p for p in model.parameters() if p.requires_grad]
    x = torch.randn(args.batch, 3, args.shape, args.shape).contiguous(
        memory_format=torch.channels_last)
    ses = [m for m in model.modules() if isinstance(m, SqueezeExcite)]

    def step():
        torch.autograd.grad(model(x)[0].float().sum(), params)

    for stand_in in stand_ins:  # (a step through Triton's path: every launch seen)
        stand_in.recording = True
    step()
    for stand_in in stand_ins:
        stand_in.recording = False
    direct_launches()
    step()  # (each launch's first direct call: Triton's path)
    fused_us = best_of(step, args.runs)
    for se in ses:
        se.fused_ops = False
    stock_se_us = best_of(step, args.runs)
    print(f'MUXNet-{args.arch} fused_ops training step (forward + backward), batch {args.batch}, '
          f'{args.shape}x{args.shape}, host time up to Triton\'s launcher with direct launches '
          f'(the stock operators\' CPU compute included):')
    print(f'  squeeze-excites on their Triton training form: {fused_us / 1e3:.2f} ms per step')
    print(f'  squeeze-excites on their stock form ({len(ses)} of them): {stock_se_us / 1e3:.2f} ms '
          f'per step')
    print(f'{"kernel":<26}{"launches per step":>18}')
    for stand_in in stand_ins:
        if stand_in.launches:
            print(f'{stand_in.name:<26}{len(stand_in.launches):>18}')
    for se in ses:
        se.fused_ops = True
    from mmdet.models.backbones import MobileNetV2  # (the goal's baseline; slow to import)
    mobilenet = MobileNetV2(out_indices=(7, ))
    mobilenet.train()  # (not chained: mmdet's MobileNetV2.train() returns None)
    baseline_params = [p for p in mobilenet.parameters() if p.requires_grad]

    def baseline_step():
        torch.autograd.grad(mobilenet(x)[0].float().sum(), baseline_params)

    baseline_step()
    rounds = [(best_of(step, args.runs, 1), best_of(baseline_step, args.runs, 1))
              for _ in range(7)]  # (interleaved: a slow phase of the machine hits both alike)
    fused_us, baseline_us = (min(times) for times in zip(*rounds))
    print(f'  MobileNetV2 (mmdet\'s, stock operators, the same harness): {baseline_us / 1e3:.2f} '
          f'ms per step; the fused step {fused_us / 1e3:.2f} ms, {fused_us / baseline_us:.2f}x '
          f'(both nets\' stock operators compute on the CPU here: at a small --shape their '
          f'compute is small next to their dispatch)')
    baseline = sum(kernel_operators(mobilenet, x).counts.values())
    ops = kernel_operators(model, x)
    stock, inside = ops.counts, ops.inside_ops
    triton = sum(len(stand_in.launches) for stand_in in stand_ins)
    total = sum(stock.values()) + sum(inside.values()) + triton
    print(f'GPU kernels per training step (gradients into .grad), batch {args.batch}, '
          f'{args.shape}x{args.shape}: MobileNetV2 {baseline} (stock operators); '
          f'MUXNet-{args.arch} fused_ops {total} = {sum(stock.values())} stock operators + '
          f'{sum(inside.values())} inside the ops + {triton} Triton launches '
          f'({total / baseline:.2f}x); its stock operators: '
          + ', '.join(f'{name[5:]} {n}' for name, n in stock.most_common())
          + '; inside the ops: '
          + ', '.join(f'{name[5:]} {n}' for name, n in inside.most_common()))


def main(argv=None):
    args = parse_args(argv)
    # One thread: the stem conv's CPU compute (taken off the forward's time) then waits on no
    # thread pool that another busy process shares (a test run under load measured the stem
    # at 15.7 ms and the rest of the forward below it).
    torch.set_num_threads(1)
    stand_ins = install_launch_preparation()
    if args.train:
        with warnings.catch_warnings():
            warnings.simplefilter('ignore', RuntimeWarning)
            train_step_host_time(args, stand_ins)
        return
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)
        model = MUXNet(args.arch, out_indices=(7, )).eval().switch_to_deploy(
            channels_last=True, fused_ops=True)
    x = torch.randn(args.batch, 3, args.shape, args.shape).contiguous(
        memory_format=torch.channels_last)
    with torch.no_grad():
        for stand_in in stand_ins:
            stand_in.recording = True
        set_block_calls(model, False)(x)
        for stand_in in stand_ins:
            stand_in.recording = False
        stem_us = best_of(lambda: model.stem(x), args.runs)
        _launch.DIRECT = False
        forward_us = best_of(lambda: model(x), args.runs) - stem_us
        direct_launches()
        set_block_calls(model, True)(x)
        direct_us = best_of(lambda: model(x), args.runs) - stem_us
    print(f'MUXNet-{args.arch} fused deploy forward, batch {args.batch}, {args.shape}x'
          f'{args.shape} (the stem conv\'s {stem_us / 1e3:.2f} ms of CPU compute taken off):')
    print(f'  modules, launches through Triton: host time up to Triton\'s launcher '
          f'{forward_us / 1e3:.2f} ms per forward')
    print(f'  block launches, direct launches: host time up to Triton\'s launcher '
          f'{direct_us / 1e3:.2f} ms per forward')
    print(f'{"kernel":<24}{"launches":>9}{"prep us":>9}{"us/forward":>12}')
    triton_us = 0.0
    per_kernel = collections.OrderedDict((s.name, s) for s in stand_ins if s.launches)
    for name, stand_in in per_kernel.items():
        prep = sum(best_of(lambda: stand_in.prepare(*a, **dict(kw)), max(1, args.runs // 4))
                   for a, kw in stand_in.launches) / len(stand_in.launches)
        total = prep * len(stand_in.launches)
        triton_us += total
        print(f'{name:<24}{len(stand_in.launches):>9}{prep:9.1f}{total:12.0f}')
    print(f'of which Triton\'s launch preparation {triton_us / 1e3:.2f} ms, the layers\' and ops\' '
          f'Python {(forward_us - triton_us) / 1e3:.2f} ms')


if __name__ == '__main__':
    main()
