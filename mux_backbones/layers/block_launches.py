"""A deployed block's fused GPU form run as its planned kernel launches alone (eager host time).

On CUDA (and on the CPU under Triton's interpreter), :meth:`InvertedResidual.switch_to_deploy`
with ``fused_ops`` gives a block -- paper Sec. 4's inverted residual, inside channel
multiplexing (Sec. 3.2) -- a form of four kernels: the expand GEMM with its activation
(``pointwise_conv``), the spatial conv with folded BN, activation and the squeeze-excite's
pooling (``group_conv``), the SE gate (``se_gate``), and the project GEMM that applies the
gate, adds the residual and interleaves the kept channels (``pointwise_conv``). Run module by
module, each forward wraps those launches in ~20 Python-level calls -- argument checks,
dispatch, views, plan lookups, Triton's argument binding: ~0.4 ms of host time per block on
the CPU machine (``tools/gpu/host_time.py``), while a batch-32 block's kernels take tens of
microseconds on an H200. Eager deploy mode is host-bound (issue "fused MUXConv kernels").

:class:`BlockLaunches` plans a block's launches once per input signature, with the ops' own
planners, tuned launch configs and weight layouts, and then runs each forward as its output
allocations and launches (:class:`~mux_backbones.ops._launch.KernelLaunch`): the same kernels
with the same arguments in the same order, so the output is the modules' to the bit. The GEMMs
read their input rows through the planned strides, so the maps themselves are handed to them
(the modules' row views share their memory). Where the project GEMM has few programs (batch 1,
the small maps: :func:`gate_in_gemm`) it computes the SE gate itself from the pooled sums,
with the gate op's arithmetic in the gate op's order (the same bits in Triton's interpreter),
and the gate's launch goes: three launches per block instead of four.

It runs where :class:`~.block_call.OneCallBlock` lets a block run as one call (inference in
plain eager mode), on tensors the Triton kernels take, without gradients or autocast, with no
hook on the block's layers and no tuning or dry run watching the ops' calls, and where every
planned call runs a kernel (not a tuned ``STOCK`` entry). Anywhere else the modules run. A
weight changed in place (``load_state_dict``, an optimizer) is seen: its version counter moves
and the block's launches are planned again.
"""
import operator
import os
import warnings
from typing import Dict, List, Optional

import torch
from torch import nn

from ..ops import launch_config
from ..ops._triton import unsupported_reason
from ..ops.group_conv import forward_plan, kernel_launch, kernel_weights, planner_state
from ..ops.pointwise_conv import Gate
from ..ops.pointwise_conv import _planned as plan_pointwise
from ..ops.se_gate import check_args as check_se_gate_args
from ..ops.se_gate import gate_launch
from ._eager import hook_dicts, hooked
from .conv_bn import ConvAct, PointwiseConv2d, _as_rows, activation_name
from .fused_group_conv import FusedGroupConv
from .squeeze_excite import SqueezeExcite

_version = operator.attrgetter('_version')  # (a tensor's in-place modification counter)
_MAX_PROGRAMS = 64  # input signatures planned per block before the plans start afresh
# Where the project GEMM computes the SE gate itself (the modules launch the gate op before it):
# one launch less per block, a fixed saving, while each of the GEMM's programs recomputes its
# sample's hidden vector (an (S, K) matrix-vector product) before its tile -- a cost that grows
# with the programs (tools/gpu/kernel_sass.py, MUXNet-m fp16: ~1.5-3 us of issue time per
# project GEMM at batch 32, more registers). 'auto': where the GEMM has at most
# GATE_IN_GEMM_PROGRAMS programs (batch 1 and the small maps, where the launches are
# latency-bound); '1': always; '0': never. From MUX_BACKBONES_GATE_IN_GEMM, read at import.
GATE_IN_GEMM = os.environ.get('MUX_BACKBONES_GATE_IN_GEMM', 'auto')
if GATE_IN_GEMM not in ('auto', '0', '1'):
    warnings.warn(f'MUX_BACKBONES_GATE_IN_GEMM={GATE_IN_GEMM!r} is none of auto, 0, 1: using '
                  f'auto', RuntimeWarning)
    GATE_IN_GEMM = 'auto'
