"""A 1x1 conv as one GEMM whose epilogue adds the bias, applies the activation, adds the residual
and, for a channel-multiplexed block, interleaves the result with the block's copied channels.

Channel multiplexing (MUXConv paper, Sec. 3.2) processes half of a block's channels, copies the
other half and mixes both with a 2-group channel shuffle: ``shuffle(cat([body(x_p), x_c]))``,
i.e. the processed and the copied channels interleaved. The body ends in the project 1x1 conv and
the residual add (an inverted residual, paper Sec. 4). In stock PyTorch that is a GEMM, then an
add reading two maps and writing one, then an interleave reading two and writing one: two passes
and two launches per block that only move bytes. Here the GEMM's epilogue does both: each output
tile gets ``bias + residual`` added in registers and is stored next to the matching copied
channels, so the shuffle becomes the store's index map and the copy rides along with it.

The same epilogue takes the activation of an inverted residual's expand conv (paper Sec. 4): the
expanded map is the widest of a block (4-6x its input), and a separate activation pass reads and
writes it once more. And the squeeze-excite gate before a project conv is applied where the GEMM
reads its input: a per-sample channel scale multiplied into each input tile as it is loaded (no
scaled copy of the map, no per-sample weights). A launch may also compute that gate itself from
the SE's pooled sums (``SE_GATE``, :meth:`_Call.gated_launch`: one launch less per block, each
program recomputing the tiny hidden vector), which a deployed block's planned launches use where
the GEMM has few programs (:mod:`mux_backbones.layers.block_launches`).

The op works on rows -- ``(M, K)`` pixels x input channels, the view a channels-last map gives
for free (``PointwiseConv2d``) -- with a ``(K, C)`` weight, optionally with an ``(N, K)`` input
scale (the gate of :mod:`.se_gate`).
Inputs are read in their own dtype with fp32 accumulation (``tl.dot``); fp32 inputs multiply in
TF32 only where ``torch.backends.cuda.matmul.allow_tf32`` allows it for cuBLAS too.

Launches take 64-row x 16-64-channel tiles at 4 warps with Triton's 3-stage pipelined reduction
loop; a call signature tuned on the device (:func:`tune_pointwise_conv`, kept in
:mod:`.launch_config` next to the spatial conv's) launches with the tile, warps and pipeline
depth measured fastest there instead -- or runs the stock path (cuBLAS and separate passes) where
that measured faster than every kernel config.

On fp32 CPU tensors (outside Triton's interpreter) a C++ kernel (``pointwise_conv_cpu.cpp``)
runs the op in one call: its own register-tiled GEMM, the accumulators starting from the bias,
the SE scale folded into each sample's weight panels (or rows, whichever has fewer values), and
activation, residual and interleave applied to each tile before it is stored (one pass over the
output, not four).
The stock computation (:func:`reference_pointwise_conv`) is the fallback and the tests'
reference; gradients go through it (the op is an inference path: training keeps the project
conv's norm layer, which no epilogue can fold).
"""
import functools
from typing import Dict, List, NamedTuple, Optional

import torch
from torch import Tensor

from . import launch_config
from ._cpu_kernels import cpu_kernels, cpu_kernels_take
from ._dispatch import call
from ._launch import KernelLaunch
from ._triton import (HAS_TRITON, can_use_triton, interpreting, next_power_of_2, tl, triton,
                      unsupported_reason)
from .group_conv import _ACT_CODE, _activate_torch, check_act
from .launch_config import LaunchConfig
from .se_gate import hidden_blocks

if HAS_TRITON:
    from .group_conv import _activate
    from .se_gate import se_gate_values, se_hidden

NUM_WARPS = 4
NUM_STAGES = 3  # Triton's default on NVIDIA GPUs, said here so a tuned config can differ
# The largest K a launch with several row tiles per program takes (its weight tile, K x
# BLOCK_N, is loaded once and kept).
LOOP_MAX_K = 128
# The epilogue and layout flags of a launch: what, besides the shapes, a tuned config is kept by.
# (Not SE_GATE: a launch computing its gate takes the tile tuned for the call reading it.)
_FLAGS = ('HAS_BIAS', 'HAS_RESIDUAL', 'INTERLEAVE', 'ACT', 'HAS_SCALE', 'WEIGHT_ROWS',
          'PRECISION', 'ALIGN')


