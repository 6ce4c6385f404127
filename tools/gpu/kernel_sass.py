"""Static look at the fused kernels as an H100/H200 would run them, without a GPU.

Compiles every kernel launch of a deployed MUXNet's spatial convs (forward, and with
``--backward`` the gradient kernels of training) for ``sm_90`` with Triton's own compiler, exactly
as the launchers plan them (:func:`mux_backbones.ops.group_conv.forward_launches` and siblings),
disassembles them with the ``nvdisasm``/``cuobjdump`` that ship with Triton and prints per launch:
registers, the instructions of the tap loop (how many fused multiply-adds, how wide the loads)
the pixels one warp's load spans (``px/ld``: each a separate stretch of a channels-last map, so
fewer is better coalesced; 4 = 128 bytes of one pixel's channels per 8 lanes) and an
*issue-bound* time -- the warp instructions the launch executes over what the SMs can issue (4
per clock each). That is a lower bound, not a measurement: it ignores memory latency and
occupancy, so a kernel far above it on the GPU is latency-bound. What hides latency is shown next
to it: the warps resident per SM that the registers allow (``warps``, of 64) and how many waves
of programs the launch fills (``waves``; for a forward slot, its own programs; under 1, SMs
idle). It is how a change to a kernel's instruction count is checked on a machine without a GPU;
the GPU numbers come from ``tools/gpu/layer_bench.py`` and ``benchmark.py --profile``.

    python tools/gpu/kernel_sass.py [--arch m] [--batch 32] [--shape 224] [--dtype fp16]
                                    [--backward] [--sms 132] [--clock-ghz 1.98]
                                    [--launch-configs FILE [--device-name "NVIDIA H200"]]

``--launch-configs`` analyses the launches a tuned table (``layer_bench.py --tune
--save-configs``, measured on the GPU named by ``--device-name``) makes, instead of the
planner's own.

Needs Triton's CUDA backend (the ``triton`` wheel), not a GPU or ``TRITON_INTERPRET``.
"""
import argparse
import collections
import importlib
import os
import re
import subprocess
import sys
import tempfile
import warnings
from typing import Optional

if os.environ.get('TRITON_INTERPRET') == '1':  # the interpreter's kernels cannot be compiled
    sys.exit('kernel_sass.py compiles the kernels: run it without TRITON_INTERPRET=1')

import torch  # noqa: E402

try:
    import triton  # noqa: E402
    from triton.backends.compiler import GPUTarget  # noqa: E402
    from triton.compiler import ASTSource  # noqa: E402
except ImportError:  # pragma: no cover - depends on the machine
    sys.exit('kernel_sass.py needs Triton')

from mux_backbones import MUXNet  # noqa: E402
from mux_backbones.cli import positive_int  # noqa: E402
from mux_backbones.layers import FusedGroupConv, block_launches  # noqa: E402
from mux_backbones.layers.conv_bn import PointwiseConv2d, activation_name  # noqa: E402
from mux_backbones.layers.squeeze_excite import SqueezeExcite  # noqa: E402
from mux_backbones.ops import _triton, launch_config  # noqa: E402
from mux_backbones.utils.hooks import module_inputs  # noqa: E402

# (the package exports the op function under the module's name)
ops = importlib.import_module('mux_backbones.ops.group_conv')
gemm = importlib.import_module('mux_backbones.ops.pointwise_conv')
gated = importlib.import_module('mux_backbones.ops.gated_map')
se_gate = importlib.import_module('mux_backbones.ops.se_gate')

_BIN = os.path.join(os.path.dirname(triton.__file__), 'backends', 'nvidia', 'bin')
_INSTRUCTION = re.compile(r'^\s+/\*([0-9a-f]+)\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);',
                          re.M)
_DTYPES = {'fp16': 'fp16', 'bf16': 'bf16', 'fp32': 'fp32'}
_TORCH_DTYPES = {'fp16': 'float16', 'bf16': 'bfloat16', 'fp32': 'float32'}


