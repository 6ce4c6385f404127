"""The layers are public (``mux_backbones.layers``): a bad constructor argument is a ValueError
naming it, never a layer built silently, a ZeroDivisionError or a tensor-shape error later."""
import pytest
import torch
from torch import nn

from mux_backbones.layers import (ChannelMux, ChannelShuffle, DepthwiseSeparable, InvertedResidual,
                                  MixedConv2d, SpatialMuxConv, SqueezeExcite, build_group_conv,
                                  channel_shuffle)
from mux_backbones.utils.arguments import check_positive_int, is_int, is_real


@pytest.mark.parametrize('build, match', [
    # kernel sizes: positive odd integers, at least one
    (lambda: MixedConv2d(8, [3, -3]), 'only positive odd kernel sizes are supported, got -3'),
    (lambda: MixedConv2d(8, [3.0]), 'only positive odd kernel sizes are supported, got 3.0'),
    (lambda: MixedConv2d(8, []), 'non-empty sequence'),
    (lambda: MixedConv2d(8, '35'), "kernel_sizes must be an odd integer.*got '35'"),
    (lambda: build_group_conv(8, ()), 'non-empty sequence'),
    # stride, dilation, channels per group
    (lambda: MixedConv2d(8, [3, 5], stride=0), 'MixedConv2d: stride must be a positive integer'),
    (lambda: MixedConv2d(8, [3, 5], dilation=0), 'dilation must be a positive integer, got 0'),
    (lambda: MixedConv2d(8, [3, 5], dilation='2'), "dilation must be an integer or one per"),
    (lambda: MixedConv2d(8, [3, 5], channels_per_group=0),
     'MixedConv2d: channels_per_group must be a positive integer, got 0'),
    (lambda: build_group_conv(8, [3], channels_per_group=0),
     'GroupConv2d: channels_per_group must be a positive integer, got 0'),
    (lambda: build_group_conv(8, [3], stride=2.0), 'GroupConv2d: stride must be a positive'),
    (lambda: build_group_conv(0, [3]), 'GroupConv2d: channels must be a positive integer'),
    (lambda: SpatialMuxConv(8, 3, [0, 0], stride=True), 'stride must be 1 or 2, got True'),
    # spatial multiplexing: at least one scale, each an integer of -1, 0, 1
    (lambda: SpatialMuxConv(8, 3, []), 'SpatialMuxConv: needs at least one scale'),
    (lambda: SpatialMuxConv(8, 3, [0.5, 0]), 'scale 0.5 is not supported'),
    (lambda: SpatialMuxConv(8, 3, [0, 0], channels_per_group=0),
     'SpatialMuxConv: channels_per_group must be a positive integer'),
    (lambda: SpatialMuxConv(8.0, 3, [0, 0]), 'SpatialMuxConv: channels must be a positive'),
    # shuffles and channel multiplexing
    (lambda: ChannelShuffle(8, 2.0), 'cannot be split into 2.0 equal groups'),
    (lambda: channel_shuffle(torch.zeros(1, 8, 2, 2), 3), 'channel_shuffle: 8 channels cannot'),
    (lambda: ChannelMux(nn.Identity(), 8, 0.5, 2.0), 'cannot be shuffled in 2.0 groups'),
    (lambda: ChannelMux(nn.Identity(), 8, '0.5'), 'split_ratio must lie strictly between'),
    (lambda: SqueezeExcite(8, 2.5), 'SqueezeExcite: squeeze_channels must be a positive integer'),
    # blocks
    (lambda: InvertedResidual(0, 8, [3]), 'InvertedResidual: in_channels must be a positive'),
    (lambda: InvertedResidual(8, 8.0, [3]), 'InvertedResidual: out_channels must be a positive'),
    (lambda: InvertedResidual(8, 8, [3], expand_ratio=-1),
     'expand_ratio -1 leaves no hidden channels out of 8 input channels'),
    (lambda: InvertedResidual(8, 8, [3], expand_ratio='6'), "expand_ratio '6' leaves no"),
    (lambda: InvertedResidual(8, 8, [3], se_ratio=-0.5), 'se_ratio must be a number >= 0'),
    (lambda: DepthwiseSeparable(8, 8, [3], drop_path_rate=1.0),
     r'DepthwiseSeparable: drop_path_rate must lie in \[0, 1\), got 1.0'),
])
def test_bad_layer_arguments(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_one_kernel_size_as_an_integer():
    """As SpatialMuxConv and nn.Conv2d take it: ``3`` is ``[3]``."""
    x = torch.randn(1, 8, 6, 6)
    one, listed = MixedConv2d(8, 3), MixedConv2d(8, [3])
    listed.load_state_dict(one.state_dict())
    torch.testing.assert_close(one(x), listed(x))
    assert build_group_conv(8, 3).kernel_size == (3, 3)


def test_channel_mux_names_an_input_of_the_wrong_width():
    mux = ChannelMux(nn.Identity(), 8, 0.5)
    with pytest.raises(ValueError, match=r'expected an \(N, 8, H, W\) input, got shape '
                                         r'\(1, 6, 4, 4\)'):
        mux(torch.randn(1, 6, 4, 4))


def test_argument_type_tests():
    assert is_int(3) and not is_int(True) and not is_int(3.0) and not is_int('3')
    assert is_real(0.5) and is_real(2) and not is_real(False) and not is_real('0.5')
    assert check_positive_int('Layer', 'width', 4) == 4
    with pytest.raises(ValueError, match="Layer: width must be a positive integer, got '4'"):
        check_positive_int('Layer', 'width', '4')
