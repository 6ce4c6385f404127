"""Deploy form of a conv followed by BatchNorm (and an activation): one conv with a bias.

Used for every mmcv ``ConvModule`` of a model (MUXNet's stem, 1x1 expand/project and head convs,
and any other OpenMMLab model's, MobileNetV2's included) and for the spatial convs of MUXNet's
blocks. 1x1 convs come back as :class:`PointwiseConv2d`, a single matrix product on channels-last
input, which can also run as one kernel that scales its input per sample and channel as it
loads it (the squeeze-excite gate), applies the activation, adds a residual and interleaves the
result with a channel-multiplexed block's copied channels (the GEMM's epilogue,
:mod:`mux_backbones.ops.pointwise_conv`).
"""
from typing import Optional

import torch
from mmcv.cnn import ConvModule
from mmcv.cnn.bricks import Swish
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..ops.pointwise_conv import pointwise_conv

_ACTIVATION_NAMES = ((nn.Identity, 'none'), (nn.ReLU, 'relu'), (nn.SiLU, 'silu'),
                     (Swish, 'silu'), (nn.ReLU6, 'relu6'))


def activation_name(act: nn.Module) -> Optional[str]:
    """The kernels' epilogue activation that computes ``act`` (None: they have none for it)."""
    for act_type, name in _ACTIVATION_NAMES:
        if type(act) is act_type:
            return name
    return None


def _as_rows(x: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """(N*H*W, C) rows of a map: a view of a channels-last one, a copy of any other."""
    return None if x is None else x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


class PointwiseConv2d(nn.Conv2d):
    """A 1x1, stride-1, ungrouped conv that runs as one matrix product on channels-last input.

    With the channels innermost in memory, a 1x1 conv is ``(N*H*W, C_in) @ (C_in, C_out)`` on a
    view of the input; the BLAS product beats oneDNN's conv on the small maps of a mobile net
    (e.g. 48 vs 110 us for 480 -> 80 channels at 7x7 on 2 CPU threads). Other layouts take the conv.

    Given ``act``, ``residual``, ``kept`` or ``scale`` (a fused deploy block), the product runs
    as the ``pointwise_conv`` op: the input scaled per sample and channel (``scale``, (N, C_in):
    a squeeze-excite gate) as the GEMM loads it, and in its epilogue the activation applied,
    ``residual`` (a map like the output) added and ``kept`` (one too) interleaved channel by
    channel with the result -- output channel 2j is this conv's channel j, 2j + 1 is ``kept``'s
    -- instead of more passes over the maps.

    :meth:`use_cpu_kernel` is its deploy form for the CPU kernels: each eager call on
    channels-last input runs as the op (its C++ GEMM computes the product and the epilogue in
    one pass, faster than BLAS's product alone on these shapes), the weight stored as the
    matrix that GEMM reads in place. Under ``torch.compile`` the stock product runs, which
    Inductor fuses with its neighbours (as the blocks' stock tails, see
    ``InvertedResidual._fused_tail``); on other layouts the stock conv.
    """

    kernel_form = False  # (use_cpu_kernel)

    def kernel_call(self, x: torch.Tensor) -> bool:
        """Whether a call on ``x`` runs as the op whatever its arguments: the kernel form, in
        eager mode, on channels-last input."""
        return self.kernel_form and x.dim() == 4 and x.stride(1) == 1 and \
            not torch.compiler.is_compiling()

    def _rows(self, x: torch.Tensor) -> Optional[torch.Tensor]:
        if x.dim() != 4 or x.stride(1) != 1 or x.shape[1] == 1:
            return None
        return _as_rows(x)  # a view for channels-last input

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None,
                kept: Optional[torch.Tensor] = None, act: str = 'none',
                scale: Optional[torch.Tensor] = None) -> torch.Tensor:
        if residual is not None or kept is not None or act != 'none' or scale is not None or \
                self.kernel_call(x):
            return self._with_epilogue(x, residual, kept, act, scale)
        rows = self._rows(x)
        if rows is None:
            return super().forward(x)
        b, _, h, w = x.shape
        weight = self.matrix()
        out = rows @ weight if self.bias is None else torch.addmm(self.bias, rows, weight)
        return out.view(b, h, w, self.out_channels).permute(0, 3, 1, 2)

    def matrix(self) -> torch.Tensor:
        """The weight as the ``(C_in, C_out)`` matrix the product multiplies by (a view)."""
        return self.weight.reshape(self.out_channels, -1).t()

    def use_cpu_kernel(self) -> None:
        """Run each eager call on channels-last input as the ``pointwise_conv`` op
        (:meth:`kernel_call`) and keep the weight's memory ordered as the ``(C_in, C_out)``
        matrix, output channels innermost: the panels the op's C++ GEMM reads in place (it packs
        them from any other layout, per call). Shape, values and state dict are unchanged; the
        layout is restored after conversions (``to``, channels-last)."""
        self.kernel_form = True
        self._store_as_matrix()

    @torch.no_grad()
    def _store_as_matrix(self) -> None:
        weight = self.weight
        if weight.dim() == 4 and self.out_channels > 1 and weight.stride(0) != 1:
            weight.data = self.matrix().contiguous().t()[:, :, None, None]

    def _apply(self, fn, *args, **kwargs):
        super()._apply(fn, *args, **kwargs)
        if self.kernel_form:
            self._store_as_matrix()
        return self

    def _with_epilogue(self, x: torch.Tensor, residual: Optional[torch.Tensor],
                       kept: Optional[torch.Tensor], act: str,
                       scale: Optional[torch.Tensor]) -> torch.Tensor:
        b, _, h, w = x.shape
        out = pointwise_conv(_as_rows(x), self.matrix(), self.bias, _as_rows(residual),
                             _as_rows(kept), act, scale)
        return out.view(b, h, w, out.shape[1]).permute(0, 3, 1, 2)


