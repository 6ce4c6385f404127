"""Find which fused-kernel launch faults on a GPU ("an illegal memory access was encountered").

A CUDA fault surfaces at the next synchronisation, far from the launch that caused it, and it
kills the process's CUDA context: one probe process per case. This tool builds a model as
``benchmark.py``'s ``deploy`` mode does (deployed, fused kernels, channels-last, in the
precision), tunes its launch configs (or loads a table) and saves the table *before* anything
else runs -- so the CPU can replay the exact launches under Triton's interpreter and its bounds
checks (``tests/interpreter_checks.py``) -- then runs one forward synchronising after every
module, and names the first module whose work faulted, with its input shapes::

    python tools/gpu/fault_probe.py [--arch m] [--batch 32] [--amp fp16] [--mode deploy|graph]
                                    [--tune --save-configs FILE | --launch-configs FILE]
                                    [--stock-blocks NAME ... | --stock-blocks-from LOG]

``--mode graph`` captures the forward in a CUDA graph and replays it (as ``benchmark.py``'s
``graph`` mode); a fault there is only located to the graph. ``--stock-blocks NAME ...``
keeps those blocks on the stock form: the mix that ``fused_ops='auto'`` chose in a benchmark
(the ``graph-auto`` rows run such a model), rebuilt without timing; ``--stock-blocks-from LOG``
takes the names from the benchmark's output, where ``'auto'`` logs them.
Run with ``CUDA_LAUNCH_BLOCKING=1`` for the launching Python frame, or under
``compute-sanitizer`` for the kernel and address -- with ``PYTORCH_NO_CUDA_MEMORY_CACHING=1``
(deploy mode only: graphs need the caching allocator), else an access past a tensor but inside
the allocator's cached segment goes unseen (session 24's sanitizer run, 0 errors, had the
cache on).

``--device cpu --gpu-plans`` (under ``TRITON_INTERPRET=1``) replays the forward on the CPU with
the launches planned as on a GPU -- pixel tiles, channel blocks, pair partners swapped in
registers, 64-row GEMM tiles; the interpreter otherwise plans fewer, larger programs -- and
every load, store and hint checked (``tests/interpreter_checks.py``): a violation is the fault.
``--large-batch-plan`` adds what a GPU plans only for a large batch: no pixel tile shrunk for
programs, the squeeze-excite gate as a launch of its own (session 40's batch-128 fault; MUXNet-m
at 224x224, batch 2: clean in 217 s)::

    TRITON_INTERPRET=1 python tools/gpu/fault_probe.py --device cpu --gpu-plans \
        --large-batch-plan --batch 2 --amp fp16

Exit status: 0 no fault, 3 a fault (located), 1 anything else.
"""
import argparse
import importlib
import os.path as osp
import sys
import traceback

import torch

import mux_backbones  # noqa: F401  (registers MUXNet, applies stack fixes)
from mux_backbones import MUXNet
from mux_backbones.cli import PRECISIONS, positive_int
from mux_backbones.deploy import stock_blocks_logged, switch_to_deploy
from mux_backbones.ops import launch_config
from mux_backbones.tuning import tune_kernels
from mux_backbones.utils.timing import capture_cuda_graph, synchronize


def _shapes(values) -> str:
    return ', '.join(str(tuple(v.shape)) for v in values if isinstance(v, torch.Tensor))


def use_gpu_plans(large_batch: bool = False) -> None:
    """Plan this process's kernel launches as on a GPU, Triton's interpreter running them with
    every access and hint checked (``--gpu-plans``; see the module docstring)."""
    from mux_backbones.layers import block_launches
    from mux_backbones.ops._triton import PLANNING_MODULES
    for name in PLANNING_MODULES:  # the planners' view; the launches stay interpreted
        importlib.import_module(name).interpreting = lambda: False
    group_conv = importlib.import_module('mux_backbones.ops.group_conv')
    if large_batch:
        group_conv.MIN_PROGRAMS = 0
        block_launches.GATE_IN_GEMM = '0'
    sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
    from tests.interpreter_checks import install
    if not install():
        sys.exit("error: this Triton's interpreter is not one tests/interpreter_checks.py can "
                 'check')


