"""Inverted residual and depth-wise separable blocks of MUXNet (MobileNetV2/EfficientNet style).

``InvertedResidual``: 1x1 expand -> spatial group-wise conv (plain, MixConv or spatially
multiplexed MUXConv) -> squeeze-excite -> 1x1 linear projection, with an identity shortcut when
shapes allow. ``DepthwiseSeparable`` is the expansion-free variant MUXNet uses right after its stem.
"""
from typing import Optional, Sequence, Union

import torch
import torch.utils.checkpoint as cp
from mmcv.cnn import ConvModule, build_activation_layer, build_norm_layer
from mmcv.cnn.bricks import DropPath
from torch import nn

from .group_conv import build_group_conv
from .squeeze_excite import SqueezeExcite


class _ResidualBlock(nn.Module):
    """Shared forward: residual, drop-path and activation checkpointing."""

    has_residual: bool
    with_cp: bool

    def _build_tail(self, in_channels: int, channels: int, out_channels: int,
                    kernel_sizes: Sequence[int], stride: int, dilation: Union[int, Sequence[int]],
                    se_ratio: float, channels_per_group: int, scales: Optional[Sequence[int]],
                    norm_cfg: Optional[dict], act_cfg: Optional[dict], drop_path_rate: float,
                    with_cp: bool) -> None:
        """Spatial conv -> norm -> act -> SE -> 1x1 linear projection on ``channels``."""
        self.in_channels, self.out_channels = in_channels, out_channels
        self.stride = stride
        self.with_cp = with_cp
        self.has_residual = stride == 1 and in_channels == out_channels
        # Without a norm the spatial conv gets a bias, as ConvModule's bias='auto' does.
        self.depthwise_conv = build_group_conv(channels, kernel_sizes, stride, dilation,
                                               channels_per_group, scales, bias=norm_cfg is None)
        self.depthwise_norm = (build_norm_layer(norm_cfg, channels)[1]
                               if norm_cfg is not None else nn.Identity())
        self.depthwise_act = build_activation_layer(act_cfg) if act_cfg is not None else \
            nn.Identity()
        # SE width is a ratio of the block *input* channels, as the official release.
        self.se = (SqueezeExcite(channels, max(1, int(in_channels * se_ratio)), act_cfg)
                   if se_ratio > 0 else nn.Identity())
        self.project_conv = ConvModule(channels, out_channels, 1, norm_cfg=norm_cfg,
                                       act_cfg=None)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._body(x)
        if self.has_residual:
            out = x + self.drop_path(out)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)


class InvertedResidual(_ResidualBlock):
    """Inverted residual block with optional MixConv / spatial multiplexing and SE.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        kernel_sizes (Sequence[int]): Kernel size(s) of the spatial conv.
        stride (int): Stride of the spatial conv. Default: 1.
        dilation (int | Sequence[int]): Dilation of the spatial conv (one per kernel allowed).
        expand_ratio (float): Hidden channels = ``int(in_channels * expand_ratio)``.
        se_ratio (float): SE width as a ratio of ``in_channels``; 0 disables SE.
        channels_per_group (int): Channels per group of the spatial conv (1: depth-wise).
        scales (Sequence[int], optional): Spatial-multiplexing scales (see SpatialMuxConv).
        norm_cfg (dict, optional): Norm layer config; None: no norm (the convs get biases).
        act_cfg (dict, optional): Activation config (also used inside SE); None: no activation.
        drop_path_rate (float): Stochastic depth on the residual branch.
        with_cp (bool): Trade compute for memory with activation checkpointing.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_sizes: Sequence[int],
                 stride: int = 1, dilation: Union[int, Sequence[int]] = 1,
                 expand_ratio: float = 6.0,
                 se_ratio: float = 0.0, channels_per_group: int = 1,
                 scales: Optional[Sequence[int]] = None,
                 norm_cfg: Optional[dict] = dict(type='BN'),
                 act_cfg: Optional[dict] = dict(type='ReLU'), drop_path_rate: float = 0.0,
                 with_cp: bool = False):
        super().__init__()
        mid_channels = int(in_channels * expand_ratio)
        self.expand_conv = ConvModule(in_channels, mid_channels, 1, norm_cfg=norm_cfg,
                                      act_cfg=act_cfg)
        self._build_tail(in_channels, mid_channels, out_channels, kernel_sizes, stride, dilation,
                         se_ratio, channels_per_group, scales, norm_cfg, act_cfg,
                         drop_path_rate, with_cp)

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        x = self.expand_conv(x)
        x = self.depthwise_act(self.depthwise_norm(self.depthwise_conv(x)))
        x = self.se(x)
        return self.project_conv(x)


class DepthwiseSeparable(_ResidualBlock):
    """Depth-wise conv -> SE -> 1x1 linear projection, with identity shortcut when possible.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        kernel_sizes (Sequence[int]): Kernel size(s) of the depth-wise conv.
        stride (int): Stride. Default: 1.
        dilation (int | Sequence[int]): Dilation (one per kernel allowed). Default: 1.
        se_ratio (float): SE width as a ratio of ``in_channels``; 0 disables SE.
        channels_per_group (int): Channels per group of the spatial conv (1: depth-wise).
        scales (Sequence[int], optional): Spatial-multiplexing scales.
        norm_cfg (dict, optional): Norm layer config; None: no norm (the convs get biases).
        act_cfg (dict, optional): Activation config (also used inside SE); None: no activation.
        drop_path_rate (float): Stochastic depth on the residual branch.
        with_cp (bool): Use activation checkpointing.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_sizes: Sequence[int],
                 stride: int = 1, dilation: Union[int, Sequence[int]] = 1,
                 se_ratio: float = 0.0,
                 channels_per_group: int = 1, scales: Optional[Sequence[int]] = None,
                 norm_cfg: Optional[dict] = dict(type='BN'),
                 act_cfg: Optional[dict] = dict(type='ReLU'),
                 drop_path_rate: float = 0.0, with_cp: bool = False):
        super().__init__()
        self._build_tail(in_channels, in_channels, out_channels, kernel_sizes, stride, dilation,
                         se_ratio, channels_per_group, scales, norm_cfg, act_cfg,
                         drop_path_rate, with_cp)

    def _body(self, x: torch.Tensor) -> torch.Tensor:
        x = self.depthwise_act(self.depthwise_norm(self.depthwise_conv(x)))
        return self.project_conv(self.se(x))