def is_pointwise(conv: nn.Conv2d) -> bool:
    """Whether ``conv`` is a plain 1x1, stride-1, ungrouped, unpadded conv."""
    return conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.groups == 1 and \
        conv.padding in ((0, 0), 0) and conv.padding_mode == 'zeros'


def bn_scale_shift(bn: _BatchNorm):
    """``(scale, shift)`` with ``bn(y) == y * scale + shift`` per channel, ``bn`` in eval mode."""
    scale = 1.0 / torch.sqrt(bn.running_var + bn.eps)
    if bn.affine:
        scale = bn.weight * scale
    shift = -bn.running_mean * scale
    if bn.affine:
        shift = shift + bn.bias
    return scale, shift


@torch.no_grad()
def fuse_conv_bn(conv: nn.Conv2d, bn: _BatchNorm) -> nn.Conv2d:
    """A conv whose output equals ``bn(conv(x))`` with ``bn`` in eval mode.

    1x1 convs come back as :class:`PointwiseConv2d` (a matrix product on channels-last input).
    """
    return fuse_conv_scale_shift(conv, *bn_scale_shift(bn))


@torch.no_grad()
def fuse_conv_scale_shift(conv: nn.Conv2d, scale: torch.Tensor,
                          shift: torch.Tensor) -> nn.Conv2d:
    """A conv whose output equals ``conv(x) * scale + shift`` per output channel."""
    conv_type = PointwiseConv2d if is_pointwise(conv) else nn.Conv2d
    fused = conv_type(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      conv.padding, conv.dilation, conv.groups, bias=True,
                      padding_mode=conv.padding_mode).to(conv.weight)
    fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
    fused.bias.copy_(bias * scale + shift)
    return fused


class ConvAct(nn.Module):
    """A fused conv (+ bias) and its activation: what a ConvModule becomes in deploy mode.

    :meth:`activate_in_epilogue` moves the activation of a 1x1 conv into its GEMM's epilogue
    (the ``pointwise_conv`` op: no separate pass over the output, e.g. an inverted residual's
    expanded map).
    """

    def __init__(self, conv: nn.Conv2d, act: nn.Module):
        super().__init__()
        self.conv = conv
        self.act = act
        self.epilogue_act: Optional[str] = None  # the activation the GEMM applies, if it does

    def activate_in_epilogue(self, name: Optional[str]) -> bool:
        """Apply the activation (its kernel name, ``ops.group_conv.ACTIVATIONS``; None: none
        fits) in the conv's GEMM epilogue, where the conv is a :class:`PointwiseConv2d`.
        Returns whether it does."""
        if isinstance(self.conv, PointwiseConv2d) and name is not None:
            self.epilogue_act = name
        return self.epilogue_act is not None

    def use_cpu_kernel(self) -> None:
        """The deploy form for the CPU kernels: a 1x1 conv in its kernel form
        (:meth:`PointwiseConv2d.use_cpu_kernel`) with the activation in its epilogue where the
        kernel has it (eager calls); other convs are left as they are."""
        if isinstance(self.conv, PointwiseConv2d):
            self.conv.use_cpu_kernel()
            self.activate_in_epilogue(activation_name(self.act))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.epilogue_act is not None and \
                (not self.conv.kernel_form or self.conv.kernel_call(x)):
            return self.conv(x, act=self.epilogue_act)
        return self.act(self.conv(x))


# Activations whose gradient autograd computes from their output: writing it over the input
# costs nothing in training. For the others (SiLU, ReLU6 -- hardtanh --, Hardswish, GELU, ...)
# autograd keeps a copy of the input before an in-place call (an ``aten::clone``: one more
# pass over the map and launch, no memory saved).
_OUTPUT_GRADIENT_ACTS = ('ReLU', 'LeakyReLU', 'ELU')


def trains_in_place(act_cfg: Optional[dict]) -> bool:
    """Whether a training form's ``act_cfg`` activation should overwrite its input (mmcv's
    ``ConvModule(inplace=...)``): only where that is free in training (see above). The deploy
    forms, inference only, switch every activation to in place (:func:`activate_in_place`)."""
    return act_cfg is not None and act_cfg.get('type') in _OUTPUT_GRADIENT_ACTS


def activate_in_place(act: nn.Module) -> None:
    """Let a deploy form's activation module overwrite its input (where it can: ``inplace``).

    A deploy form's activation reads a conv's (or linear layer's) fresh output that nothing else
    reads, so writing in place saves an allocation and a pass over a new map (as mmcv's
    ``ConvModule`` does by default): MUXNet-m's stock-conv blocks, CPU, batch 1, 9.34 -> 8.83 ms.
    """
    if hasattr(act, 'inplace'):
        act.inplace = True


def deploy_conv_module(module: ConvModule) -> nn.Module:
    """The deploy form of a conv -> BN -> act ``ConvModule`` (others are returned unchanged)."""
    if not module.with_norm or not isinstance(module.norm, _BatchNorm) or \
            module.order != ('conv', 'norm', 'act') or not isinstance(module.conv, nn.Conv2d):
        return module
    act = module.activate if module.with_activation else nn.Identity()
    activate_in_place(act)
    return ConvAct(fuse_conv_bn(module.conv, module.norm), act)


def conv_of(module: nn.Module) -> Optional[nn.Conv2d]:
    """The ``nn.Conv2d`` of a plain conv or a fused :class:`ConvAct`; None for anything else."""
    if isinstance(module, nn.Conv2d):
        return module
    if isinstance(module, ConvAct) and isinstance(module.conv, nn.Conv2d):
        return module.conv
    return None
