"""Factory for the spatial (depth-wise / group-wise) convolution of a MUXNet block.

One place decides which layer realises a block's spatial conv: a plain :class:`GroupConv2d` (an
``nn.Conv2d``), a :class:`MixedConv2d` (several kernel sizes) or a :class:`SpatialMuxConv`
(several scales). Each can run on the fused kernel (``fused_ops``).
"""
from typing import Optional, Sequence, Union

from torch import nn

from ..utils.arguments import check_positive_int
from .fused_group_conv import GroupConv2d
from .mixed_conv import MixedConv2d, kernel_size_tuple, same_padding
from .spatial_mux_conv import SpatialMuxConv


def build_group_conv(channels: int, kernel_sizes: Union[int, Sequence[int]], stride: int = 1,
                     dilation: Union[int, Sequence[int]] = 1, channels_per_group: int = 1,
                     scales: Optional[Sequence[int]] = None, bias: bool = False,
                     fused_ops: bool = False) -> nn.Module:
    """Build the spatial conv of a block; it keeps the channel count.

    Args:
        channels (int): Input and output channels.
        kernel_sizes (int | Sequence[int]): One kernel size, or one per channel group.
        stride (int): Stride. Default: 1.
        dilation (int | Sequence[int]): Dilation, or one per kernel (per scale with
            spatial multiplexing). Default: 1.
        channels_per_group (int): Channels per conv group (1: depth-wise). Default: 1.
        scales (Sequence[int], optional): Spatial-multiplexing scales, one per group; ``None`` or
            all zeros means no spatial multiplexing.
        bias (bool): Add a bias (a block without a norm after its spatial conv). Default: False.
        fused_ops (bool): Run on the fused kernel where the input allows. Default: False.
    """
    kernel_sizes = kernel_size_tuple(kernel_sizes)
    if scales is not None and any(scales):
        if not isinstance(dilation, int) and len(kernel_sizes) == 1:
            dilation = dilation[0]  # one kernel shared by every scale
        return SpatialMuxConv(channels, kernel_sizes, scales, stride, dilation,
                              channels_per_group, bias, fused_ops)
    if len(kernel_sizes) > 1:
        return MixedConv2d(channels, kernel_sizes, stride, dilation, channels_per_group, bias,
                           fused_ops)
    check_positive_int('GroupConv2d', 'channels', channels)
    check_positive_int('GroupConv2d', 'stride', stride)
    check_positive_int('GroupConv2d', 'channels_per_group', channels_per_group)
    if channels % channels_per_group != 0:
        raise ValueError(f'{channels} channels are not divisible by channels_per_group='
                         f'{channels_per_group}')
    k = kernel_sizes[0]
    dilation = dilation if isinstance(dilation, int) else dilation[0]
    return GroupConv2d(channels, channels, k, stride, same_padding(k, dilation), dilation,
                       groups=channels // channels_per_group, bias=bias, fused_ops=fused_ops)
