"""MUXConv building blocks, one concern per file."""
from .channel_mux import ChannelMux, split_width
from .channel_shuffle import ChannelShuffle, channel_shuffle
from .group_conv import build_group_conv
from .inverted_residual import DepthwiseSeparable, InvertedResidual
from .mixed_conv import MixedConv2d, split_channels
from .spatial_mux_conv import SpatialMuxConv, split_for_scales
from .squeeze_excite import SqueezeExcite

__all__ = [
    'ChannelMux', 'ChannelShuffle', 'DepthwiseSeparable', 'InvertedResidual', 'MixedConv2d',
    'SpatialMuxConv', 'SqueezeExcite', 'build_group_conv', 'channel_shuffle', 'split_channels',
    'split_for_scales', 'split_width'
]
