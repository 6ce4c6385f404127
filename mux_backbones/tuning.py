"""Tune the fused kernels' launch configs for a model, on the device it runs on.

The fused spatial-conv kernels (:mod:`mux_backbones.ops.group_conv`) and the epilogue GEMMs of
the 1x1 convs (:mod:`mux_backbones.ops.pointwise_conv`) launch with a tile, warp count and
pipeline depth their planners derive from fixed rules; which candidate is fastest depends on the
GPU, the layer and the batch. :func:`tune_kernels` runs the model once without launching a
kernel (a dry run), records every kernel call (shapes, dtype, groups, kernel sizes, epilogue),
compiles all candidates ahead in worker processes, then times them call signature by call
signature and keeps the fastest in the process-wide table of
:mod:`mux_backbones.ops.launch_config` -- the conv's forward kernel (which also computes
stride-1 input gradients), for training its weight-gradient and stride-2 input-gradient
kernels, and the GEMMs. ``launch_config.save`` / ``load`` keep the table for the next run.
"""
import os
from typing import Dict, Optional

import torch
from mmengine.logging import print_log
from torch import nn

from .ops.group_conv import (compile_jobs, tune_forward, tune_input_grad_s2, tune_weight_grad,
                             tuning_key)
from .ops.launch_config import dry_run, precompile, recorded_calls
from .ops.pointwise_conv import call_key
from .ops.pointwise_conv import compile_jobs as gemm_compile_jobs
from .ops.pointwise_conv import tune_pointwise_conv


def _label(call) -> str:
    x, _, _, splits, kernel_sizes, dilations, stride, cpg = call[:8]
    dil = f' d{dilations}' if any(d != 1 for d in dilations) else ''
    return (f'{tuple(x.shape)} {str(x.dtype).replace("torch.", "")} k{kernel_sizes}{dil} '
            f's{stride} cpg{cpg} splits{splits}')


def _gemm_label(call) -> str:
    rows, weight, bias, residual, kept, act, scale = call
    epilogue = ('+bias' * (bias is not None) + f'+{act}' * (act != 'none') +
                '+res' * (residual is not None) + '+mux' * (kept is not None) +
                '+scale' * (scale is not None))
    return (f'1x1 {tuple(rows.shape)}->{weight.shape[1]} '
            f'{str(rows.dtype).replace("torch.", "")} {epilogue or "plain"}')


@torch.no_grad()
def tune_kernels(model: nn.Module, *inputs, backward: bool = False, time_us=None,
                 processes: Optional[int] = None) -> Dict[str, dict]:
    """Tune the launch configs of every fused-kernel call ``model(*inputs)`` makes.

    The choices hold for every call with the same signature (shape, dtype, device) from then on,
    process-wide. Tune (or load a saved table) before compiling or CUDA-graph-capturing the
    model: a tuned tile changes the shape of the squeeze-excite's partial sums.

    Args:
        model (nn.Module): A MUXNet (or a model holding one) with ``fused_ops=True`` or deployed
            with fused kernels, in the dtype and memory format it will run with (for training:
            the input dtype autocast gives the kernels, e.g. run this under ``torch.autocast``).
        *inputs: What ``model`` is called with (batch, size, dtype, device as it will run).
        backward (bool): Also tune the gradient kernels (training): weight gradients, and
            the input gradients of stride-2 calls (stride 1 runs the forward kernel).
        time_us (callable, optional): ``time_us(fn) -> microseconds per fn()``; default:
            CUDA-graph replays.
        processes (int, optional): Worker processes compiling the candidates ahead of timing;
            default: up to 16, one core left (each holds a CUDA context of ~0.5 GB).

    Returns:
        dict: Per call signature (a readable label), per kernel ('forward', 'weight_grad',
        'input_grad_s2' of a spatial conv, 'pointwise_conv' of a GEMM), microseconds per launch
        config (the planner's own first; the fastest is kept).
    """
    # A dry run: the calls without compiling each planned kernel first, one after another. Its
    # random activations must not reach a training model's BN statistics: buffers restored.
    buffers = [(b, b.clone()) for b in model.buffers()]
    try:
        with recorded_calls('group_conv') as calls, recorded_calls('pointwise_conv') as gemms, \
                dry_run():
            model(*inputs)
    finally:
        for buffer, saved in buffers:
            buffer.copy_(saved)
    distinct = {}
    for call in calls:
        x, _, _, splits, kernel_sizes, dilations, stride, cpg = call[:8]
        distinct.setdefault(tuning_key(x.shape, x.dtype, x.device, splits, kernel_sizes,
                                       dilations, stride, cpg), call)
    # The GEMMs run only in inference forms (their gradient is cuBLAS's): forward only.
    distinct_gemms = {}
    for call in gemms:
        distinct_gemms.setdefault(call_key(*call), call)
    if processes is None:
        processes = min(16, (os.cpu_count() or 1) - 1)
    precompile([job for call in distinct.values()
                for job in compile_jobs(*call, backward=backward)] +
               [job for call in distinct_gemms.values() for job in gemm_compile_jobs(*call)],
               processes)
    results = {}
    for call in distinct.values():
        times = {'forward': tune_forward(*call, time_us=time_us)}
        if backward:
            x, weight, _, splits, kernel_sizes, dilations, stride, cpg = call[:8]
            times['weight_grad'] = tune_weight_grad(x, weight, splits, kernel_sizes, dilations,
                                                    stride, cpg, time_us=time_us)
            if stride == 2:
                times['input_grad_s2'] = tune_input_grad_s2(x, weight, splits, kernel_sizes,
                                                            dilations, cpg, time_us=time_us)
        times = {kernel: t for kernel, t in times.items() if t}
        if times:
            results[_label(call)] = times
    for call in distinct_gemms.values():
        times = tune_pointwise_conv(*call, time_us=time_us)
        if times:
            results[_gemm_label(call)] = {'pointwise_conv': times}
    for kernel in ('forward', 'input_grad_s2', 'weight_grad', 'pointwise_conv'):
        tuned = [r[kernel] for r in results.values() if kernel in r]
        if tuned:
            planned = sum(next(iter(t.values())) for t in tuned)
            best = sum(min(t.values()) for t in tuned)
            changed = sum(min(t, key=t.get) != next(iter(t)) for t in tuned)
            print_log(f'tune_kernels: {kernel}: {changed} of {len(tuned)} call signatures take '
                      f'another launch config; their time {planned:.0f} -> {best:.0f} us',
                      logger='current')
    return results
