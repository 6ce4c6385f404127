"""Tune the fused kernels for a model on its device: launch configs, and which layers use them.

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

:func:`choose_training_kernels` is the training counterpart of ``switch_to_deploy(model,
fused_ops='auto')``: per spatial conv of a ``fused_ops=True`` model it times forward + backward
on the kernel, on the stock conv (cuDNN, oneDNN) and on the stock forward with the kernel's
gradients, with the input the layer gets, and keeps the fastest -- a kernel that wins on a
MixConv or a 2-channels-per-group conv may lose to the library's dense depth-wise kernels on a
plain one (the H200's SSDLite step: 1.13x slower with every spatial conv on the kernels, session
4), a library's depth-wise backward can be far slower than its forward (oneDNN's for kernels
above 3x3 or dilated: 2.5-10x the C++ kernels' gradients, session 16), and which layers win
depends on the device and batch.
"""
import contextlib
import copy
import os
from typing import Dict, Optional

import torch
from mmengine.logging import print_log
from torch import nn

from .layers import KERNEL_GRADIENTS, GroupConv2d, MixedConv2d
from .layers.block_launches import project_gate
from .ops.group_conv import (compile_jobs, tune_forward, tune_input_grad_s2, tune_weight_grad,
                             tuning_key)
from .ops.launch_config import dry_run, precompile, recorded_calls
from .ops.pointwise_conv import _planned as plan_pointwise
from .ops.pointwise_conv import call_key
from .ops.pointwise_conv import compile_jobs as gemm_compile_jobs
from .ops.pointwise_conv import tune_pointwise_conv
from .utils.hooks import module_inputs
from .utils.timing import device_time_us


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


TUNED_KERNELS = ('all', 'gemms', 'convs')  # what tune_kernels(kernels=...) may tune


