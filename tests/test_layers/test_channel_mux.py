import pytest
import torch
from torch import nn

from mux_backbones.layers import ChannelMux, ChannelShuffle, channel_shuffle, split_width
from mux_backbones.layers.channel_shuffle import is_channels_last


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


class _GradLayouts(nn.Module):
    """A conv that notes whether the gradient reaching its output is contiguous in the output's
    layout."""

    def __init__(self, channels):
        super().__init__()
        self.conv, self.contiguous = nn.Conv2d(channels, channels, 3, padding=1), []

    def forward(self, x):
        out = self.conv(x)
        fmt = torch.channels_last if is_channels_last(out) else torch.contiguous_format
        out.register_hook(lambda g: self.contiguous.append(g.is_contiguous(memory_format=fmt)))
        return out


@pytest.mark.parametrize('channels_last', [False, True])
def test_channel_mux_halves_equal_cat_and_shuffle(channels_last):
    """Two equal halves are interleaved in one pass: the same values and gradients as cat +
    2-group shuffle; the output and the gradients (the input's, and the one reaching the body)
    contiguous in the input's layout, so the layers around run on no strided or mixed maps."""
    body = _GradLayouts(4)
    mux = ChannelMux(body, 8, 0.5)
    assert mux.interleave
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, 8, 5, 5).contiguous(memory_format=fmt).requires_grad_()
    out = mux(x)
    ref = channel_shuffle(torch.cat([body.conv(x[:, :4]), x[:, 4:]], 1), 2)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert out.is_contiguous(memory_format=fmt)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (x, body.conv.weight), grad)
    want = torch.autograd.grad(ref, (x, body.conv.weight), grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert got[0].is_contiguous(memory_format=fmt) and body.contiguous == [True]


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


@pytest.mark.parametrize('channels_last', [False, True])
def test_channel_mux_uneven_split_gradients(channels_last):
    """A quarter processed, a 3-group shuffle (cat + shuffle): the split's gradient is one map in
    the input's layout, equal to autograd's through plain slices."""
    body = nn.Conv2d(3, 3, 1)
    mux = ChannelMux(body, 12, 0.25, shuffle_groups=3)
    assert not mux.interleave
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, 12, 4, 6).contiguous(memory_format=fmt).requires_grad_()
    out = mux(x)
    ref = channel_shuffle(torch.cat([body(x[:, :3]), x[:, 3:]], 1), 3)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    grad = torch.randn_like(out)
    got, = torch.autograd.grad(out, x, grad)
    want, = torch.autograd.grad(ref, x, grad)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert got.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('ratio, groups', [(0.5, 2), (0.25, 3)])
def test_channel_mux_gradcheck(channels_last, ratio, groups):
    """The split's and the interleave's own backward against finite differences, in double
    precision, including a loss that reaches only some of the output's channels."""
    mux = ChannelMux(nn.Conv2d(3 if ratio == 0.25 else 6, 3 if ratio == 0.25 else 6, 1), 12,
                     ratio, shuffle_groups=groups).double()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(2, 12, 3, 4, dtype=torch.float64).contiguous(memory_format=fmt)
    x.requires_grad_()
    assert torch.autograd.gradcheck(mux, (x, ))
    assert torch.autograd.gradcheck(lambda t: mux(t)[:, 0::groups], (x, ))
