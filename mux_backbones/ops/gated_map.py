"""The squeeze-excite's training form on a map, ``y * gate(y)`` with ``y = act(x)``, forward and
backward on kernels.

MUXNet's blocks gate their expanded map with a squeeze-excite (paper Sec. 4, the official
blocks' ``se``): the channel means, two tiny fully connected layers with an activation between,
a sigmoid, the product. Trained on stock operators that is ~6 launches forward and ~13 backward
per block, each paying its dispatch; in a host-bound training step the squeeze-excites were
most of the host time MUXNet-m spent beyond MobileNetV2's (docs/speed_log.md, session 32).
Here the whole form is one autograd node, and it takes the block's activation before it (the
spatial conv's ``act(BN(conv))``) along: the activated map is never written (nor kept for the
backward: the BN's output ``x`` is), and its gradient is the input gradient's last factor --
two passes over the block's widest map and two launches per block and step fewer than the
stock activation's:

* on fp32 CPU tensors, one call of the C++ extension each way (``se_gate_cpu.cpp``), with no
  Python in either direction;
* on CUDA (and on CPU tensors under ``TRITON_INTERPRET=1``, how the tests run it) three Triton
  launches forward -- the map's partial channel sums, the gate from them (the deploy gate's
  kernel, :mod:`.se_gate`), the gated map -- and four backward: the partial sums of
  ``grad * y``, the gate's small network differentiated per sample, its weight gradients, and
  the input's gradient ``(grad * gate + d mean / (H W)) * act'(x)`` in one pass; the
  activation is recomputed from ``x`` where a pass needs ``y`` (free in passes bound by memory).

Every gradient is the formula autograd applies to the stock expression (the activation's as its
backward operator takes it), in fp32 whatever the map's dtype (an fp16 map under AMP gets an
fp32 gate, which the stock form would round to fp16), and each sum runs in a fixed order: the
same bits from run to run. The node is differentiable once, as the stock form's.

Not an op node: it serves eager autograd (``SqueezeExcite`` with ``fused_ops``); under
``torch.compile`` and tracing the layer runs its stock expression, which Inductor fuses. Where
neither kernel takes the tensors (another device or dtype, an activation without a kernel
code), the layer trains on its stock form.
"""
import functools
from typing import Callable, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from . import launch_config
from ._cpu_kernels import cpu_kernels, cpu_kernels_take
from ._launch import KernelLaunch
from ._triton import HAS_TRITON, interpreting, next_power_of_2, tl, triton, unsupported_reason
from .group_conv import _ACT_CODE, check_act
from .pointwise_conv import alignment
from .se_gate import gate_launch

if HAS_TRITON:
    from .group_conv import _activate

BLOCK_P = 64  # pixels per step of a map kernel's loop
MAX_BLOCK_C = 64  # channels per map-kernel program
MIN_MAP_PROGRAMS = 1024  # tiles of the pixels until a map launch has this many programs


def cpu_kernel_takes(x: Tensor, *params: Tensor) -> bool:
    """Whether the C++ kernels compute the training form on the (N, C, H, W) map ``x``: fp32
    CPU tensors outside Triton's interpreter, the extension built, ``x`` contiguous or
    channels-last, and no CPU autocast (which runs the gate's products in its own dtype: the
    stock training form serves it)."""
    return x.dim() == 4 and cpu_kernels_take(x, *params) and \
        not torch.is_autocast_enabled('cpu') and \
        (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last))


def triton_kernels_take(x: Tensor, *params: Tensor) -> bool:
    """Whether the Triton kernels compute the training form on the (N, C, H, W) map ``x``: CUDA
    tensors (CPU ones under Triton's interpreter) of dtypes the kernels take, on one device, and
    a map with elements (an empty grid is no launch), outside a dry run
    (:func:`~.launch_config.dry_run`). A map or a weight they do not take trains
    on the stock form, without a warning (the layer's own choice, not a request for a kernel:
    the block's ops warn where they fall back)."""
    if x.dim() != 4 or not x.numel() or not (x.is_cuda or (x.is_cpu and interpreting())):
        return False
    if launch_config.dry_running():  # (tuning learning a model's calls: nothing may compile)
        return False
    return all(t.device == x.device and unsupported_reason(t) is None for t in (x, *params))


