import pytest
import torch
import torch.nn.functional as F

from mux_backbones.layers import SpatialMuxConv, split_for_scales


@pytest.mark.parametrize('scales', [(-1, ), (1, ), (-1, 0, 1), (0, 1), (-1, 0), (1, -1)])
@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('hw', [(16, 16), (15, 9), (7, 13), (1, 1), (3, 2)])
def test_output_size_matches_depthwise_conv(scales, stride, hw):
    channels = 16 * len(scales)
    layer = SpatialMuxConv(channels, 3, scales, stride=stride, channels_per_group=2)
    dw = torch.nn.Conv2d(channels, channels, 3, stride, 1, groups=channels)
    x = torch.randn(2, channels, *hw)
    assert layer(x).shape == dw(x).shape


def test_negative_and_positive_scales_keep_their_meaning():
    layer = SpatialMuxConv(32, 3, (-1, 1), channels_per_group=1)
    # space-to-channel: 4x channels at half resolution; channel-to-space: 1/4 at double.
    assert layer.convs[0].in_channels == 4 * layer.splits[0]
    assert layer.convs[1].in_channels == layer.splits[1] // 4


def test_identity_kernel_reproduces_input_at_every_scale():
    layer = SpatialMuxConv(24, 3, (-1, 0, 1))
    for conv in layer.convs:
        with torch.no_grad():
            conv.weight.zero_()
            conv.weight[:, :, 1, 1] = 1.0
    x = torch.randn(1, 24, 11, 14)
    torch.testing.assert_close(layer(x), x)


def test_space_to_channel_branch_equals_manual_computation():
    layer = SpatialMuxConv(8, 3, (-1, ))
    x = torch.randn(1, 8, 10, 12)
    conv = layer.convs[0]
    expected = F.pixel_shuffle(conv(F.pixel_unshuffle(x, 2)), 2)
    torch.testing.assert_close(layer(x), expected)


def test_splits_respect_shuffle_alignment():
    parts = split_for_scales(40, (-1, 0, 1), channels_per_group=2)
    assert sum(parts) == 40 and parts[2] % 8 == 0


@pytest.mark.parametrize('kwargs, match', [
    (dict(channels=8, kernel_sizes=3, scales=(0, 1), channels_per_group=2), 'cannot be split'),
    (dict(channels=16, kernel_sizes=3, scales=(2, )), 'not supported'),
    (dict(channels=16, kernel_sizes=(3, 5, 7), scales=(0, 1)), 'kernel sizes'),
    (dict(channels=16, kernel_sizes=4, scales=(0, 1)), 'odd kernel'),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SpatialMuxConv(**kwargs)
