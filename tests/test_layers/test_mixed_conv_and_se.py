import pytest
import torch

from mux_backbones.layers import MixedConv2d, SqueezeExcite, build_group_conv, split_channels


def test_split_channels_puts_remainder_first():
    assert split_channels(448, 5) == [92, 89, 89, 89, 89]


def test_mixed_conv_uses_one_kernel_per_group():
    conv = MixedConv2d(30, (3, 5, 7), stride=2)
    assert [c.kernel_size[0] for c in conv.convs] == [3, 5, 7]
    assert conv(torch.randn(1, 30, 15, 15)).shape == (1, 30, 8, 8)


def test_mixed_conv_groups_are_depthwise():
    conv = MixedConv2d(12, (3, 5))
    x = torch.zeros(1, 12, 9, 9)
    x[:, 0, 4, 4] = 1
    out = conv(x)
    assert torch.count_nonzero(out[:, 1:]) == 0  # no mixing across channels


def test_build_group_conv_dispatch():
    assert isinstance(build_group_conv(16, (3, )), torch.nn.Conv2d)
    assert isinstance(build_group_conv(16, (3, 5)), MixedConv2d)
    assert type(build_group_conv(16, (3, ), scales=(-1, 0))).__name__ == 'SpatialMuxConv'
    assert isinstance(build_group_conv(16, (3, ), scales=(0, 0)), torch.nn.Conv2d)
    with pytest.raises(ValueError):
        build_group_conv(15, (3, ), channels_per_group=2)


def test_squeeze_excite_gates_channels_in_0_1():
    se = SqueezeExcite(8, 2)
    x = torch.rand(2, 8, 4, 4) + 0.1
    out = se(x)
    ratio = out / x
    assert out.shape == x.shape
    assert torch.all(ratio > 0) and torch.all(ratio < 1)
    # one gate per (sample, channel)
    torch.testing.assert_close(ratio.amin((2, 3)), ratio.amax((2, 3)))
