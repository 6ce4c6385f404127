"""A fused MUXNet block's CPU deploy form run as one C++ call (``ops/fused_block_cpu.cpp``).

On a CPU, :meth:`InvertedResidual.switch_to_deploy` with ``fused_ops`` gives a block (paper
Sec. 4's inverted residual; inside channel multiplexing, Sec. 3.2, with its interleave) a form
of about six kernels: the expand GEMM and its activation, the spatial conv on the group-conv
kernel (activation and the squeeze-excite's pooling in its epilogue) or on oneDNN, the SE gate,
and the project GEMM that applies the gate and adds the residual and interleaves in its
epilogue. Run one module at a time they cost ~20 Python calls per block -- at batch 1 as much
as the kernels of a small layer, and gaps in which the thread pool's workers fall asleep.
:class:`BlockCall` hands the block's tensors to the extension once; each forward is then one
call that runs the same kernels with the same arguments in the same order (the output is the
modules' to the bit).

It runs only where nothing needs the modules one by one: inference (gradients off) in plain
eager mode (no compile, trace, or dispatch / function mode), fp32 CPU input with its channels
innermost, no hook on the block's layers (a FLOP counter or a feature hook still sees every
layer). Everywhere else the block's modules run as before.
"""
from typing import Optional

import torch
from torch import nn
from torch.nn.modules import module as _module

from ..ops._cpu_kernels import cpu_kernels, cpu_kernels_take
from ..ops._dispatch import plain_eager
from ..ops.group_conv import _ACT_CODE, forward_plan
from .conv_bn import ConvAct, PointwiseConv2d
from .fused_group_conv import FusedGroupConv, activation_name
from .squeeze_excite import SqueezeExcite

# The activation modules whose computation the extension repeats exactly (torch's own ops, in
# place): code of each (others, e.g. mmcv's Swish written as x * sigmoid(x), keep the modules).
_EXACT_ACTIVATIONS = ((nn.Identity, 'none'), (nn.ReLU, 'relu'), (nn.SiLU, 'silu'),
                      (nn.ReLU6, 'relu6'))


def _act_code(act: nn.Module) -> Optional[int]:
    for act_type, name in _EXACT_ACTIVATIONS:
        if type(act) is act_type:
            return _ACT_CODE[name]
    return None


def _pointwise(module: nn.Module) -> Optional[PointwiseConv2d]:
    """The biased :class:`PointwiseConv2d` of a deployed 1x1 ConvAct, else None."""
    if isinstance(module, ConvAct) and isinstance(module.conv, PointwiseConv2d) and \
            module.conv.bias is not None and module.epilogue_act is None:
        return module.conv
    return None


def _plain_fp32_cpu(t: torch.Tensor) -> bool:
    return type(t) in (torch.Tensor, nn.Parameter) and t.dtype is torch.float32 and t.is_cpu


