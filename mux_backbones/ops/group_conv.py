"""Fused group-wise spatial convolution: every kernel-size group of a MixConv in one op.

MUXNet's spatial convs (paper Sec. 3; the ``k3.5.7`` MixConv blocks and the ``dwg2`` convs of the
channel-multiplexed blocks) are depth-wise or 2-channels-per-group convolutions, several kernel
sizes side by side. cuDNN has no fast path for most of them (NHWC half precision, 2 channels per
group, kernels up to 11x11), and the stock MixConv is split + one conv per kernel size + cat. This
op computes all groups straight into one NHWC (channels-last) output in one launch, each group's
programs running code compiled for its kernel size with the taps unrolled (no split, no cat):

* each channel group at its own kernel size and dilation -- no zero-padding to the largest kernel;
* 1 or 2 channels per conv group (the grouped conv of the channel-multiplexed blocks);
* stride 1 or 2, "same" padding (output ``ceil(H / stride)``), fp32/fp16/bf16 in, fp32 accumulation;
* epilogue: bias (a folded BatchNorm), activation (ReLU, SiLU/swish, ReLU6) and, for the
  squeeze-excite that follows, the per-channel sums of every output tile (the pooling, written
  once per tile: no zeroed buffer, no atomics, the same bits every run) -- so the SE reads a few
  vectors instead of the whole map again.

It is a ``torch.library`` custom op (one node for ``torch.compile`` and CUDA-graph capture) with a
fake implementation and an autograd formula whose input and weight gradients are Triton kernels
too. The weights are packed (see :func:`pack_weights`): per group, tap-major, channels innermost,
so each tap of a channel block is one contiguous vector load.

Launches are planned from register and occupancy rules; a call signature tuned on the device
(:func:`tune_forward`, :func:`tune_weight_grad`, kept in :mod:`.launch_config`) launches with the
tile, warps and loop pipelining measured fastest there instead.

On fp32 CPU tensors (outside Triton's interpreter) the op runs its C++ kernel
(``group_conv_cpu.cpp``, built on first use by :mod:`._cpu_kernels`) for the convs oneDNN has no
fast path for and plain depth-wise convs with an epilogue (see :func:`cpu_kernel_serves`), bias,
activation and the pooled tile sums in its epilogue (each output row's sums, added up per tile
after the rows: no atomics), and its
gradients there too (``group_conv_backward_cpu.cpp``; the stride-1 input gradient is the forward
kernel's) -- as well as the gradients of the plain depth-wise convs whose backward oneDNN has no
fast path for (see :func:`cpu_backward_serves`; their forward stays oneDNN's). Where neither can
run (see :mod:`._triton`), it computes the same thing with stock
``F.conv2d`` calls (and their backward) -- also the reference the tests compare the kernels with.
"""
import functools
import math
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from . import launch_config
from ._cpu_kernels import cpu_kernels, cpu_kernels_take
from ._dispatch import call
from ._launch import KernelLaunch
from ._triton import (CPU_KERNEL_DTYPE, HAS_TRITON, can_use_triton, interpreting, next_power_of_2,
                      tl, triton, unsupported_reason)
from .launch_config import LaunchConfig

ACTIVATIONS = ('none', 'relu', 'silu', 'relu6')
_ACT_CODE = {name: i for i, name in enumerate(ACTIVATIONS)}


def check_act(act: str, caller: str) -> None:
    """ValueError unless ``act`` is one of the kernels' epilogue :data:`ACTIVATIONS`
    (``caller`` names who asked, in the message)."""
    if act not in _ACT_CODE:
        raise ValueError(f'{caller}: act must be one of {ACTIVATIONS}, got "{act}"')


_INT32_MAX = 2**31 - 1
# How 2-channels-per-group kernels read each pair partner: by swapping neighbours of the loaded
# vector in registers (compiled), or by a second load (the interpreter, where the swap's
# reshape/flip is slow). None: by the mode; the tests force each.
PAIR_SWAP = None
# Rows of the forward's pixel tile per weight-gradient tile (halved with 2 channels per group).
WEIGHT_GRAD_ROWS = 4
# A channel block may leave at most 1 / LANE_WASTE of its group's lanes idle (masked) for the
# sake of wider, better coalesced blocks (see _channel_block; tools/gpu/layer_bench.py times
# other values).
LANE_WASTE = 8
# Channels a group's programs are aligned to: a group whose first channel or size is not a
# multiple (MUXNet-m's 89-channel MixConv groups) is computed over the aligned window around it
# (see _window), so its loads are vectors too.
WINDOW_ALIGN = 8
# How every launch is compiled. Fusion is asked for by name: the kernels' taps are written as
# multiply + add for the compiler to fuse into FMAs, and Triton 3.9 warns that its default turns
# to no fusion in 3.10 (which would double the tap loop's arithmetic).
COMPILE_OPTIONS = dict(enable_fp_fusion=True)
# Warps per program where no tuned config (see .launch_config) says otherwise.
NUM_WARPS = 4
# Programs a forward launch should have where the map allows it: ~4 resident per SM of an
# H100/H200 (132 SMs). Small launches (batch 1, the 7x7 and 14x14 stages, a MixConv's large-
# kernel groups) otherwise ran a few long programs on a few SMs while the others idled
# (kernel_sass.py's `waves` column); their pixel tiles shrink instead, while a program still holds
# MIN_TILE_VALUES outputs: 128 threads x 8, one 16-byte fp16 vector each (fewer per thread and
# the compiler splits the loads into 2-8-byte pieces).
MIN_PROGRAMS = 512
MIN_TILE_VALUES = 1024


def _pair_swap() -> bool:
    return (not interpreting()) if PAIR_SWAP is None else PAIR_SWAP


def pack_weights(weights: Sequence[Tensor]) -> Tensor:
    """Pack per-group conv weights ``(C_g, cpg, K, K)`` into the op's flat layout.

    Differentiable (plain tensor ops), so a module can pack its parameters on every call in
    training, or once for deployment. A single weight is not concatenated (``cat`` would copy
    it a second time: one more launch per conv and training step); its packed form may then
    be a view of it (one channel), so a copy meant to outlive it must be cloned.
    """
    parts = [w.permute(2, 3, 1, 0).reshape(-1) for w in weights]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def unpack_weights(packed: Tensor, splits: Sequence[int], kernel_sizes: Sequence[int],
                   channels_per_group: int) -> List[Tensor]:
    """Inverse of :func:`pack_weights`: the ``(C_g, cpg, K, K)`` conv weight of every group."""
    out, offset = [], 0
    for c, k in zip(splits, kernel_sizes):
        n = k * k * channels_per_group * c
        out.append(packed[offset:offset + n].view(k, k, channels_per_group, c).permute(3, 2, 0, 1))
        offset += n
    return out