def _fused_model(arch: str):
    """MUXNet ``arch`` in its fused deploy form, deployed on the CPU as if the kernels could run
    there (the deploy forms do not depend on the device)."""
    real = _triton.interpreting  # what makes CPU tensors count as kernel-ready
    _triton.interpreting = lambda: True
    try:
        return MUXNet(arch, out_indices=(7, )).eval().switch_to_deploy(channels_last=True,
                                                                       fused_ops=True)
    finally:
        _triton.interpreting = real


def _input(shape: int):
    return torch.randn(1, 3, shape, shape).contiguous(memory_format=torch.channels_last)


def spatial_layers(arch: str, shape: int):
    """``(name, FusedGroupConv, input shape, with_pool)`` of every block of a fused deploy model
    (run once at batch 1 to see each layer's input shape)."""
    model = _fused_model(arch)
    blocks = [(name, block) for name, block in model.named_modules()
              if isinstance(getattr(block, 'depthwise_conv', None), FusedGroupConv)]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)  # the ops' CPU fallbacks compute it
        inputs = module_inputs(model, [b.depthwise_conv for _, b in blocks], _input(shape))
    return [(name, b.depthwise_conv, tuple(inputs[b.depthwise_conv].shape), b.pool_in_kernel)
            for name, b in blocks if b.depthwise_conv in inputs]


def epilogue_gemms(arch: str, shape: int, batch: int):
    """Every call a fused deploy model makes of the ``pointwise_conv`` op (expand convs with
    their activation, project convs with a residual or an interleave, reading through the SE
    gate), recorded at batch 1 and scaled to ``batch``: ``(name, rows per sample, samples, K,
    C, row strides (input, residual, kept), weight strides (K, C), bias, residual, interleave,
    act, scale, gate)``. A call with per-sample weights or an input scale runs one program row
    per sample; any other has one sample of all the batch's rows. ``gate``: for a project conv
    after an SE, the :class:`~mux_backbones.ops.pointwise_conv.Gate` it computes where its
    block's launches have it compute the gate (``block_launches.gate_in_gemm``; None
    otherwise)."""
    model = _fused_model(arch)
    convs = {name: b.depthwise_conv for name, b in model.named_modules()
             if isinstance(getattr(b, 'depthwise_conv', None), FusedGroupConv)}
    names = []  # the module that made each recorded call
    with launch_config.recorded_calls('pointwise_conv') as calls, torch.no_grad(), \
            warnings.catch_warnings():
        warnings.simplefilter('ignore', RuntimeWarning)  # the op's CPU fallback computes it
        inputs = module_inputs(model, list(convs.values()), _input(shape))
        del calls[:]  # (that run's: the recorded run is the next)
        hooks = [m.register_forward_hook(
            lambda m, args, out, name=name: names.extend([name] * (len(calls) - len(names))))
            for name, m in model.named_modules() if isinstance(m, PointwiseConv2d)]
        try:
            model(_input(shape))
        finally:
            for hook in hooks:
                hook.remove()
    out = []
    for name, call in zip(names, calls):
        plan, (_, weight, bias, residual, kept, act, scale) = gemm._planned(*call)
        per_sample = weight.dim() == 3 or scale is not None
        samples, rows_per_sample = (batch, plan.per_sample) if per_sample else \
            (1, batch * plan.per_sample)
        block_name = name.rsplit('.project_conv', 1)[0]
        gate = None
        if scale is not None and block_name in convs:
            conv, se = convs[block_name], model.get_submodule(block_name).se
            _, _, h, w = inputs[conv].shape
            out_h, out_w = ops.output_size(h, conv.stride), ops.output_size(w, conv.stride)
            gate = gemm.Gate(ops.pool_tiles(conv.splits, batch, out_h, out_w),
                             se.conv_reduce.weight.shape[0], 1.0 / (out_h * out_w),
                             activation_name(se.act))
        out.append((re.sub(r'\.conv$', '', name), rows_per_sample, samples, plan.k, plan.c,
                    tuple(plan.strides), plan.weight_strides, bias is not None,
                    residual is not None, kept is not None, act, scale is not None, gate))
    return out