class BlockCall:
    """A deployed block (:class:`~.inverted_residual._ResidualBlock`) as one call of the CPU
    extension. Build it with :meth:`build`; call it where :meth:`takes` says so.

    It holds the modules' own tensors (views of them), so weights loaded into the modules in
    place are seen; the block drops it when its tensors are moved, converted or replaced (see
    ``_ResidualBlock._drop_block_call``).
    """

    def __init__(self, block: nn.Module, fused, conv_channels: int,
                 fused_conv: Optional[FusedGroupConv]):
        """(Use :meth:`build`.) ``fused``: the extension's ``FusedBlockCPU`` holding the block's
        tensors; ``conv_channels``: the spatial conv's; ``fused_conv``: the block's
        :class:`FusedGroupConv` (None: a stock spatial conv)."""
        self._fused = fused
        self._conv_channels = conv_channels
        self._fused_conv = fused_conv
        self._pool_tile = (None, (0, 0))  # (input size, the kernel's pool tile for it)
        self._layers = [m for m in block.modules() if m is not block]

    @classmethod
    @torch.no_grad()
    def build(cls, block: nn.Module) -> Optional['BlockCall']:
        """The block's call, or None where its deploy form is not the one the extension runs (an
        SE-less or spatially multiplexed block, an activation it does not repeat exactly, a
        model not on fp32 CPU tensors, the extension switched off)."""
        kernels = cpu_kernels()
        se, project = block.se, _pointwise(block.project_conv)
        if kernels is None or not isinstance(se, SqueezeExcite) or not se.deploy or \
                project is None or not isinstance(block.project_conv.act, nn.Identity) or \
                activation_name(se.act) is None or se.conv_reduce.bias is None or \
                se.conv_expand.bias is None:
            return None
        expand = getattr(block, 'expand_conv', None)
        expand_conv = None if expand is None else _pointwise(expand)
        if expand is not None and (expand_conv is None or _act_code(expand.act) is None):
            return None
        spatial = block.depthwise_conv
        fused_conv = spatial if isinstance(spatial, FusedGroupConv) else None
        stock_conv = type(spatial) is nn.Conv2d and spatial.bias is not None and \
            isinstance(block.depthwise_norm, nn.Identity) and \
            _act_code(block.depthwise_act) is not None and spatial.padding_mode == 'zeros' and \
            not isinstance(spatial.padding, str) and spatial.stride[0] == spatial.stride[1]
        if fused_conv is None and not stock_conv:
            return None
        # The kernels read these as they are (the modules' ops make them contiguous first).
        flat = [se.conv_reduce.weight, se.conv_expand.weight] + \
            ([spatial.weight] if fused_conv is not None else [])
        if not all(_plain_fp32_cpu(t) for t in [*block.parameters(), *block.buffers()]) or \
                not all(t.is_contiguous() for t in flat):
            return None

        fused = kernels.FusedBlockCPU()
        if expand_conv is not None:
            fused.expand_weight, fused.expand_bias = expand_conv.matrix(), expand_conv.bias
            fused.expand_act = _act_code(expand.act)
        fused.conv_weight, fused.conv_bias = spatial.weight, spatial.bias
        if fused_conv is not None:
            fused.splits, fused.kernel_sizes = spatial.splits, spatial.kernel_sizes
            fused.dilations, fused.stride = spatial.dilations, spatial.stride
            fused.channels_per_group = spatial.channels_per_group
            fused.conv_act = _ACT_CODE[spatial.act]
            channels = sum(spatial.splits)
        else:
            fused.on_kernel = False
            fused.stride, fused.conv_groups = spatial.stride[0], spatial.groups
            fused.conv_padding = list(spatial.padding)
            fused.conv_dilation = list(spatial.dilation)
            fused.conv_act = _act_code(block.depthwise_act)
            channels = spatial.in_channels
        fused.se_reduce_weight, fused.se_reduce_bias = se.conv_reduce.weight, se.conv_reduce.bias
        fused.se_expand_weight, fused.se_expand_bias = se.conv_expand.weight, se.conv_expand.bias
        fused.se_act = _ACT_CODE[activation_name(se.act)]
        fused.project_weight, fused.project_bias = project.matrix(), project.bias
        fused.residual = block.has_residual
        return cls(block, fused, channels, fused_conv)

    def takes(self, x: torch.Tensor, kept: Optional[torch.Tensor]) -> bool:
        """Whether this forward may run as the call (see the module's docstring)."""
        if torch.is_grad_enabled() or type(x) is not torch.Tensor or x.dim() != 4 or \
                x.stride(1) != 1 or not cpu_kernels_take(x):
            return False
        if kept is not None and (type(kept) is not torch.Tensor or kept.stride(1) != 1 or
                                 not cpu_kernels_take(kept)):
            return False
        if _module._global_forward_pre_hooks or _module._global_forward_hooks:
            return False
        for layer in self._layers:
            if layer._forward_pre_hooks or layer._forward_hooks:
                return False
        return plain_eager()

    def __call__(self, x: torch.Tensor, kept: Optional[torch.Tensor] = None) -> torch.Tensor:
        shape, tile = self._pool_tile
        if self._fused_conv is not None and x.shape != shape:
            # The kernel's pool tile for this size, as the module's own call plans it.
            conv, (n, _, h, w) = self._fused_conv, x.shape
            tile = forward_plan((n, self._conv_channels, h, w), x.dtype, x.device, conv.splits,
                                conv.kernel_sizes, conv.dilations, conv.stride,
                                conv.channels_per_group, conv.act, True, True).pool_tile
            self._pool_tile = (x.shape, tile)  # (one assignment: safe between threads)
        return self._fused.forward(x, kept, *tile)


def set_block_calls(model: nn.Module, enabled: bool) -> nn.Module:
    """Let a deployed model's blocks run as one call each where they can (``enabled``, what
    ``switch_to_deploy(..., fused_ops=True)`` sets up on a CPU) or module by module (e.g. to
    compare the two or time each layer). Returns ``model``."""
    for block in model.modules():
        if hasattr(block, 'cpu_block_call') and block.tail_in_ops:
            block.cpu_block_call = enabled and block.fused_tail_in_eager_only
            block._block_call = None
    return model
