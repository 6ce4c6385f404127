import pytest
import torch
from torch import nn

from mux_backbones.layers import ChannelMux, ChannelShuffle, channel_shuffle, split_width


def test_channel_shuffle_interleaves_groups():
    x = torch.arange(6.).view(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]
    assert channel_shuffle(x, 3).flatten().tolist() == [0, 2, 4, 1, 3, 5]


@pytest.mark.parametrize('groups', [2, 3])
def test_channel_shuffle_keeps_the_memory_layout(groups):
    x = torch.randn(2, 6, 5, 7)
    cl = channel_shuffle(x.contiguous(memory_format=torch.channels_last), groups)
    assert cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(cl, channel_shuffle(x, groups), rtol=0, atol=0)
    assert channel_shuffle(x, groups).is_contiguous()


@pytest.mark.parametrize('channels_last', [False, True])
def test_channel_mux_halves_equal_cat_and_shuffle(channels_last):
    """Two equal halves are interleaved in one pass: the same values (and gradients) as cat +
    2-group shuffle, in the input's layout."""
    body = nn.Conv2d(4, 4, 3, padding=1)
    mux = ChannelMux(body, 8, 0.5)
    assert mux.interleave
    x = torch.randn(2, 8, 5, 5, requires_grad=True)
    inp = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    out = mux(inp)
    ref = channel_shuffle(torch.cat([body(x[:, :4]), x[:, 4:]], 1), 2)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else
                             torch.contiguous_format)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (x, body.weight), grad)
    want = torch.autograd.grad(ref, (x, body.weight), grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_channel_mux_processes_split_and_copies_rest():
    body = nn.Conv2d(4, 4, 1, bias=False)
    nn.init.zeros_(body.weight)  # processed half becomes zero
    mux = ChannelMux(body, 8, 0.5, shuffle_groups=2)
    x = torch.randn(2, 8, 5, 5)
    out = mux(x)
    # After the 2-group shuffle processed channels sit at even and copied ones at odd indices.
    assert torch.count_nonzero(out[:, 0::2]) == 0
    torch.testing.assert_close(out[:, 1::2], x[:, 4:])


@pytest.mark.parametrize('ratio', [0.0, 1.0, 1.5, -0.2, 0.05])
def test_odd_split_ratio_is_rejected(ratio):
    with pytest.raises(ValueError, match='split_ratio'):
        split_width(8, ratio)


def test_shuffle_groups_must_divide_channels():
    with pytest.raises(ValueError, match='cannot be shuffled'):
        ChannelMux(nn.Identity(), 9, 0.5, shuffle_groups=2)
    with pytest.raises(ValueError, match='equal groups'):
        ChannelShuffle(9, 2)
