"""Per-layer GPU time of MUXNet's spatial convs: the stock deploy form (cuDNN) vs the fused kernel.

For every block of a deployed MUXNet (fp16/bf16, channels-last), the spatial conv with its
activation as the stock path runs it, and the fused kernel (with the SE pooling where the block
uses it), each replayed from a CUDA graph of 20 calls so launch overhead does not count. Prints
time per call, the bytes the fused kernel moves and its bandwidth: the map the next kernel
iteration works from. ``--variants`` re-times the fused kernel with other values of the launch
planner's tuning constants, one column each: ``LANE_WASTE=3`` (channel blocks: wider, better
coalesced blocks against idle lanes), ``MIN_PROGRAMS=0`` (no smaller tiles for small launches),
``MIN_TILE_VALUES``. ``--tune`` times every layer's launch-config candidates (tile x warps,
``FusedGroupConv.tune``), prints the fastest and its time, and with ``--save-configs FILE`` writes
the table the benchmark and deployments load (``mux_backbones.ops.launch_config``). Then, per
block with a squeeze-excite, its tail after the spatial conv: the SE and project conv (with the
residual add, inside channel multiplexing also the interleave with the copied channels) as the
stock forms run them (pool, two linears, sigmoid, scale, cuBLAS 1x1, add, interleave); the
``se_gate`` launch followed by the same stock passes (scale, cuBLAS 1x1, add, interleave); and
the ``se_gate`` launch followed by the one GEMM that scales its input and adds and interleaves
in its epilogue (``ops.pointwise_conv``, the fused form); likewise the expand conv: cuBLAS +
activation pass against the GEMM with the activation in its epilogue, and so the head conv.
With ``--tune`` those GEMMs' launch configs are tuned too (``tune_pointwise_conv``; the
``tuned`` columns, and in the saved table).

    python tools/gpu/layer_bench.py [--arch m] [--batch 32] [--amp fp16]
                                    [--variants LANE_WASTE=3 MIN_PROGRAMS=0]
                                    [--tune [--save-configs configs.json]]
"""
import argparse
import contextlib
import importlib
import os
import time

import torch

from mux_backbones import MUXNet
from mux_backbones.cli import PRECISIONS, positive_int
from mux_backbones.layers import (ChannelMux, DepthwiseSeparable, FusedGroupConv, InvertedResidual,
                                  interleave_halves)
from mux_backbones.ops import launch_config
from mux_backbones.ops.launch_config import precompile, recorded_calls
from mux_backbones.ops.pointwise_conv import call_key
from mux_backbones.ops.pointwise_conv import compile_jobs as gemm_compile_jobs
from mux_backbones.ops.pointwise_conv import tune_pointwise_conv
from mux_backbones.utils.hooks import module_inputs
from mux_backbones.utils.timing import device_time_us

ops = importlib.import_module('mux_backbones.ops.group_conv')
# Compile workers: every core but one (the GPU machine: 16 cores; each worker holds a CUDA
# context of ~0.5 GB, nothing next to an H200's memory).
WORKERS = min(16, (os.cpu_count() or 1) - 1)
# The planner's constants a variant may set (each is part of the launch plans' cache key).
TUNABLES = ('LANE_WASTE', 'MIN_PROGRAMS', 'MIN_TILE_VALUES')


def variant(text: str):
    """``NAME=VALUE`` of a ``--variants`` column: one of :data:`TUNABLES`, an integer value."""
    name, _, value = text.partition('=')
    if name not in TUNABLES or not value.lstrip('-').isdigit():
        raise argparse.ArgumentTypeError(f'"{text}": expected NAME=INTEGER with NAME one of '
                                         f'{", ".join(TUNABLES)}')
    return name, int(value)


@contextlib.contextmanager
def planned_with(name: str, value: int):
    """The launch planner with ``group_conv.<name> = value`` inside the block."""
    old = getattr(ops, name)
    setattr(ops, name, value)
    try:
        yield
    finally:
        setattr(ops, name, old)


