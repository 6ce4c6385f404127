"""MixConv-style multi-kernel group-wise convolution (the ``k3.5.7`` blocks of MUXNet).

The channels are split into one group per kernel size, each group gets its own depth-wise (or
group-wise) convolution, and the results are concatenated. MUXNet-m/-l use it in the first block
of each down-sampling stage. The split puts the remainder on the first group, as the official
release does, so official weights load unchanged.
"""
from typing import List, Sequence, Union

import torch
from torch import nn


def split_channels(channels: int, num_groups: int) -> List[int]:
    """Split ``channels`` into ``num_groups`` near-equal parts, remainder on the first."""
    if num_groups < 1 or channels < num_groups:
        raise ValueError(f'cannot split {channels} channels into {num_groups} groups')
    parts = [channels // num_groups] * num_groups
    parts[0] += channels - sum(parts)
    return parts


def same_padding(kernel_size: int, dilation: int = 1) -> int:
    """Padding that keeps the size at stride 1 (and gives ceil(H / s) at stride s)."""
    if kernel_size % 2 != 1:
        raise ValueError(f'only odd kernel sizes are supported, got {kernel_size}')
    return dilation * (kernel_size // 2)


def _per_kernel(value: Union[int, Sequence[int]], count: int) -> List[int]:
    values = [value] * count if isinstance(value, int) else list(value)
    if len(values) != count:
        raise ValueError(f'{len(values)} dilations given for {count} kernels')
    return values


class MixedConv2d(nn.Module):
    """Group-wise convolution with one kernel size per channel group.

    Args:
        channels (int): Input and output channels.
        kernel_sizes (Sequence[int]): One odd kernel size per channel group.
        stride (int): Stride of every group. Default: 1.
        dilation (int | Sequence[int]): Dilation of every group, or one per kernel. Default: 1.
        channels_per_group (int): Channels per convolution group inside each kernel group;
            1 is depth-wise. Default: 1.
        bias (bool): Give every kernel group a bias (used when no norm follows). Default: False.
    """

    def __init__(self, channels: int, kernel_sizes: Sequence[int], stride: int = 1,
                 dilation: Union[int, Sequence[int]] = 1, channels_per_group: int = 1,
                 bias: bool = False):
        super().__init__()
        self.kernel_sizes = tuple(kernel_sizes)
        dilations = _per_kernel(dilation, len(self.kernel_sizes))
        self.splits = split_channels(channels, len(self.kernel_sizes))
        convs = []
        for k, c, d in zip(self.kernel_sizes, self.splits, dilations):
            if c % channels_per_group != 0:
                raise ValueError(f'MixedConv2d: group of {c} channels is not divisible by '
                                 f'channels_per_group={channels_per_group}')
            convs.append(
                nn.Conv2d(c, c, k, stride, same_padding(k, d), d,
                          groups=c // channels_per_group, bias=bias))
        self.convs = nn.ModuleList(convs)
        self.in_channels = self.out_channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, self.splits, dim=1)
        return torch.cat([conv(p) for conv, p in zip(self.convs, parts)], dim=1)
