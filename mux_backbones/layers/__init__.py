"""MUXConv building blocks, one concern per file, each with its deploy form beside it."""
from .channel_mux import ChannelMux, interleave_halves, split_width
from .channel_shuffle import ChannelShuffle, channel_shuffle
from .conv_bn import ConvAct, PointwiseConv2d, deploy_conv_module, fuse_conv_bn
from .fused_group_conv import KERNEL_GRADIENTS, TRAINING_FORMS, FusedGroupConv, GroupConv2d
from .group_conv import build_group_conv
from .inverted_residual import DepthwiseSeparable, InvertedResidual
from .mixed_conv import MixedConv2d, split_channels
from .pairwise_group_conv import PairwiseGroupConv
from .spatial_mux_conv import SpatialMuxConv, split_for_scales
from .squeeze_excite import SqueezeExcite

__all__ = [
    'KERNEL_GRADIENTS', 'TRAINING_FORMS', 'ChannelMux', 'ChannelShuffle', 'ConvAct',
    'DepthwiseSeparable', 'FusedGroupConv', 'GroupConv2d', 'InvertedResidual', 'MixedConv2d',
    'PairwiseGroupConv', 'PointwiseConv2d', 'SpatialMuxConv', 'SqueezeExcite',
    'build_group_conv', 'channel_shuffle', 'deploy_conv_module', 'fuse_conv_bn',
    'interleave_halves', 'split_channels', 'split_for_scales', 'split_width'
]