def spatial_inputs(model, x):
    """The input of every block's spatial conv, by block name."""
    blocks = {name: block for name, block in model.named_modules()
              if isinstance(block, (InvertedResidual, DepthwiseSeparable))}
    inputs = module_inputs(model, [b.depthwise_conv for b in blocks.values()], x)
    return {name: inputs[b.depthwise_conv] for name, b in blocks.items()
            if b.depthwise_conv in inputs}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--arch', default='m')
    parser.add_argument('--batch', type=positive_int, default=32)
    parser.add_argument('--shape', type=positive_int, default=224)
    parser.add_argument('--amp', default='fp16', choices=['fp16', 'bf16', 'fp32'])
    parser.add_argument('--device', default='cuda',
                        help='cuda; cpu only to check the tool itself (the kernels run there '
                        'under TRITON_INTERPRET=1, and device_time_us needs CUDA)')
    parser.add_argument('--variants', type=variant, nargs='*', default=[],
                        help='planner constants to re-time the fused kernel with, e.g. '
                        'LANE_WASTE=3 MIN_PROGRAMS=0 (one column each)')
    parser.add_argument('--tune', action='store_true',
                        help='time each layer\'s launch configs and keep the fastest (columns '
                        '"tuned us" and "config": tile_h x tile_w / warps / pipeline stages)')
    parser.add_argument('--save-configs', metavar='FILE',
                        help='with --tune: write the tuned launch configs (JSON) for '
                        'benchmark.py --launch-configs')
    args = parser.parse_args()
    if args.save_configs and not args.tune:
        parser.error('--save-configs needs --tune')
    dtype = PRECISIONS[args.amp]
    torch.manual_seed(0)
    stock = MUXNet(args.arch).to(args.device).eval()
    fused = MUXNet(args.arch).to(args.device).eval()
    fused.load_state_dict(stock.state_dict())
    for model, use in ((stock, False), (fused, True)):
        model.switch_to_deploy(channels_last=True, fused_ops=use).to(dtype)
    x = torch.randn(args.batch, 3, args.shape, args.shape, device=args.device,
                    dtype=dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    inputs = spatial_inputs(stock, x)
    blocks = dict(fused.named_modules())
    interleaving = {id(m.body) for m in fused.modules()
                    if isinstance(m, ChannelMux) and m.interleave}
    print(f'{args.arch} batch {args.batch} {args.amp} {args.shape}x{args.shape}: spatial conv '
          f'(+act, +SE pooling when fused) per call')
    print(f'{"block":<20}{"in (C,H,W)":>18}{"kernels":>18}{"cpg":>4}{"s":>3}{"stock us":>10}'
          f'{"fused us":>10}{"MiB":>8}{"TB/s":>7}' +
          ''.join(f'{f"{n[:7]}={v}":>14}' for n, v in args.variants) +
          (f'{"tuned us":>10}{"config":>12}' if args.tune else ''))
    total_stock = total_fused = total_tuned = 0.0
    totals = [0.0] * len(args.variants)
    se_rows, epilogues = [], []  # epilogues: (row, column, fn) of each GEMM timing to tune
    if args.tune:  # every layer's candidates compiled at once in worker processes
        jobs = [job for name, inp in inputs.items()
                if isinstance(blocks[name].depthwise_conv, FusedGroupConv)
                for job in blocks[name].depthwise_conv.compile_jobs(inp,
                                                                    blocks[name].pool_in_kernel)]
        start = time.perf_counter()
        done = precompile(jobs, WORKERS)
        print(f'precompiled {done} of {len(jobs)} launch configs in '
              f'{time.perf_counter() - start:.0f} s')
    with torch.no_grad():
        for name, inp in inputs.items():
            sb, fb = dict(stock.named_modules())[name], blocks[name]
            conv = fb.depthwise_conv
            if not isinstance(conv, FusedGroupConv):
                continue
            t_stock = device_time_us(lambda: sb.depthwise_act(sb.depthwise_norm(
                sb.depthwise_conv(inp))), x.device)
            t_fused = device_time_us(lambda: conv(inp, with_pool=fb.pool_in_kernel), x.device)
            others = []
            for name_value in args.variants:
                with planned_with(*name_value):
                    others.append(device_time_us(lambda: conv(inp, with_pool=fb.pool_in_kernel),
                                                 x.device))
            totals = [a + b for a, b in zip(totals, others)]
            tuned = ''
            if args.tune:  # last: every timing above ran the planner's own configs
                times = conv.tune(inp, with_pool=fb.pool_in_kernel)
                best = min(times, key=times.get) if times else None
                total_tuned += times[best] if best else t_fused
                label = f'{best.tile_h}x{best.tile_w}/{best.num_warps}/{best.num_stages}' \
                    if best else '-'
                if args.save_configs:  # after every layer: a run cut short keeps what it has
                    launch_config.save(args.save_configs)
                tuned = f'{times[best] if best else float("nan"):10.1f}{label:>12}'
            if fb.pool_in_kernel:
                y, sums = conv(inp, with_pool=True)
                y_stock = sb.depthwise_act(sb.depthwise_norm(sb.depthwise_conv(inp)))
                tail, *tail_us, tail_fn = tail_times(sb, fb, y_stock, y, sums,
                                                     id(fb) in interleaving)
                *expand_us, expand_fn = expand_times(fb, inp, id(fb) in interleaving)
                # the tuned columns (NaN until the GEMMs are tuned, after this loop)
                se_rows.append([name, tuple(y.shape[1:]), tail, *tail_us, float('nan'),
                                *expand_us, float('nan')])
                epilogues += [(len(se_rows) - 1, 6, tail_fn), (len(se_rows) - 1, 9, expand_fn)]
            out = conv(inp)
            moved = (inp.numel() + out.numel()) * inp.element_size() + \
                conv.weight.numel() * conv.weight.element_size()
            total_stock += t_stock
            total_fused += t_fused
            print(f'{name:<20}{str(tuple(inp.shape[1:])):>18}{str(conv.kernel_sizes):>18}'
                  f'{conv.channels_per_group:>4}{conv.stride:>3}{t_stock:10.1f}{t_fused:10.1f}'
                  f'{moved / 2**20:8.1f}{moved / t_fused / 1e6:7.2f}' +
                  ''.join(f'{t:14.1f}' for t in others) + tuned, flush=True)
    print(f'{"total":<20}{"":>43}{total_stock:10.1f}{total_fused:10.1f}{"":>15}' +
          ''.join(f'{t:14.1f}' for t in totals) +
          (f'{total_tuned:10.1f}' if args.tune else ''), flush=True)
    head = getattr(fused, 'conv_head', None)
    if getattr(head, 'epilogue_act', None):  # the head conv: a 1x1 + activation like an expand
        with torch.no_grad():
            hidden = module_inputs(fused, [head], x)[head]
            nan = float('nan')
            se_rows.append(['conv_head', tuple(hidden.shape[1:]), '-', nan, nan, nan, nan,
                            device_time_us(lambda: head.act(head.conv(hidden)), x.device),
                            device_time_us(lambda: head(hidden), x.device), nan])
        epilogues.append((len(se_rows) - 1, 9, lambda: head(hidden)))
    if args.tune:
        tune_epilogues(se_rows, epilogues, x.device, args.save_configs)
    if args.save_configs:
        print(f'{len(launch_config.entries())} tuned launch configs -> {args.save_configs}')
    widths = (11, 16, 13, 8, 15, 13, 8)
    print(f'\n{"block":<20}{"SE input (C,H,W)":>18}{"tail":>13}{"stock us":>11}'
          f'{"gate+passes us":>16}{"epilogue us":>13}{"tuned":>8}{"expand+act us":>15}'
          f'{"epilogue us":>13}{"tuned":>8}')
    for name, shape, tail, *times in se_rows:
        print(f'{name:<20}{str(shape):>18}{tail:>13}' +
              ''.join(f'{t:{w}.1f}' for t, w in zip(times, widths)))
    # column totals, skipping the NaN of blocks without the column
    totals = [sum(r[i] for r in se_rows if r[i] == r[i]) for i in range(3, 3 + len(widths))]
    print(f'{"total":<20}{"":>18}{"":>13}' +
          ''.join(f'{t:{w}.1f}' for t, w in zip(totals, widths)))


def _block_input(like, channels: int, interleave: bool):
    """A random channels-last map of ``like``'s batch and size, as a block receives its input:
    ``channels`` wide, or inside channel multiplexing twice that (the block gets the first half,
    the second is kept)."""
    n, _, h, w = like.shape
    x = torch.randn(n, 2 * channels if interleave else channels, h, w, device=like.device,
                    dtype=like.dtype)
    return x.contiguous(memory_format=torch.channels_last)


def tune_epilogues(se_rows, epilogues, device, save_configs=None) -> None:
    """Tune the launch configs of the epilogue GEMMs that the ``(row, column, fn)`` of
    ``epilogues`` call (every candidate compiled ahead in worker processes) and put the time
    of each ``fn`` with them into ``se_rows[row][column]``."""
    with torch.no_grad(), recorded_calls('pointwise_conv') as calls:
        for _, _, fn in epilogues:
            if fn is not None:
                fn()
    distinct = {call_key(*call): call for call in calls}
    start = time.perf_counter()
    jobs = [job for call in distinct.values() for job in gemm_compile_jobs(*call)]
    done = precompile(jobs, WORKERS)
    print(f'precompiled {done} of {len(jobs)} epilogue GEMM launch configs in '
          f'{time.perf_counter() - start:.0f} s', flush=True)
    for call in distinct.values():
        tune_pointwise_conv(*call)
        if save_configs:  # after every GEMM: a run cut short keeps what it has
            launch_config.save(save_configs)
    with torch.no_grad():
        for row, column, fn in epilogues:
            if fn is not None:
                se_rows[row][column] = device_time_us(fn, device)


def expand_times(block, hidden, interleave: bool):
    """``(cuBLAS + activation pass us, epilogue GEMM us, the GEMM call)`` of a fused block's
    expand conv (NaN and None without one) on an input like the block's (a channel slice of a
    map twice as wide inside channel multiplexing)."""
    expand = getattr(block, 'expand_conv', None)
    if not getattr(expand, 'epilogue_act', None):
        return float('nan'), float('nan'), None
    c = expand.conv.in_channels
    x = _block_input(hidden, c, interleave)[:, :c]

    def epilogue():
        return expand(x)

    return (device_time_us(lambda: expand.act(expand.conv(x)), x.device),
            device_time_us(epilogue, x.device), epilogue)


def tail_times(stock, block, y_stock, y, sums, interleave: bool):
    """``(tail, stock us, gate + passes us, epilogue us, the epilogue call)`` of a block's tail
    after its spatial conv: SE, project conv, residual add and (inside channel multiplexing)
    interleave -- the ``stock`` block's forms; the fused ``block``'s gate kernel then the stock
    passes (scale, cuBLAS 1x1, add, interleave); and the fused form (the gate kernel, then the
    GEMM that scales, adds and interleaves). The residual is a channel slice of a map twice as
    wide where the block interleaves (as channel multiplexing hands it over)."""
    c = block.out_channels
    wide = _block_input(y, c, interleave)
    residual = wide[:, :c] if block.has_residual else None
    kept = wide[:, c:] if interleave else None
    project = block.project_conv.conv

    def finish(out):
        out = out + residual if residual is not None else out
        return interleave_halves(out, kept) if kept is not None else out

    def gate_then_passes():
        gate = block.se.pooled_gate(sums, y.shape[2] * y.shape[3])
        return finish(project(y * gate.to(y.dtype)[:, :, None, None]))

    def epilogue():
        return block.se.gated_project(y, sums, project, residual, kept)

    return ('+se' + '+res' * block.has_residual + '+mux' * interleave,
            device_time_us(lambda: finish(stock.project_conv(stock.se(y_stock))), y.device),
            device_time_us(gate_then_passes, y.device), device_time_us(epilogue, y.device),
            epilogue)


if __name__ == '__main__':
    main()