def launches(conv: FusedGroupConv, x_shape, with_pool: bool, backward: bool, tuned_for=None):
    """``(what, Launch)`` of the layer's forward (and gradient) kernels; ``tuned_for``:
    ``(device name, dtype name)`` whose tuned forward config (if any) to launch with."""
    args = (conv.splits, conv.kernel_sizes, conv.dilations)
    config = launch_config.lookup(ops.tuning_key(
        x_shape, tuned_for[1], tuned_for[0], *args, conv.stride,
        conv.channels_per_group)) if tuned_for else None
    # A forward launch runs all kernel sizes of a layer, each group's programs on a code path of
    # their own: analysed one group at a time.
    out = [('forward', slot) for plan in ops.forward_launches(
        x_shape, *args, conv.stride, conv.channels_per_group, conv.act, with_pool, True, config)
        for slot in ops.forward_slots(plan)]
    if backward:
        if conv.stride == 1:  # the forward kernel on flipped weights, no epilogue
            out += [('input grad', slot) for plan in ops.forward_launches(
                x_shape, *args, 1, conv.channels_per_group, 'none', False, False, config)
                for slot in ops.forward_slots(plan)]
        else:
            out += [('input grad', plan) for plan in ops.input_grad_s2_launches(
                x_shape, *args, conv.channels_per_group)]
        out += [('weight grad', plan) for plan in ops.weight_grad_launches(
            x_shape, *args, conv.stride, conv.channels_per_group)]
    return out


def _pointers(launch) -> int:
    """How many tensor arguments come before the launch's scalars."""
    return len(ops.kernels()[launch.kernel].arg_names) - len(launch.scalars) - len(launch.meta)


def scalar(launch, name: str) -> int:
    """The value a launch passes for the kernel's scalar argument ``name``."""
    names = ops.kernels()[launch.kernel].arg_names
    return launch.scalars[names.index(name) - _pointers(launch)]


def compile_launch(launch, dtype: str):
    """The launch compiled for sm_90 as Triton would specialise it at run time."""
    return compile_kernel(ops.kernels()[launch.kernel], launch.meta, launch.scalars, dtype,
                          launch.num_warps)


def compile_kernel(fn, meta: dict, scalars, dtype: str, num_warps: int,
                   num_stages: Optional[int] = None, fp32_pointers: tuple = ()):
    """``fn`` compiled for sm_90 with these compile-time and integer (and float) arguments (its
    tensors: the activations in ``dtype``, partial sums, weight gradients and the pointers
    named in ``fp32_pointers`` in fp32, all 16-byte aligned); ``num_stages``: the launch's
    pipeline depth (None: Triton's default)."""
    names = fn.arg_names
    n_ptr = len(names) - len(scalars) - len(meta)
    plain = {p.name for p in getattr(fn, 'params', ()) if p.do_not_specialize}
    signature, constexprs, attrs = {}, {}, {}
    for i, name in enumerate(names):
        if i < n_ptr:
            fp32 = name.startswith(('pool', 'dw')) or name in fp32_pointers
            signature[name] = '*' + ('fp32' if fp32 else dtype)
            attrs[(i, )] = [['tt.divisibility', 16]]
        elif name in meta:
            signature[name] = 'constexpr'
            constexprs[(i, )] = meta[name]
        else:
            value = scalars[i - n_ptr]
            if isinstance(value, float):
                signature[name] = 'fp32'
            elif name in plain:  # (the kernel asks Triton not to specialise it)
                signature[name] = 'i32'
            elif value == 1:  # Triton specialises integer 1 as a constant
                signature[name] = 'constexpr'
                constexprs[(i, )] = 1
            else:
                signature[name] = 'i32'
                if value % 16 == 0:
                    attrs[(i, )] = [['tt.divisibility', 16]]
    source = ASTSource(fn, signature, constexprs, attrs)
    options = dict(ops.COMPILE_OPTIONS, num_warps=num_warps)
    if num_stages is not None:
        options['num_stages'] = num_stages
    return triton.compile(source, target=GPUTarget('cuda', 90, 32), options=options)