def check_args(rows: Tensor, weight: Tensor, bias: Optional[Tensor], residual: Optional[Tensor],
               kept: Optional[Tensor], act: str = 'none', scale: Optional[Tensor] = None) -> None:
    """ValueError naming the first argument of :func:`pointwise_conv` that does not fit."""
    check_act(act, 'pointwise_conv')
    if rows.dim() != 2:
        raise ValueError(f'pointwise_conv expects (M, K) rows, got shape {tuple(rows.shape)}')
    m, k = rows.shape
    if weight.dim() != 2 or weight.shape[0] != k:
        raise ValueError(f'pointwise_conv: weight must be ({k}, C), got {tuple(weight.shape)}')
    # (a scale of no samples only for no rows: an empty batch)
    if scale is not None and (scale.dim() != 2 or scale.shape[1] != k or
                              (m % scale.shape[0] if scale.shape[0] else m)):
        raise ValueError(f'pointwise_conv: scale must be (N, {k}) with N dividing the {m} rows, '
                         f'got {tuple(scale.shape)}')
    c = weight.shape[1]
    if bias is not None and tuple(bias.shape) != (c, ):
        raise ValueError(f'pointwise_conv: bias must be ({c},), got {tuple(bias.shape)}')
    for name, t in (('residual', residual), ('kept', kept)):
        if t is not None and tuple(t.shape) != (m, c):
            raise ValueError(f'pointwise_conv: {name} must be ({m}, {c}) like the output, got '
                             f'{tuple(t.shape)}')


def reference_pointwise_conv(rows: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                             residual: Optional[Tensor] = None, kept: Optional[Tensor] = None,
                             act: str = 'none', scale: Optional[Tensor] = None) -> Tensor:
    """The op with stock PyTorch (the fallback and the tests' reference), in ``rows``' dtype."""
    if scale is not None:
        samples, k = scale.shape
        pixels = rows.shape[0] // samples if samples else 0  # (no samples: an empty batch)
        rows = (rows.reshape(samples, pixels, k) * scale[:, None, :].to(rows.dtype)).flatten(0, 1)
    out = rows @ weight.to(rows.dtype)
    if bias is not None:
        out = out + bias.to(out.dtype)
    out = _activate_torch(out, act)
    if residual is not None:
        out = out + residual.to(out.dtype)
    if kept is not None:  # output channel 2j: this conv's channel j; 2j + 1: kept channel j
        out = torch.stack((out, kept.to(out.dtype)), dim=2).flatten(1)
    return out