GATE_IN_GEMM_PROGRAMS = 132  # one per SM of an H100/H200


def gate_in_gemm(programs: int) -> bool:
    """Whether a project GEMM of ``programs`` programs computes its SE gate itself (see
    :data:`GATE_IN_GEMM`)."""
    if GATE_IN_GEMM in ('0', '1'):
        return GATE_IN_GEMM == '1'
    return programs <= GATE_IN_GEMM_PROGRAMS


def project_gate(plan, config, sums_shape: tuple, squeeze: int, inv_pixels: float,
                 act: str) -> Optional[Gate]:
    """The SE gate the project GEMM planned as ``plan`` (a ``pointwise_conv`` call's, launched
    with ``config``) computes itself from ``(N, T, K)`` sums (:func:`gate_in_gemm`), or None
    where the gate op's launch computes it."""
    if config == launch_config.STOCK:
        return None
    grid = plan.kernel_launch(config).grid
    if not gate_in_gemm(grid[0] * grid[1]):
        return None
    return Gate(sums_shape[1], squeeze, inv_pixels, act)


class _GemmLaunch:
    """A planned ``pointwise_conv`` call: its plan and launch config, and the weight and bias
    as the kernel reads them (what :meth:`_Call.launch` takes besides the call's maps); with
    ``gate`` (and the SE's ``se_weights``), the call that computes its scale itself from the
    SE's pooled sums (:meth:`_Call.gated_launch`), which it then takes in place of the
    scale."""

    __slots__ = ('plan', 'config', 'weight', 'bias', 'out_c', 'gate', 'se_weights')

    def __init__(self, rows, weight, bias, residual, kept, act, scale):
        plan, args = plan_pointwise(rows, weight, bias, residual, kept, act, scale)
        if plan.config == launch_config.STOCK or args[0] is not rows or \
                args[3] is not residual or args[4] is not kept:
            raise _NotPlannable('a GEMM runs on the stock path or copies its input')
        self.plan, self.config = plan, plan.config
        self.weight, self.bias = args[1], args[2]
        self.out_c = plan.out_c
        self.gate, self.se_weights = None, ()

    def __call__(self, rows, residual, kept, scale, out) -> None:
        if self.gate is not None:  # (scale: the SE's pooled sums)
            self.plan.gated_launch(self.gate, rows, self.weight, self.bias, residual, kept,
                                   scale, self.se_weights, out, self.config)
        else:
            self.plan.launch(rows, self.weight, self.bias, residual, kept, scale, out,
                             self.config)


class _NotPlannable(Exception):
    """The block's call cannot run as planned launches (its modules run)."""


class _Program:
    """A block's launches for one input signature (see :meth:`BlockLaunches._plan`)."""

    __slots__ = ('expand', 'mid_shape', 'conv', 'conv_weight', 'conv_bias', 'out_shape',
                 'out_strides', 'pool_shape', 'gate', 'gate_shape', 'gate_dtype', 'gate_args',
                 'project', 'out_rows', 'final_shape')