def _disassemble(kernel):
    """``(SASS, resource usage)`` of a compiled kernel, by the tools that ship with Triton."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'k.cubin')
        with open(path, 'wb') as f:
            f.write(kernel.asm['cubin'])
        sass = subprocess.run([os.path.join(_BIN, 'nvdisasm'), '-c', path], capture_output=True,
                              text=True, check=True).stdout
        usage = subprocess.run([os.path.join(_BIN, 'cuobjdump'), '-res-usage', path],
                               capture_output=True, text=True).stdout
    return sass, usage


def analyse(kernel):
    """``(registers, instructions, tap-loop instruction counts)`` of a compiled kernel."""
    sass, usage = _disassemble(kernel)
    regs = re.search(r'REG:(\d+)', usage)
    instructions = [(int(a, 16), op, rest) for a, op, rest in _INSTRUCTION.findall(sass)]
    labels, lines = {}, sass.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r'^(\.L_x_\d+):', line)
        if m:
            nxt = next((re.match(r'^\s+/\*([0-9a-f]+)\*/', s) for s in lines[i + 1:]
                        if re.match(r'^\s+/\*([0-9a-f]+)\*/', s)), None)
            if nxt:
                labels[m.group(1)] = int(nxt.group(1), 16)
    loop = collections.Counter()
    for addr, op, rest in instructions:  # the outermost backward branch closes the tap loop
        target = re.search(r'\((\.L_x_\d+)\)', rest)
        if op.startswith('BRA') and target and labels.get(target.group(1), addr) < addr:
            start = labels[target.group(1)]
            loop = collections.Counter(o for a, o, _ in instructions if start <= a <= addr)
            break
    return int(regs.group(1)) if regs else None, len(instructions), loop


def group_meta(launch):
    """``(K, channel block, ALIGN)`` of a one-group launch (a forward slot or a gradient)."""
    meta = launch.meta
    if 'K0' in meta:
        return meta['K0'], meta['B0'], meta['A0']
    return meta['KS'], meta['BLOCK_C'], meta['ALIGN']


def pixels_per_warp_load(launch, dtype: str) -> int:
    """Pixels one warp's load spans (each a different cache line region of a channels-last map):
    32 lanes over the channel block in vectors of up to 16 bytes (``ALIGN`` elements at most)."""
    _, block_c, align = group_meta(launch)
    vector = min(align, 16 // (4 if dtype == 'fp32' else 2))
    return 32 // max(1, min(32, block_c // vector))


def resident_warps(regs: int, warps_per_program: int) -> int:
    """Warps per SM that fit sm_90's 64K registers (allocated per warp in units of 256), at most
    64 warps and 32 programs per SM."""
    per_warp = -(-regs * 32 // 256) * 256
    programs = min(32, 65536 // (per_warp * warps_per_program), 64 // warps_per_program)
    return programs * warps_per_program


def trips(launch) -> int:
    """Iterations of the tap loop per program (an upper bound for the stride-2 gradient, whose
    programs skip the taps of other parity classes)."""
    if launch.kernel == 'weight_grad':
        return scalar(launch, 'tiles_per_program')
    return group_meta(launch)[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--arch', default='m')
    parser.add_argument('--batch', type=positive_int, default=32)
    parser.add_argument('--shape', type=positive_int, default=224)
    parser.add_argument('--dtype', default='fp16', choices=sorted(_DTYPES))
    parser.add_argument('--backward', action='store_true', help='also the gradient kernels')
    parser.add_argument('--sms', type=positive_int, default=132, help='SMs (H200/H100 SXM: 132)')
    parser.add_argument('--clock-ghz', type=float, default=1.98)
    parser.add_argument('--launch-configs', metavar='FILE',
                        help='tuned launch configs to analyse (layer_bench.py --save-configs)')
    parser.add_argument('--device-name', default='NVIDIA H200',
                        help='the GPU the launch configs were tuned on')
    args = parser.parse_args()
    tuned_for = None
    if args.launch_configs:
        try:
            print(f'{launch_config.load(args.launch_configs)} tuned launch configs from '
                  f'{args.launch_configs}')
        except (OSError, ValueError, KeyError, TypeError) as err:
            sys.exit(f'error: cannot load launch configs: {err}')
        tuned_for = (args.device_name, _TORCH_DTYPES[args.dtype])
    issue_rate = args.sms * 4 * args.clock_ghz * 1e3  # warp instructions per microsecond
    print(f'MUXNet-{args.arch}, batch {args.batch}, {args.shape}x{args.shape}, {args.dtype}, '
          f'sm_90, Triton {triton.__version__}')
    print(f'{"layer":<16}{"kernel":<12}{"C":>5}{"HxW":>8}{"K":>3}{"cpg":>4}{"s":>2}'
          f'{"tile":>10}{"px/ld":>6}{"regs":>5}{"warps":>6}{"waves":>6}{"loop":>6}{"FMA":>5}  '
          f'{"loads":<22}{"us":>7}')
    totals = collections.Counter()
    for name, conv, shape, with_pool in spatial_layers(args.arch, args.shape):
        shape = (args.batch, ) + shape[1:]
        for what, launch in launches(conv, shape, with_pool, args.backward, tuned_for):
            regs, static, loop = analyse(compile_launch(launch, _DTYPES[args.dtype]))
            body = sum(loop.values())
            per_program = static - body + body * trips(launch)
            programs = launch.grid[0] * launch.grid[1] * launch.grid[2]
            warps = launch.num_warps
            us = programs * warps * per_program / issue_rate
            resident = resident_warps(regs, warps) if regs else 0
            waves = f'{programs * warps / (resident * args.sms):.1f}' if resident else '?'

            totals[what] += us
            meta = launch.meta
            k, block_c, _ = group_meta(launch)
            tile = f'{meta["TILE_H"]}x{meta["TILE_W"]}x{block_c}'
            loads = ' '.join(f'{op.split(".", 2)[-1]}x{n}' for op, n in sorted(loop.items())
                             if op.startswith('LDG'))
            print(f'{name.replace("layers.", ""):<16}{what:<12}{shape[1]:>5}'
                  f'{f"{shape[2]}x{shape[3]}":>8}{k:>3}{meta["CPG"]:>4}'
                  f'{conv.stride:>2}{tile:>10}{pixels_per_warp_load(launch, args.dtype):>6}'
                  f'{regs or "?":>5}{resident or "?":>6}{waves:>6}{body:>6}{loop["FFMA"]:>5}  '
                  f'{loads:<22}{us:>7.1f}')
    for what, us in totals.items():
        print(f'issue-bound total, {what}: {us:.0f} us')
    print_epilogue_gemms(args, issue_rate, tuned_for)
    if args.backward:
        print_se_training(args)


def print_epilogue_gemms(args, issue_rate: float, tuned_for=None):
    """The 1x1 convs that run as the epilogue GEMM (``ops.pointwise_conv``): tiles, registers,
    shared memory, load/store widths, issue bound and the time the bytes alone take at the
    H200's ~4.8 TB/s (these GEMMs are memory-bound); ``tuned_for``: ``(device name, dtype
    name)`` whose tuned configs (if any) to launch with."""
    dtype = getattr(torch, _TORCH_DTYPES[args.dtype])
    size = dtype.itemsize
    print(f'\nepilogue GEMMs (ops.pointwise_conv: expand + act, project + residual (+ '
          f'interleave)), {args.dtype}')
    print(f'{"layer":<28}{"rows":>8}{"K":>5}{"C":>5}{"epilogue":>15}{"tile":>16}{"regs":>5}'
          f'{"smem KB":>8}{"us":>7}{"mem us":>8}  loads/stores')
    total = total_mem = 0.0
    for name, rows, samples, k, c, strides, weight_strides, bias, residual, interleave, act, \
            scale, gate in epilogue_gemms(args.arch, args.shape, args.batch):
        flags = (dtype, rows, k, c, strides, weight_strides, bias, residual, interleave, act,
                 scale)
        config = launch_config.lookup(gemm.tuning_key(
            gemm.launch_meta(*flags), tuned_for[1], tuned_for[0], samples, rows, k,
            c)) if tuned_for else None
        epilogue = ('+se' * scale + f'+{act}' * (act != 'none') + '+res' * residual +
                    '+mux' * interleave)
        if config == launch_config.STOCK:  # tuned to cuBLAS + passes: no kernel to analyse
            print(f'{name.replace("layers.", ""):<28}{samples * rows:>8}{k:>5}{c:>5}'
                  f'{epilogue or "-":>15}{"stock path":>16}')
            continue
        meta = gemm.launch_meta(*flags, config=config)
        warps, stages = (config.num_warps, config.num_stages) if config else \
            (gemm.NUM_WARPS, gemm.NUM_STAGES)
        programs = samples * gemm.launch_programs(rows, c, meta)
        if gate is not None and not block_launches.gate_in_gemm(programs):
            gate = None
        if gate is not None:  # the SE gate computed in the kernel, from fp32 pooled sums
            meta.update(gate.meta(samples, k))
            epilogue = epilogue.replace('+se', '+gate')
        scalars = (rows, k, c, 2 * c if interleave else c, *strides, *weight_strides,
                   *(gate.scalars() if gate else gemm.NO_GATE_SCALARS))
        kernel = compile_kernel(gemm._pointwise_kernel, meta, scalars, _DTYPES[args.dtype],
                                warps, stages, ('s_ptr', ) if gate else ())
        regs, static, loop = analyse(kernel)
        body = sum(loop.values())
        # the loop: over K blocks, or (several tiles per program) over its row tiles
        trips = meta['TILES'] if meta['TILES'] > 1 else -(-k // meta['BLOCK_K'])
        per_program = static - body + body * trips
        us = programs * warps * per_program / issue_rate
        moved = samples * rows * (k + c * (1 + residual + 2 * interleave)) * size
        mem_us = moved / 4.8e6
        total, total_mem = total + us, total_mem + mem_us
        tile = f'{meta["BLOCK_M"]}x{meta["BLOCK_N"]}x{meta["BLOCK_K"]}' + \
            (f'/{warps}/{stages}' if config else '') + \
            (f'x{meta["TILES"]}' if meta['TILES'] > 1 else '')
        print(f'{name.replace("layers.", ""):<28}{samples * rows:>8}{k:>5}{c:>5}'
              f'{epilogue or "-":>15}{tile:>16}{regs or "?":>5}'
              f'{kernel.metadata.shared / 1024:>8.1f}{us:>7.1f}{mem_us:>8.1f}  '
              f'{_memory_ops(kernel)}')
    print(f'epilogue GEMMs: issue-bound {total:.0f} us, bytes at 4.8 TB/s {total_mem:.0f} us')


def _memory_ops(kernel) -> str:
    """Global loads/stores of a compiled kernel by width, e.g. ``LDG.128x4 STG.128x2``."""
    sass, _ = _disassemble(kernel)
    counts = collections.Counter(re.sub(r'\.(E|EL|CONSTANT|STRONG\.\w+|LTC\w+)\b', '', op)
                                 for _, op, _ in _INSTRUCTION.findall(sass)
                                 if op.startswith(('LDG', 'STG', 'LDGSTS')))
    return ' '.join(f'{op}x{n}' for op, n in sorted(counts.items()))


def se_maps(arch: str, shape: int, batch: int):
    """``(name, (N, C, H, W), squeeze, act)`` of the map every squeeze-excite of the training
    form gates (run once at batch 1, scaled to ``batch``)."""
    model = MUXNet(arch, out_indices=(7, )).eval()
    ses = {m: name for name, m in model.named_modules() if isinstance(m, SqueezeExcite)}
    with torch.no_grad():
        inputs = module_inputs(model, list(ses), _input(shape))
    return [(ses[se].replace('layers.', ''), (batch, ) + tuple(inputs[se].shape[1:]),
             se.conv_reduce.out_channels, activation_name(se.act)) for se in ses if se in inputs]


def se_training_launches(shape, squeeze: int, act: str, dtype: str):
    """``(what, KernelLaunch, fp32 pointers)`` of the training form's launches on a channels-last
    ``dtype`` map of ``shape`` (:mod:`mux_backbones.ops.gated_map`'s forward and backward
    launches): three forward, four backward, the block's activation before the SE (MUXNet's:
    the SE's own ``act``) in the map passes."""
    n, c, h, w = shape
    size = getattr(torch, _TORCH_DTYPES[dtype]).itemsize
    pixels, layout = h * w, (True, h * w * c, c)  # (gated_map.map_layout)
    gate_ptrs = ('sums_ptr', 'w1_ptr', 'b1_ptr', 'w2_ptr', 'b2_ptr', 'out_ptr')
    every = ('sums_ptr', 'dsums_ptr', 'gate_ptr', 'w1_ptr', 'b1_ptr', 'w2_ptr', 'mean_ptr',
             'hidden_ptr', 'grad_logit_ptr', 'grad_z_ptr', 'shift_ptr', 'gw1_ptr', 'gb1_ptr',
             'gw2_ptr', 'gb2_ptr')
    scale_ptrs = ('scale_ptr', 'shift_ptr')
    launches = gated.forward_launches(n, c, pixels, size, layout, layout, squeeze, act, act) + \
        gated.backward_launches(n, c, pixels, size, layout, layout, squeeze, act, act)
    return list(zip(('sums', 'gate', 'gated map', 'grad sums', 'gate grad', 'weight grad',
                     'input grad'), launches,
                    (('out_ptr', ), gate_ptrs, scale_ptrs, ('out_ptr', ), every, every,
                     scale_ptrs)))