@torch.no_grad()
def tune_kernels(model: nn.Module, *inputs, backward: bool = False, time_us=None,
                 processes: Optional[int] = None, kernels: str = 'all') -> Dict[str, dict]:
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
        kernels (str): Which calls: ``'all'``, ``'gemms'`` (the 1x1 convs' GEMMs alone, e.g.
            new GEMM candidates over a saved table's spatial convs) or ``'convs'``.

    Returns:
        dict: Per call signature (a readable label), per kernel ('forward', 'weight_grad',
        'input_grad_s2' of a spatial conv, 'pointwise_conv' of a GEMM), microseconds per launch
        config (the planner's own first; the fastest is kept).
    """
    distinct, distinct_gemms = _kernel_calls(model, *inputs, kernels=kernels)
    _precompile(distinct, distinct_gemms, backward, False, processes)
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
    for call, _ in distinct_gemms.values():
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


@torch.no_grad()
def precompile_kernels(model: nn.Module, *inputs, backward: bool = False,
                       processes: Optional[int] = None) -> int:
    """Compile every fused kernel ``model(*inputs)`` launches, with the launch configs it
    launches now (tuned, else the planners'), in worker processes at once, instead of one after
    another as the first forward (and backward) reaches each -- 1-15 s each on an sm_90;
    Triton's disk cache then serves them. Arguments as :func:`tune_kernels`'.

    Returns:
        int: How many compile jobs ran (in this process where their kernels were cached, else
        in workers; 0 where nothing compiles: the interpreter, fewer than two processes or
        jobs).
    """
    distinct, distinct_gemms = _kernel_calls(model, *inputs)
    return _precompile(distinct, distinct_gemms, backward, True, processes)


@torch.no_grad()
def compile_jobs_of(model: nn.Module, *inputs, backward: bool = False, kernels: str = 'all',
                    current_only: bool = True) -> list:
    """The compile jobs :func:`precompile_kernels` (``current_only``) or :func:`tune_kernels`
    (every candidate) hands its worker processes for ``model(*inputs)``: ``(function,
    *arguments)``, each launching one kernel config once on zeros. For a tool that runs them
    itself, e.g. compiling them for a GPU without one (``tools/gpu/prebuild_triton_cache.py``).
    Arguments as :func:`tune_kernels`'."""
    distinct, distinct_gemms = _kernel_calls(model, *inputs, kernels=kernels)
    return _jobs(distinct, distinct_gemms, backward, current_only)


def _kernel_calls(model: nn.Module, *inputs, kernels: str = 'all'):
    """The distinct spatial-conv and GEMM calls of ``model(*inputs)``, from a dry run (the ops
    record their calls and compile nothing); a GEMM reading an SE gate as its scale is kept
    with the gate op's call (what a deployed block's launches may have the GEMM compute).
    ``kernels``: as :func:`tune_kernels`' (the other kind's calls left out)."""
    if kernels not in TUNED_KERNELS:
        raise ValueError(f'kernels must be one of {TUNED_KERNELS}, got {kernels!r}')
    with torch.no_grad(), _buffers_kept(model), recorded_calls('group_conv') as calls, \
            recorded_calls('pointwise_conv') as gemms, recorded_calls('se_gate') as gates, \
            dry_run():
        model(*inputs)
    distinct = {}
    for call in calls:
        x, _, _, splits, kernel_sizes, dilations, stride, cpg = call[:8]
        distinct.setdefault(tuning_key(x.shape, x.dtype, x.device, splits, kernel_sizes,
                                       dilations, stride, cpg), call)
    # The GEMMs run only in inference forms (their gradient is cuBLAS's): forward only.
    gate_of = {id(call[-1]): call[:-1] for call in gates}
    distinct_gemms = {}
    for call in gemms:
        scale = call[6]
        distinct_gemms.setdefault(call_key(*call),
                                  (call, None if scale is None else gate_of.get(id(scale))))
    if kernels == 'gemms':
        distinct = {}
    elif kernels == 'convs':
        distinct_gemms = {}
    return distinct, distinct_gemms


def _gemm_jobs(call, se_call, current_only: bool) -> list:
    """The GEMM call's compile jobs; for a project GEMM whose block's launches compute the SE
    gate (``se_call``: the gate op's arguments), the launch that does so too."""
    jobs = gemm_compile_jobs(*call, current_only=current_only)
    if se_call is None:
        return jobs
    sums, inv_pixels, w_reduce, b_reduce, w_expand, b_expand, act = se_call
    plan = plan_pointwise(*call)[0]
    gate = project_gate(plan, plan.config, tuple(sums.shape), w_reduce.shape[0], inv_pixels, act)
    if gate is not None and sums.dim() == 3:
        jobs += gemm_compile_jobs(*call, current_only=True, gate=gate, se_tensors=(
            sums.float().contiguous(), w_reduce.contiguous(), b_reduce.contiguous(),
            w_expand.contiguous(), b_expand.contiguous()))
    return jobs


def _precompile(convs: dict, gemms: dict, backward: bool, current_only: bool,
                processes: Optional[int]) -> int:
    """Every candidate launch of these calls (or only the config each launches now, see
    :func:`precompile_kernels`), compiled in worker processes."""
    if processes is None:
        processes = min(16, (os.cpu_count() or 1) - 1)
    return precompile(_jobs(convs, gemms, backward, current_only), processes)


def _jobs(convs: dict, gemms: dict, backward: bool, current_only: bool) -> list:
    jobs = [job for call in convs.values()
            for job in compile_jobs(*call, backward=backward, current_only=current_only)]
    return jobs + [job for call, se_call in gemms.values()
                   for job in _gemm_jobs(call, se_call, current_only)]


@contextlib.contextmanager
def _buffers_kept(model: nn.Module):
    """Restore the model's buffers afterwards: a tuning run's random activations must not reach
    a training model's BN statistics."""
    buffers = [(b, b.clone()) for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)


def kernel_layers(model: nn.Module):
    """``(name, layer)`` of the model's spatial convs set to run on the kernels in training
    (``fused_ops``: group convs, MixConvs)."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, (GroupConv2d, MixedConv2d)) and m.fused_ops]


def choose_training_kernels(model: nn.Module, *inputs,
                            time_us=None) -> Dict[str, Dict[object, float]]:
    """Per spatial conv of a ``fused_ops=True`` model, keep the fastest training form on the
    input the layer gets from ``model(*inputs)``: the stock conv, the kernels, or -- where both
    passes would run on kernels and gradients are asked for -- the stock forward with the
    kernels' gradients (``'gradients'``, see :data:`mux_backbones.layers.TRAINING_FORMS`), each
    timed forward + backward.

    Sets each layer's ``fused_ops`` (MixConvs, 2-channels-per-group convs, depth-wise convs and
    spatially multiplexed scales alike); the state dict is unchanged. Call it before training
    (and before ``torch.compile``), on a batch of the size, dtype and memory format training
    uses, under the ``torch.autocast`` the training step uses (the dtype the convs then get).
    ``ChooseTrainingKernelsHook`` does that in an mmengine run.

    Args:
        model (nn.Module): A MUXNet (or a model holding one) built with ``fused_ops=True``, in
            train mode, on its device.
        *inputs: What ``model`` is called with.
        time_us (callable, optional): ``time_us(fn) -> microseconds per fn()``; default:
            :func:`mux_backbones.utils.timing.device_time_us` (on CUDA, CUDA-graph replays).

    Returns:
        dict: Per layer name timed, microseconds of its forward + backward per training form
        timed (``False``: stock, ``True``: kernels, ``'gradients'``), stock first.

    Raises:
        RuntimeError: Where a timing fails (e.g. a CUDA-graph capture the device refuses); the
            layers' settings are then unchanged.
    """
    layers = {m: name for name, m in kernel_layers(model)}
    with _buffers_kept(model), torch.enable_grad():
        # (detached at once: the recorded inputs would keep the whole forward's graph alive)
        received = {m: x.detach().requires_grad_(x.requires_grad)
                    for m, x in module_inputs(model, layers, *inputs).items()}
    times = {}
    for layer, name in layers.items():
        x = received.get(layer)
        if x is None:  # not on this input's path
            continue
        with torch.enable_grad():  # (as training calls it: on the CPU some kernels are backward's)
            forward, gradients = layer.kernel_passes(x)
        if forward or gradients:
            # the stock forward with kernel gradients differs from the kernels' form only where
            # the kernels also take the forward
            forms = (False, True) + ((KERNEL_GRADIENTS, ) if forward and gradients else ())
            times[name] = _forward_backward_us(layer, x, forms, time_us)
    # Set only once all are timed: a timing that fails leaves the model as it was.
    for layer, name in layers.items():
        if name in times:
            layer.fused_ops = min(times[name], key=times[name].get)
    if times:
        chosen = [min(t, key=t.get) for t in times.values()]
        print_log(f'choose_training_kernels: of {len(times)} spatial convs, {chosen.count(True)} '
                  f'keep the kernels, {chosen.count(KERNEL_GRADIENTS)} the kernels\' gradients '
                  f'alone, {chosen.count(False)} the stock conv; their forward + backward: stock '
                  f'{sum(t[False] for t in times.values()):.0f} us, all on kernels '
                  f'{sum(t[True] for t in times.values()):.0f} us, as chosen '
                  f'{sum(min(t.values()) for t in times.values()):.0f} us', logger='current')
    return times


def _forward_backward_us(layer: nn.Module, x: torch.Tensor, forms,
                         time_us) -> Dict[object, float]:
    """Microseconds of ``layer``'s forward and backward on ``x`` per training form in ``forms``
    (values of its ``fused_ops``): on a copy in ``x``'s dtype with autocast off (autocast would
    cast the weights in every call, and its cast cache does not survive a CUDA graph),
    gradients for ``x`` where training computes it and for the trainable weights."""
    form = copy.deepcopy(layer).to(x.dtype)
    targets = ([x] if x.requires_grad else []) + [p for p in form.parameters() if p.requires_grad]
    with torch.no_grad():
        grad = torch.randn_like(form(x))

    def step():
        with torch.enable_grad():
            y = form(x)
            return torch.autograd.grad(y, targets, grad) if targets else y

    if time_us is None:
        def time_us(fn):
            return device_time_us(fn, x.device)
    result = {}
    with torch.autocast(x.device.type, enabled=False):
        for fused in forms:
            form.fused_ops = fused
            result[fused] = time_us(step)
    return result
