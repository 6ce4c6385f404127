"""Stock-path deploy form of a conv with 2 channels per group (the ``dwg2`` convs of MUXNet's
channel-multiplexed blocks, paper Sec. 3.2).

oneDNN (and cuDNN in NHWC half precision) runs a 2-channels-per-group conv on a slow generic path
(on CPU 4-10x a depth-wise conv of the same size). Off the fused kernel, deploy mode therefore
rewrites it as two depth-wise convs and a channel roll, on the block's hidden channels reordered
so that the two members of every group lie half the channels apart -- a permutation the block
folds into the weights of its expand conv, squeeze-excite and project conv (free at run time).
"""
import torch
import torch.nn.functional as F
from torch import nn


def has_channel_pairs(conv: nn.Module) -> bool:
    """Whether ``conv`` is a channel-preserving conv with exactly 2 channels per group."""
    return isinstance(conv, nn.Conv2d) and conv.groups * 2 == conv.in_channels == \
        conv.out_channels


def pair_halves_permutation(channels: int) -> torch.Tensor:
    """New channel ``j`` = old channel ``perm[j]``: first members of the pairs, then second ones."""
    idx = torch.arange(channels)
    return torch.cat([idx[0::2], idx[1::2]])


class PairwiseGroupConv(nn.Module):
    """A conv with 2 channels per group, on channels reordered by pair halves.

    Input channel ``j`` and ``j + C/2`` form group ``j`` (see :func:`pair_halves_permutation`).
    ``own`` holds, per channel, the weight of its own input; ``cross`` the weight each input
    contributes to its partner's output, which a roll by ``C/2`` moves into place.

    Args:
        conv (nn.Conv2d): The group-wise conv (2 in/out channels per group, bias allowed), in the
            original (interleaved) channel order.
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        channels = conv.in_channels
        if not has_channel_pairs(conv):
            raise ValueError('PairwiseGroupConv needs a conv with 2 channels per group')
        self.half = channels // 2
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        # conv.weight[o, i]: output channel o from input (o // 2) * 2 + i.
        weight = conv.weight.detach()
        perm = pair_halves_permutation(channels)
        first, second = perm[:self.half], perm[self.half:]  # old channels 2g, 2g + 1
        own = torch.cat([weight[first, 0], weight[second, 1]])
        # The cross weight sits at the *input* channel; after the roll it lands on the output.
        cross = torch.cat([weight[second, 0], weight[first, 1]])
        self.own = nn.Parameter(own.unsqueeze(1).contiguous(), requires_grad=False)
        self.cross = nn.Parameter(cross.unsqueeze(1).contiguous(), requires_grad=False)
        bias = conv.bias.detach()[perm] if conv.bias is not None else None
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = 2 * self.half
        own = F.conv2d(x, self.own, self.bias, self.stride, self.padding, self.dilation, channels)
        cross = F.conv2d(x, self.cross, None, self.stride, self.padding, self.dilation, channels)
        return own + torch.roll(cross, self.half, 1)
