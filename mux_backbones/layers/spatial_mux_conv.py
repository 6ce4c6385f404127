"""Spatial multiplexing (MUXConv paper, Sec. 3.1).

The channels are split into groups, one per *scale*:

* scale ``-1`` -- space-to-channel: each 2x2 neighbourhood is folded into 4x the channels at half
  resolution (``pixel_unshuffle(2)``); the group-wise conv there sees a 2x larger receptive field;
* scale ``0`` -- the group-wise conv runs at the input resolution;
* scale ``+1`` -- channel-to-space: every 4 channels are unfolded into a 2x larger map
  (``pixel_shuffle(2)``); the group-wise conv there works at a finer resolution.

Each group is folded back to the input resolution (the inverse shuffle) and the groups are
concatenated, so the layer is a drop-in replacement for a depth-wise convolution. Any mix of
scales is allowed, negative ones included (the official release's parser drops the sign).

Maps whose size is not a multiple of what the shuffles need (odd sizes, 300x300 inputs, ...) are
zero-padded at the bottom/right before the shuffle and the result is cropped, so the output size is
always ``ceil(H / stride)`` -- exactly what a same-padded depth-wise conv gives.

Deploy form (:meth:`SpatialMuxConv.fold_norm`, used by the blocks' ``switch_to_deploy`` with
``fused_ops`` on the CPU kernels): the BN and activation that follow become the layer's own,
applied to the folded-back map by the :func:`~mux_backbones.ops.norm_act` op in one pass,
together with the squeeze-excite's channel sums (``with_pool``); each scale's conv on the C++
kernel keeps its weights packed (:class:`FusedGroupConv`).
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..compat import pixel_shuffle, pixel_unshuffle
from ..ops import norm_act
from ..ops.group_conv import check_act
from ..utils.arguments import check_positive_int, is_int
from .conv_bn import bn_scale_shift
from .fused_group_conv import GroupConv2d
from .mixed_conv import _per_kernel, kernel_size_tuple, same_padding

# Channels a group at each scale needs a multiple of, per channel of its group-wise conv:
# pixel_shuffle(2) consumes channels in fours.
_SCALE_ALIGN = {-1: 1, 0: 1, 1: 4}


def split_for_scales(channels: int, scales: Sequence[int], channels_per_group: int) -> List[int]:
    """Split ``channels`` into one group per scale, each valid for its shuffle and grouping.

    Every group gets an equal share rounded down to what its scale needs; the remainder goes to the
    first identity group (scale 0), or else to the first group that can take it.
    """
    check_positive_int('SpatialMuxConv', 'channels', channels)
    check_positive_int('SpatialMuxConv', 'channels_per_group', channels_per_group)
    if not scales:
        raise ValueError('SpatialMuxConv: needs at least one scale')
    aligns = []
    for s in scales:
        if not is_int(s) or s not in _SCALE_ALIGN:
            raise ValueError(f'SpatialMuxConv: scale {s} is not supported; use -1 (space-to-'
                             f'channel), 0 (identity) or 1 (channel-to-space)')
        a = _SCALE_ALIGN[s] * channels_per_group
        aligns.append(a)
    share = channels // len(scales)
    parts = [share // a * a for a in aligns]
    rest = channels - sum(parts)
    order = [i for i, s in enumerate(scales) if s == 0] + [i for i, s in enumerate(scales) if s]
    for i in order:
        if rest % aligns[i] == 0:
            parts[i] += rest
            rest = 0
            break
    if rest or min(parts) <= 0:
        raise ValueError(f'SpatialMuxConv: {channels} channels cannot be split over scales '
                         f'{tuple(scales)} with {channels_per_group} channels per group '
                         f'(channel-to-space groups need multiples of {4 * channels_per_group})')
    return parts


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h))
    return x


class SpatialMuxConv(nn.Module):
    """Group-wise convolution applied at several spatial scales of one feature map.

    Args:
        channels (int): Input and output channels.
        kernel_sizes (int | Sequence[int]): One odd kernel size, or one per scale.
        scales (Sequence[int]): One entry per channel group, each -1, 0 or 1 (see module doc).
        stride (int): Stride of every group (at its own scale). Default: 1.
        dilation (int | Sequence[int]): Dilation of every group (at its own scale), or one per
            group. Default: 1.
        channels_per_group (int): Channels per convolution group; 1 is depth-wise. Default: 1.
        bias (bool): Give every group-wise conv a bias (used when no norm follows).
            Default: False.
        fused_ops (bool): Run each scale's conv on the fused kernel where the input allows (the
            pixel shuffles stay stock). Default: False.
    """

    def __init__(self, channels: int, kernel_sizes: Union[int, Sequence[int]],
                 scales: Sequence[int], stride: int = 1,
                 dilation: Union[int, Sequence[int]] = 1,
                 channels_per_group: int = 1, bias: bool = False, fused_ops: bool = False):
        super().__init__()
        scales = tuple(int(s) if is_int(s) else s for s in scales)  # (split_for_scales checks)
        kernel_sizes = kernel_size_tuple(kernel_sizes)
        if len(kernel_sizes) == 1:
            kernel_sizes *= len(scales)
        if len(kernel_sizes) != len(scales):
            raise ValueError(f'SpatialMuxConv: {len(kernel_sizes)} kernel sizes for '
                             f'{len(scales)} scales')
        if not is_int(stride) or stride not in (1, 2):
            raise ValueError(f'SpatialMuxConv: stride must be 1 or 2, got {stride}')
        self.scales = scales
        self.kernel_sizes = tuple(kernel_sizes)
        self.stride = stride
        self.splits = split_for_scales(channels, scales, channels_per_group)
        convs = []
        dilations = _per_kernel(dilation, len(scales))
        for k, c, s, d in zip(self.kernel_sizes, self.splits, scales, dilations):
            c_at_scale = c * 4 if s < 0 else c // 4 if s > 0 else c
            convs.append(
                GroupConv2d(c_at_scale, c_at_scale, k, stride, same_padding(k, d), d,
                            groups=c_at_scale // channels_per_group, bias=bias,
                            fused_ops=fused_ops))
        self.convs = nn.ModuleList(convs)
        self.in_channels = self.out_channels = channels
        # Deploy form (fold_norm): the following BN as a per-channel scale and shift, and the
        # activation applied with it; None: the training form.
        self.register_buffer('norm_scale', None)
        self.register_buffer('norm_shift', None)
        self.act: Optional[str] = None

    def _run_scale(self, x: torch.Tensor, conv: nn.Conv2d, scale: int) -> torch.Tensor:
        if scale == 0:
            return conv(x)
        h, w = x.shape[-2:]
        out_h, out_w = -(-h // self.stride), -(-w // self.stride)
        if scale < 0:
            y = pixel_shuffle(conv(pixel_unshuffle(_pad_to_multiple(x, 2 * self.stride), 2)), 2)
        else:
            y = pixel_unshuffle(conv(pixel_shuffle(_pad_to_multiple(x, self.stride), 2)), 2)
        if y.shape[-2] != out_h or y.shape[-1] != out_w:
            y = y[..., :out_h, :out_w]
        return y

    def forward(self, x: torch.Tensor, with_pool: bool = False
                ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        """The layer on ``x``; with ``with_pool`` (deploy form only) also the (N, C) fp32 sums
        of the output over its pixels, for the squeeze-excite that follows."""
        parts = torch.split(x, self.splits, dim=1)
        y = torch.cat(
            [self._run_scale(p, conv, s) for p, conv, s in zip(parts, self.convs, self.scales)],
            dim=1)
        if self.norm_scale is None:
            if with_pool:
                raise ValueError('SpatialMuxConv: with_pool needs the deploy form (fold_norm)')
            return y
        y, sums = norm_act(y, self.norm_scale, self.norm_shift, self.act, with_pool)
        return (y, sums) if with_pool else y

    @torch.no_grad()
    def fold_norm(self, norm: _BatchNorm, act: str = 'none') -> None:
        """Take the BN that follows (its running statistics) and the activation after it into
        the layer: its output becomes ``act(bn(output))`` (deploy form; the BN and activation
        modules are then replaced by identities). Each scale's conv that the CPU kernel computes
        takes its packed form (:class:`FusedGroupConv`, no norm, no activation) on the way.

        Args:
            norm (_BatchNorm): The BN after the layer, with running statistics.
            act (str): The activation after the BN: 'none', 'relu', 'silu' or 'relu6'.
                Default: 'none'.
        """
        if self.norm_scale is not None:
            raise RuntimeError('SpatialMuxConv: a norm is folded already')
        if norm.running_var is None or norm.num_features != self.out_channels:
            raise ValueError(f'SpatialMuxConv.fold_norm: needs a BN over {self.out_channels} '
                             f'channels with running statistics, got {norm}')
        check_act(act, 'SpatialMuxConv.fold_norm')
        scale, shift = bn_scale_shift(norm)
        self.norm_scale, self.norm_shift, self.act = scale.contiguous(), shift.contiguous(), act
        # Each scale's conv that runs on the CPU kernel keeps its weights packed as the kernel
        # reads them (FusedGroupConv without norm or activation), instead of packing per call.
        for i, conv in enumerate(self.convs):
            if isinstance(conv, GroupConv2d) and conv.cpu_kernel_serves():
                packed = conv.fused_form(None, nn.Identity())
                if packed is not None:
                    self.convs[i] = packed

    def extra_repr(self) -> str:
        text = f'scales={self.scales}, splits={self.splits}, stride={self.stride}'
        return text if self.act is None else f'{text}, norm folded, act={self.act}'