def print_se_training(args):
    """The squeeze-excites' training form on the Triton kernels (``ops.gated_map``, what
    ``fused_ops`` trains on with CUDA), each launch compiled: registers, global loads/stores and
    the time its map passes take at the H200's ~4.8 TB/s (these launches are memory-bound: the
    map is read twice and written once forward; backward the map and its gradient are read
    twice each and the input's gradient written)."""
    size = getattr(torch, _TORCH_DTYPES[args.dtype]).itemsize
    print(f'\nsqueeze-excite training form (ops.gated_map), {args.dtype} channels-last map')
    print(f'{"layer":<24}{"N x C x HxW":>20}{"S":>4}{"launches":>9}{"regs":>6}{"mem us":>8}  '
          f'widest loads/stores')
    total = 0.0
    for name, shape, squeeze, act in se_maps(args.arch, args.shape, args.batch):
        regs, ops_seen = [], collections.Counter()
        launches = se_training_launches(shape, squeeze, act, args.dtype)
        for _, launch, fp32 in launches:
            meta = {k: v for k, v in launch.meta.items() if k != 'num_warps'}
            kernel = compile_kernel(launch._jit(), meta, launch.scalars, _DTYPES[args.dtype],
                                    launch.meta['num_warps'], fp32_pointers=fp32)
            regs.append(analyse(kernel)[0] or 0)
            ops_seen.update(_memory_ops(kernel).split())
        mem_us = 8 * shape[0] * shape[1] * shape[2] * shape[3] * size / 4.8e6
        total += mem_us
        widest = ' '.join(sorted({op.split('x')[0] for op in ops_seen}))
        print(f'{name:<24}{"x".join(map(str, shape[:2])) + f" x {shape[2]}x{shape[3]}":>20}'
              f'{squeeze:>4}{len(launches):>9}{max(regs):>6}{mem_us:>8.1f}  {widest}')
    print(f'squeeze-excite training form: map passes at 4.8 TB/s {total:.0f} us')


if __name__ == '__main__':
    main()