def output_size(size: int, stride: int) -> int:
    """Output length of a "same"-padded conv: ``ceil(size / stride)``."""
    return -(-size // stride)


def check_args(x: Tensor, weight: Tensor, splits, kernel_sizes, dilations, stride,
               channels_per_group, act):
    """ValueError naming the first argument of :func:`group_conv` that does not fit."""
    if x.dim() != 4:
        raise ValueError(f'group_conv expects an (N, C, H, W) tensor, got shape {tuple(x.shape)}')
    if sum(splits) != x.shape[1]:
        raise ValueError(f'group_conv: splits {list(splits)} do not add up to the {x.shape[1]} '
                         f'input channels')
    if not len(splits) == len(kernel_sizes) == len(dilations):
        raise ValueError('group_conv: one kernel size and one dilation per group are needed')
    if any(k % 2 == 0 for k in kernel_sizes):
        raise ValueError(f'group_conv: kernel sizes must be odd, got {list(kernel_sizes)}')
    if channels_per_group not in (1, 2) or any(c % channels_per_group for c in splits):
        raise ValueError(f'group_conv: channels_per_group must be 1 or 2 and divide every group, '
                         f'got {channels_per_group} for groups {list(splits)}')
    if stride not in (1, 2):
        raise ValueError(f'group_conv: stride must be 1 or 2, got {stride}')
    check_act(act, 'group_conv')
    expected = sum(k * k * channels_per_group * c for c, k in zip(splits, kernel_sizes))
    if weight.numel() != expected:
        raise ValueError(f'group_conv: packed weight has {weight.numel()} values, the groups '
                         f'need {expected}')


def _activate_torch(z: Tensor, act: str) -> Tensor:
    if act == 'relu':
        return F.relu(z)
    if act == 'silu':
        return F.silu(z)
    if act == 'relu6':
        return F.relu6(z)
    return z


_CPU_VECTOR = 8  # channels per vector of the C++ kernel (group_conv_cpu.cpp)


def _cpu_vectors_fit(splits: Sequence[int]) -> bool:
    # at most an eighth of each group's channels left past its 8-channel vectors (the C++
    # gradient kernels compute the rest one channel at a time)
    return all(size % _CPU_VECTOR <= size // _CPU_VECTOR for size in splits)


def cpu_kernel_serves(x: Tensor, splits: Sequence[int], channels_per_group: int,
                      epilogue: bool = False) -> bool:
    """Whether the C++ kernel is the CPU's faster path for this call's forward: ``x`` one it
    takes (see :func:`~._cpu_kernels.cpu_kernels_take`: fp32 CPU, no Triton interpreter) and a
    conv oneDNN has no fast path for -- 2 channels per group (4-10x a depth-wise conv there;
    the kernel 2-7x faster, also on groups of a few channels: a spatially multiplexed conv's
    6 channels at 56x56, 67 vs 18 us) or several kernel sizes side by side -- or, with
    ``epilogue`` (the call applies an activation or pools the output for a squeeze-excite: the
    deploy forms), a plain depth-wise conv too: after oneDNN's conv each of those is a pass of
    its own over the map, in the kernel a few instructions on values in registers (whole
    deployed nets, batch 1, 2 threads, against oneDNN's conv + passes: MUXNet-m -11..-12%,
    MobileNetV2 with ReLU6 -8..-13%). The conv alone stays oneDNN's: faster at stride 1 on
    large maps (144 x 56x56, 3x3: 90 vs 111 us), where it reuses each input across a row's taps
    and this kernel reloads it from L1."""
    return (channels_per_group == 2 or len(splits) > 1 or epilogue) and cpu_kernels_take(x)


def cpu_backward_serves(x: Tensor, splits: Sequence[int], kernel_sizes: Sequence[int],
                        dilations: Sequence[int], channels_per_group: int) -> bool:
    """Whether the C++ gradient kernels are the CPU's faster path for this call's backward:
    for 2 channels per group and MixConvs, and for a plain depth-wise conv with a kernel above
    3x3 or a dilation -- oneDNN's depth-wise backward has no fast path for those (2.5-10x the
    C++ kernels' time, e.g. 5x5 at 480 x 32x32, batch 4: 11.5 vs 4.6 ms; 3x3 dilated 2: 12.1 vs
    1.5 ms), while its forward stays the faster one there. Such a conv runs oneDNN's forward
    inside the op and the C++ gradients. A 3x3 undilated one keeps oneDNN's backward: at stride
    1 it is the faster; at stride 2 the kernels, 2x faster alone on small maps, made a MUXNet-m
    training step slower (its 96 x 160x160 conv, batch 8: +5 ms). Groups with many channels
    left over keep oneDNN's backward too: the gradient kernels compute 8 channels of a pixel
    per vector and the rest one by one; they serve where at most an eighth of each group's
    channels are left over."""
    return (channels_per_group == 2 or len(splits) > 1 or max(kernel_sizes) > 3 or
            max(dilations) > 1) and _cpu_vectors_fit(splits) and cpu_kernels_take(x)


def kernel_passes(x: Tensor, splits: Sequence[int], kernel_sizes: Sequence[int],
                  dilations: Sequence[int], channels_per_group: int,
                  needs_grad: bool = False) -> Tuple[bool, bool]:
    """Which passes of this call :func:`group_conv` computes with one of its kernels, as
    ``(forward, gradients)``: both on Triton's (CUDA; the CPU under its interpreter); for fp32 CPU
    input the C++ ones where they serve -- the forward (see :func:`cpu_kernel_serves`) and, when
    ``needs_grad`` (a training step will ask for the call's gradients), the gradients (see
    :func:`cpu_backward_serves`; where they alone serve, the op's forward runs oneDNN's conv
    inside; where the forward alone does, the gradients are the stock conv's). Gradients are
    reported only when ``needs_grad``. Neither: silently for fp32 CPU input (oneDNN's conv
    is the faster CPU path there, or the extension is off), else after one warning."""
    if unsupported_reason(x) is None:
        return True, needs_grad
    if x.device.type == 'cpu' and x.dtype is CPU_KERNEL_DTYPE:
        return cpu_kernel_serves(x, splits, channels_per_group), needs_grad and \
            cpu_backward_serves(x, splits, kernel_sizes, dilations, channels_per_group)
    can_use_triton(x, 'group_conv')
    return False, False


def _activation_grad(z: Tensor, act: str) -> Tensor:
    """d act(z) / dz, in fp32."""
    z = z.float()
    if act == 'relu':
        return (z > 0).float()
    if act == 'relu6':
        return ((z > 0) & (z < 6)).float()
    s = torch.sigmoid(z)  # silu
    return s * (1 + z * (1 - s))


def reference_group_conv_backward(grad: Tensor, x: Tensor, weight: Tensor,
                                  splits: Sequence[int], kernel_sizes: Sequence[int],
                                  dilations: Sequence[int], stride: int,
                                  channels_per_group: int) -> Tuple[Tensor, Tensor]:
    """d input and d packed weight of the bias-free, activation-free op with the stock conv's
    backward, group by group. (Not through autograd: inside the op's backward the dispatcher
    has left the autograd layer, so a graph recorded there would have no gradients.)"""
    grads, parts = torch.split(grad.to(x.dtype), list(splits), 1), torch.split(x, list(splits), 1)
    weights = unpack_weights(weight, splits, kernel_sizes, channels_per_group)
    grad_x, grad_w = [], []
    for g, p, w, c, k, d in zip(grads, parts, weights, splits, kernel_sizes, dilations):
        gx, gw, _ = torch.ops.aten.convolution_backward(
            g, p, w.to(p.dtype), None, [stride] * 2, [d * (k // 2)] * 2, [d] * 2, False, [0, 0],
            c // channels_per_group, [True, True, False])
        grad_x.append(gx)
        grad_w.append(gw.to(weight.dtype))
    return torch.cat(grad_x, 1) if len(grad_x) > 1 else grad_x[0], pack_weights(grad_w)


def reference_group_conv(x: Tensor, weight: Tensor, bias: Optional[Tensor], splits: Sequence[int],
                         kernel_sizes: Sequence[int], dilations: Sequence[int], stride: int,
                         channels_per_group: int, act: str = 'none') -> Tensor:
    """The op with stock PyTorch convolutions (the fallback and the tests' reference)."""
    parts = torch.split(x, list(splits), dim=1)
    weights = unpack_weights(weight, splits, kernel_sizes, channels_per_group)
    outs = [
        F.conv2d(p, w.to(p.dtype), None, stride, d * (k // 2), d, groups=c // channels_per_group)
        for p, w, c, k, d in zip(parts, weights, splits, kernel_sizes, dilations)
    ]
    y = torch.cat(outs, dim=1) if len(outs) > 1 else outs[0]
    if bias is not None:
        y = y + bias.to(y.dtype).view(1, -1, 1, 1)
    return _activate_torch(y, act)


if HAS_TRITON:

    @triton.jit
    def _activate(z, ACT: tl.constexpr):
        if ACT == 1:
            z = tl.maximum(z, 0.0)
        elif ACT == 2:
            z = z * tl.sigmoid(z)
        elif ACT == 3:
            z = tl.minimum(tl.maximum(z, 0.0), 6.0)
        return z

    @triton.jit
    def _swap_pairs(x, ROWS: tl.constexpr, COLS: tl.constexpr):
        """``x[:, c ^ 1]``: each channel's pair partner (blocks start on even channels)."""
        even, odd = tl.split(tl.reshape(x, (ROWS, COLS // 2, 2)))
        return tl.reshape(tl.join(odd, even), (ROWS, COLS))

    @triton.jit
    def _load_channels(ptrs, mask_c, EVEN_C: tl.constexpr):
        if EVEN_C:
            return tl.load(ptrs).to(tl.float32)
        return tl.load(ptrs, mask=mask_c, other=0.0).to(tl.float32)

    @triton.jit
    def _channel_offsets(block, c_start, g_size, BLOCK_C: tl.constexpr, EVEN_C: tl.constexpr,
                         ALIGN: tl.constexpr):
        """``(local, channels, mask, odd)`` of a group's channel block ``block``: channels in the
        group and in the map, which exist, which are odd inside the group. The hints tell the
        compiler the vectors it may use; the mask is built from multiples of ``ALIGN`` so it is
        constant over a vector and masked loads stay vectors."""
        local = block * BLOCK_C + tl.arange(0, BLOCK_C)
        if EVEN_C:  # every block full and aligned: no channel masks, vector accesses
            local = tl.max_contiguous(tl.multiple_of(local, BLOCK_C), BLOCK_C)
        offs_c = tl.max_contiguous(tl.multiple_of(c_start + local, ALIGN), BLOCK_C)
        mask_c = (local // ALIGN) < (g_size // ALIGN)
        return local, offs_c, mask_c, (local % 2) == 1

    @triton.jit
    def _tile_pixels(tile, tiles_w, TILE_H: tl.constexpr, TILE_W: tl.constexpr):
        """``(rows, cols)`` of the pixels of tile ``tile`` of a row-major tiling."""
        i = tl.arange(0, TILE_H * TILE_W)
        return (tile // tiles_w) * TILE_H + i // TILE_W, (tile % tiles_w) * TILE_W + i % TILE_W

    @triton.jit
    def _pixel_channel_mask(ok, mask_c, EVEN_C: tl.constexpr):
        """Pixels ``ok`` x the block's channels (no channel mask where every block is full)."""
        mask = ok[:, None]
        if not EVEN_C:
            mask = mask & mask_c[None, :]
        return mask

    @triton.jit
    def _kept(mask, local, keep_from, keep, WINDOW: tl.constexpr):
        """``mask`` restricted to the group's own channels where its programs compute an aligned
        window around it (the other lanes belong to neighbouring groups: never stored)."""
        if WINDOW:
            mask = mask & ((local >= keep_from) & (local < keep_from + keep))
        return mask

    @triton.jit
    def _tap_weights(w_off, tap, g_size, local, CPG: tl.constexpr, BLOCK_C: tl.constexpr,
                     ALIGN: tl.constexpr):
        """Offsets of tap ``tap``'s first weight of each channel in the packed weights."""
        return tl.max_contiguous(tl.multiple_of(w_off + (tap * CPG) * g_size + local, ALIGN),
                                 BLOCK_C)

    @triton.jit
    def _accumulate_tap(acc, x_row, offs_c, mask, w_ptr, w_row, g_size, mask_c, odd,
                        CPG: tl.constexpr, PIXELS: tl.constexpr, BLOCK_C: tl.constexpr,
                        EVEN_C: tl.constexpr, PAIR_SWAP: tl.constexpr, ALIGN: tl.constexpr):
        """``acc`` plus one tap: the input at ``x_row[:, None] + offs_c`` (pixel pointers x
        channels) times the tap's weights at ``w_row`` (packed: weight j of the tap at
        ``w_row + j * g_size``)."""
        xv = tl.load(x_row[:, None] + offs_c[None, :], mask=mask, other=0.0)
        xv = xv.to(tl.float32)  # once per loaded value (the pair swap moves fp32 values)
        w0 = _load_channels(w_ptr + w_row, mask_c, EVEN_C)
        if CPG == 1:
            acc += xv * w0[None, :]
        else:
            # Each output also reads its pair partner (c ^ 1 inside the group): the same vector
            # with neighbours swapped, no second load.
            w1_row = tl.max_contiguous(tl.multiple_of(w_row + g_size, ALIGN), BLOCK_C)
            w1 = _load_channels(w_ptr + w1_row, mask_c, EVEN_C)
            if PAIR_SWAP:
                xp = _swap_pairs(xv, PIXELS, BLOCK_C)
            else:
                xp = tl.load(x_row[:, None] + tl.where(odd, offs_c - 1, offs_c + 1)[None, :],
                             mask=mask, other=0.0).to(tl.float32)
            # Two separate products: each one fused multiply-add into the accumulator.
            acc += xv * tl.where(odd, w1, w0)[None, :]
            acc += xp * tl.where(odd, w0, w1)[None, :]
        return acc

    @triton.jit
    def _forward_group(x_ptr, w_ptr, b_ptr, y_ptr, pool_ptr, H, W, C, OH, OW, x_image, y_image,
                       stride, tiles_w, num_tiles, pid_t, block, n, c_start, g_size, w_off, dil,
                       pad, keep_from, keep, KS: tl.constexpr, HAS_BIAS: tl.constexpr,
                       ACT: tl.constexpr, WITH_POOL: tl.constexpr, CPG: tl.constexpr,
                       TILE_H: tl.constexpr, TILE_W: tl.constexpr, BLOCK_C: tl.constexpr,
                       EVEN_C: tl.constexpr, PAIR_SWAP: tl.constexpr, ALIGN: tl.constexpr,
                       WINDOW: tl.constexpr, STAGES: tl.constexpr):
        """One kernel-size group's share of a program: a TILE_H x TILE_W tile of output pixels
        (``pid_t``) x the group's channel block ``block``.

        ``ALIGN`` (a power of two dividing C, c_start, g_size and w_off) tells the compiler what
        its own specialisation (integer arguments that are multiples of 16) misses -- C = 24 or
        120 -- so those layers get vector accesses too; for the same reason the image sizes
        ``x_image`` = H * W * C and ``y_image`` = OH * OW * C come as arguments. With ``WINDOW``
        the channels ``c_start + [0, g_size)`` are the aligned window around the group, whose own
        channels are ``keep`` from ``keep_from`` on: only those are stored and pooled.
        """
        local, offs_c, mask_c, odd = _channel_offsets(block, c_start, g_size, BLOCK_C, EVEN_C,
                                                      ALIGN)
        oh, ow = _tile_pixels(pid_t, tiles_w, TILE_H, TILE_W)
        ok_p = (oh < OH) & (ow < OW)
        x_img = x_ptr + n * x_image
        acc = tl.zeros((TILE_H * TILE_W, BLOCK_C), dtype=tl.float32)
        # Rows of taps in a loop, the taps of a row unrolled (K is known per launch): unrolling
        # both made the compiler hoist every tap's load and spill (K >= 9).
        for kh in tl.range(0, KS, num_stages=STAGES):
            ih = oh * stride - pad + kh * dil
            ok_h = ok_p & (ih >= 0) & (ih < H)
            for kw in tl.static_range(KS):
                iw = ow * stride - pad + kw * dil
                mask = _pixel_channel_mask(ok_h & (iw >= 0) & (iw < W), mask_c, EVEN_C)
                pix = tl.multiple_of((ih * W + iw) * C, ALIGN)
                w_row = _tap_weights(w_off, kh * KS + kw, g_size, local, CPG, BLOCK_C, ALIGN)
                acc = _accumulate_tap(acc, x_img + pix, offs_c, mask, w_ptr, w_row, g_size,
                                      mask_c, odd, CPG, TILE_H * TILE_W, BLOCK_C, EVEN_C,
                                      PAIR_SWAP, ALIGN)
        if HAS_BIAS:
            acc += _load_channels(b_ptr + offs_c, mask_c, EVEN_C)[None, :]
        acc = _activate(acc, ACT)
        out_mask = _kept(_pixel_channel_mask(ok_p, mask_c, EVEN_C), local[None, :], keep_from,
                         keep, WINDOW)
        out_pix = tl.multiple_of((oh * OW + ow) * C, ALIGN)
        tl.store(y_ptr + n * y_image + out_pix[:, None] + offs_c[None, :],
                 acc.to(y_ptr.dtype.element_ty), mask=out_mask)
        if WITH_POOL:
            # Squeeze-excite's pooling as an epilogue: per-channel sums of this tile.
            tl.store(pool_ptr + (n * num_tiles + pid_t) * C + offs_c,
                     tl.sum(tl.where(out_mask, acc, 0.0), axis=0),
                     mask=_kept(mask_c, local, keep_from, keep, WINDOW))

    @triton.jit
    def _forward_kernel(x_ptr, w_ptr, b_ptr, y_ptr, pool_ptr, H, W, C, OH, OW, x_image, y_image,
                        stride, tiles_w, num_tiles,
                        c0, s0, o0, d0, p0, f0, z0, e0, c1, s1, o1, d1, p1, f1, z1, e1,
                        c2, s2, o2, d2, p2, f2, z2, e2, c3, s3, o3, d3, p3, f3, z3, e3,
                        c4, s4, o4, d4, p4, f4, z4, e4,
                        HAS_BIAS: tl.constexpr, ACT: tl.constexpr, WITH_POOL: tl.constexpr,
                        CPG: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr,
                        PAIR_SWAP: tl.constexpr, STAGES: tl.constexpr,
                        K0: tl.constexpr, B0: tl.constexpr, V0: tl.constexpr, A0: tl.constexpr,
                        W0: tl.constexpr,
                        K1: tl.constexpr, B1: tl.constexpr, V1: tl.constexpr, A1: tl.constexpr,
                        W1: tl.constexpr,
                        K2: tl.constexpr, B2: tl.constexpr, V2: tl.constexpr, A2: tl.constexpr,
                        W2: tl.constexpr,
                        K3: tl.constexpr, B3: tl.constexpr, V3: tl.constexpr, A3: tl.constexpr,
                        W3: tl.constexpr,
                        K4: tl.constexpr, B4: tl.constexpr, V4: tl.constexpr, A4: tl.constexpr,
                        W4: tl.constexpr):
        """Up to five kernel-size groups of a layer in one launch (a MixConv's 3x3 ... 11x11).

        Grid axis 1 runs over the channel blocks of all groups, group ``g`` owning blocks
        ``[e(g-1), e(g))``; each program branches (uniformly) to its group's code, compiled for
        that group's K, channel block and alignment (``Kg``, ``Bg``, ``Vg`` = every block full,
        ``Ag``, ``Wg`` = computed over an aligned window); ``Kg = 0`` marks an unused slot. Its
        runtime values: first channel ``cg``, size ``sg``, weight offset ``og``, dilation ``dg``,
        padding ``pg``, the group's own channels in the window ``fg`` (first) and ``zg`` (count).
        """
        pid_t = tl.program_id(0)
        pid_c = tl.program_id(1)
        n = tl.program_id(2)
        # One branch per slot, written out: each call must see its slot's constexprs by name
        # (the Triton versions this runs on, 3.6-3.9, have no indexable constexpr arrays).
        if pid_c < e0:
            _forward_group(x_ptr, w_ptr, b_ptr, y_ptr, pool_ptr, H, W, C, OH, OW, x_image, y_image,
                           stride, tiles_w, num_tiles, pid_t, pid_c, n, c0, s0, o0, d0, p0, f0,
                           z0, K0, HAS_BIAS, ACT, WITH_POOL, CPG, TILE_H, TILE_W, B0, V0,
                           PAIR_SWAP, A0, W0, STAGES)
        if K1 > 0:
            if (pid_c >= e0) & (pid_c < e1):
                _forward_group(x_ptr, w_ptr, b_ptr, y_ptr, pool_ptr, H, W, C, OH, OW, x_image,
                               y_image, stride, tiles_w, num_tiles, pid_t, pid_c - e0, n, c1, s1,
                               o1, d1, p1, f1, z1, K1, HAS_BIAS, ACT, WITH_POOL, CPG, TILE_H,
                               TILE_W, B1, V1, PAIR_SWAP, A1, W1, STAGES)
        if K2 > 0:
            if (pid_c >= e1) & (pid_c < e2):
                _forward_group(x_ptr, w_ptr, b_ptr, y_ptr, pool_ptr, H, W, C, OH, OW, x_image,
                               y_image, stride, tiles_w, num_tiles, pid_t, pid_c - e1, n, c2, s2,
                               o2, d2, p2, f2, z2, K2, HAS_BIAS, ACT, WITH_POOL, CPG, TILE_H,
                               TILE_W, B2, V2, PAIR_SWAP, A2, W2, STAGES)
        if K3 > 0:
            if (pid_c >= e2) & (pid_c < e3):
                _forward_group(x_ptr, w_ptr, b_ptr, y_ptr, pool_ptr, H, W, C, OH, OW, x_image,
                               y_image, stride, tiles_w, num_tiles, pid_t, pid_c - e2, n, c3, s3,
                               o3, d3, p3, f3, z3, K3, HAS_BIAS, ACT, WITH_POOL, CPG, TILE_H,
                               TILE_W, B3, V3, PAIR_SWAP, A3, W3, STAGES)
        if K4 > 0:
            if (pid_c >= e3) & (pid_c < e4):
                _forward_group(x_ptr, w_ptr, b_ptr, y_ptr, pool_ptr, H, W, C, OH, OW, x_image,
                               y_image, stride, tiles_w, num_tiles, pid_t, pid_c - e3, n, c4, s4,
                               o4, d4, p4, f4, z4, K4, HAS_BIAS, ACT, WITH_POOL, CPG, TILE_H,
                               TILE_W, B4, V4, PAIR_SWAP, A4, W4, STAGES)

    @triton.jit
    def _forward_one_kernel(x_ptr, w_ptr, b_ptr, y_ptr, pool_ptr, H, W, C, OH, OW, x_image,
                            y_image, stride, tiles_w, num_tiles, c0, s0, o0, d0, p0, f0, z0,
                            HAS_BIAS: tl.constexpr, ACT: tl.constexpr, WITH_POOL: tl.constexpr,
                            CPG: tl.constexpr, TILE_H: tl.constexpr, TILE_W: tl.constexpr,
                            PAIR_SWAP: tl.constexpr, STAGES: tl.constexpr, K0: tl.constexpr,
                            B0: tl.constexpr, V0: tl.constexpr, A0: tl.constexpr,
                            W0: tl.constexpr):
        """:func:`_forward_kernel` for a layer of one kernel size (most layers): its slot 0
        alone, grid axis 1 the group's channel blocks. The same code with 35 arguments instead
        of 88: Triton's launcher binds, specialises and hashes every argument on every launch,
        ~40 us of host time per launch with five slots."""
        _forward_group(x_ptr, w_ptr, b_ptr, y_ptr, pool_ptr, H, W, C, OH, OW, x_image, y_image,
                       stride, tiles_w, num_tiles, tl.program_id(0), tl.program_id(1),
                       tl.program_id(2), c0, s0, o0, d0, p0, f0, z0, K0, HAS_BIAS, ACT,
                       WITH_POOL, CPG, TILE_H, TILE_W, B0, V0, PAIR_SWAP, A0, W0, STAGES)

    @triton.jit
    def _input_grad_s2_kernel(dz_ptr, w_ptr, dx_ptr, H, W, C, OH, OW, x_image, y_image, tiles_w,
                              c_start, g_size, w_off, dil, pad, keep_from, keep,
                              KS: tl.constexpr, CPG: tl.constexpr, TILE_H: tl.constexpr,
                              TILE_W: tl.constexpr, BLOCK_C: tl.constexpr, EVEN_C: tl.constexpr,
                              PAIR_SWAP: tl.constexpr, ALIGN: tl.constexpr,
                              WINDOW: tl.constexpr):
        """d input of a stride-2 group, one parity class of input pixels per program.

        Input row ``ih = 2a + p`` receives tap ``kh`` from output row ``(ih + pad - kh*dil) / 2``
        when that is whole, i.e. when ``p + pad - kh*dil`` is even: per class a fixed subset of
        the taps on a stride-1 grid ``a``. So each program takes a tile of ``(a, b)`` of one
        class ``(p, q)`` (grid axis 2 is ``4 n + 2 p + q``), skips the other taps with a uniform
        branch and reads the gradient with the forward kernel's vector loads. Weights come
        pair-transposed (:func:`transposed_weights` with ``flip=False``).
        """
        pid_t = tl.program_id(0)
        pid_c = tl.program_id(1)
        n = tl.program_id(2) // 4
        p = (tl.program_id(2) // 2) % 2
        q = tl.program_id(2) % 2
        local, offs_c, mask_c, odd = _channel_offsets(pid_c, c_start, g_size, BLOCK_C, EVEN_C,
                                                      ALIGN)
        a, b = _tile_pixels(pid_t, tiles_w, TILE_H, TILE_W)
        ih = 2 * a + p
        iw = 2 * b + q
        ok_p = (ih < H) & (iw < W)
        dz_img = dz_ptr + n * y_image
        acc = tl.zeros((TILE_H * TILE_W, BLOCK_C), dtype=tl.float32)
        for kh in range(0, KS):
            e_h = p + pad - kh * dil  # even: this tap reaches row class p
            if e_h % 2 == 0:
                oh = a + e_h // 2
                ok_h = ok_p & (oh >= 0) & (oh < OH)
                for kw in tl.static_range(KS):
                    e_w = q + pad - kw * dil
                    if e_w % 2 == 0:
                        ow = b + e_w // 2
                        mask = _pixel_channel_mask(ok_h & (ow >= 0) & (ow < OW), mask_c, EVEN_C)
                        pix = tl.multiple_of((oh * OW + ow) * C, ALIGN)
                        w_row = _tap_weights(w_off, kh * KS + kw, g_size, local, CPG, BLOCK_C,
                                             ALIGN)
                        acc = _accumulate_tap(acc, dz_img + pix, offs_c, mask, w_ptr, w_row,
                                              g_size, mask_c, odd, CPG, TILE_H * TILE_W,
                                              BLOCK_C, EVEN_C, PAIR_SWAP, ALIGN)
        out_mask = _kept(_pixel_channel_mask(ok_p, mask_c, EVEN_C), local[None, :], keep_from,
                         keep, WINDOW)
        out_pix = tl.multiple_of((ih * W + iw) * C, ALIGN)
        tl.store(dx_ptr + n * x_image + out_pix[:, None] + offs_c[None, :],
                 acc.to(dx_ptr.dtype.element_ty), mask=out_mask)

    @triton.jit
    def _weight_grad_kernel(dz_ptr, x_ptr, dw_ptr, H, W, C, OH, OW, x_image, y_image, stride,
                            tiles_w, num_tiles, work, tiles_per_program, c_start, g_size, w_off,
                            dil, pad, KS: tl.constexpr, CPG: tl.constexpr, TILE_H: tl.constexpr,
                            TILE_W: tl.constexpr, BLOCK_C: tl.constexpr, EVEN_C: tl.constexpr,
                            PAIR_SWAP: tl.constexpr, ALIGN: tl.constexpr, STAGES: tl.constexpr):
        """d weight of one kernel-size group: one tap x BLOCK_C channels, summed over a chunk of
        the N * num_tiles output tiles (the forward's tiles; chunks meet in fp32 atomics).

        The pixel of a tile comes from constant shifts and the tile's origin from scalar
        arithmetic once per tile, so no per-pixel division (a flat pixel index needed two).
        ``STAGES`` > 1 software-pipelines the tile loop (the next tiles' loads in flight).
        """
        pid_p = tl.program_id(0)
        pid_c = tl.program_id(1)
        tap = tl.program_id(2)
        kh = tap // KS
        kw = tap % KS
        local, offs_c, mask_c, odd = _channel_offsets(pid_c, c_start, g_size, BLOCK_C, EVEN_C,
                                                      ALIGN)
        acc_own = tl.zeros((TILE_H * TILE_W, BLOCK_C), dtype=tl.float32)
        acc_partner = tl.zeros((TILE_H * TILE_W, BLOCK_C), dtype=tl.float32)
        start = pid_p * tiles_per_program
        for j in tl.range(start, tl.minimum(start + tiles_per_program, work), num_stages=STAGES):
            n = j // num_tiles
            oh, ow = _tile_pixels(j % num_tiles, tiles_w, TILE_H, TILE_W)
            ok_p = (oh < OH) & (ow < OW)
            ih = oh * stride - pad + kh * dil
            iw = ow * stride - pad + kw * dil
            mask_dz = _pixel_channel_mask(ok_p, mask_c, EVEN_C)
            mask_x = _pixel_channel_mask(ok_p & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W),
                                         mask_c, EVEN_C)
            out_pix = tl.multiple_of((oh * OW + ow) * C, ALIGN)
            dz = tl.load(dz_ptr + n * y_image + out_pix[:, None] + offs_c[None, :], mask=mask_dz,
                         other=0.0).to(tl.float32)
            pix = tl.multiple_of((ih * W + iw) * C, ALIGN)
            xo = tl.load(x_ptr + n * x_image + pix[:, None] + offs_c[None, :], mask=mask_x,
                         other=0.0).to(tl.float32)
            acc_own += dz * xo
            if CPG == 2:
                if PAIR_SWAP:
                    xp = _swap_pairs(xo, TILE_H * TILE_W, BLOCK_C)
                else:
                    xp = tl.load(x_ptr + n * x_image + pix[:, None] +
                                 tl.where(odd, offs_c - 1, offs_c + 1)[None, :], mask=mask_x,
                                 other=0.0).to(tl.float32)
                acc_partner += dz * xp
        own = tl.sum(acc_own, axis=0)
        if CPG == 1:
            tl.atomic_add(dw_ptr + w_off + tap * g_size + local, own, mask=mask_c)
        else:
            # Weight j of output c multiplies input (c - c % 2 + j): its own channel when
            # j == c % 2, its partner otherwise.
            other = tl.sum(acc_partner, axis=0)
            tl.atomic_add(dw_ptr + w_off + (tap * 2) * g_size + local, tl.where(odd, other, own),
                          mask=mask_c)
            tl.atomic_add(dw_ptr + w_off + (tap * 2 + 1) * g_size + local,
                          tl.where(odd, own, other), mask=mask_c)


def _channel_block(group_size: int, c_start: int) -> Tuple[int, bool, int]:
    """``(block_c, even_c, pixels)`` of one group: its channel block, whether every block is full
    (``even_c``: no channel masks), and the pixels per program that fit the registers.

    On channels-last maps a warp's load is coalesced when it covers few pixels and many of their
    channels: Triton lays a (pixels, block_c) tile out with 16-byte vectors along the channels, so
    8-channel blocks had each warp read 32 pixels 16 bytes apart (32 cache lines per load, 4 per
    load at 64 channels). So a group whose size and first channel are multiples of 4 takes the
    widest block (<= 64 channels) that wastes at most an eighth of its lanes on the masked last
    block (MUXNet-m: 64 for 120/240/480/960 channels, 32 for 96/336, 8-16 for 24/40/48); the mask
    is built from multiples of the alignment (``ALIGN``), so masked loads stay vectors. Groups
    that are not (their aligned window, see :func:`_window`, is where the map's channels are not
    multiples of 8) get masked 32-channel blocks of 16-bit loads. Programs hold up to 2048
    accumulators (32-256 pixels), half that where the loads are scalar: more ran out of
    registers (sm_90 SASS: 255 per thread, with spills, at 64 x 64 for 5x5).
    """
    g = math.gcd(group_size, c_start)
    vector = (g & -g) >= 4  # 8-byte (fp16) vectors or wider
    if interpreting():  # CPU tests: fewer, larger programs (the interpreter runs them one by one)
        block_c = min(64, next_power_of_2(group_size))
        return block_c, group_size % block_c == 0, 256
    block_c = 32
    if vector:
        block_c = min(64, next_power_of_2(group_size))
        while block_c > 8 and LANE_WASTE * (-group_size % block_c) > group_size:
            block_c //= 2
    pixels = max(32, min(256, (2048 if vector else 1024) // block_c))
    return block_c, group_size % block_c == 0, pixels


def _window(c_start: int, size: int, channels: int) -> Tuple[int, int]:
    """``(first channel, size)`` of the channels a group's programs compute: the group itself,
    or, where its first channel or size is not a multiple of :data:`WINDOW_ALIGN` (and the
    map's channels are), the aligned window around it. The window's extra lanes read the
    neighbouring groups' channels with zero weights and are never stored: all of the group's
    loads become aligned vectors (MUXNet-m's [92, 89, 89, 89, 89] MixConv: 16-bit loads
    before) for a few idle lanes (the 32-channel blocks those groups took covered 96 lanes
    too)."""
    if math.gcd(c_start, size) % WINDOW_ALIGN == 0 or channels % WINDOW_ALIGN:
        return c_start, size
    first = c_start // WINDOW_ALIGN * WINDOW_ALIGN
    return first, -(-(c_start + size) // WINDOW_ALIGN) * WINDOW_ALIGN - first


def _windows(splits: Sequence[int]) -> List[Tuple[int, int]]:
    """:func:`_window` of every group of a layer, in order."""
    channels, starts = sum(splits), [sum(splits[:i]) for i in range(len(splits))]
    return [_window(start, size, channels) for start, size in zip(starts, splits)]


def _pixel_tile(splits: Sequence[int], out_h: int, out_w: int,
                images: int = 0) -> Tuple[int, int]:
    """``(tile_h, tile_w)`` output pixels per program, one tile for all groups of a layer (so
    every channel's pooled sums come in the same tiles): the smallest any group needs, as square
    as the map allows. With ``images`` (the grid's third axis), halved -- while a program keeps
    :data:`MIN_TILE_VALUES` outputs -- until the launch has :data:`MIN_PROGRAMS` programs."""
    windows = _windows(splits)
    blocks = [_channel_block(size, first) for first, size in windows]
    pixels = min(pixels for _, _, pixels in blocks)
    tile_w = min(next_power_of_2(out_w), 16, pixels)
    tile_h = max(1, min(next_power_of_2(out_h), pixels // tile_w))
    if images and not interpreting():
        channel_blocks = sum(output_size(size, block_c)
                             for (_, size), (block_c, _, _) in zip(windows, blocks))
        min_pixels = MIN_TILE_VALUES // min(block_c for block_c, _, _ in blocks)
        while tile_h * tile_w > min_pixels and \
                images * _tiling(out_h, out_w, tile_h, tile_w)[1] * channel_blocks < MIN_PROGRAMS:
            if tile_h >= tile_w:
                tile_h //= 2
            else:
                tile_w //= 2
    return tile_h, tile_w


def _tiling(out_h: int, out_w: int, tile_h: int, tile_w: int) -> Tuple[int, int]:
    """``(tiles per row, tiles)`` of a map tiled ``tile_h x tile_w``."""
    tiles_w = output_size(out_w, tile_w)
    return tiles_w, output_size(out_h, tile_h) * tiles_w


def _forward_tile(splits: Sequence[int], batch: int, out_h: int, out_w: int,
                  config: Optional[LaunchConfig] = None) -> Tuple[int, int]:
    """The forward kernel's pixel tile: a tuned ``config``'s, else the planner's."""
    return (config.tile_h, config.tile_w) if config else _pixel_tile(splits, out_h, out_w, batch)


def pool_tiles(splits: Sequence[int], batch: int, out_h: int, out_w: int,
               config: Optional[LaunchConfig] = None) -> int:
    """How many partial sums per channel ``group_conv(..., with_pool=True)`` returns for a
    ``(batch, C, out_h, out_w)`` output (with a tuned ``config``: see :func:`tuned_config`)."""
    return _tiling(out_h, out_w, *_forward_tile(splits, batch, out_h, out_w, config))[1]


def tuning_key(x_shape, dtype, device, splits, kernel_sizes, dilations, stride,
               channels_per_group, kernel: str = 'forward') -> tuple:
    """The call signature a tuned config of ``kernel`` ('forward', 'input_grad_s2' or
    'weight_grad') is kept under (see :mod:`.launch_config`); ``device`` a ``torch.device`` or a
    :func:`~.launch_config.device_kind` name (offline tools)."""
    kind = device if isinstance(device, str) else launch_config.device_kind(device)
    name = 'group_conv' if kernel == 'forward' else f'group_conv.{kernel}'
    return (name, kind, str(dtype).replace('torch.', ''),
            tuple(x_shape), tuple(splits), tuple(kernel_sizes), tuple(dilations), stride,
            channels_per_group)


def tuned_config(x: Tensor, splits, kernel_sizes, dilations, stride, channels_per_group,
                 kernel: str = 'forward') -> Optional[LaunchConfig]:
    """The tuned config of ``kernel`` for this call (None: the planner's own choice)."""
    if launch_config.empty():  # the common case: skip building the key
        return None
    return launch_config.lookup(tuning_key(x.shape, x.dtype, x.device, splits, kernel_sizes,
                                           dilations, stride, channels_per_group, kernel))


def _tile_sums(y: Tensor, tile_h: int, tile_w: int) -> Tensor:
    """(N, T, C) fp32 sums of ``y`` over each ``tile_h x tile_w`` tile (row-major tiles)."""
    n, c, h, w = y.shape
    th, tw = output_size(h, tile_h), output_size(w, tile_w)
    y = F.pad(y.float(), (0, tw * tile_w - w, 0, th * tile_h - h))
    return y.view(n, c, th, tile_h, tw, tile_w).sum((3, 5)).view(n, c, th * tw).transpose(1, 2)


def _tile_broadcast(grad: Tensor, out_h: int, out_w: int, tile_h: int, tile_w: int) -> Tensor:
    """(N, C, out_h, out_w): every pixel gets its tile's entry of the (N, T, C) ``grad``."""
    rows = torch.arange(out_h, device=grad.device) // tile_h
    cols = torch.arange(out_w, device=grad.device) // tile_w
    tile = rows[:, None] * output_size(out_w, tile_w) + cols[None, :]
    return grad[:, tile.flatten()].view(grad.shape[0], out_h, out_w, grad.shape[2]).permute(
        0, 3, 1, 2)


def _align(channels: int, c_start: int, size: int, w_off: int, block_c: int) -> int:
    """The kernels' ``ALIGN`` hint for one group: a power of two (<= 16) dividing the channel
    count, the group's first channel, its size and weight offset and the channel block (blocks
    start at its multiples, and the hint must hold for each)."""
    g = math.gcd(channels, c_start, size, w_off, block_c)
    return min(16, g & -g)


def _channels_last(x: Tensor) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def _empty_channels_last(n, c, h, w, like: Tensor) -> Tensor:
    return torch.empty_strided((n, c, h, w), (h * w * c, 1, w * c, c), dtype=like.dtype,
                               device=like.device)


def _fits_int32(*shapes) -> bool:
    return all(torch.Size(s).numel() <= _INT32_MAX for s in shapes)


def _triton_ok(x: Tensor, out_shape) -> bool:
    return can_use_triton(x, 'group_conv') and _fits_int32(x.shape, out_shape)


class _Group(NamedTuple):
    """One kernel-size group as its programs compute it: the channels ``start + [0, size)``
    (its aligned window, see :func:`_window`), of which ``keep`` from ``keep_from`` on are its
    own; kernel size, dilation; its weights' offset in the windowed packing."""
    start: int
    size: int
    keep_from: int
    keep: int
    k: int
    dil: int
    w_off: int

    @property
    def windowed(self) -> bool:
        return self.keep != self.size


def _groups(splits, kernel_sizes, dilations, channels_per_group) -> List[_Group]:
    """Every kernel-size group of a layer (see :class:`_Group`)."""
    groups, c_start, w_off = [], 0, 0
    for size, k, d, (first, window) in zip(splits, kernel_sizes, dilations, _windows(splits)):
        groups.append(_Group(first, window, c_start - first, size, k, d, w_off))
        c_start += size
        w_off += k * k * channels_per_group * window
    return groups


@functools.lru_cache(maxsize=256)
def _weight_layout(splits, kernel_sizes, channels_per_group, transpose, flip,
                   device) -> Tuple[int, Optional[Tensor]]:
    """``(size, positions)`` of the weight layout a kernel reads: how many values, and where
    each packed weight goes (None: the packing itself) -- each windowed group's taps as rows of
    its window (see :func:`_window`), and with ``transpose`` the weights of the conv mapping d
    output to d input (see :func:`transposed_weights`, the reference): one index for both."""
    groups = _groups(splits, kernel_sizes, [1] * len(splits), channels_per_group)
    last = groups[-1]
    numel = last.w_off + last.k * last.k * channels_per_group * last.size
    # Unflipped depth-wise weights transpose to themselves (the stride-2 gradient of a plain
    # depth-wise conv or MixConv): no copy, where nothing is windowed either.
    transpose = transpose and (flip or channels_per_group != 1)
    if not transpose and not any(g.windowed for g in groups):
        return numel, None
    positions = []
    for g in groups:
        kh, kw, j, c = torch.meshgrid(torch.arange(g.k), torch.arange(g.k),
                                      torch.arange(channels_per_group), torch.arange(g.keep),
                                      indexing='ij')  # packed order: taps, j, channels
        if transpose and flip:
            kh, kw = g.k - 1 - kh, g.k - 1 - kw
        if transpose and channels_per_group == 2:  # (2i + b, a) -> (2i + a, b)
            c, j = c - c % 2 + j, c % 2
        positions.append(g.w_off + ((kh * g.k + kw) * channels_per_group + j) * g.size +
                         g.keep_from + c)
    return numel, torch.cat([p.flatten() for p in positions]).to(device)


def kernel_weights(weight: Tensor, splits, kernel_sizes, channels_per_group,
                   transpose: bool = False, flip: bool = True) -> Tensor:
    """The packed weights (see :func:`pack_weights`) as the kernels read them, in one pass (none
    where nothing changes): each windowed group's taps spread over its aligned window, zeros on
    the neighbours' lanes; with ``transpose``, transposed as :func:`transposed_weights`."""
    numel, positions = _weight_layout(tuple(splits), tuple(kernel_sizes), channels_per_group,
                                      transpose, flip, weight.device)
    if positions is None:
        return weight
    out = weight.new_zeros(numel) if numel != weight.numel() else weight.new_empty(numel)
    return out.index_copy_(0, positions, weight)


def unwindow_weights(windowed: Tensor, splits, kernel_sizes, channels_per_group) -> Tensor:
    """Inverse of :func:`kernel_weights` without ``transpose`` (for the weight gradient): the
    groups' own entries, in the packed order."""
    _, positions = _weight_layout(tuple(splits), tuple(kernel_sizes), channels_per_group, False,
                                  True, windowed.device)
    return windowed if positions is None else windowed[positions]


class Launch(NamedTuple):
    """One kernel launch of an op call: which kernel, its grid, its scalar arguments (after the
    tensor pointers) and its compile-time meta-parameters. The launchers run these; offline
    tools (``tools/gpu/kernel_sass.py``) compile them for a GPU they do not have."""
    kernel: str
    grid: Tuple[int, int, int]
    scalars: Tuple[int, ...]
    meta: dict
    num_warps: int = NUM_WARPS


def _group_meta(c, group: _Group, channels_per_group, tile_h, tile_w) -> dict:
    block_c, even_c, _ = _channel_block(group.size, group.start)
    return dict(KS=group.k, CPG=channels_per_group, TILE_H=tile_h, TILE_W=tile_w,
                BLOCK_C=block_c, EVEN_C=even_c, PAIR_SWAP=_pair_swap(),
                ALIGN=_align(c, group.start, group.size, group.w_off, block_c))


_SEQUENCES = (list, torch.Size)  # arguments a plan's cache key takes as tuples


def planner_state() -> tuple:
    """What a launch plan depends on besides its call: the module switches and the tuned
    table's version (a plan cached under another state is planned again)."""
    return (_pair_swap(), interpreting(), WEIGHT_GRAD_ROWS, LANE_WASTE, MIN_PROGRAMS,
            MIN_TILE_VALUES, launch_config.version())


def _planned(plan):
    """Cache a launch plan per call signature (and per the :func:`planner_state`): planning in
    Python costs 7-27 us per call, about a small layer's kernel time in eager mode."""
    cached = functools.lru_cache(maxsize=1024)(lambda key, *args: plan(*args))

    @functools.wraps(plan)
    def planned(*args):
        args = [tuple(a) if type(a) in _SEQUENCES else a for a in args]
        return cached(planner_state(), *args)

    return planned


FORWARD_SLOTS = 5  # kernel-size groups per forward launch (MUXNet's widest MixConv: 3..11)
_FORWARD_SHARED = 10  # scalars before the slots (see the kernel), then 8 per slot:
_SLOT_SCALARS = 8  # c, s, o, d, p, f, z (the group), e (its last channel block + 1)
_SLOT_META = 'KBVAW'  # constexprs per slot: K, block, even, ALIGN, window
_EMPTY_SLOT = ((0, 0, 0, 0, 0, 0, 0), 0, (0, 1, True, 1, False))


def _forward_launch(shared, meta, slots, num_tiles, n, num_warps=NUM_WARPS) -> Launch:
    """One forward launch of up to :data:`FORWARD_SLOTS` groups, each ``((first channel, size,
    weight offset, dilation, padding, first own channel, own channels), channel blocks, (K,
    block_c, even_c, ALIGN, window))``; a single group runs on the one-group kernel."""
    if len(slots) == 1:
        (values, blocks, group_meta), = slots
        return Launch('forward_one', (num_tiles, blocks, n), (*shared, *values),
                      dict(meta, **{f'{key}0': v for key, v in zip(_SLOT_META, group_meta)}),
                      num_warps)
    scalars, meta, end = list(shared), dict(meta), 0
    for slot, (values, blocks, group_meta) in enumerate(
            list(slots) + [_EMPTY_SLOT] * (FORWARD_SLOTS - len(slots))):
        end += blocks
        scalars += [*values, end]
        meta.update({f'{key}{slot}': v for key, v in zip(_SLOT_META, group_meta)})
    return Launch('forward', (num_tiles, end, n), tuple(scalars), meta, num_warps)


@_planned
def forward_launches(x_shape, splits, kernel_sizes, dilations, stride, channels_per_group, act,
                     with_pool, has_bias, config=None) -> Tuple[Launch, ...]:
    """The forward kernel's launches for an input of ``x_shape``: all kernel-size groups of a
    layer in one launch (up to :data:`FORWARD_SLOTS`), each group's taps unrolled for its own K;
    tile and warps from a tuned ``config`` where given (see :func:`tuned_config`).
    (Unrolling every K in one loop made an ~80k-instruction kernel that took minutes to compile;
    one copy of the tap loop per group, chosen per program, compiles like separate kernels.)"""
    n, c, h, w = x_shape
    oh, ow = output_size(h, stride), output_size(w, stride)
    config = config or LaunchConfig(*_forward_tile(splits, n, oh, ow), NUM_WARPS)
    tile_h, tile_w = config.tile_h, config.tile_w
    tiles_w, num_tiles = _tiling(oh, ow, tile_h, tile_w)
    shared = (h, w, c, oh, ow, h * w * c, oh * ow * c, stride, tiles_w, num_tiles)
    meta = dict(HAS_BIAS=has_bias, ACT=_ACT_CODE[act], WITH_POOL=with_pool,
                CPG=channels_per_group, TILE_H=tile_h, TILE_W=tile_w, PAIR_SWAP=_pair_swap(),
                STAGES=config.num_stages)
    slots = []
    for g in _groups(splits, kernel_sizes, dilations, channels_per_group):
        group = _group_meta(c, g, channels_per_group, tile_h, tile_w)
        slots.append(((g.start, g.size, g.w_off, g.dil, g.dil * (g.k // 2), g.keep_from, g.keep),
                      output_size(g.size, group['BLOCK_C']),
                      (g.k, group['BLOCK_C'], group['EVEN_C'], group['ALIGN'], g.windowed)))
    return tuple(_forward_launch(shared, meta, slots[i:i + FORWARD_SLOTS], num_tiles, n,
                                 config.num_warps) for i in range(0, len(slots), FORWARD_SLOTS))


class ForwardPlan(NamedTuple):
    """A forward call as :func:`forward_plan` plans it: the tuned config (None: the planner's
    tile), the kernel's launches, the output's and the pooled sums' shapes, whether every
    index fits the kernels' 32-bit arithmetic, and the tile the sums are pooled over ((0, 0):
    no pooling)."""
    config: Optional[LaunchConfig]
    launches: Tuple[Launch, ...]
    out_shape: Tuple[int, int, int, int]
    pool_shape: Tuple[int, ...]
    fits_int32: bool
    pool_tile: Tuple[int, int]


@_planned
def forward_plan(x_shape, dtype, device, splits, kernel_sizes, dilations, stride,
                 channels_per_group, act, with_pool, has_bias) -> ForwardPlan:
    """Everything a forward call needs besides its tensors, planned once per call signature (the
    op's eager overhead: one cached lookup instead of ~15 us of planning per call)."""
    n, c, h, w = x_shape
    out_shape = (n, c, output_size(h, stride), output_size(w, stride))
    config = launch_config.lookup(tuning_key(x_shape, dtype, device, splits, kernel_sizes,
                                             dilations, stride, channels_per_group))
    launches = forward_launches(x_shape, splits, kernel_sizes, dilations, stride,
                                channels_per_group, act, with_pool, has_bias, config)
    return ForwardPlan(config, launches, out_shape,
                       _pool_shape(n, c, *out_shape[2:], splits, with_pool, config),
                       _fits_int32(x_shape, out_shape),
                       _forward_tile(splits, n, *out_shape[2:], config) if with_pool else (0, 0))


def forward_slots(launch: Launch) -> Tuple[Launch, ...]:
    """Each group of a forward launch as a one-group launch of its own: the code path that
    group's programs take, for per-group analysis (``tools/gpu/kernel_sass.py``)."""
    if launch.kernel == 'forward_one':
        return (launch, )
    shared = launch.scalars[:_FORWARD_SHARED]
    meta = {k: v for k, v in launch.meta.items()
            if not (k[0] in _SLOT_META and k[1:].isdigit())}
    out, first_block = [], 0
    for slot in range(FORWARD_SLOTS):
        values = launch.scalars[_FORWARD_SHARED + _SLOT_SCALARS * slot:][:_SLOT_SCALARS]
        blocks, first_block = values[-1] - first_block, values[-1]
        if launch.meta[f'K{slot}']:
            group = tuple(launch.meta[f'{key}{slot}'] for key in _SLOT_META)
            out.append(_forward_launch(shared, meta, [(values[:-1], blocks, group)],
                                       launch.grid[0], launch.grid[2], launch.num_warps))
    return tuple(out)


@_planned
def input_grad_s2_launches(x_shape, splits, kernel_sizes, dilations, channels_per_group,
                           config=None) -> Tuple[Launch, ...]:
    """The stride-2 input-gradient kernel's launches: tiles of one parity class of input
    pixels, a grid of ceil(H / 2) x ceil(W / 2); tile and warps from a tuned ``config`` where
    given (its loop branches per tap row: Triton's pipeliner leaves it as it is)."""
    n, c, h, w = x_shape
    oh, ow = output_size(h, 2), output_size(w, 2)
    # 4 parity classes per image
    config = config or LaunchConfig(*_pixel_tile(splits, oh, ow, 4 * n), NUM_WARPS)
    tile_h, tile_w = config.tile_h, config.tile_w
    tiles_w, num_tiles = _tiling(oh, ow, tile_h, tile_w)
    launches = []
    for g in _groups(splits, kernel_sizes, dilations, channels_per_group):
        meta = _group_meta(c, g, channels_per_group, tile_h, tile_w)
        launches.append(Launch(
            'input_grad_s2', (num_tiles, output_size(g.size, meta['BLOCK_C']), 4 * n),
            (h, w, c, oh, ow, h * w * c, oh * ow * c, tiles_w, g.start, g.size, g.w_off, g.dil,
             g.dil * (g.k // 2), g.keep_from, g.keep),
            dict(meta, WINDOW=g.windowed), config.num_warps))
    return tuple(launches)


def _weight_grad_tile(splits, out_h: int, out_w: int, channels_per_group: int,
                      forward_tile=None) -> Tuple[int, int]:
    """The weight gradient's tile: the forward's (``forward_tile``, else the planner's without
    the small-launch halving: its launches are filled by chunks of tiles), made taller."""
    tile_h, tile_w = forward_tile or _pixel_tile(splits, out_h, out_w)
    if not interpreting():  # its per-tile work is light (one tap): taller tiles amortise it
        tile_h = min(tile_h * WEIGHT_GRAD_ROWS // channels_per_group,
                     max(tile_h, next_power_of_2(out_h)))
    return tile_h, tile_w


@_planned
def weight_grad_launches(x_shape, splits, kernel_sizes, dilations, stride,
                         channels_per_group, config=None) -> Tuple[Launch, ...]:
    """The weight-gradient kernel's launches: per group, programs of one tap x one channel
    block, each summing a chunk of the N x tiles of the output: at least 8 chunks, and enough
    for :data:`MIN_PROGRAMS` programs (a 24-channel 3x3 layer has 27 blocks x taps: with 8
    chunks of 56 tiles it filled 0.4 of an H200 with long programs); the interpreter: one.
    Tile, warps and pipeline depth from a tuned ``config`` where given."""
    n, c, h, w = x_shape
    oh, ow = output_size(h, stride), output_size(w, stride)
    config = config or LaunchConfig(*_weight_grad_tile(splits, oh, ow, channels_per_group),
                                    NUM_WARPS)
    tile_h, tile_w = config.tile_h, config.tile_w
    tiles_w, num_tiles = _tiling(oh, ow, tile_h, tile_w)
    work = n * num_tiles
    launches = []
    for g in _groups(splits, kernel_sizes, dilations, channels_per_group):
        # A window's other lanes get gradients of weights that are not there (dropped by
        # unwindow_weights).
        meta = _group_meta(c, g, channels_per_group, tile_h, tile_w)
        blocks = output_size(g.size, meta['BLOCK_C'])
        chunks = max(8, output_size(MIN_PROGRAMS, blocks * g.k * g.k))
        per_program = work if interpreting() else max(1, min(64, output_size(work, chunks)))
        launches.append(Launch(
            'weight_grad', (output_size(work, per_program), blocks, g.k * g.k),
            (h, w, c, oh, ow, h * w * c, oh * ow * c, stride, tiles_w, num_tiles, work,
             per_program, g.start, g.size, g.w_off, g.dil, g.dil * (g.k // 2)),
            dict(meta, STAGES=config.num_stages), config.num_warps))
    return tuple(launches)


def kernels():
    """The Triton kernels by the name a :class:`Launch` gives (Triton must be importable)."""
    return dict(forward=_forward_kernel, forward_one=_forward_one_kernel,
                input_grad_s2=_input_grad_s2_kernel, weight_grad=_weight_grad_kernel)


# Each planned Launch's KernelLaunch, by the Launch's id; the entry holds the Launch itself, so
# the id is not reused while it is kept (plans are cached per call signature: few distinct).
_KERNEL_LAUNCHES: Dict[int, Tuple[Launch, KernelLaunch]] = {}


def kernel_launch(launch: Launch) -> KernelLaunch:
    """The :class:`~._launch.KernelLaunch` that runs ``launch`` (made once per planned launch)."""
    entry = _KERNEL_LAUNCHES.get(id(launch))
    if entry is None or entry[0] is not launch:
        if len(_KERNEL_LAUNCHES) > 4096:  # (plans evicted from their caches: start afresh)
            _KERNEL_LAUNCHES.clear()
        name = launch.kernel
        entry = _KERNEL_LAUNCHES[id(launch)] = launch, KernelLaunch(
            lambda: kernels()[name], launch.grid, launch.scalars,
            dict(launch.meta, num_warps=launch.num_warps, **COMPILE_OPTIONS))
    return entry[1]


def _run(launches, *tensors) -> None:
    for launch in launches:
        kernel_launch(launch)(*tensors)


def _launch_forward(x, weight, bias, y, pool, splits, kernel_sizes, dilations, stride,
                    channels_per_group, act, with_pool, config):
    """The forward kernel on ``weight`` laid out by :func:`kernel_weights`."""
    _run(forward_launches(x.shape, splits, kernel_sizes, dilations, stride, channels_per_group,
                          act, with_pool, bias is not None, config),
         x, weight, bias if bias is not None else weight, y, pool)


def _input_grad_s2(grad, weight_t, x_shape, splits, kernel_sizes, dilations, channels_per_group,
                   config) -> Tensor:
    """The stride-2 input-gradient kernel: d input (of ``x_shape``) from the output gradient and
    the pair-transposed, unflipped weights ``weight_t`` (:func:`kernel_weights`)."""
    n, c, h, w = x_shape
    grad_x = _empty_channels_last(n, c, h, w, grad)
    _run(input_grad_s2_launches(x_shape, splits, kernel_sizes, dilations, channels_per_group,
                                config), grad, weight_t, grad_x)
    return grad_x


def _weight_grad(grad, x, splits, kernel_sizes, dilations, stride, channels_per_group,
                 config) -> Tensor:
    """The weight-gradient kernel: fp32 d weight in the layout the kernels read (windowed: see
    :func:`unwindow_weights`)."""
    numel = _weight_layout(tuple(splits), tuple(kernel_sizes), channels_per_group, False, True,
                           x.device)[0]
    grad_w = torch.zeros(numel, dtype=torch.float32, device=x.device)
    _run(weight_grad_launches(x.shape, splits, kernel_sizes, dilations, stride,
                              channels_per_group, config), grad, x, grad_w)
    return grad_w


def transposed_weights(weight: Tensor, splits: Sequence[int], kernel_sizes: Sequence[int],
                       channels_per_group: int, flip: bool = True) -> Tensor:
    """Packed weights of the conv that maps d output to d input: what the CPU backward gives its
    C++ kernels, and the reference of :func:`kernel_weights`'s ``transpose``, which the Triton
    backward uses (one gather instead of a few ops per group).

    At stride 1 that conv is the same kernel with its taps flipped and, with 2 channels per
    group, each group's 2 x 2 channel block transposed -- so the forward kernel computes input
    gradients. The stride-2 gradient kernel walks the taps itself (``flip=False``).
    """
    out = []
    for w, c, k in zip(unpack_weights(weight, splits, kernel_sizes, channels_per_group), splits,
                       kernel_sizes):
        if flip:
            w = w.flip(-1, -2)
        if channels_per_group == 2:
            w = w.reshape(c // 2, 2, 2, k, k).transpose(1, 2).reshape(c, 2, k, k)
        out.append(w)
    return pack_weights(out).contiguous()


def _pool_shape(n, c, out_h, out_w, splits, with_pool, config):
    return (n, pool_tiles(splits, n, out_h, out_w, config), c) if with_pool else (0, )


@torch.library.custom_op('mux_backbones::group_conv', mutates_args=())
def _group_conv(x: Tensor, weight: Tensor, bias: Optional[Tensor], splits: List[int],
                kernel_sizes: List[int], dilations: List[int], stride: int,
                channels_per_group: int, act: str, with_pool: bool,
                stock_forward: bool = False) -> Tuple[Tensor, Tensor]:
    launch_config.note_call('group_conv', x, weight, bias, list(splits), list(kernel_sizes),
                            list(dilations), stride, channels_per_group, act, with_pool)
    if launch_config.dry_running():
        return launch_config.dry_outputs(_group_conv_fake(
            x, weight, bias, splits, kernel_sizes, dilations, stride, channels_per_group, act,
            with_pool, stock_forward))
    plan = forward_plan(x.shape, x.dtype, x.device, splits, kernel_sizes, dilations, stride,
                        channels_per_group, act, with_pool, bias is not None)
    if not stock_forward and plan.fits_int32 and unsupported_reason(x) is None:  # Triton's
        x = _channels_last(x)
        y = _empty_channels_last(*plan.out_shape, x)
        pool = torch.empty(plan.pool_shape, dtype=torch.float32, device=x.device)
        weight = kernel_weights(weight.contiguous(), splits, kernel_sizes, channels_per_group)
        _run(plan.launches, x, weight, bias if bias is not None else weight, y, pool)
        return y, pool
    if not stock_forward and cpu_kernel_serves(x, splits, channels_per_group,
                                               epilogue=act != 'none' or with_pool):
        y, pool = cpu_kernels().group_conv_forward(
            _channels_last(x), weight.detach().float().contiguous(),
            None if bias is None else bias.detach().float().contiguous(), splits, kernel_sizes,
            dilations, stride, channels_per_group, _ACT_CODE[act], *plan.pool_tile)
    else:
        # The stock conv, after the one warning -- not where it is the plan: asked for, or where
        # the C++ kernels take the gradients alone (see cpu_backward_serves).
        if not stock_forward and not cpu_backward_serves(x, splits, kernel_sizes, dilations,
                                                         channels_per_group):
            can_use_triton(x, 'group_conv')
        y = _channels_last(reference_group_conv(x, weight, bias, splits, kernel_sizes, dilations,
                                                stride, channels_per_group, act))
        pool = _tile_sums(y, *plan.pool_tile) if with_pool else None
    return y, pool if with_pool else x.new_empty(0, dtype=torch.float32)


@_group_conv.register_fake
def _group_conv_fake(x, weight, bias, splits, kernel_sizes, dilations, stride,
                     channels_per_group, act, with_pool, stock_forward=False):
    # Not forward_plan: under torch.compile the sizes may be symbolic (not hashable).
    n, c, h, w = x.shape
    oh, ow = output_size(h, stride), output_size(w, stride)
    y = _empty_channels_last(n, c, oh, ow, x)
    config = tuned_config(x, splits, kernel_sizes, dilations, stride, channels_per_group)
    return y, x.new_empty(_pool_shape(n, c, oh, ow, splits, with_pool, config),
                          dtype=torch.float32)


@torch.library.custom_op('mux_backbones::group_conv_backward', mutates_args=())
def _group_conv_backward(grad: Tensor, x: Tensor, weight: Tensor, splits: List[int],
                         kernel_sizes: List[int], dilations: List[int], stride: int,
                         channels_per_group: int) -> Tuple[Tensor, Tensor]:
    """Gradients of the bias-free, activation-free conv: (d input, d packed weight)."""
    n, c, h, w = x.shape
    if not x.numel():  # (an empty batch: nothing to reduce, and no launch plan of no work)
        return _empty_channels_last(n, c, h, w, x), torch.zeros_like(weight)
    if cpu_backward_serves(x, splits, kernel_sizes, dilations, channels_per_group):
        return _cpu_backward(grad, x, weight, splits, kernel_sizes, dilations, stride,
                             channels_per_group)
    # (on fp32 CPU tensors the stock gradients are the plan where the C++ ones do not serve --
    # e.g. after the forward kernel on groups with channels left over: no warning)
    cpu_plan = x.device.type == 'cpu' and x.dtype is CPU_KERNEL_DTYPE and \
        unsupported_reason(x) is not None
    if cpu_plan or not _triton_ok(x, grad.shape):
        grad_x, grad_w = reference_group_conv_backward(grad, x, weight, splits, kernel_sizes,
                                                       dilations, stride, channels_per_group)
        return _channels_last(grad_x), grad_w
    grad, x = _channels_last(grad), _channels_last(x)
    weight = weight.contiguous()
    if stride == 1:  # the forward kernel with flipped (and pair-transposed) weights
        grad_x = _empty_channels_last(n, c, h, w, x)
        _launch_forward(grad, kernel_weights(weight, splits, kernel_sizes, channels_per_group,
                                             transpose=True),
                        None, grad_x, grad_x.new_empty(0, dtype=torch.float32), splits,
                        kernel_sizes, dilations, 1, channels_per_group, 'none', False,
                        tuned_config(grad, splits, kernel_sizes, dilations, 1, channels_per_group))
    else:
        grad_x = _input_grad_s2(
            grad, kernel_weights(weight, splits, kernel_sizes, channels_per_group,
                                 transpose=True, flip=False), x.shape, splits, kernel_sizes,
            dilations, channels_per_group,
            tuned_config(x, splits, kernel_sizes, dilations, 2, channels_per_group,
                         'input_grad_s2'))
    grad_w = _weight_grad(grad, x, splits, kernel_sizes, dilations, stride, channels_per_group,
                          tuned_config(x, splits, kernel_sizes, dilations, stride,
                                       channels_per_group, 'weight_grad'))
    grad_w = unwindow_weights(grad_w, splits, kernel_sizes, channels_per_group)
    return grad_x, grad_w.to(weight.dtype)


def _cpu_backward(grad, x, weight, splits, kernel_sizes, dilations, stride, channels_per_group):
    """:func:`_group_conv_backward` on the C++ kernels: the input gradient by the forward kernel
    with transposed weights (stride 1) or by ``group_conv_backward_cpu.cpp``'s transposed conv
    (stride 2), the weight gradient by its reduction, straight into the packed layout."""
    kernels = cpu_kernels()
    grad, x = _channels_last(grad.float()), _channels_last(x)
    weight_t = transposed_weights(weight.detach().float(), splits, kernel_sizes,
                                  channels_per_group, flip=stride == 1)
    if stride == 1:
        grad_x, _ = kernels.group_conv_forward(grad, weight_t, None, splits, kernel_sizes,
                                               dilations, 1, channels_per_group, _ACT_CODE['none'])
    else:
        grad_x = kernels.group_conv_input_grad_s2(grad, weight_t, x.shape[2], x.shape[3], splits,
                                                  kernel_sizes, dilations, channels_per_group)
    grad_w = kernels.group_conv_weight_grad(grad, x, splits, kernel_sizes, dilations, stride,
                                            channels_per_group)
    return grad_x, grad_w.to(weight.dtype)


@_group_conv_backward.register_fake
def _(grad, x, weight, splits, kernel_sizes, dilations, stride, channels_per_group):
    n, c, h, w = x.shape
    return _empty_channels_last(n, c, h, w, x), torch.empty_like(weight)


def _setup_context(ctx, inputs, output):
    (x, weight, bias, splits, kernel_sizes, dilations, stride, cpg, act, with_pool,
     ctx.stock_forward) = inputs  # (defaults filled in)
    ctx.conv_args = (list(splits), list(kernel_sizes), list(dilations), stride, cpg)
    ctx.act, ctx.with_pool, ctx.has_bias = act, with_pool, bias is not None
    ctx.bias_dtype = bias.dtype if bias is not None else None
    ctx.out_shape = output[0].shape
    n, _, out_h, out_w = ctx.out_shape
    # The tiles the forward pooled over (a tuned config's, if any, as the forward saw it).
    ctx.pool_tile = _forward_tile(splits, n, out_h, out_w, tuned_config(
        x, splits, kernel_sizes, dilations, stride, cpg)) if with_pool else None
    ctx.save_for_backward(x, weight, bias)


def _backward(ctx, grad_y, grad_pool):
    x, weight, bias = ctx.saved_tensors
    splits, kernel_sizes, dilations, stride, cpg = ctx.conv_args
    if grad_y is None:
        grad_y = x.new_zeros(ctx.out_shape)
    pooled = ctx.with_pool and grad_pool is not None
    # The plain conv (training: BN and activation are modules of their own) passes the incoming
    # gradient as it is; only the epilogue's terms need the map in fp32.
    grad = grad_y
    if pooled or ctx.act != 'none' or ctx.has_bias:
        grad = grad_y.float()
        if pooled:  # d tile sum / d y is 1 at the tile's pixels
            n, _, out_h, out_w = ctx.out_shape
            grad = grad + _tile_broadcast(grad_pool, out_h, out_w, *ctx.pool_tile)
        if ctx.act != 'none':
            # Recompute the pre-activation instead of keeping it: one cheap pass, half the memory.
            z, _ = call(_group_conv, x, weight, bias, splits, kernel_sizes, dilations, stride,
                        cpg, 'none', False, ctx.stock_forward)
            grad = grad * _activation_grad(z, ctx.act)
    grad_bias = grad.sum((0, 2, 3)).to(ctx.bias_dtype) if ctx.has_bias else None
    grad_x, grad_w = call(_group_conv_backward, grad.to(x.dtype), x, weight, splits,
                          kernel_sizes, dilations, stride, cpg)
    return grad_x, grad_w, grad_bias, None, None, None, None, None, None, None, None


_group_conv.register_autograd(_backward, setup_context=_setup_context)


def group_conv(x: Tensor, weight: Tensor, bias: Optional[Tensor], splits: Sequence[int],
               kernel_sizes: Sequence[int], dilations: Sequence[int], stride: int = 1,
               channels_per_group: int = 1, act: str = 'none', with_pool: bool = False,
               stock_forward: bool = False):
    """Group-wise conv of every channel group at its own kernel size, into one output.

    Args:
        x (Tensor): (N, C, H, W) input, best channels-last (other layouts are converted).
        weight (Tensor): The groups' weights packed by :func:`pack_weights`.
        bias (Tensor, optional): (C, ) bias added before the activation.
        splits (Sequence[int]): Channels of each group, in order; they add up to C.
        kernel_sizes (Sequence[int]): Odd kernel size of each group.
        dilations (Sequence[int]): Dilation of each group.
        stride (int): 1 or 2; padding is "same" (output ``ceil(H / stride)``). Default: 1.
        channels_per_group (int): 1 (depth-wise) or 2 channels per conv group. Default: 1.
        act (str): Epilogue activation: 'none', 'relu', 'silu' or 'relu6'. Default: 'none'.
        with_pool (bool): Also return the fp32 per-channel sums of the output (the
            squeeze-excite pooling, before dividing by H * W): ``(N, T, C)`` partial sums over
            ``T`` = :func:`pool_tiles` tiles of the map, which add up to the sums. Default: False.
        stock_forward (bool): Compute the forward with the stock conv (cuDNN, oneDNN) and only
            the gradients with the kernels: for a layer whose forward the library does well and
            whose backward it does not (which one is the device's to say:
            :func:`mux_backbones.tuning.choose_training_kernels` times it). Default: False.

    Returns:
        Tensor | tuple[Tensor, Tensor]: The channels-last output (and the partial sums if
        ``with_pool``).
    """
    splits, kernel_sizes, dilations = list(splits), list(kernel_sizes), list(dilations)
    check_args(x, weight, splits, kernel_sizes, dilations, stride, channels_per_group, act)
    y, pool = call(_group_conv, x, weight, bias, splits, kernel_sizes, dilations, stride,
                   channels_per_group, act, with_pool, stock_forward)
    return (y, pool) if with_pool else y


# Software-pipeline depths of the tap-row loop the tuner tries: none (the planner's), and the
# next two rows' loads in flight through shared memory (sm_90 SASS: 128-bit LDGSTS, 12-46 KB).
TUNED_STAGES = (1, 3)


def forward_candidates(x_shape, splits: Sequence[int],
                       stride: int = 1) -> List[LaunchConfig]:
    """Forward launch configs worth timing for an input of ``x_shape``, the planner's own first:
    2, 4 or 8 warps, each thread holding 8 or 16 accumulators of the widest channel block (the
    planner's register rule is 16 at 4 warps), tiles of 16-256 pixels as square as the map
    allows, each with and without the tap-row loop pipelined (:data:`TUNED_STAGES`). Fewer warps
    or accumulators per program mean more programs in flight (latency hidden by occupancy),
    more mean more independent loads per thread, pipelining keeps loads in flight across rows
    at the price of shared memory; which wins is the GPU's to say."""
    n, _, h, w = x_shape
    oh, ow = output_size(h, stride), output_size(w, stride)
    return _with_stages(_candidate_tiles(splits, oh, ow, _pixel_tile(splits, oh, ow, n)))


def _candidate_tiles(splits, out_h: int, out_w: int, planned) -> List[LaunchConfig]:
    """``planned`` (a tile) at the planner's warps, then the tiles of :func:`forward_candidates`'
    warp x accumulator rule."""
    tiles = [LaunchConfig(*planned, NUM_WARPS)]
    widest = max(_channel_block(size, first)[0] for first, size in _windows(splits))
    for num_warps in (2, 4, 8):
        for per_thread in (8, 16):
            pixels = per_thread * 32 * num_warps // widest
            if not 16 <= pixels <= 256:
                continue
            tile_w = min(next_power_of_2(out_w), 16, pixels)
            tile_h = max(1, min(next_power_of_2(out_h), pixels // tile_w))
            config = LaunchConfig(tile_h, tile_w, num_warps)
            if config not in tiles:
                tiles.append(config)
    return tiles


def _with_stages(tiles: Sequence[LaunchConfig]) -> List[LaunchConfig]:
    return [config._replace(num_stages=stages) for stages in TUNED_STAGES for config in tiles]


def input_grad_s2_candidates(x_shape, splits: Sequence[int]) -> List[LaunchConfig]:
    """Stride-2 input-gradient launch configs worth timing, the planner's own first: the
    forward's tile x warp rule on its grid of one parity class (4 per image); not pipelined
    (sm_90: its loop, which branches per tap row, compiles the same with 3 stages)."""
    n, _, h, w = x_shape
    oh, ow = output_size(h, 2), output_size(w, 2)
    return _candidate_tiles(splits, oh, ow, _pixel_tile(splits, oh, ow, 4 * n))


def weight_grad_candidates(x_shape, splits: Sequence[int], stride: int = 1,
                           channels_per_group: int = 1) -> List[LaunchConfig]:
    """Weight-gradient launch configs worth timing, the planner's own first: the taller tiles
    the planner derives from each forward candidate's tile, at that candidate's warps, with and
    without the tile loop pipelined (a streaming reduction: two loads and a few FMAs per tile,
    the loop the pipeliner keeps loads in flight across)."""
    _, _, h, w = x_shape
    oh, ow = output_size(h, stride), output_size(w, stride)
    tiles = []
    for config in _candidate_tiles(splits, oh, ow, _pixel_tile(splits, oh, ow)):
        taller = LaunchConfig(*_weight_grad_tile(splits, oh, ow, channels_per_group,
                                                 config[:2]), config.num_warps)
        if taller not in tiles:
            tiles.append(taller)
    return _with_stages(tiles)


def _tunable(x: Tensor, weight: Tensor, splits, kernel_sizes, dilations, stride: int,
             channels_per_group: int, act: str = 'none') -> Optional[Tuple[int, int, int, int]]:
    """The output shape of a call the tuners may time (its arguments checked), None where the
    kernels cannot take ``x`` (then nothing is compiled, timed or recorded)."""
    check_args(x, weight, splits, kernel_sizes, dilations, stride, channels_per_group, act)
    n, c, h, w = x.shape
    out_shape = (n, c, output_size(h, stride), output_size(w, stride))
    return out_shape if _triton_ok(x, out_shape) else None


def compile_jobs(x: Tensor, weight: Tensor, bias: Optional[Tensor], splits: Sequence[int],
                 kernel_sizes: Sequence[int], dilations: Sequence[int], stride: int = 1,
                 channels_per_group: int = 1, act: str = 'none', with_pool: bool = False,
                 backward: bool = False, current_only: bool = False) -> List[tuple]:
    """The launches :func:`tune_forward` (and with ``backward``, :func:`tune_weight_grad` and
    at stride 2 :func:`tune_input_grad_s2`) will run for this call, one per candidate config,
    as picklable jobs for :func:`.launch_config.precompile` (nothing where the kernels cannot
    take ``x``); with ``current_only`` one per kernel, the config the call launches now: its
    tuned entry, else the planner's own (the first candidate)."""

    def configs(kernel, candidates):
        if not current_only:
            return candidates
        return [tuned_config(x, splits, kernel_sizes, dilations, stride, channels_per_group,
                             kernel) or candidates[0]]

    if _tunable(x, weight, list(splits), list(kernel_sizes), list(dilations), stride,
                channels_per_group, act) is None:
        return []
    dtypes = tuple(str(t.dtype).replace('torch.', '')
                   for t in (x, weight, bias if bias is not None else weight))
    call = (tuple(x.shape), dtypes, str(x.device), tuple(splits), tuple(kernel_sizes),
            tuple(dilations), stride, channels_per_group, act, with_pool, bias is not None)
    jobs = [(_run_compile_job, 'forward') + call + (tuple(config), )
            for config in configs('forward', forward_candidates(x.shape, splits, stride))]
    if backward:
        jobs += [(_run_compile_job, 'weight_grad') + call + (tuple(config), ) for config in
                 configs('weight_grad', weight_grad_candidates(x.shape, splits, stride,
                                                               channels_per_group))]
        if stride == 2:
            jobs += [(_run_compile_job, 'input_grad_s2') + call + (tuple(config), ) for config
                     in configs('input_grad_s2', input_grad_s2_candidates(x.shape, splits))]
    return jobs


def _run_compile_job(kernel, x_shape, dtypes, device, splits, kernel_sizes, dilations, stride,
                     cpg, act, with_pool, has_bias, config) -> None:
    """Launch one :func:`compile_jobs` candidate once on zeros (what compiles it)."""
    x_dtype, w_dtype, b_dtype = (getattr(torch, name) for name in dtypes)
    config = LaunchConfig(*config)
    n, c, h, w = x_shape
    oh, ow = output_size(h, stride), output_size(w, stride)
    x = _channels_last(torch.zeros(x_shape, dtype=x_dtype, device=device))
    grad = _empty_channels_last(n, c, oh, ow, x).zero_()
    weight = torch.zeros(_weight_layout(splits, kernel_sizes, cpg, False, True, x.device)[0],
                         dtype=w_dtype, device=device)
    if kernel == 'weight_grad':
        _weight_grad(grad, x, splits, kernel_sizes, dilations, stride, cpg, config)
    elif kernel == 'input_grad_s2':
        _input_grad_s2(grad, weight, x_shape, splits, kernel_sizes, dilations, cpg, config)
    else:
        bias = torch.zeros(c, dtype=b_dtype, device=device) if has_bias else None
        pool = torch.empty(_pool_shape(n, c, oh, ow, splits, with_pool, config),
                           dtype=torch.float32, device=device)
        _launch_forward(x, weight, bias, _empty_channels_last(n, c, oh, ow, x), pool, splits,
                        kernel_sizes, dilations, stride, cpg, act, with_pool, config)


def tune_forward(x: Tensor, weight: Tensor, bias: Optional[Tensor], splits: Sequence[int],
                 kernel_sizes: Sequence[int], dilations: Sequence[int], stride: int = 1,
                 channels_per_group: int = 1, act: str = 'none', with_pool: bool = False,
                 time_us=None) -> dict:
    """Time every :func:`forward_candidates` config of this call and keep the fastest for its
    signature (:func:`tuned_config`; the stride-1 input gradient, the same kernel on the same
    shape, uses it too). A candidate that fails to compile or changes the output is skipped.

    Args:
        x, weight, bias, splits, kernel_sizes, dilations, stride, channels_per_group, act,
            with_pool: As :func:`group_conv`.
        time_us (callable, optional): ``time_us(fn) -> microseconds per fn()``; default: CUDA
            graph replays (:func:`mux_backbones.utils.timing.device_time_us`).

    Returns:
        dict: Microseconds per candidate config, the planner's own first (the fastest is the one
        kept); empty where the kernels cannot take ``x`` (nothing is recorded then).
    """
    splits, kernel_sizes, dilations = list(splits), list(kernel_sizes), list(dilations)
    if _tunable(x, weight, splits, kernel_sizes, dilations, stride, channels_per_group,
                act) is None:
        return {}
    args = (x, weight, bias, splits, kernel_sizes, dilations, stride, channels_per_group, act,
            with_pool)

    def run():
        y, pool = _group_conv(*args)
        return y, pool.sum(1) if with_pool else None

    def same(result, reference):
        # Every config runs each output's taps in the same order: the outputs are equal bit for
        # bit, or the config is broken; the pooled sums come in other tiles.
        return torch.equal(result[0], reference[0]) and (
            result[1] is None or torch.allclose(result[1], reference[1], 1e-4, 1e-3))

    key = tuning_key(x.shape, x.dtype, x.device, splits, kernel_sizes, dilations, stride,
                     channels_per_group)
    return launch_config.tune(key, forward_candidates(x.shape, splits, stride), run, same,
                              launch_config.timer(time_us, x.device))


def tune_input_grad_s2(x: Tensor, weight: Tensor, splits: Sequence[int],
                       kernel_sizes: Sequence[int], dilations: Sequence[int],
                       channels_per_group: int = 1, time_us=None) -> dict:
    """:func:`tune_forward` for the stride-2 input-gradient kernel of a training call: each
    :func:`input_grad_s2_candidates` config timed on a random output gradient (every config sums
    each input pixel's taps in the same order: results equal bit for bit).

    Returns:
        dict: Microseconds per candidate config, the planner's own first (the fastest is kept).
    """
    splits, kernel_sizes, dilations = list(splits), list(kernel_sizes), list(dilations)
    out_shape = _tunable(x, weight, splits, kernel_sizes, dilations, 2, channels_per_group)
    if out_shape is None:
        return {}
    grad = _channels_last(torch.randn(out_shape, dtype=x.dtype, device=x.device))
    transposed = kernel_weights(weight.contiguous(), splits, kernel_sizes, channels_per_group,
                                transpose=True, flip=False)

    def run():
        return _input_grad_s2(grad, transposed, x.shape, splits, kernel_sizes, dilations,
                              channels_per_group, tuned_config(
                                  x, splits, kernel_sizes, dilations, 2, channels_per_group,
                                  'input_grad_s2'))

    key = tuning_key(x.shape, x.dtype, x.device, splits, kernel_sizes, dilations, 2,
                     channels_per_group, 'input_grad_s2')
    return launch_config.tune(key, input_grad_s2_candidates(x.shape, splits), run, torch.equal,
                              launch_config.timer(time_us, x.device))


def tune_weight_grad(x: Tensor, weight: Tensor, splits: Sequence[int],
                     kernel_sizes: Sequence[int], dilations: Sequence[int], stride: int = 1,
                     channels_per_group: int = 1, time_us=None) -> dict:
    """:func:`tune_forward` for the weight-gradient kernel of a training call: each
    :func:`weight_grad_candidates` config timed on ``x`` and a random output gradient (results
    compared to the first within fp32 rounding: the chunks meet in atomics, in any order).

    Returns:
        dict: Microseconds per candidate config, the planner's own first (the fastest is kept).
    """
    splits, kernel_sizes, dilations = list(splits), list(kernel_sizes), list(dilations)
    out_shape = _tunable(x, weight, splits, kernel_sizes, dilations, stride, channels_per_group)
    if out_shape is None:
        return {}
    x = _channels_last(x)
    grad = _channels_last(torch.randn(out_shape, dtype=x.dtype, device=x.device))

    def run():
        return _weight_grad(grad, x, splits, kernel_sizes, dilations, stride, channels_per_group,
                            tuned_config(x, splits, kernel_sizes, dilations, stride,
                                         channels_per_group, 'weight_grad'))

    def same(result, reference):
        return torch.allclose(result, reference, rtol=1e-3,
                              atol=1e-4 * float(reference.abs().max()))

    key = tuning_key(x.shape, x.dtype, x.device, splits, kernel_sizes, dilations, stride,
                     channels_per_group, 'weight_grad')
    return launch_config.tune(key, weight_grad_candidates(x.shape, splits, stride,
                                                          channels_per_group),
                              run, same, launch_config.timer(time_us, x.device))
