"""A folded BatchNorm, its activation and the squeeze-excite's channel sums in one pass.

Spatial multiplexing (MUXConv paper Sec. 3.1) folds each scale's group-wise conv back into one
map, which the block then normalises (BN), activates and -- with a squeeze-excite -- pools. A
plain depth-wise conv takes its BN into its weights; this one cannot wholly: a channel-to-space
scale's output channel ``4k + 2i + j`` is phase ``(i, j)`` of its conv's channel ``k``, so one
conv channel meets four BN channels. The deploy form
(:meth:`~mux_backbones.layers.SpatialMuxConv.fold_norm`) keeps the BN as a per-channel scale and
shift and hands the folded-back map to this op: ``act(x * scale + shift)`` and, on request, the
per-channel sums of the result -- one pass over the map instead of three (BN, activation, sum).

On a CPU (fp32, outside Triton's interpreter) a C++ kernel (``norm_act_cpu.cpp``) computes it;
the fused block's one-call form (``fused_block_cpu.cpp``) calls the same kernel, so both give the
same bits. Elsewhere -- CUDA, other dtypes -- the stock computation (:func:`reference_norm_act`:
a multiply-add, the activation and a sum) is the op's path and its tests' reference; the deploy
forms use the op only on the CPU kernels (on CUDA the BN and activation modules stay, which a
compiler fuses with their neighbours, as it cannot with a custom op). Gradients go through the
reference too (the op is an inference path: training runs the BN and activation modules).
"""
from typing import Tuple

import torch
from torch import Tensor

from . import launch_config
from ._cpu_kernels import cpu_kernels, cpu_kernels_take
from ._dispatch import call
from .group_conv import _ACT_CODE, _activate_torch, check_act


def check_args(x: Tensor, scale: Tensor, shift: Tensor, act: str) -> None:
    """ValueError naming the first argument of :func:`norm_act` that does not fit."""
    if x.dim() != 4:
        raise ValueError(f'norm_act expects an (N, C, H, W) map, got shape {tuple(x.shape)}')
    channels = x.shape[1]
    if tuple(scale.shape) != (channels, ) or tuple(shift.shape) != (channels, ):
        raise ValueError(f'norm_act: scale and shift must be ({channels},), got '
                         f'{tuple(scale.shape)} and {tuple(shift.shape)}')
    check_act(act, 'norm_act')


def reference_norm_act(x: Tensor, scale: Tensor, shift: Tensor, act: str,
                       with_sums: bool) -> Tuple[Tensor, Tensor]:
    """The op with stock PyTorch (the fallback and the tests' reference)."""
    per_channel = (1, -1, 1, 1)
    y = _activate_torch(torch.addcmul(shift.to(x.dtype).view(per_channel), x,
                                      scale.to(x.dtype).view(per_channel)), act)
    return y, _sums_of(y, with_sums)


def _sums_of(y: Tensor, with_sums: bool) -> Tensor:
    if with_sums:
        return y.sum((2, 3), dtype=torch.float32)
    return y.new_empty((0, ), dtype=torch.float32)


def _kernel_takes(x: Tensor, scale: Tensor, shift: Tensor) -> bool:
    return cpu_kernels_take(x, scale, shift) and x.is_contiguous(memory_format=torch.channels_last)


@torch.library.custom_op('mux_backbones::norm_act', mutates_args=())
def _norm_act(x: Tensor, scale: Tensor, shift: Tensor, act: str,
              with_sums: bool) -> Tuple[Tensor, Tensor]:
    if launch_config.dry_running():
        return launch_config.dry_outputs(_norm_act_fake(x, scale, shift, act, with_sums))
    if _kernel_takes(x, scale, shift):
        y, sums = cpu_kernels().norm_act_forward(x, scale.contiguous(), shift.contiguous(),
                                                 _ACT_CODE[act], with_sums)
        return y, sums
    return reference_norm_act(x, scale, shift, act, with_sums)


@_norm_act.register_fake
def _norm_act_fake(x, scale, shift, act, with_sums):
    sums_shape = (x.shape[0], x.shape[1]) if with_sums else (0, )
    return torch.empty_like(x), x.new_empty(sums_shape, dtype=torch.float32)


def _setup_context(ctx, inputs, output):
    x, scale, shift, act, with_sums = inputs
    ctx.act, ctx.with_sums = act, with_sums
    ctx.save_for_backward(x, scale, shift)


def _backward(ctx, grad_y, grad_sums):
    # The op is an inference path; its gradient is the reference's (stock autograd, recomputed).
    inputs = [t.detach().requires_grad_(needed)
              for t, needed in zip(ctx.saved_tensors, ctx.needs_input_grad)]
    wanted = [t for t in inputs if t.requires_grad]
    if not wanted:
        return None, None, None, None, None
    with torch.enable_grad():
        y, sums = reference_norm_act(*inputs, ctx.act, ctx.with_sums)
        # (an output's gradient is None where the eager path left it unmaterialised)
        pairs = [(y, grad_y), (sums, grad_sums if ctx.with_sums else None)]
        outputs, grads = zip(*[(out, g) for out, g in pairs if g is not None])
        found = iter(torch.autograd.grad(outputs, wanted, grads, allow_unused=True))
    g = [next(found) if t.requires_grad else None for t in inputs]
    return g[0], g[1], g[2], None, None


_norm_act.register_autograd(_backward, setup_context=_setup_context)


def norm_act(x: Tensor, scale: Tensor, shift: Tensor, act: str = 'none',
             with_sums: bool = False) -> Tuple[Tensor, Tensor]:
    """``act(x * scale + shift)`` per channel, and the per-channel sums of the result.

    Args:
        x (Tensor): (N, C, H, W) map (channels-last for the CPU kernel).
        scale (Tensor): (C, ) per-channel factor, e.g. a BN's ``weight / sqrt(var + eps)``.
        shift (Tensor): (C, ) per-channel offset, e.g. ``bias - mean * scale``.
        act (str): 'none', 'relu', 'silu' or 'relu6'. Default: 'none'.
        with_sums (bool): Also return the (N, C) fp32 sums of the result over its pixels (what
            a squeeze-excite pools; :meth:`SqueezeExcite.pooled_gate` takes them).
            Default: False.

    Returns:
        tuple[Tensor, Tensor]: The result, in ``x``'s dtype and shape, and its sums (an empty
        tensor without ``with_sums``).
    """
    check_args(x, scale, shift, act)
    return call(_norm_act, x, scale, shift, act, with_sums)