if HAS_TRITON:

    @triton.jit
    def _epilogue(acc, row, ok_m, cols, ok_n, block_n, b_ptr, r_ptr, k_ptr, out_ptr, C, OUT_C,
                  r_row, k_row, HAS_BIAS: tl.constexpr, HAS_RESIDUAL: tl.constexpr,
                  INTERLEAVE: tl.constexpr, ACT: tl.constexpr, ALIGN: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
        """One output tile from its fp32 product: bias, activation, residual, then the store
        (with ``INTERLEAVE``, next to the kept channels)."""
        mask = ok_m[:, None] & ok_n[None, :]
        if HAS_BIAS:
            acc += tl.load(b_ptr + cols, mask=ok_n, other=0.0).to(tl.float32)[None, :]
        acc = _activate(acc, ACT)
        if HAS_RESIDUAL:
            acc += tl.load(r_ptr + tl.multiple_of(row * r_row, ALIGN)[:, None] + cols[None, :],
                           mask=mask, other=0.0).to(tl.float32)
        y = acc.to(out_ptr.dtype.element_ty)
        out_row = tl.multiple_of(row * OUT_C, ALIGN)
        if INTERLEAVE:
            kept = tl.load(k_ptr + tl.multiple_of(row * k_row, ALIGN)[:, None] + cols[None, :],
                           mask=mask, other=0.0)
            pairs = tl.reshape(tl.join(y, kept.to(y.dtype)), (BLOCK_M, 2 * BLOCK_N))
            out_cols = tl.max_contiguous(tl.multiple_of(
                2 * block_n * BLOCK_N + tl.arange(0, 2 * BLOCK_N), 2 * BLOCK_N),
                2 * BLOCK_N)
            tl.store(out_ptr + out_row[:, None] + out_cols[None, :], pairs,
                     mask=ok_m[:, None] & ((out_cols // ALIGN) < (OUT_C // ALIGN))[None, :])
        else:
            tl.store(out_ptr + out_row[:, None] + cols[None, :], y, mask=mask)

    @triton.jit
    def _weight_tile(w_ptr, ks, ok_k, cols, ok_n, w_k, w_c, WEIGHT_ROWS: tl.constexpr,
                     ALIGN: tl.constexpr):
        """The weight's (K block x channel block) tile, in either layout (``WEIGHT_ROWS``)."""
        if WEIGHT_ROWS:
            w_offs = tl.multiple_of(ks * w_k, ALIGN)[:, None] + cols[None, :]
        else:
            w_offs = ks[:, None] + tl.multiple_of(cols * w_c, ALIGN)[None, :]
        return tl.load(w_ptr + w_offs, mask=ok_k[:, None] & ok_n[None, :], other=0.0)

    @triton.jit
    def _input_scale(s_ptr, w2_ptr, b2_ptr, hidden, sample, K, S, ks, ok_k,
                     SE_GATE: tl.constexpr, BLOCK_S: tl.constexpr):
        """The sample's fp32 input-channel scale of the K block ``ks``: the SE gate computed
        from ``hidden`` (``SE_GATE``) or loaded."""
        if SE_GATE:
            gate = se_gate_values(w2_ptr, b2_ptr, hidden, ks, ok_k, S, BLOCK_S).to(tl.float32)
        else:
            gate = tl.load(s_ptr + sample * K + ks, mask=ok_k, other=0.0).to(tl.float32)
        return gate

    @triton.jit
    def _pointwise_kernel(x_ptr, w_ptr, b_ptr, r_ptr, k_ptr, s_ptr, out_ptr, w1_ptr, b1_ptr,
                          w2_ptr, b2_ptr, ROWS, K, C, OUT_C, x_row, r_row, k_row, w_k, w_c, T,
                          S, inv_pixels, HAS_BIAS: tl.constexpr,
                          HAS_RESIDUAL: tl.constexpr, INTERLEAVE: tl.constexpr,
                          ACT: tl.constexpr, HAS_SCALE: tl.constexpr,
                          WEIGHT_ROWS: tl.constexpr, PRECISION: tl.constexpr,
                          ALIGN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                          BLOCK_K: tl.constexpr, SE_GATE: tl.constexpr, SE_ACT: tl.constexpr,
                          BLOCK_S: tl.constexpr, SE_BLOCK_K: tl.constexpr,
                          BLOCK_T: tl.constexpr, TILES: tl.constexpr = 1):
        """TILES row blocks of BLOCK_M rows of one sample (``program_id(1)``: its input scale)
        x BLOCK_N output channels. ``program_id(0)`` runs over the channel blocks of a row
        block first: programs launched together read the same input tile (once from memory,
        then from L2), and the row blocks have the grid's unlimited axis (a large map at batch
        128 has more than the 65535 the other axes allow).

        ``TILES`` > 1 (a tuned launch, only where K fits one BLOCK_K): the program loads its
        weight tile, bias and input scale once, then runs its row blocks in a loop that the
        compiler software-pipelines (``num_stages``): the next block's rows are in flight while
        this one's result is stored. A skinny GEMM (K of 12-80: every expand conv, the early
        project convs) has a few microseconds of work per tile; one tile per program leaves
        its load latency exposed.

        ``ALIGN`` (a power of two dividing K, C and every row stride) tells the compiler the
        vectors it may use where Triton's own specialisation (multiples of 16) misses them
        (e.g. 40 channels); masks are built from multiples of it so they stay constant over a
        vector. ``WEIGHT_ROWS``: the weight's C is its unit-stride dimension (a contiguous
        ``(K, C)`` matrix); else K is (the conv's own ``(C, K)`` weight, transposed).

        ``SE_GATE`` (with ``HAS_SCALE``): the scale is a squeeze-excite gate the program computes
        itself, from the sample's ``(T, K)`` partial channel sums at ``s_ptr`` and the SE's
        weights ``w1`` (S, K), ``b1``, ``w2`` (K, S), ``b2`` (:mod:`.se_gate`'s computation,
        in its order): the hidden vector once, then each K block's gate as its tile arrives --
        instead of a gate launch before this one."""
        sample = tl.program_id(1)
        n_blocks = tl.cdiv(C, BLOCK_N)
        block_m = tl.program_id(0) // n_blocks
        block_n = tl.program_id(0) % n_blocks
        cols = block_n * BLOCK_N + tl.arange(0, BLOCK_N)
        ok_n = (cols // ALIGN) < (C // ALIGN)
        if SE_GATE:
            hidden = se_hidden(s_ptr, w1_ptr, b1_ptr, sample, T, K, S, inv_pixels, SE_ACT,
                               BLOCK_S, SE_BLOCK_K, BLOCK_T)
        else:
            hidden = 0.0  # (unread: the scale is loaded)
        if TILES == 1:
            local = block_m * BLOCK_M + tl.arange(0, BLOCK_M)
            ok_m = local < ROWS
            row = (sample * ROWS + local).to(tl.int64)  # batch-128 maps pass 2**31 elements
            acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for k0 in range(0, K, BLOCK_K):
                ks = tl.max_contiguous(tl.multiple_of(k0 + tl.arange(0, BLOCK_K), BLOCK_K),
                                       BLOCK_K)
                ok_k = (ks // ALIGN) < (K // ALIGN)
                a = tl.load(x_ptr + tl.multiple_of(row * x_row, ALIGN)[:, None] + ks[None, :],
                            mask=ok_m[:, None] & ok_k[None, :], other=0.0)
                if HAS_SCALE:  # the sample's input-channel scale (an SE gate), as it arrives
                    gate = _input_scale(s_ptr, w2_ptr, b2_ptr, hidden, sample, K, S, ks, ok_k,
                                        SE_GATE, BLOCK_S)
                    a = (a.to(tl.float32) * gate[None, :]).to(x_ptr.dtype.element_ty)
                b = _weight_tile(w_ptr, ks, ok_k, cols, ok_n, w_k, w_c, WEIGHT_ROWS, ALIGN)
                acc = tl.dot(a, b.to(a.dtype), acc, input_precision=PRECISION)
            _epilogue(acc, row, ok_m, cols, ok_n, block_n, b_ptr, r_ptr, k_ptr, out_ptr, C,
                      OUT_C, r_row, k_row, HAS_BIAS, HAS_RESIDUAL, INTERLEAVE, ACT, ALIGN,
                      BLOCK_M, BLOCK_N)
        else:
            # K in one block: the weight tile and the scale are the same for every row block.
            ks = tl.max_contiguous(tl.multiple_of(tl.arange(0, BLOCK_K), BLOCK_K), BLOCK_K)
            ok_k = (ks // ALIGN) < (K // ALIGN)
            b = _weight_tile(w_ptr, ks, ok_k, cols, ok_n, w_k, w_c, WEIGHT_ROWS,
                             ALIGN).to(x_ptr.dtype.element_ty)
            if HAS_SCALE:
                gate = _input_scale(s_ptr, w2_ptr, b2_ptr, hidden, sample, K, S, ks, ok_k,
                                    SE_GATE, BLOCK_S)
            for tile in range(0, TILES):
                local = (block_m * TILES + tile) * BLOCK_M + tl.arange(0, BLOCK_M)
                ok_m = local < ROWS
                row = (sample * ROWS + local).to(tl.int64)
                a = tl.load(x_ptr + tl.multiple_of(row * x_row, ALIGN)[:, None] + ks[None, :],
                            mask=ok_m[:, None] & ok_k[None, :], other=0.0)
                if HAS_SCALE:
                    a = (a.to(tl.float32) * gate[None, :]).to(x_ptr.dtype.element_ty)
                acc = tl.dot(a, b, input_precision=PRECISION)
                _epilogue(acc, row, ok_m, cols, ok_n, block_n, b_ptr, r_ptr, k_ptr, out_ptr, C,
                          OUT_C, r_row, k_row, HAS_BIAS, HAS_RESIDUAL, INTERLEAVE, ACT, ALIGN,
                          BLOCK_M, BLOCK_N)


def _unit_columns(t: Optional[Tensor]) -> Optional[Tensor]:
    """``t`` with consecutive columns (any row stride: a channel slice of a wider map stays a
    view); a copy otherwise."""
    if t is None or t.stride(1) == 1 or t.shape[1] == 1:
        return t
    return t.contiguous()


def _weight_strides(weight: Tensor):
    """The weight's (K, C) strides, a size-1 dimension's taken as 1."""
    k_stride, c_stride = weight.stride()
    return (1 if weight.shape[0] == 1 else k_stride), (1 if weight.shape[1] == 1 else c_stride)


def _row_stride(t: Optional[Tensor]) -> int:
    return 0 if t is None else (t.stride(0) if t.shape[0] > 1 else t.shape[1])


def alignment(element_size: int, *sizes: int) -> int:
    """The widest vector, in elements (<= 16 bytes), that divides every size and row stride
    (the data pointers' own alignment Triton tells apart by itself)."""
    align = max(1, 16 // element_size)
    while align > 1 and any(size % align for size in sizes):
        align //= 2
    return align


def launch_blocks(rows_per_sample: int, k: int, c: int,
                  config: Optional[LaunchConfig] = None):
    """``(BLOCK_M, BLOCK_N, BLOCK_K)``: output channels and the reduction in blocks of 16-64
    (``tl.dot``'s minimum is 16), rows in blocks of 64 (the interpreter: up to 256, fewer
    programs); a tuned ``config`` sets the rows (``tile_h``) and channels (``tile_w``), and
    one with several tiles per program takes the whole reduction in one block (at most
    :data:`LOOP_MAX_K`)."""
    if config is not None and config.tiles_per_program > 1:
        if k > LOOP_MAX_K:
            raise ValueError(f'pointwise_conv: {config.tiles_per_program} tiles per program '
                             f'need K <= {LOOP_MAX_K}, got {k}')
        return config.tile_h, config.tile_w, max(16, next_power_of_2(k))
    block_k = min(64, max(16, next_power_of_2(k)))
    if config is not None:
        return config.tile_h, config.tile_w, block_k
    block_n = min(64, max(16, next_power_of_2(c)))
    block_m = min(256, max(16, next_power_of_2(rows_per_sample))) if interpreting() else 64
    return block_m, block_n, block_k


def launch_meta(dtype: torch.dtype, rows_per_sample: int, k: int, c: int, strides,
                weight_strides, has_bias: bool, has_residual: bool, interleave: bool,
                act: str = 'none', has_scale: bool = False,
                config: Optional[LaunchConfig] = None) -> dict:
    """The kernel's compile-time arguments for one call (also what ``tools/gpu/kernel_sass.py``
    compiles offline): ``strides`` are the row strides of the input, residual and kept rows,
    ``weight_strides`` the weight's (K, C) strides (one of them 1); ``config``: a tuned launch
    (None: the planner's blocks)."""
    block_m, block_n, block_k = launch_blocks(rows_per_sample, k, c, config)
    tf32 = dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32
    weight_rows = weight_strides[1] == 1
    strides = [*strides, weight_strides[0] if weight_rows else weight_strides[1]]
    return dict(HAS_BIAS=has_bias, HAS_RESIDUAL=has_residual, INTERLEAVE=interleave,
                ACT=_ACT_CODE[act], HAS_SCALE=has_scale, WEIGHT_ROWS=weight_rows,
                PRECISION='tf32' if tf32 else 'ieee',
                ALIGN=alignment(dtype.itemsize, k, c, *strides),
                BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
                TILES=config.tiles_per_program if config else 1, **_NO_GATE)


def launch_programs(rows_per_sample: int, c: int, meta: dict) -> int:
    """Programs per sample of a launch with the compile-time arguments ``meta``."""
    row_groups = -(-rows_per_sample // (meta['BLOCK_M'] * meta['TILES']))
    return row_groups * -(-c // meta['BLOCK_N'])


# A launch without the gate's computation: its compile-time arguments and its integer and
# float arguments (T, S, inv_pixels) -- placeholders, as the absent tensors are.
_NO_GATE = dict(SE_GATE=False, SE_ACT=0, BLOCK_S=1, SE_BLOCK_K=1, BLOCK_T=1)
NO_GATE_SCALARS = (1, 1, 1.0)


class Gate(NamedTuple):
    """The squeeze-excite gate a project GEMM computes itself (``SE_GATE``): partial sums over
    ``tiles`` tiles of the map, ``squeeze`` hidden channels, ``inv_pixels`` (1 / H * W) and the
    hidden activation (see :mod:`.se_gate`)."""

    tiles: int
    squeeze: int
    inv_pixels: float
    act: str

    def meta(self, samples: int, k: int) -> dict:
        blocks = hidden_blocks((samples, self.tiles, k), self.squeeze)
        return dict(SE_GATE=True, SE_ACT=_ACT_CODE[self.act], BLOCK_S=blocks['BLOCK_S'],
                    SE_BLOCK_K=blocks['BLOCK_K'], BLOCK_T=blocks['BLOCK_T'])

    def scalars(self) -> tuple:
        return self.tiles, self.squeeze, self.inv_pixels


def _out_shape(rows: Tensor, weight: Tensor, kept: Optional[Tensor]):
    c = weight.shape[1]
    return rows.shape[0], 2 * c if kept is not None else c


def _kernel_layout(rows: Tensor, weight: Tensor, residual: Optional[Tensor],
                   kept: Optional[Tensor]):
    """The tensors as the kernel reads them: consecutive columns, and a weight with one of K or
    C consecutive (copies only where they are not)."""
    rows, residual, kept = _unit_columns(rows), _unit_columns(residual), _unit_columns(kept)
    if 1 not in _weight_strides(weight):
        weight = weight.contiguous()
    return rows, weight, residual, kept


def _planned(rows, weight, bias, residual, kept, act, scale):
    """``(plan, tensors)``: the call's :class:`_Call` and its arguments in
    :func:`_kernel_layout` (rows, weight, bias, residual, kept, act, scale)."""
    rows, weight, residual, kept = _kernel_layout(rows, weight, residual, kept)
    plan = _plan(rows.dtype, rows.device, *rows.shape, weight.shape[1],
                 scale.shape[0] if scale is not None else 1,
                 (_row_stride(rows), _row_stride(residual), _row_stride(kept)),
                 _weight_strides(weight), bias is not None, residual is not None,
                 kept is not None, act, scale is not None,
                 torch.backends.cuda.matmul.allow_tf32, launch_config.version())
    return plan, (rows, weight, bias, residual, kept, act, scale)


class _Call:
    """One call signature's launch parameters (tensors in :func:`_kernel_layout`), planned once
    (:func:`_plan`): samples, rows per sample, K, C, the row strides of input, residual and kept
    rows, the weight's strides, the compile-time arguments of the planner's launch and the
    tuned config (None: the planner's)."""

    def __init__(self, dtype, device, m, k, c, samples, strides, weight_strides, has_bias,
                 has_residual, interleave, act, has_scale, tf32, table_version):
        # tf32 (the matmul flag launch_meta reads) and the table's version only key the cache.
        self.device, self.k, self.c, self.samples = device, k, c, samples
        self.per_sample = m // samples
        self.strides, self.weight_strides = strides, weight_strides
        self.args = (dtype, self.per_sample, k, c, strides, weight_strides, has_bias,
                     has_residual, interleave, act, has_scale)
        self.meta = launch_meta(*self.args)
        self.config = launch_config.lookup(self.key())
        self.out_c = 2 * c if interleave else c
        self._launches = {}  # (config, gate) -> its KernelLaunch

    def key(self) -> tuple:
        """The signature its tuned config is kept under (see :func:`tuning_key`)."""
        return tuning_key(self.meta, self.args[0], self.device, self.samples, self.per_sample,
                          self.k, self.c)

    def kernel_launch(self, config: Optional[LaunchConfig] = None,
                      gate: Optional[Gate] = None) -> KernelLaunch:
        """The kernel's launch with ``config`` (None: the planner's), made once; with ``gate``
        (a call with a scale), the launch that computes its scale as that SE gate."""
        launch = self._launches.get((config, gate))
        if launch is None:
            meta = self.meta if config is None else launch_meta(*self.args, config=config)
            if gate is not None:
                meta = dict(meta, **gate.meta(self.samples, self.k))
            grid = (launch_programs(self.per_sample, self.c, meta), self.samples)
            launch = self._launches[config, gate] = KernelLaunch(
                lambda: _pointwise_kernel, grid,
                (self.per_sample, self.k, self.c, self.out_c, *self.strides,
                 *self.weight_strides, *(gate.scalars() if gate else NO_GATE_SCALARS)),
                dict(meta, num_warps=config.num_warps if config else NUM_WARPS,
                     num_stages=config.num_stages if config else NUM_STAGES))
        return launch

    def launch(self, rows, weight, bias, residual, kept, scale, out,
               config: Optional[LaunchConfig] = None) -> None:
        self.kernel_launch(config)(
            rows, weight, bias if bias is not None else weight,
            residual if residual is not None else rows, kept if kept is not None else rows,
            scale.contiguous() if scale is not None else rows, out, weight, weight, weight,
            weight)

    def gated_launch(self, gate: Gate, rows, weight, bias, residual, kept, sums, se_weights,
                     out, config: Optional[LaunchConfig] = None) -> None:
        """:meth:`launch` with the scale computed in the kernel as the SE gate ``gate`` of
        ``sums`` (``(N, T, K)`` fp32, contiguous) and ``se_weights`` (``w_reduce`` (S, K),
        ``b_reduce``, ``w_expand`` (K, S), ``b_expand``; contiguous) -- the plan must be a
        call's with a scale."""
        self.kernel_launch(config, gate)(
            rows, weight, bias if bias is not None else weight,
            residual if residual is not None else rows, kept if kept is not None else rows,
            sums, out, *se_weights)


_plan = functools.lru_cache(maxsize=1024)(_Call)


def tuning_key(meta: dict, dtype, device, samples: int, rows_per_sample: int, k: int,
               c: int) -> tuple:
    """The call signature a tuned launch config is kept under (:mod:`.launch_config`): device
    (a ``torch.device`` or a :func:`~.launch_config.device_kind` name), dtype, samples, rows
    per sample, K, C and the epilogue and layout flags of ``meta`` (:func:`launch_meta`)."""
    kind = device if isinstance(device, str) else launch_config.device_kind(device)
    return ('pointwise_conv', kind, str(dtype).replace('torch.', ''), samples,
            rows_per_sample, k, c, tuple(meta[name] for name in _FLAGS))


def _warps(block_m: int, block_n: int) -> int:
    """4 warps up to 64 x 64 values per tile, 8 above."""
    return NUM_WARPS if block_m * block_n <= 64 * 64 else 2 * NUM_WARPS


def candidates(rows_per_sample: int, k: int, c: int) -> List[LaunchConfig]:
    """Launch configs worth timing for a call, the planner's own first: tiles of 32-256 rows
    (no taller than a sample's rows) x the planner's channel block or up to 128 channels (fewer
    programs re-reading the same input rows), :func:`_warps`, each with the reduction loop
    pipelined 3 deep (the planner's) and not at all (less shared memory, more programs per
    SM); where K fits one block (:data:`LOOP_MAX_K`) and a sample has the rows, 4 or 16 row
    tiles of 64 or 128 rows per program, as wide as C up to 128 channels, their loop
    pipelined 3 deep; last, the stock path (:data:`.launch_config.STOCK`: cuBLAS and separate
    passes), which the tuner keeps where no kernel config beats it."""
    planned = launch_blocks(rows_per_sample, k, c)
    configs = [LaunchConfig(planned[0], planned[1], NUM_WARPS, NUM_STAGES)]
    widest = min(128, max(16, next_power_of_2(c)))
    widths = sorted({planned[1], widest})
    tallest = max(32, next_power_of_2(rows_per_sample))
    for stages in (NUM_STAGES, 1):
        for block_m in (32, 64, 128, 256):
            for block_n in widths:
                if block_m > tallest or block_m * block_n > 128 * 128:
                    continue
                config = LaunchConfig(block_m, block_n, _warps(block_m, block_n), stages)
                if config not in configs:
                    configs.append(config)
    if k <= LOOP_MAX_K:
        for block_m in (64, 128):
            for tiles in (4, 16):
                if block_m * tiles <= rows_per_sample:
                    configs.append(LaunchConfig(block_m, widest, _warps(block_m, widest),
                                                NUM_STAGES, tiles))
    return configs + [launch_config.STOCK]


def _compute(plan: '_Call', args, config: Optional[LaunchConfig]) -> Tensor:
    """The call (:func:`_planned`'s plan and arguments) with ``config``: the kernel, or the
    stock path where a tuning found that faster."""
    if config == launch_config.STOCK:
        return reference_pointwise_conv(*args)
    rows, weight, bias, residual, kept, _, scale = args
    out = rows.new_empty(_out_shape(rows, weight, kept))
    plan.launch(rows, weight, bias, residual, kept, scale, out, config)
    return out


@torch.library.custom_op('mux_backbones::pointwise_conv', mutates_args=())
def _pointwise_conv(rows: Tensor, weight: Tensor, bias: Optional[Tensor],
                    residual: Optional[Tensor], kept: Optional[Tensor], act: str,
                    scale: Optional[Tensor]) -> Tensor:
    launch_config.note_call('pointwise_conv', rows, weight, bias, residual, kept, act, scale)
    if launch_config.dry_running():
        return launch_config.dry_outputs(_pointwise_conv_fake(rows, weight, bias, residual, kept,
                                                              act, scale))
    if rows.shape[0] == 0:  # (an empty batch: no launch, and no kernel's grid of nothing)
        return rows.new_empty(_out_shape(rows, weight, kept))
    if cpu_kernels_take(rows, weight, bias, residual, kept, scale):
        return cpu_kernels().pointwise_conv_forward(
            _unit_columns(rows), weight, bias, _unit_columns(residual), _unit_columns(kept),
            _ACT_CODE[act], scale)
    if not can_use_triton(rows, 'pointwise_conv'):
        return reference_pointwise_conv(rows, weight, bias, residual, kept, act, scale)
    plan, args = _planned(rows, weight, bias, residual, kept, act, scale)
    return _compute(plan, args, plan.config)


@_pointwise_conv.register_fake
def _pointwise_conv_fake(rows, weight, bias, residual, kept, act, scale):
    return rows.new_empty(_out_shape(rows, weight, kept))


def _setup_context(ctx, inputs, output):
    rows, weight, bias, residual, kept, ctx.act, scale = inputs
    ctx.save_for_backward(rows, weight, bias, residual, kept, scale)


def _backward(ctx, grad):
    # An inference path: the gradient is the reference's (stock autograd, recomputed).
    inputs = [t.detach().requires_grad_() if t is not None else None for t in ctx.saved_tensors]
    rows, weight, bias, residual, kept, scale = inputs
    with torch.enable_grad():
        out = reference_pointwise_conv(rows, weight, bias, residual, kept, ctx.act, scale)
        wanted = [t for t in inputs if t is not None]
        grads = iter(torch.autograd.grad(out, wanted, grad.to(out.dtype), allow_unused=True))
    g = [next(grads) if t is not None else None for t in inputs]
    return g[0], g[1], g[2], g[3], g[4], None, g[5]


_pointwise_conv.register_autograd(_backward, setup_context=_setup_context)


def pointwise_conv(rows: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                   residual: Optional[Tensor] = None, kept: Optional[Tensor] = None,
                   act: str = 'none', scale: Optional[Tensor] = None) -> Tensor:
    """A 1x1 conv on rows with bias, activation, residual and channel interleave in the GEMM's
    epilogue, in that order: ``interleave(act((rows * scale) @ weight + bias) + residual, kept)``.

    Args:
        rows (Tensor): (M, K) input rows (pixels x channels; any row stride, e.g. a channel
            slice of a channels-last map), M = N * H * W.
        weight (Tensor): (K, C) weight matrix, any strides.
        bias (Tensor, optional): (C, ) bias.
        residual (Tensor, optional): (M, C) rows added to the result.
        kept (Tensor, optional): (M, C) rows to interleave with the result: output channel 2j
            is the conv's channel j, 2j + 1 is ``kept``'s channel j (channel multiplexing's
            ``cat`` + 2-group shuffle).
        act (str): Activation after the bias: 'none' (default), 'relu', 'silu' or 'relu6'.
        scale (Tensor, optional): (N, K) per-sample input-channel scale (a squeeze-excite gate)
            applied to the rows as the GEMM loads them (rows of sample n are the n-th M / N).

    Returns:
        Tensor: (M, C), or (M, 2C) with ``kept``, contiguous, in ``rows``' dtype.
    """
    check_args(rows, weight, bias, residual, kept, act, scale)
    return call(_pointwise_conv, rows, weight, bias, residual, kept, act, scale)


def call_key(rows: Tensor, weight: Tensor, bias: Optional[Tensor], residual: Optional[Tensor],
             kept: Optional[Tensor], act: str, scale: Optional[Tensor]) -> tuple:
    """The signature (:func:`tuning_key`) a call with these arguments is tuned under."""
    return _planned(rows, weight, bias, residual, kept, act, scale)[0].key()


def tune_pointwise_conv(rows: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                        residual: Optional[Tensor] = None, kept: Optional[Tensor] = None,
                        act: str = 'none', scale: Optional[Tensor] = None,
                        time_us=None) -> Dict[LaunchConfig, float]:
    """Time every :func:`candidates` config of this call and keep the fastest for its signature
    (every later call with the same shapes, strides, dtype, device and epilogue launches it) --
    or, where cuBLAS and separate passes beat every kernel config, the stock path
    (:data:`.launch_config.STOCK`; "1x1 convs stay cuBLAS unless the fused form measures
    faster", call by call). A candidate that fails to compile or computes otherwise (beyond the
    rounding of another summation order) is skipped with a warning.

    Args:
        rows, weight, bias, residual, kept, act, scale: As :func:`pointwise_conv`.
        time_us (callable, optional): ``time_us(fn) -> microseconds per fn()``; default: CUDA
            graph replays (:func:`mux_backbones.utils.timing.device_time_us`).

    Returns:
        dict: Microseconds per candidate config, the planner's own first (the fastest is the
        one kept); empty where the kernel cannot take ``rows`` (nothing is recorded then).
    """
    check_args(rows, weight, bias, residual, kept, act, scale)
    if unsupported_reason(rows) is not None or rows.shape[0] == 0:
        return {}
    plan, args = _planned(rows, weight, bias, residual, kept, act, scale)
    key = plan.key()  # what call_key says

    def run():  # as the op runs it
        return _compute(plan, args, launch_config.lookup(key))

    def same(result, reference):
        tol = 1e-4 if rows.dtype == torch.float32 and plan.meta['PRECISION'] == 'ieee' else 1e-2
        return torch.allclose(result.float(), reference.float(), rtol=tol,
                              atol=tol * float(reference.abs().max()))

    return launch_config.tune(key, candidates(plan.per_sample, plan.k, plan.c), run, same,
                              launch_config.timer(time_us, rows.device))


def compile_jobs(rows: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                 residual: Optional[Tensor] = None, kept: Optional[Tensor] = None,
                 act: str = 'none', scale: Optional[Tensor] = None,
                 current_only: bool = False, gate: Optional[Gate] = None,
                 se_tensors: tuple = ()) -> List[tuple]:
    """The launches :func:`tune_pointwise_conv` will run for this call, one per candidate, as
    picklable jobs for :func:`.launch_config.precompile` (none where the kernel cannot take
    ``rows``); with ``current_only`` the config the call launches now: its tuned entry, else
    the planner's own (the first candidate). With ``gate`` (a call with a scale) and
    ``se_tensors`` (the pooled sums and the SE's weights, as :meth:`_Call.gated_launch` takes
    them), the launches that compute the scale as that gate instead."""
    if unsupported_reason(rows) is not None or rows.shape[0] == 0:
        return []
    plan, args = _planned(rows, weight, bias, residual, kept, act, scale)
    layout = _layout(args[:5] + args[6:])
    configs = candidates(plan.per_sample, plan.k, plan.c)
    if current_only:
        configs = [plan.config or configs[0]]
    return [(_run_compile_job, layout, str(rows.device), act, tuple(config), gate,
             _layout(se_tensors)) for config in configs if config != launch_config.STOCK]


def _layout(tensors) -> tuple:
    """What :func:`_run_compile_job` rebuilds the tensors from (None stays None)."""
    return tuple(None if t is None else (tuple(t.shape), tuple(t.stride()),
                                         str(t.dtype).replace('torch.', '')) for t in tensors)


def _run_compile_job(layout, device: str, act: str, config, gate=None, se_layout=()) -> None:
    """Launch one :func:`compile_jobs` candidate once on zeros (what compiles it)."""
    rows, weight, bias, residual, kept, scale, *se_tensors = (
        None if spec is None else torch.empty_strided(spec[0], spec[1], device=device,
                                                      dtype=getattr(torch, spec[2])).zero_()
        for spec in layout + se_layout)
    plan, args = _planned(rows, weight, bias, residual, kept, act, scale)
    if gate is None:
        _compute(plan, args, LaunchConfig(*config))
        return
    sums, *se_weights = se_tensors
    out = rows.new_empty(_out_shape(rows, weight, kept))
    plan.gated_launch(gate, *args[:5], sums, se_weights, out, LaunchConfig(*config))
