"""Squeeze-and-excitation as the official MUXNet blocks use it.

The squeeze width is a ratio of the *block input* channels (not of the expanded channels it
gates), and the squeeze activation is the block's own activation; the gate is a sigmoid.

Deploy form (:meth:`SqueezeExcite.switch_to_deploy`): the two 1x1 convs on the pooled vector run
as ``linear`` layers (a conv on a 1x1 map pays the full conv dispatch for a matrix-vector
product), and :meth:`SqueezeExcite.gate` lets a block that already has the pooled sums (the fused
kernel's epilogue) compute the gate without reading the map again.
"""
from typing import Optional

import torch
from mmcv.cnn import build_activation_layer
from torch import nn


@torch.no_grad()
def _conv1x1_to_linear(conv: nn.Conv2d) -> nn.Linear:
    linear = nn.Linear(conv.in_channels, conv.out_channels, conv.bias is not None).to(conv.weight)
    linear.weight.copy_(conv.weight.flatten(1))
    if conv.bias is not None:
        linear.bias.copy_(conv.bias)
    return linear


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
        self.deploy = False

    def gate(self, mean: torch.Tensor) -> torch.Tensor:
        """The (N, C) sigmoid gate from the (N, C) channel means (deploy form)."""
        return self.conv_expand(self.act(self.conv_reduce(mean.to(self.conv_reduce.weight))))\
            .sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deploy:
            return x * self.gate(x.mean((2, 3))).to(x.dtype)[:, :, None, None]
        scale = x.mean((2, 3), keepdim=True)
        scale = self.conv_expand(self.act(self.conv_reduce(scale)))
        return x * scale.sigmoid()

    def switch_to_deploy(self, fused_ops: bool = False) -> None:
        """Run the two 1x1 convs as ``linear`` layers (same parameters, flattened).

        Args:
            fused_ops (bool): Unused (no kernel of its own: its pooling is fused by the block).
        """
        if not self.deploy:
            self.conv_reduce = _conv1x1_to_linear(self.conv_reduce)
            self.conv_expand = _conv1x1_to_linear(self.conv_expand)
            self.deploy = True