def gated_map_kernel(x: Tensor, *params: Tensor) -> Optional[Callable[..., Tensor]]:
    """The form of :func:`gated_map` that computes on these tensors -- the C++ node or the
    Triton one, each called as ``gated_map`` is -- or None where no kernel takes them. (The
    layer asks once per call and calls what it gets: the checks cost a few microseconds.)"""
    if cpu_kernel_takes(x, *params):
        return _cpu_gated_map
    if triton_kernels_take(x, *params):
        return _TritonGatedMap.apply
    return None


def gated_map(x: Tensor, w_reduce: Tensor, b_reduce: Tensor, w_expand: Tensor,
              b_expand: Tensor, act: str, map_act: str = 'none') -> Tensor:
    """``y * gate`` with ``y = map_act(x)`` and the gate from ``y``'s channel means, as one
    autograd node (where :func:`gated_map_kernel` finds a form; see the module docstring).

    Args:
        x (Tensor): The (N, C, H, W) map before ``map_act``; on the C++ kernels contiguous or
            channels-last.
        w_reduce (Tensor): (S, C) weight of the squeeze layer, or its 1x1 conv's (S, C, 1, 1).
        b_reduce (Tensor): Its (S, ) bias.
        w_expand (Tensor): (C, S) weight of the excite layer, or (C, S, 1, 1).
        b_expand (Tensor): Its (C, ) bias.
        act (str): Activation between the two: 'none', 'relu', 'silu' or 'relu6'.
        map_act (str): Activation applied to the map first (one of the same; the block's own,
            after its spatial conv's BN), differentiated through by the node. Default: 'none'.

    Returns:
        Tensor: The gated map, in ``x``'s dtype and layout.

    Raises:
        ValueError: ``map_act`` is none of the kernels' activations, or no kernel takes the
            tensors.
    """
    check_act(map_act, 'gated_map (map_act)')
    params = (w_reduce, b_reduce, w_expand, b_expand)
    kernel = gated_map_kernel(x, *params)
    if kernel is None:
        raise ValueError(f'gated_map: no kernel takes a {tuple(x.shape)} {x.dtype} map on '
                         f'{x.device} with {[p.dtype for p in params]} weights '
                         f'(gated_map_kernel says which do; the stock training form takes the '
                         f'rest)')
    return kernel(x, *params, act, map_act)


def _cpu_gated_map(x, w_reduce, b_reduce, w_expand, b_expand, act, map_act):
    return cpu_kernels().gated_map(x, w_reduce, b_reduce, w_expand, b_expand, _ACT_CODE[act],
                                   _ACT_CODE[map_act])


