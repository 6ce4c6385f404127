"""Short GPU probe of the fused kernels in CUDA graphs (fits the last minutes of a lease).

Step by step, synchronising after each so a fault names its step: for batch 128 then 32 (fp16),
MobileNetV2 and MUXNet-m on the stock path, with the fused kernels and per block the faster
(``fused_ops='auto'``), each in deploy mode
(channels-last, BN folded, half weights) captured in a CUDA graph, then timed by CUDA events
over replays; in between, the per-kernel profile of fused MUXNet-m at batch 32 (no graph) with
the kernels' achieved bandwidth. ``--gate-policies auto 0`` captures fused MUXNet-m once per
policy of its blocks' project GEMMs computing the SE gate themselves
(``block_launches.GATE_IN_GEMM``: where they have few programs, never), to time that choice.

    python tools/gpu/graph_probe.py [--batches 128 32] [--reps 50] [--gate-policies auto 0]
                                    [--no-profile]
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..',
                                'analysis_tools'))
from benchmark import _prepare, parse_args, profile_models  # noqa: E402

from mux_backbones.cli import positive_int  # noqa: E402
from mux_backbones.layers import block_launches  # noqa: E402


def replay_ms(fn, x, reps):
    for _ in range(5):
        fn(x)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn(x)
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--batches', type=positive_int, nargs='+', default=[128, 32])
    parser.add_argument('--reps', type=positive_int, default=50)
    parser.add_argument('--amp', default='fp16', choices=['fp16', 'bf16', 'fp32'])
    parser.add_argument('--gate-policies', nargs='+', default=[block_launches.GATE_IN_GEMM],
                        choices=['auto', '0', '1'],
                        help='fused MUXNet-m captured once per SE-gate-in-GEMM policy')
    parser.add_argument('--no-profile', action='store_true',
                        help='skip the per-kernel profile after the first batch')
    args = parser.parse_args()
    device = torch.device('cuda')
    # the benchmark's own options (every one its helpers read), for its cases and profile
    opts = parse_args(['--shape', '224', '--warmup', '3', '--modes', 'deploy', '--models',
                       'muxnet-m', '--profile', f'{args.amp}:32'])
    cases = [('mobilenetv2', 'graph', None), ('muxnet-m', 'graph-stock', None)] + \
        [('muxnet-m', 'graph', policy) for policy in args.gate_policies] + \
        [('muxnet-m', 'graph-auto', None)]
    default_policy = block_launches.GATE_IN_GEMM
    for i, batch in enumerate(args.batches):
        times = {}
        for name, mode, policy in cases:
            label = mode if policy is None else f'{mode}[gate={policy}]'
            print(f'[b{batch}] {name} {label}: capturing', flush=True)
            block_launches.GATE_IN_GEMM = policy or default_policy
            try:
                model, x = _prepare(name, mode, batch, opts, device, args.amp)
            finally:
                block_launches.GATE_IN_GEMM = default_policy
            torch.cuda.synchronize()
            times[(name, label)] = replay_ms(model, x, args.reps)
            print(f'[b{batch}] {name} {label}: {times[(name, label)]:.3f} ms', flush=True)
            del model
        base = times[('mobilenetv2', 'graph')]
        for (name, label), t in times.items():
            print(f'RESULT {args.amp} batch {batch} {name:<12} {label:<16} {t:8.3f} ms '
                  f'{t / base:5.2f}x MobileNetV2', flush=True)
        if i == 0 and not args.no_profile:
            profile_models(opts, device)


if __name__ == '__main__':
    main()
