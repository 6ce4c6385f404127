"""Group-wise spatial convs on the fused kernel (:mod:`mux_backbones.ops.group_conv`).

* :class:`GroupConv2d` -- the training form: an ``nn.Conv2d`` (same parameters, same state-dict
  keys) whose forward runs the fused kernel when ``fused_ops`` is set and the input allows it;
* :class:`FusedGroupConv` -- the deploy form of any MUXNet spatial conv (plain, MixConv, 2 channels
  per group) with its BatchNorm folded in and its activation and the squeeze-excite pooling as
  the kernel's epilogue.
"""
from typing import Optional, Sequence

import torch
from mmcv.cnn.bricks import Swish
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..ops import group_conv, pack_weights
from ..ops._triton import can_use_triton
from ..ops.group_conv import _group_conv, check_args
from .conv_bn import bn_scale_shift

_ACTIVATION_NAMES = ((nn.Identity, 'none'), (nn.ReLU, 'relu'), (nn.SiLU, 'silu'),
                     (Swish, 'silu'), (nn.ReLU6, 'relu6'))


def activation_name(act: nn.Module) -> Optional[str]:
    """The kernel epilogue that computes ``act`` (None: the kernel has none for it)."""
    for act_type, name in _ACTIVATION_NAMES:
        if type(act) is act_type:
            return name
    return None


def kernel_can_run(conv: nn.Conv2d) -> bool:
    """Whether the fused kernel computes ``conv``: channel-preserving, 1 or 2 channels per group,
    odd square kernel, "same" zero padding, stride 1 or 2."""
    k, d = conv.kernel_size[0], conv.dilation[0]
    return conv.in_channels == conv.out_channels and \
        conv.in_channels // conv.groups in (1, 2) and \
        conv.kernel_size == (k, k) and k % 2 == 1 and conv.dilation == (d, d) and \
        conv.padding == (d * (k // 2), ) * 2 and conv.padding_mode == 'zeros' and \
        conv.stride in ((1, 1), (2, 2))


class GroupConv2d(nn.Conv2d):
    """A depth-wise / group-wise ``nn.Conv2d`` that can run on the fused kernel.

    Takes ``nn.Conv2d``'s arguments plus ``fused_ops``; the kernel is used only where
    :func:`kernel_can_run` holds and the input's device and dtype are supported (else the stock
    conv runs, after one warning).
    """

    def __init__(self, *args, fused_ops: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.fused_ops = fused_ops

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused_ops and kernel_can_run(self) and can_use_triton(x, 'group_conv'):
            return group_conv(x, pack_weights([self.weight]), self.bias, [self.in_channels],
                              [self.kernel_size[0]], [self.dilation[0]], self.stride[0],
                              self.in_channels // self.groups)
        return super().forward(x)

    def conv_groups(self):
        """``(weights, splits, kernel sizes, dilations)`` of its kernel-size groups (one)."""
        return [self.weight], [self.in_channels], [self.kernel_size[0]], [self.dilation[0]]

    def fused_form(self, norm: Optional[_BatchNorm], act: nn.Module) -> Optional['FusedGroupConv']:
        """Its deploy form with ``norm`` folded and ``act`` fused (None where not computable)."""
        if not kernel_can_run(self):
            return None
        return FusedGroupConv.from_groups(self, norm, act)


class FusedGroupConv(nn.Module):
    """Deploy form of a (mixed-kernel) group-wise conv + BN + activation, in one op.

    Build it with :meth:`from_groups`. ``forward(x, with_pool=True)`` also returns the (N, C)
    per-channel sums of the output, for the squeeze-excite that follows.

    Args:
        weight (Tensor): Packed weights (see :func:`mux_backbones.ops.pack_weights`), BN folded.
        bias (Tensor): (C, ) bias, BN folded.
        splits, kernel_sizes, dilations (Sequence[int]): Channels, kernel size and dilation of
            every kernel-size group.
        stride (int): 1 or 2.
        channels_per_group (int): 1 or 2.
        act (str): Epilogue activation name (see :data:`mux_backbones.ops.group_conv.ACTIVATIONS`).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, splits: Sequence[int],
                 kernel_sizes: Sequence[int], dilations: Sequence[int], stride: int,
                 channels_per_group: int, act: str):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = nn.Parameter(bias, requires_grad=False)
        self.splits, self.kernel_sizes = list(splits), list(kernel_sizes)
        self.dilations = list(dilations)
        self.stride, self.channels_per_group, self.act = stride, channels_per_group, act

    @classmethod
    @torch.no_grad()
    def from_groups(cls, conv: nn.Module, norm: Optional[_BatchNorm],
                    act: nn.Module) -> Optional['FusedGroupConv']:
        """Fold ``norm`` into ``conv`` (anything with ``conv_groups()``, ``stride``, ``groups``
        structure of :class:`GroupConv2d` / MixedConv2d) and take ``act`` as the epilogue."""
        act_name = activation_name(act)
        if act_name is None:
            return None
        weights, splits, kernel_sizes, dilations = conv.conv_groups()
        channels = sum(splits)
        if norm is not None:
            scale, shift = bn_scale_shift(norm)
        else:
            scale, shift = torch.ones(channels).to(weights[0]), torch.zeros(channels).to(weights[0])
        biases = [getattr(c, 'bias', None) for c in getattr(conv, 'convs', [conv])]
        bias = torch.cat([b if b is not None else torch.zeros(c).to(weights[0])
                          for b, c in zip(biases, splits)])
        scaled, start = [], 0
        for w, c in zip(weights, splits):
            scaled.append(w * scale[start:start + c].view(-1, 1, 1, 1))
            start += c
        cpg = weights[0].shape[1]
        stride = conv.stride if isinstance(conv.stride, int) else conv.stride[0]
        weight = pack_weights(scaled).contiguous()
        check_args(torch.empty(1, channels, 1, 1), weight, splits, kernel_sizes, dilations,
                   stride, cpg, act_name)
        return cls(weight, bias * scale + shift, splits, kernel_sizes, dilations, stride, cpg,
                   act_name)

    def forward(self, x: torch.Tensor, with_pool: bool = False):
        # The op itself (arguments were checked when this module was built): the Python checks
        # of ``group_conv`` cost more than a small layer's kernel in eager mode.
        y, pool = _group_conv(x, self.weight, self.bias, self.splits, self.kernel_sizes,
                              self.dilations, self.stride, self.channels_per_group, self.act,
                              with_pool)
        return (y, pool) if with_pool else y

    def extra_repr(self) -> str:
        return (f'splits={self.splits}, kernel_sizes={self.kernel_sizes}, '
                f'dilations={self.dilations}, stride={self.stride}, '
                f'channels_per_group={self.channels_per_group}, act={self.act}')