if HAS_TRITON:

    # The integer arguments are not specialised (``do_not_specialize``): Triton would compile
    # one variant per combination of sizes and strides divisible by 16 or equal to 1, and an
    # SE's shapes vary per block; what the loads need to know comes as ``VEC_C`` and ``ALIGN``.
    _MAP_INTS = ['C', 'P', 'a_sn', 'a_so', 'b_sn', 'b_so', 'o_sn', 'o_so', 'TILE_P']

    @triton.jit
    def _tile(t, p0, C, P, TILE_P, VEC_C: tl.constexpr, ALIGN: tl.constexpr,
              BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
        """``(offs_p, offs_c, mask)`` of a program's channel block and a step of its pixel tile.
        ``VEC_C``: the channels are the maps' unit-stride dimension (channels-last), else the
        pixels are; ``ALIGN`` (a power of two dividing that dimension's extent and the maps'
        other strides) lets the compiler load vectors along it, and the mask there is built
        from multiples of it, so it keeps them."""
        offs_c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
        offs_p = tl.multiple_of(t * TILE_P + p0, BLOCK_P) + tl.arange(0, BLOCK_P)
        if VEC_C:
            mask = (offs_p < P)[:, None] & ((offs_c // ALIGN) < (C // ALIGN))[None, :]
        else:
            mask = ((offs_p // ALIGN) < (P // ALIGN))[:, None] & (offs_c < C)[None, :]
        return offs_p, offs_c, mask

    @triton.jit
    def _offsets(n, offs_p, offs_c, s_n, s_o, VEC_C: tl.constexpr, ALIGN: tl.constexpr):
        """Element offsets of a (pixels, channels) tile of a map of sample stride ``s_n`` whose
        unit-stride dimension ``VEC_C`` says; ``s_o`` is the other one's stride."""
        if VEC_C:
            return tl.multiple_of(n * s_n + offs_p * s_o, ALIGN)[:, None] + offs_c[None, :]
        return tl.multiple_of(n * s_n + offs_c * s_o, ALIGN)[None, :] + offs_p[:, None]

    @triton.jit(do_not_specialize=_MAP_INTS[:6] + _MAP_INTS[8:])
    def _map_sums_kernel(a_ptr, b_ptr, out_ptr, C, P, a_sn, a_so, b_sn, b_so, TILE_P,
                         PRODUCT: tl.constexpr, MAP_ACT: tl.constexpr, VEC_C: tl.constexpr,
                         ALIGN: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
        """Partial channel sums of ``act(a)`` (of ``a * act(b)`` with ``PRODUCT``; ``act`` the
        map activation ``MAP_ACT``, applied to the map the node gates) over one tile of
        ``TILE_P`` pixels: program (n, t, channel block) writes ``out[n, t, channels]``."""
        n, t = tl.program_id(0).to(tl.int64), tl.program_id(1)
        total = tl.zeros((BLOCK_C, ), dtype=tl.float32)
        for p0 in range(0, TILE_P, BLOCK_P):  # (TILE_P is a multiple of BLOCK_P)
            offs_p, offs_c, mask = _tile(t, p0, C, P, TILE_P, VEC_C, ALIGN, BLOCK_P, BLOCK_C)
            values = tl.load(a_ptr + _offsets(n, offs_p, offs_c, a_sn, a_so, VEC_C, ALIGN),
                             mask=mask, other=0.0).to(tl.float32)
            if PRODUCT:
                values *= _activate(tl.load(
                    b_ptr + _offsets(n, offs_p, offs_c, b_sn, b_so, VEC_C, ALIGN),
                    mask=mask, other=0.0).to(tl.float32), MAP_ACT)
            else:  # (each activation maps the masked lanes' 0 to 0)
                values = _activate(values, MAP_ACT)
            total += tl.sum(values, axis=0)
        offs_c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
        tl.store(out_ptr + (n * tl.num_programs(1) + t) * C + offs_c, total, mask=offs_c < C)

    @triton.jit(do_not_specialize=_MAP_INTS[:4] + ['x_sn', 'x_so'] + _MAP_INTS[6:])
    def _scale_map_kernel(a_ptr, x_ptr, scale_ptr, shift_ptr, out_ptr, C, P, a_sn, a_so, x_sn,
                          x_so, o_sn, o_so, TILE_P, SHIFT: tl.constexpr, ACT_IN: tl.constexpr,
                          ACT_GRAD: tl.constexpr, VEC_C: tl.constexpr, ALIGN: tl.constexpr,
                          BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
        """``out = act(a) * scale[n, c]`` (forward: the gated map, ``act`` = ``ACT_IN``), or
        ``out = (a * scale[n, c] + shift[n, c]) * act'(x)`` (backward: the input's gradient,
        through the map activation ``ACT_GRAD`` at the pre-activation map ``x``; ``x`` is read
        only there), over one tile of pixels, in fp32, stored in ``out``'s dtype."""
        n, t = tl.program_id(0).to(tl.int64), tl.program_id(1)
        offs_c = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
        scale = tl.load(scale_ptr + n * C + offs_c, mask=offs_c < C, other=0.0).to(tl.float32)
        if SHIFT:
            shift = tl.load(shift_ptr + n * C + offs_c, mask=offs_c < C, other=0.0)
        for p0 in range(0, TILE_P, BLOCK_P):
            offs_p, offs_c, mask = _tile(t, p0, C, P, TILE_P, VEC_C, ALIGN, BLOCK_P, BLOCK_C)
            values = _activate(tl.load(a_ptr + _offsets(n, offs_p, offs_c, a_sn, a_so, VEC_C,
                                                        ALIGN),
                                       mask=mask, other=0.0).to(tl.float32), ACT_IN)
            values *= scale[None, :]
            if SHIFT:
                values += shift[None, :]
            if ACT_GRAD != 0:
                values = _activation_grad(values, tl.load(
                    x_ptr + _offsets(n, offs_p, offs_c, x_sn, x_so, VEC_C, ALIGN), mask=mask,
                    other=0.0).to(tl.float32), ACT_GRAD)
            tl.store(out_ptr + _offsets(n, offs_p, offs_c, o_sn, o_so, VEC_C, ALIGN),
                     values.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _activation_grad(grad, z, ACT: tl.constexpr):
        """``grad`` through ``act`` at ``z``, as autograd's backward operators take it
        (``threshold_backward`` on ReLU's output, ``hardtanh_backward``'s open interval)."""
        if ACT == 1:  # (written so a NaN passes the gradient, as those operators let it)
            grad = tl.where(z <= 0.0, 0.0, grad)
        elif ACT == 2:
            sig = tl.sigmoid(z)
            grad = grad * sig * (1.0 + z * (1.0 - sig))
        elif ACT == 3:
            grad = tl.where((z <= 0.0) | (z >= 6.0), 0.0, grad)
        return grad

    @triton.jit
    def _channel_totals(parts_ptr, n, k0, T, C, BLOCK_K: tl.constexpr, BLOCK_T: tl.constexpr):
        """Sample ``n``'s channels ``k0 ..`` summed over the ``T`` partial sums (fixed order)."""
        offs_k = k0 + tl.arange(0, BLOCK_K)
        total = tl.zeros((BLOCK_K, ), dtype=tl.float32)
        for t0 in range(0, T, BLOCK_T):
            offs_t = t0 + tl.arange(0, BLOCK_T)
            total += tl.sum(tl.load(parts_ptr + (n * T + offs_t[:, None]) * C + offs_k[None, :],
                                    mask=(offs_t < T)[:, None] & (offs_k < C)[None, :],
                                    other=0.0), axis=0)
        return total

    @triton.jit(do_not_specialize=['T', 'C', 'S'])
    def _gate_backward_kernel(sums_ptr, dsums_ptr, gate_ptr, w1_ptr, b1_ptr, w2_ptr,
                              mean_ptr, hidden_ptr, grad_logit_ptr, grad_z_ptr, shift_ptr, T, C,
                              S, inv_pixels, ACT: tl.constexpr, BLOCK_S: tl.constexpr,
                              BLOCK_K: tl.constexpr, BLOCK_T: tl.constexpr):
        """The gate's small network differentiated for one sample (program ``n``): from the
        map's partial sums and those of ``grad * x`` (``d loss / d gate`` per channel), the
        logits' and the hidden layer's gradients and the input's per-channel shift
        ``d loss / d mean / (H W)``; it keeps the means and the hidden activations for the
        weight gradients."""
        n = tl.program_id(0)
        offs_s = tl.arange(0, BLOCK_S)
        mask_s = offs_s < S
        z = tl.zeros((BLOCK_S, ), dtype=tl.float32)
        for k0 in range(0, C, BLOCK_K):  # the forward's hidden layer, recomputed
            offs_k = k0 + tl.arange(0, BLOCK_K)
            mask_k = offs_k < C
            mean = _channel_totals(sums_ptr, n, k0, T, C, BLOCK_K, BLOCK_T) * inv_pixels
            tl.store(mean_ptr + n * C + offs_k, mean, mask=mask_k)
            w1 = tl.load(w1_ptr + offs_s[:, None] * C + offs_k[None, :],
                         mask=mask_s[:, None] & mask_k[None, :], other=0.0).to(tl.float32)
            z += tl.sum(w1 * mean[None, :], axis=1)
        z += tl.load(b1_ptr + offs_s, mask=mask_s, other=0.0).to(tl.float32)
        tl.store(hidden_ptr + n * S + offs_s, _activate(z, ACT), mask=mask_s)
        grad_h = tl.zeros((BLOCK_S, ), dtype=tl.float32)
        for k0 in range(0, C, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            mask_k = offs_k < C
            gate = tl.load(gate_ptr + n * C + offs_k, mask=mask_k, other=0.0).to(tl.float32)
            grad_logit = _channel_totals(dsums_ptr, n, k0, T, C, BLOCK_K, BLOCK_T) * \
                (1.0 - gate) * gate
            tl.store(grad_logit_ptr + n * C + offs_k, grad_logit, mask=mask_k)
            w2 = tl.load(w2_ptr + offs_k[:, None] * S + offs_s[None, :],
                         mask=mask_k[:, None] & mask_s[None, :], other=0.0).to(tl.float32)
            grad_h += tl.sum(w2 * grad_logit[:, None], axis=0)
        grad_z = tl.where(mask_s, _activation_grad(grad_h, z, ACT), 0.0)
        tl.store(grad_z_ptr + n * S + offs_s, grad_z, mask=mask_s)
        for k0 in range(0, C, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            mask_k = offs_k < C
            w1 = tl.load(w1_ptr + offs_s[:, None] * C + offs_k[None, :],
                         mask=mask_s[:, None] & mask_k[None, :], other=0.0).to(tl.float32)
            tl.store(shift_ptr + n * C + offs_k,
                     tl.sum(w1 * grad_z[:, None], axis=0) * inv_pixels, mask=mask_k)

    @triton.jit(do_not_specialize=['N', 'C', 'S'])
    def _gate_weight_grad_kernel(grad_logit_ptr, hidden_ptr, grad_z_ptr, mean_ptr, gw1_ptr,
                                 gb1_ptr, gw2_ptr, gb2_ptr, N, C, S, BLOCK_C: tl.constexpr,
                                 BLOCK_S: tl.constexpr):
        """The gate's weight and bias gradients of one block of channels, summed over the
        samples in order (program 0 also writes the squeeze bias's)."""
        block = tl.program_id(0)
        offs_c = block * BLOCK_C + tl.arange(0, BLOCK_C)
        offs_s = tl.arange(0, BLOCK_S)
        mask_c, mask_s = offs_c < C, offs_s < S
        gw2 = tl.zeros((BLOCK_C, BLOCK_S), dtype=tl.float32)
        gw1 = tl.zeros((BLOCK_S, BLOCK_C), dtype=tl.float32)
        gb2 = tl.zeros((BLOCK_C, ), dtype=tl.float32)
        gb1 = tl.zeros((BLOCK_S, ), dtype=tl.float32)
        for n in range(N):
            grad_logit = tl.load(grad_logit_ptr + n * C + offs_c, mask=mask_c, other=0.0)
            hidden = tl.load(hidden_ptr + n * S + offs_s, mask=mask_s, other=0.0)
            grad_z = tl.load(grad_z_ptr + n * S + offs_s, mask=mask_s, other=0.0)
            mean = tl.load(mean_ptr + n * C + offs_c, mask=mask_c, other=0.0)
            gw2 += grad_logit[:, None] * hidden[None, :]
            gw1 += grad_z[:, None] * mean[None, :]
            gb2 += grad_logit
            gb1 += grad_z
        both = mask_c[:, None] & mask_s[None, :]
        tl.store(gw2_ptr + offs_c[:, None] * S + offs_s[None, :],
                 gw2.to(gw2_ptr.dtype.element_ty), mask=both)
        tl.store(gw1_ptr + offs_s[:, None] * C + offs_c[None, :],
                 gw1.to(gw1_ptr.dtype.element_ty), mask=mask_s[:, None] & mask_c[None, :])
        tl.store(gb2_ptr + offs_c, gb2.to(gb2_ptr.dtype.element_ty), mask=mask_c)
        if block == 0:
            tl.store(gb1_ptr + offs_s, gb1.to(gb1_ptr.dtype.element_ty), mask=mask_s)


class MapPlan(NamedTuple):
    """How the map kernels cut an (N, C, P-pixel) map: programs of ``block_c`` channels by
    ``tile_p`` pixels, ``tiles`` tiles per sample (the partial sums' middle dimension)."""
    block_c: int
    tile_p: int
    tiles: int


@functools.lru_cache(maxsize=1024)
def map_plan(n: int, c: int, pixels: int) -> MapPlan:
    """The map kernels' cut of an (N, C, P-pixel) map: as few pixel tiles as give
    :data:`MIN_MAP_PROGRAMS` programs (fewer partial sums to add up), each a multiple of
    :data:`BLOCK_P` pixels."""
    block_c = min(MAX_BLOCK_C, next_power_of_2(c))
    blocks = n * -(-c // block_c)
    steps = -(-pixels // BLOCK_P)
    tiles = min(steps, max(1, -(-MIN_MAP_PROGRAMS // blocks)))
    tile_p = -(-steps // tiles) * BLOCK_P
    return MapPlan(block_c, tile_p, -(-pixels // tile_p))


def map_layout(t: Tensor) -> Optional[Tuple[bool, int, int]]:
    """``(channels_inner, sample stride, other stride)`` of an (N, C, H, W) map with a
    unit-stride dimension the kernels walk -- its channels (channels-last), or its pixels in
    ``h * W + w`` order (contiguous) -- and the stride of the other (pixels, or channels); None
    for any other layout. Channel slices of either keep theirs."""
    sn, sc, sh, sw = t.stride()
    h, w = t.shape[2:]
    if sc == 1:
        if w == 1 or h == 1 or sh == w * sw:
            return True, sn, (sh if w == 1 else sw)
    if (sw == 1 or w == 1) and (h == 1 or sh == w):
        return False, sn, sc
    return None


def _walkable(t: Tensor, channels_inner: Optional[bool] = None) -> Tuple[Tensor, tuple]:
    """``t`` and its :func:`map_layout`: as it is where the kernels walk it (and, given
    ``channels_inner``, its unit-stride dimension is that one), else a copy that is."""
    layout = map_layout(t)
    if layout is None or channels_inner is not None and layout[0] != channels_inner:
        t = t.contiguous(memory_format=torch.channels_last if channels_inner or
                         (channels_inner is None and t.stride(1) == 1) else
                         torch.contiguous_format)
        layout = map_layout(t)
    return t, layout


def _like(t: Tensor, channels_inner: bool) -> Tensor:
    """An empty map shaped as ``t`` with the unit-stride dimension ``channels_inner`` says."""
    return torch.empty(t.shape, dtype=t.dtype, device=t.device, memory_format=(
        torch.channels_last if channels_inner else torch.contiguous_format))


def vectors(element_size: int, c: int, pixels: int, channels_inner: bool,
            *strides: int) -> int:
    """``ALIGN`` of the map kernels: the widest vector, in elements (<= 16 bytes), that divides
    the unit-stride dimension's extent (``c`` where ``channels_inner``, else ``pixels``) and
    the maps' other ``strides``."""
    return alignment(element_size, c if channels_inner else pixels, *strides)


@functools.lru_cache(maxsize=1024)
def sums_launch(n: int, c: int, pixels: int, element_size: int, layout: tuple,
                other_layout: Optional[tuple] = None, map_act: str = 'none') -> KernelLaunch:
    """Partial channel sums of ``map_act`` of a map of this :func:`map_layout` and elements of
    ``element_size`` bytes, or of a second map (``other_layout``, the same unit-stride
    dimension) times that: ``launch(a, b, out)`` sums ``act(a)`` or ``a * act(b)``, ``b``
    ignored without a product, ``out`` (N, tiles, C) fp32."""
    plan = map_plan(n, c, pixels)
    inner, *strides = layout
    other = list(other_layout[1:]) if other_layout else strides
    return KernelLaunch(lambda: _map_sums_kernel, (n, plan.tiles, -(-c // plan.block_c)),
                        (c, pixels, *strides, *other, plan.tile_p),
                        dict(PRODUCT=other_layout is not None, MAP_ACT=_ACT_CODE[map_act],
                             VEC_C=inner,
                             ALIGN=vectors(element_size, c, pixels, inner, *strides, *other),
                             BLOCK_P=BLOCK_P, BLOCK_C=plan.block_c, num_warps=4))


@functools.lru_cache(maxsize=1024)
def scale_launch(n: int, c: int, pixels: int, element_size: int, layout: tuple,
                 out_layout: tuple, shift: bool, map_act: str = 'none',
                 x_layout: Optional[tuple] = None) -> KernelLaunch:
    """``launch(a, x, scale, shift, out)``, ``a`` and ``out`` of ``element_size``-byte elements,
    of these :func:`map_layout` (the same unit-stride dimension). Forward (no ``shift``):
    ``out = map_act(a) * scale`` per (sample, channel), ``x`` and ``shift`` ignored. Backward
    (``shift``): ``out = (a * scale + shift) * map_act'(x)``, ``x`` the pre-activation map of
    ``x_layout`` (read only with a ``map_act``)."""
    plan = map_plan(n, c, pixels)
    inner, *strides = layout
    out = list(out_layout[1:])
    x_strides = list(x_layout[1:]) if x_layout else strides
    act = _ACT_CODE[map_act]
    return KernelLaunch(lambda: _scale_map_kernel, (n, plan.tiles, -(-c // plan.block_c)),
                        (c, pixels, *strides, *x_strides, *out, plan.tile_p),
                        dict(SHIFT=shift, ACT_IN=0 if shift else act, ACT_GRAD=act if shift else 0,
                             VEC_C=inner,
                             ALIGN=vectors(element_size, c, pixels, inner, *strides, *x_strides,
                                           *out),
                             BLOCK_P=BLOCK_P, BLOCK_C=plan.block_c, num_warps=4))


def _squeeze_block(squeeze: int) -> int:
    """The squeeze width's block in the gate's gradient kernels: at least 16 lanes, so the few
    widths of an arch's SEs share compiled variants (each program is one sample's or one
    channel block's small loop: the idle lanes cost nothing measurable)."""
    return max(16, next_power_of_2(squeeze))


@functools.lru_cache(maxsize=1024)
def gate_backward_launch(n: int, tiles: int, c: int, squeeze: int, inv_pixels: float,
                         act: str) -> KernelLaunch:
    """One program per sample (:func:`_gate_backward_kernel`)."""
    block_s = _squeeze_block(squeeze)
    return KernelLaunch(lambda: _gate_backward_kernel, (n, ),
                        (tiles, c, squeeze, inv_pixels),
                        dict(ACT=_ACT_CODE[act], BLOCK_S=block_s, BLOCK_K=max(1, 2048 // block_s),
                             BLOCK_T=16, num_warps=4))


@functools.lru_cache(maxsize=1024)
def weight_grad_launch(n: int, c: int, squeeze: int) -> KernelLaunch:
    """One program per block of channels (:func:`_gate_weight_grad_kernel`), its two
    (channels x squeeze) sums 2048 values each."""
    block_s = _squeeze_block(squeeze)
    block_c = max(1, 2048 // block_s)
    return KernelLaunch(lambda: _gate_weight_grad_kernel, (-(-c // block_c), ), (n, c, squeeze),
                        dict(BLOCK_C=block_c, BLOCK_S=block_s, num_warps=4))


def _dense_layout(channels_inner: bool, c: int, pixels: int) -> tuple:
    """:func:`map_layout` of a dense map (:func:`_like`) with this unit-stride dimension."""
    return (True, pixels * c, c) if channels_inner else (False, c * pixels, pixels)


@functools.lru_cache(maxsize=1024)
def forward_launches(n: int, c: int, pixels: int, element_size: int, layout: tuple,
                     out_layout: tuple, squeeze: int, act: str,
                     map_act: str) -> Tuple[KernelLaunch, ...]:
    """The training form's three forward launches on a map of this :func:`map_layout`, the
    gated map stored in ``out_layout``: the partial sums, the gate, the gated map."""
    tiles = map_plan(n, c, pixels).tiles
    return (sums_launch(n, c, pixels, element_size, layout, None, map_act),
            gate_launch((n, tiles, c), squeeze, 1.0 / pixels, act),
            scale_launch(n, c, pixels, element_size, layout, out_layout, False, map_act))


@functools.lru_cache(maxsize=1024)
def backward_launches(n: int, c: int, pixels: int, element_size: int, layout: tuple,
                      grad_layout: tuple, squeeze: int, act: str,
                      map_act: str) -> Tuple[KernelLaunch, ...]:
    """The four backward launches, the gradient in ``grad_layout`` (the map's unit-stride
    dimension), the input's gradient stored dense: the partial sums of ``grad * y``, the gate's
    network differentiated, its weight gradients, the input's gradient."""
    tiles = map_plan(n, c, pixels).tiles
    return (sums_launch(n, c, pixels, element_size, grad_layout, layout, map_act),
            gate_backward_launch(n, tiles, c, squeeze, 1.0 / pixels, act),
            weight_grad_launch(n, c, squeeze),
            scale_launch(n, c, pixels, element_size, grad_layout,
                         _dense_layout(layout[0], c, pixels), True, map_act, layout))


class _TritonGatedMap(torch.autograd.Function):
    """The training form on the Triton kernels: three launches forward, four backward, the map
    activation applied as the forward's two passes load the map and differentiated in the
    backward's last (:func:`forward_launches`, :func:`backward_launches`). (The kernels read
    the weights by pointer as (S, C) and (C, S) matrices, which a contiguous 1x1 conv weight
    already is: no reshaped views, no copies; ~0.1 ms of host time per block and step goes to
    Python here, so each view and allocation counts.)"""

    @staticmethod
    def forward(ctx, x, w_reduce, b_reduce, w_expand, b_expand, act, map_act):
        x, layout = _walkable(x)
        n, c, h, w = x.shape
        squeeze, pixels = w_reduce.shape[0], h * w
        w1, b1, w2, b2 = (t.contiguous() for t in (w_reduce, b_reduce, w_expand, b_expand))
        out = torch.empty_like(x) if x.is_contiguous() or x.is_contiguous(
            memory_format=torch.channels_last) else _like(x, layout[0])
        out_layout = layout if out.stride() == x.stride() else map_layout(out)
        sums_of, gate_of, gated = forward_launches(n, c, pixels, x.element_size(), layout,
                                                   out_layout, squeeze, act, map_act)
        sums = x.new_empty((n, map_plan(n, c, pixels).tiles, c), dtype=torch.float32)
        sums_of(x, x, sums)
        gate = x.new_empty((n, c), dtype=w2.dtype)
        gate_of(sums, w1, b1, w2, b2, gate)
        gated(x, x, gate, gate, out)
        ctx.act, ctx.map_act, ctx.layout = act, map_act, layout
        ctx.save_for_backward(x, sums, gate, w1, b1, w2, b2)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, sums, gate, w1, b1, w2, b2 = ctx.saved_tensors
        n, c, h, w = x.shape
        squeeze, pixels, layout = w1.shape[0], h * w, ctx.layout
        grad, grad_layout = (grad, layout) if grad.stride() == x.stride() else \
            _walkable(grad, layout[0])
        grad_sums_of, gate_grad, weight_grad, input_grad = backward_launches(
            n, c, pixels, x.element_size(), layout, grad_layout, squeeze, ctx.act, ctx.map_act)
        dsums = torch.empty_like(sums)
        grad_sums_of(grad, x, dsums)
        # (one allocation for the five per-sample vectors the gate's backward passes on)
        mean, grad_logit, shift, hidden, grad_z = torch.empty(
            n * (3 * c + 2 * squeeze), dtype=torch.float32, device=x.device).split(
            (n * c, n * c, n * c, n * squeeze, n * squeeze))
        gate_grad(sums, dsums, gate, w1, b1, w2, mean, hidden, grad_logit, grad_z, shift)
        grad_x = gw1 = gb1 = gw2 = gb2 = None
        needs_x, *needs_params, _, _ = ctx.needs_input_grad
        if any(needs_params):
            gw1, gb1, gw2, gb2 = map(torch.empty_like, (w1, b1, w2, b2))
            weight_grad(grad_logit, hidden, grad_z, mean, gw1, gb1, gw2, gb2)
        if needs_x:
            grad_x = _like(x, layout[0])
            input_grad(grad, x, gate, shift, grad_x)
        return grad_x, gw1, gb1, gw2, gb2, None, None
