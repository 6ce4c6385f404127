"""Channel shuffle: the "mix-up" step of channel multiplexing (MUXConv paper, Sec. 3.2).

After a block has processed one part of the channels and copied the other, a channel shuffle
interleaves the two groups so the next block's split sees a mixture of both.
"""
import torch
from torch import nn

from ..utils.arguments import is_int


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether ``x`` is a 4-D map stored channels-last (and not NCHW at the same time, as a 1x1
    map or a single channel is): the layout a channel reordering must keep."""
    return x.dim() == 4 and not x.is_contiguous() and \
        x.is_contiguous(memory_format=torch.channels_last)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave ``groups`` equal channel groups of an NCHW tensor.

    Args:
        x (Tensor): Input of shape (N, C, H, W) with C divisible by ``groups``.
        groups (int): Number of channel groups to interleave.

    Returns:
        Tensor: Same shape and memory layout as ``x``; output channel ``i * groups + g`` is
        input channel ``g * (C // groups) + i``.
    """
    n, c, h, w = x.shape
    if not is_int(groups) or groups < 1 or c % groups != 0:
        raise ValueError(f'channel_shuffle: {c} channels cannot be split into {groups!r} equal '
                         f'groups')
    if is_channels_last(x):
        # Shuffle the channels-last layout itself: the NCHW reshape would return an NCHW copy,
        # and every later layer (and its gradient) would then run in mixed layouts.
        nhwc = x.permute(0, 2, 3, 1).reshape(n, h, w, groups, c // groups).transpose(3, 4)
        return nhwc.reshape(n, h, w, c).permute(0, 3, 1, 2)
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ChannelShuffle(nn.Module):
    """Module form of :func:`channel_shuffle`.

    Args:
        channels (int): Number of input channels, checked against ``groups`` at build time.
        groups (int): Number of channel groups to interleave.
    """

    def __init__(self, channels: int, groups: int):
        super().__init__()
        if not is_int(groups) or groups < 1 or channels % groups != 0:
            raise ValueError(f'ChannelShuffle: {channels} channels cannot be split into '
                             f'{groups} equal groups')
        self.channels = channels
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.groups == 1:
            return x
        return channel_shuffle(x, self.groups)

    def extra_repr(self) -> str:
        return f'channels={self.channels}, groups={self.groups}'
