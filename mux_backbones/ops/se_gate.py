"""Squeeze-excite gate in one launch: means, reduce, act, expand, sigmoid.

MUXNet puts a squeeze-excite after the spatial conv of most blocks (paper Sec. 4, the official
blocks' ``se``). On the deploy path the pooling is already the fused spatial conv's epilogue
(:mod:`.group_conv`, ``with_pool``), which leaves the gate: two tiny matrix-vector products, an
activation and a sigmoid -- four or five launches of a few microseconds each, per block, plus the
product that applies the gate. This op computes the whole gate in one kernel, so the gate costs
one launch instead of six; the deploy blocks hand it to the following 1x1 conv, which applies it
as its GEMM loads the map (:mod:`.pointwise_conv`'s ``scale``). Its two steps (:func:`se_hidden`,
:func:`se_gate_values`) are also the GEMM's where that computes the gate itself (``SE_GATE``).

On a CPU (fp32, outside Triton's interpreter) a C++ kernel (``se_gate_cpu.cpp``) computes the
gate in one call. The stock PyTorch computation (:func:`reference_se_gate`) is the fallback and
the tests' reference; gradients go through it too (the op is an inference path: training runs
the SE's own modules), so the op stays differentiable.

The SE's training form -- pooling, gate and product on a map, and their gradients, as one
autograd node -- is :mod:`.gated_map`; its Triton forward computes the gate with this kernel.
"""
import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from . import launch_config
from ._cpu_kernels import cpu_kernels, cpu_kernels_take
from ._dispatch import call
from ._launch import KernelLaunch
from ._triton import HAS_TRITON, can_use_triton, next_power_of_2, tl, triton
from .group_conv import _ACT_CODE, _activate_torch, check_act

if HAS_TRITON:
    from .group_conv import _activate

BLOCK_C = 32  # gated channels per program


def check_args(sums: Tensor, w_reduce: Tensor, b_reduce: Tensor, w_expand: Tensor,
               b_expand: Tensor, act: str) -> None:
    """ValueError naming the first argument of :func:`se_gate` that does not fit."""
    if sums.dim() not in (2, 3):
        raise ValueError(f'se_gate expects (N, C) channel sums or (N, T, C) partial sums, got '
                         f'shape {tuple(sums.shape)}')
    channels = sums.shape[-1]
    if w_reduce.dim() != 2 or w_reduce.shape[1] != channels:
        raise ValueError(f'se_gate: reduce weight must be (S, {channels}), got '
                         f'{tuple(w_reduce.shape)}')
    squeeze = w_reduce.shape[0]
    if tuple(w_expand.shape) != (channels, squeeze):
        raise ValueError(f'se_gate: expand weight must be ({channels}, {squeeze}), got '
                         f'{tuple(w_expand.shape)}')
    if tuple(b_reduce.shape) != (squeeze, ) or tuple(b_expand.shape) != (channels, ):
        raise ValueError(f'se_gate: biases must be ({squeeze},) and ({channels},), got '
                         f'{tuple(b_reduce.shape)} and {tuple(b_expand.shape)}')
    check_act(act, 'se_gate')


def reference_se_gate(sums: Tensor, inv_pixels: float, w_reduce: Tensor, b_reduce: Tensor,
                      w_expand: Tensor, b_expand: Tensor, act: str) -> Tensor:
    """The op with stock PyTorch (the fallback and the tests' reference), computed in fp32."""
    mean = (sums.float() if sums.dim() == 2 else sums.float().sum(1)) * inv_pixels
    hidden = _activate_torch(F.linear(mean, w_reduce.float(), b_reduce.float()), act)
    return torch.sigmoid(F.linear(hidden, w_expand.float(), b_expand.float())).to(w_expand.dtype)


