"""Squeeze-and-excitation as the official MUXNet blocks use it.

The squeeze width is a ratio of the *block input* channels (not of the expanded channels it
gates), and the squeeze activation is the block's own activation; the gate is a sigmoid.
"""
from typing import Optional

import torch
from mmcv.cnn import build_activation_layer
from torch import nn


class SqueezeExcite(nn.Module):
    """Channel attention: global average pool, 1x1 reduce, act, 1x1 expand, sigmoid gate.

    Args:
        channels (int): Channels of the tensor being gated.
        squeeze_channels (int): Width of the bottleneck.
        act_cfg (dict, optional): Activation between the two 1x1 convs; None: none.
            Default: ReLU.
    """

    def __init__(self, channels: int, squeeze_channels: int,
                 act_cfg: Optional[dict] = dict(type='ReLU')):
        super().__init__()
        if squeeze_channels < 1:
            raise ValueError(f'SqueezeExcite: squeeze_channels must be >= 1, got '
                             f'{squeeze_channels}')
        self.conv_reduce = nn.Conv2d(channels, squeeze_channels, 1, bias=True)
        self.act = build_activation_layer(act_cfg) if act_cfg is not None else nn.Identity()
        self.conv_expand = nn.Conv2d(squeeze_channels, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = x.mean((2, 3), keepdim=True)
        scale = self.conv_expand(self.act(self.conv_reduce(scale)))
        return x * scale.sigmoid()