def located_forward(model: torch.nn.Module, x: torch.Tensor, errors=(RuntimeError, )):
    """``model(x)`` with a synchronisation after each module: None, or on one of ``errors``,
    ``((the innermost module still running, its input shapes), traceback)`` -- each module's
    work is synchronised when it returns, its children's before, so the fault lies in that
    module's own work."""
    running = []

    def before(module, inputs, name):
        running.append((name, _shapes(inputs)))

    def after(module, inputs, output):
        synchronize(x.device)
        running.pop()

    handles = []
    for name, module in model.named_modules():
        handles.append(module.register_forward_pre_hook(
            lambda m, i, name=name or '(model)': before(m, i, name)))
        handles.append(module.register_forward_hook(after))
    try:
        with torch.no_grad():
            model(x)
        synchronize(x.device)
        return None
    except errors:
        return running[-1] if running else ('(after the model returned)', ''), \
            traceback.format_exc(limit=-6)
    finally:
        for handle in handles:
            handle.remove()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--arch', default='m')
    parser.add_argument('--batch', type=positive_int, default=32)
    parser.add_argument('--shape', type=positive_int, default=224)
    parser.add_argument('--amp', default='fp16', choices=sorted(PRECISIONS))
    parser.add_argument('--mode', default='deploy', choices=['deploy', 'graph'])
    parser.add_argument('--device', default='cuda',
                        help='cuda; cpu rehearses the tool (deploy mode, no tuning)')
    group = parser.add_mutually_exclusive_group()
    group.add_argument('--tune', action='store_true', help='tune the launch configs first')
    group.add_argument('--launch-configs', metavar='FILE', help='run with this tuned table')
    parser.add_argument('--save-configs', metavar='FILE',
                        help='with --tune: the tuned table, saved before the probed forward')
    parser.add_argument('--gpu-plans', action='store_true',
                        help='with --device cpu under TRITON_INTERPRET=1: the launches planned '
                        'as on a GPU, every access and hint checked')
    parser.add_argument('--large-batch-plan', action='store_true',
                        help='with --gpu-plans: as a GPU plans a large batch (no tile shrunk for '
                        'programs, the SE gate launched on its own)')
    stock = parser.add_mutually_exclusive_group()
    stock.add_argument('--stock-blocks', nargs='*', default=[], metavar='NAME',
                       help="blocks kept on the stock form (as fused_ops='auto' logs them)")
    stock.add_argument('--stock-blocks-from', metavar='LOG',
                       help="the blocks a benchmark's output says fused_ops='auto' kept stock")
    args = parser.parse_args(argv)
    if args.stock_blocks_from:
        with open(args.stock_blocks_from) as log:
            args.stock_blocks = stock_blocks_logged(log.read())
    if args.save_configs and not args.tune:
        parser.error('--save-configs needs --tune')
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available():
        sys.exit('error: no CUDA device')
    if device.type != 'cuda' and (args.tune or args.mode == 'graph'):
        sys.exit('error: --tune and --mode graph need --device cuda')
    if args.large_batch_plan and not args.gpu_plans:
        parser.error('--large-batch-plan needs --gpu-plans')
    errors = (RuntimeError, )
    if args.gpu_plans:
        from mux_backbones.ops._triton import interpreting
        if device.type != 'cpu' or not interpreting():
            sys.exit('error: --gpu-plans replays on --device cpu under TRITON_INTERPRET=1')
        use_gpu_plans(args.large_batch_plan)
        errors = (RuntimeError, AssertionError)  # (the checks' errors are AssertionErrors)
    dtype = PRECISIONS[args.amp]
    model = MUXNet(args.arch, out_indices=(7, )).to(device).eval()
    x = torch.randn(args.batch, 3, args.shape, args.shape, device=device).to(dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    try:
        switch_to_deploy(model, channels_last=True, fused_ops=True,
                         stock_blocks=args.stock_blocks)
    except ValueError as err:  # (a name that is no block of this arch)
        sys.exit(f'error: {err}')
    model.to(dtype)
    if args.launch_configs:
        print(f'{launch_config.load(args.launch_configs)} launch configs from '
              f'{args.launch_configs}', flush=True)
    if args.tune:
        tune_kernels(model, x)
        synchronize(device)  # a fault of the tuning itself shows here, before the probe
        if args.save_configs:
            launch_config.save(args.save_configs)
            print(f'{len(launch_config.entries())} tuned launch configs -> {args.save_configs}',
                  flush=True)
    configs = 'planner' if launch_config.empty() else 'tuned'
    if args.gpu_plans:
        configs = f'GPU {"large-batch " if args.large_batch_plan else ""}{configs}'
    stock_form = f'; stock form in {" ".join(args.stock_blocks)}' if args.stock_blocks else ''
    case = f'MUXNet-{args.arch} {args.mode} {args.amp} batch {args.batch} ' \
           f'({configs} launch configs{stock_form})'
    if args.mode == 'graph':
        try:
            with torch.no_grad():
                graph, _ = capture_cuda_graph(lambda: model(x))
                for _ in range(3):
                    graph.replay()
            synchronize(device)
            fault = None
        except RuntimeError:
            fault = ('(the captured graph)', _shapes([x])), traceback.format_exc(limit=-6)
    else:
        fault = located_forward(model, x, errors)
    if fault is None:
        print(f'no fault: {case}')
        return 0
    (where, shapes), trace = fault
    print(f'FAULT: {case}: in {where} (inputs {shapes})\n{trace}')
    return 3


if __name__ == '__main__':
    sys.exit(main())