class BlockLaunches:
    """A deployed block (:class:`~.inverted_residual._ResidualBlock` in its fused form on the
    Triton kernels) as its planned launches. Build it with :meth:`build`; call it where
    :meth:`takes` says so. It holds the modules (not copies of their tensors); the block drops
    it when its tensors are moved or converted, or loaded with ``assign=True``."""

    def __init__(self, block: nn.Module, sources: List[torch.Tensor]):
        """(Use :meth:`build`.) ``sources``: the block's parameters and buffers."""
        self._block = block
        self._hook_dicts = hook_dicts(block)
        self._sources = sources
        self._versions: Optional[tuple] = None
        self._programs: Dict[tuple, Optional[_Program]] = {}

    @classmethod
    def build(cls, block: nn.Module) -> Optional['BlockLaunches']:
        """The block's launches, or None where its deploy form is not the fused form on the
        Triton kernels (the stock forms, the CPU kernels' forms, an SE-less block)."""
        spatial, se = getattr(block, 'depthwise_conv', None), getattr(block, 'se', None)
        if not getattr(block, 'tail_in_ops', False) or block.fused_tail_in_eager_only or \
                not isinstance(spatial, FusedGroupConv) or not isinstance(se, SqueezeExcite) or \
                not se.deploy or activation_name(se.act) is None:
            return None
        expand = getattr(block, 'expand_conv', None)
        if expand is not None and not (
                isinstance(expand, ConvAct) and isinstance(expand.conv, PointwiseConv2d) and
                expand.epilogue_act is not None and not expand.conv.kernel_form):
            return None
        if block.project_conv.conv.kernel_form:
            return None
        sources = [*block.parameters(), *block.buffers()]
        if any(type(t) not in (torch.Tensor, nn.Parameter) or t.is_inference() for t in sources):
            return None  # (an inference tensor has no version counter to follow it by)
        return cls(block, sources)

    def takes(self, x: torch.Tensor, kept: Optional[torch.Tensor]) -> bool:
        """Whether this forward may run as the launches (the mode -- inference, plain eager --
        is what :meth:`~.block_call.OneCallBlock._one_call` checks first)."""
        return not torch.is_grad_enabled() and type(x) is torch.Tensor and x.dim() == 4 and \
            x.stride(1) == 1 and (kept is None or type(kept) is torch.Tensor and
                                  kept.dim() == 4 and kept.stride(1) == 1) and \
            not torch.is_autocast_enabled(x.device.type) and not launch_config.observed() and \
            not hooked(self._hook_dicts)

    def __call__(self, x: torch.Tensor,
                 kept: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
        """The block's output, or None where it cannot run as planned launches."""
        versions = tuple(map(_version, self._sources))
        if versions != self._versions:  # a weight changed in place: its layouts are stale
            self._programs.clear()
            self._versions = versions
        key = (x.shape, x.stride(), x.dtype, x.device,
               None if kept is None else (kept.shape, kept.stride(), kept.dtype, kept.device),
               planner_state(), torch.backends.cuda.matmul.allow_tf32, GATE_IN_GEMM,
               GATE_IN_GEMM_PROGRAMS)
        program = self._programs.get(key, False)
        if program is False:
            if len(self._programs) >= _MAX_PROGRAMS:  # (e.g. a detector's many image sizes)
                self._programs.clear()
            program = self._programs[key] = self._plan(x, kept)
        if program is None:
            return None
        return self._run(program, x, kept)

    @torch.no_grad()
    def _plan(self, x: torch.Tensor, kept: Optional[torch.Tensor]) -> Optional[_Program]:
        """The launches for inputs like ``x`` and ``kept``; None where a step would not run as
        its kernel (its modules then run, and raise where an argument is wrong)."""
        if unsupported_reason(x) is not None:
            return None
        try:
            return self._planned(x, kept)
        except (_NotPlannable, ValueError):
            return None

    def _planned(self, x: torch.Tensor, kept: Optional[torch.Tensor]) -> _Program:
        """Each step planned as the modules' ops plan it, on tensors shaped and laid out as
        the previous step's outputs will be (allocated, not computed)."""
        block, p = self._block, _Program()
        if x.numel() == 0 or kept is not None and kept.numel() == 0:
            raise _NotPlannable('an empty batch (the ops return empty maps for it)')
        rows = _as_rows(x)
        if rows.data_ptr() != x.data_ptr() or not rows._is_view():
            raise _NotPlannable('the input is not rows of a map with its channels innermost')
        n, _, h, w = x.shape
        expand = getattr(block, 'expand_conv', None)
        p.expand = p.mid_shape = None
        channels = x.shape[1]
        if expand is not None:
            p.expand = _GemmLaunch(rows, expand.conv.matrix(), expand.conv.bias, None, None,
                                   expand.epilogue_act, None)
            p.mid_shape, channels = (rows.shape[0], p.expand.out_c), p.expand.out_c
        elif not x.is_contiguous(memory_format=torch.channels_last):
            raise _NotPlannable('the spatial conv would read a channels-last copy of its input')
        conv = block.depthwise_conv
        plan = forward_plan((n, channels, h, w), x.dtype, x.device, conv.splits,
                            conv.kernel_sizes, conv.dilations, conv.stride,
                            conv.channels_per_group, conv.act, True, conv.bias is not None)
        if not plan.fits_int32:
            raise _NotPlannable('the map is too large for the kernels\' 32-bit offsets')
        p.conv = [kernel_launch(launch) for launch in plan.launches]
        p.conv_weight = kernel_weights(conv.weight.contiguous(), conv.splits, conv.kernel_sizes,
                                       conv.channels_per_group)
        p.conv_bias = conv.bias if conv.bias is not None else p.conv_weight
        p.out_shape, p.pool_shape = plan.out_shape, plan.pool_shape
        _, c, oh, ow = plan.out_shape
        p.out_strides = (oh * ow * c, 1, ow * c, c)
        se, act = block.se, activation_name(block.se.act)
        w_reduce, b_reduce = se.conv_reduce.weight, se.conv_reduce.bias
        w_expand, b_expand = se.conv_expand.weight, se.conv_expand.bias
        check_se_gate_args(torch.empty(plan.pool_shape, device='meta'), w_reduce, b_reduce,
                           w_expand, b_expand, act)
        p.gate_args = (w_reduce.contiguous(), b_reduce.contiguous(), w_expand.contiguous(),
                       b_expand.contiguous())
        p.gate_shape, p.gate_dtype = (n, c), w_expand.dtype
        y = torch.empty_strided(p.out_shape, p.out_strides, dtype=x.dtype, device=x.device)
        project = block.project_conv.conv
        p.project = _GemmLaunch(_as_rows(y), project.matrix(), project.bias,
                                _as_rows(x if block.has_residual else None), _as_rows(kept),
                                'none', torch.empty(p.gate_shape, dtype=p.gate_dtype,
                                                    device=x.device))
        squeeze, inv_pixels = w_reduce.shape[0], 1.0 / (oh * ow)
        gate = project_gate(p.project.plan, p.project.config, plan.pool_shape, squeeze,
                            inv_pixels, act)
        p.gate = None
        if gate is not None:
            p.project.gate, p.project.se_weights = gate, p.gate_args
        else:
            p.gate = gate_launch(tuple(plan.pool_shape), squeeze, inv_pixels, act)
        p.out_rows = n * oh * ow
        p.final_shape = (n, oh, ow, p.project.out_c)  # (with kept: the interleaved channels)
        return p

    def _run(self, p: _Program, x: torch.Tensor, kept: Optional[torch.Tensor]) -> torch.Tensor:
        """The planned launches on ``x`` and ``kept``, in the modules' order and with their
        arguments (the GEMMs get the maps whose rows the modules hand them: the same memory,
        read through the planned strides)."""
        device = x.device
        mid = x
        if p.expand is not None:
            mid = torch.empty(p.mid_shape, dtype=x.dtype, device=device)
            p.expand(x, None, None, None, mid)
        y = torch.empty_strided(p.out_shape, p.out_strides, dtype=x.dtype, device=device)
        pool = torch.empty(p.pool_shape, dtype=torch.float32, device=device)
        for launch in p.conv:
            launch(mid, p.conv_weight, p.conv_bias, y, pool)
        gate = pool  # (the project GEMM computes the gate from the sums itself)
        if p.gate is not None:
            gate = torch.empty(p.gate_shape, dtype=p.gate_dtype, device=device)
            p.gate(pool, *p.gate_args, gate)
        out = torch.empty((p.out_rows, p.final_shape[3]), dtype=x.dtype, device=device)
        p.project(y, x if self._block.has_residual else None, kept, gate, out)
        return out.view(p.final_shape).permute(0, 3, 1, 2)


__all__: List[str] = ['BlockLaunches']