if HAS_TRITON:

    @triton.jit
    def se_hidden(sums_ptr, w1_ptr, b1_ptr, n, T, C, S, inv_pixels, ACT: tl.constexpr,
                  BLOCK_S: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_T: tl.constexpr):
        """Sample ``n``'s hidden vector ``act(w1 @ mean + b1)`` (zero past ``S``) from its
        ``(T, C)`` partial channel sums: the part of the gate every gated channel needs."""
        offs_s = tl.arange(0, BLOCK_S)
        mask_s = offs_s < S
        hidden = tl.zeros((BLOCK_S, ), dtype=tl.float32)
        for k0 in range(0, C, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            mask_k = offs_k < C
            total = tl.zeros((BLOCK_K, ), dtype=tl.float32)
            # The partial sums of the map's tiles, BLOCK_T tiles per load: small launches cut
            # their maps into many tiles (group_conv.MIN_PROGRAMS), one load each was a chain.
            for t0 in range(0, T, BLOCK_T):
                offs_t = t0 + tl.arange(0, BLOCK_T)
                parts = tl.load(sums_ptr + (n * T + offs_t[:, None]) * C + offs_k[None, :],
                                mask=(offs_t < T)[:, None] & mask_k[None, :], other=0.0)
                total += tl.sum(parts, axis=0)
            w1 = tl.load(w1_ptr + offs_s[:, None] * C + offs_k[None, :],
                         mask=mask_s[:, None] & mask_k[None, :], other=0.0).to(tl.float32)
            hidden += tl.sum(w1 * (total * inv_pixels)[None, :], axis=1)
        hidden += tl.load(b1_ptr + offs_s, mask=mask_s, other=0.0).to(tl.float32)
        return tl.where(mask_s, _activate(hidden, ACT), 0.0)

    @triton.jit
    def se_gate_values(w2_ptr, b2_ptr, hidden, offs_c, mask_c, S, BLOCK_S: tl.constexpr):
        """The gate of channels ``offs_c`` from the hidden vector, rounded to the expand
        weight's dtype as the op returns it (so a kernel applying it computes as the op's
        output would)."""
        offs_s = tl.arange(0, BLOCK_S)
        w2 = tl.load(w2_ptr + offs_c[:, None] * S + offs_s[None, :],
                     mask=mask_c[:, None] & (offs_s < S)[None, :], other=0.0).to(tl.float32)
        logit = tl.sum(w2 * hidden[None, :], axis=1)
        logit += tl.load(b2_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)
        return tl.sigmoid(logit).to(w2_ptr.dtype.element_ty)

    @triton.jit
    def _se_gate_kernel(sums_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, out_ptr, T, C, S, inv_pixels,
                        ACT: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_K: tl.constexpr,
                        BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
        """One sample x BLOCK_C gated channels. Each program recomputes the (tiny) hidden vector
        of its sample, so no second launch or cross-program sync is needed."""
        n = tl.program_id(0)
        hidden = se_hidden(sums_ptr, w1_ptr, b1_ptr, n, T, C, S, inv_pixels, ACT, BLOCK_S,
                           BLOCK_K, BLOCK_T)
        offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        mask_c = offs_c < C
        tl.store(out_ptr + n * C + offs_c,
                 se_gate_values(w2_ptr, b2_ptr, hidden, offs_c, mask_c, S, BLOCK_S).to(
                     out_ptr.dtype.element_ty), mask=mask_c)


def hidden_blocks(sums_shape: tuple, squeeze: int) -> dict:
    """The hidden vector's compile-time blocks (:func:`se_hidden`) for (N, C) or (N, T, C)
    sums and ``squeeze`` hidden channels: ``BLOCK_S``, ``BLOCK_K``, ``BLOCK_T``."""
    block_s = next_power_of_2(squeeze)
    block_k = max(16, min(128, 4096 // block_s))
    tiles = sums_shape[1] if len(sums_shape) == 3 else 1
    return dict(BLOCK_S=block_s, BLOCK_K=block_k,
                BLOCK_T=min(next_power_of_2(tiles), max(1, 2048 // block_k)))


@functools.lru_cache(maxsize=1024)
def gate_launch(sums_shape: tuple, squeeze: int, inv_pixels: float, act: str) -> KernelLaunch:
    """The kernel's launch for (N, C) or (N, T, C) sums and ``squeeze`` hidden channels,
    planned once per call signature."""
    n, c = sums_shape[0], sums_shape[-1]
    tiles = sums_shape[1] if len(sums_shape) == 3 else 1
    return KernelLaunch(lambda: _se_gate_kernel, (n, triton.cdiv(c, BLOCK_C)),
                        (tiles, c, squeeze, inv_pixels),
                        dict(ACT=_ACT_CODE[act], **hidden_blocks(sums_shape, squeeze),
                             BLOCK_C=BLOCK_C, num_warps=4))


@torch.library.custom_op('mux_backbones::se_gate', mutates_args=())
def _se_gate(sums: Tensor, inv_pixels: float, w_reduce: Tensor, b_reduce: Tensor,
             w_expand: Tensor, b_expand: Tensor, act: str) -> Tensor:
    out = _compute(sums, inv_pixels, w_reduce, b_reduce, w_expand, b_expand, act)
    # (with its output last: the project conv's call takes it as its scale, which tells
    # tuning which GEMM a deployed block's launches have compute this gate)
    launch_config.note_call('se_gate', sums, inv_pixels, w_reduce, b_reduce, w_expand, b_expand,
                            act, out)
    return out


def _compute(sums, inv_pixels, w_reduce, b_reduce, w_expand, b_expand, act) -> Tensor:
    if launch_config.dry_running():
        return launch_config.dry_outputs(_se_gate_fake(sums, inv_pixels, w_reduce, b_reduce,
                                                       w_expand, b_expand, act))
    if cpu_kernels_take(sums, w_reduce, b_reduce, w_expand, b_expand):
        return cpu_kernels().se_gate_forward(
            sums.contiguous(), inv_pixels, w_reduce.contiguous(), b_reduce.contiguous(),
            w_expand.contiguous(), b_expand.contiguous(), _ACT_CODE[act])
    if not can_use_triton(sums, 'se_gate'):
        return reference_se_gate(sums, inv_pixels, w_reduce, b_reduce, w_expand, b_expand, act)
    out = torch.empty((sums.shape[0], sums.shape[-1]), dtype=w_expand.dtype, device=sums.device)
    gate_launch(tuple(sums.shape), w_reduce.shape[0], inv_pixels, act)(
        sums.float().contiguous(), w_reduce.contiguous(), b_reduce, w_expand.contiguous(),
        b_expand, out)
    return out


@_se_gate.register_fake
def _se_gate_fake(sums, inv_pixels, w_reduce, b_reduce, w_expand, b_expand, act):
    return sums.new_empty((sums.shape[0], sums.shape[-1]), dtype=w_expand.dtype)


def _setup_context(ctx, inputs, output):
    sums, inv_pixels, w_reduce, b_reduce, w_expand, b_expand, act = inputs
    ctx.inv_pixels, ctx.act = inv_pixels, act
    ctx.save_for_backward(sums, w_reduce, b_reduce, w_expand, b_expand)


def _backward(ctx, grad):
    # The op is an inference path; its gradient is the reference's (stock autograd, recomputed).
    inputs = [t.detach().requires_grad_(t.is_floating_point()) for t in ctx.saved_tensors]
    with torch.enable_grad():
        out = reference_se_gate(inputs[0], ctx.inv_pixels, *inputs[1:], ctx.act)
        wanted = [t for t in inputs if t.requires_grad]
        grads = iter(torch.autograd.grad(out, wanted, grad.to(out.dtype), allow_unused=True))
    g = [next(grads) if t.requires_grad else None for t in inputs]
    return g[0], None, g[1], g[2], g[3], g[4], None


_se_gate.register_autograd(_backward, setup_context=_setup_context)


def se_gate(sums: Tensor, pixels: int, w_reduce: Tensor, b_reduce: Tensor, w_expand: Tensor,
            b_expand: Tensor, act: str = 'relu') -> Tensor:
    """The squeeze-excite gate from per-channel sums.

    Args:
        sums (Tensor): (N, C) per-channel sums of the gated map, or (N, T, C) partial sums
            that add up to them (e.g. the ``with_pool`` output of
            :func:`mux_backbones.ops.group_conv`).
        pixels (int): Pixels the sums ran over (H * W), to turn them into means.
        w_reduce (Tensor): (S, C) weight of the squeeze (reduce) layer.
        b_reduce (Tensor): (S, ) its bias.
        w_expand (Tensor): (C, S) weight of the excite (expand) layer.
        b_expand (Tensor): (C, ) its bias.
        act (str): Activation between the two: 'none', 'relu', 'silu' or 'relu6'.
            Default: 'relu'.

    Returns:
        Tensor: The (N, C) gate in ``w_expand``'s dtype (what :func:`.pointwise_conv` takes as
        its input ``scale``).
    """
    check_args(sums, w_reduce, b_reduce, w_expand, b_expand, act)
    if pixels < 1:
        raise ValueError(f'se_gate: pixels must be >= 1, got {pixels}')
    return call(_se_gate, sums, 1.0 / pixels, w_reduce, b_reduce, w_expand, b_expand, act)
