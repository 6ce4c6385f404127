import pytest
import torch

from mux_backbones.layers import MixedConv2d, SqueezeExcite, build_group_conv, split_channels
from ..helpers import DispatchRecorder


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


def _stock_se(se, x):
    return x * se.conv_expand(se.act(se.conv_reduce(x.mean((2, 3), keepdim=True)))).sigmoid()


# the activations with a backward formula of their own (in place too), and one without (HSwish:
# autograd on the activation alone)
_SE_ACTS = [dict(type='ReLU'), dict(type='SiLU'), dict(type='Swish'), dict(type='ReLU6'),
            dict(type='ReLU6', inplace=True), dict(type='SiLU', inplace=True), None,
            dict(type='HSwish')]


@pytest.mark.parametrize('act_cfg', _SE_ACTS, ids=lambda cfg: str(cfg and tuple(cfg.values())))
@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('trainable', ['all', 'input', 'weights'])
def test_squeeze_excite_training_form_equals_the_stock_expression(act_cfg, channels_last,
                                                                  trainable):
    """The training form (the gate's 1x1 convs as matrix products, its own backward
    ``_GatedMap``): the outputs and gradients of autograd through the stock expression, in the
    input's layout, with the input or the weights frozen, for every kind of activation."""
    torch.manual_seed(0)
    se = SqueezeExcite(16, 4, act_cfg)
    x = torch.randn(2, 16, 9, 7)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(trainable != 'weights')
    se.requires_grad_(trainable != 'input')
    grad = torch.randn_like(x)  # (in x's layout, as a channels-last model's gradients come)
    wanted = [x] * x.requires_grad + [p for p in se.parameters() if p.requires_grad]
    out = se(x)
    got = torch.autograd.grad(out, wanted, grad)
    ref = _stock_se(se, x)
    want = torch.autograd.grad(ref, wanted, grad)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    assert len(got) == len(want) == len(wanted)
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else
                             torch.contiguous_format)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    if x.requires_grad:
        assert got[0].is_contiguous(memory_format=torch.channels_last if channels_last else
                                    torch.contiguous_format)


@pytest.mark.parametrize('act', ['ReLU', 'SiLU', 'Swish', 'ReLU6'])
def test_squeeze_excite_backward_runs_no_nested_autograd(monkeypatch, act):
    """The gate's small network is differentiated by its formulas: no graph recorded in the
    forward, no ``autograd.grad`` (a nested graph task per block) in the backward."""
    se = SqueezeExcite(16, 4, dict(type=act))
    x = torch.randn(2, 16, 5, 5, requires_grad=True)
    out = se(x)

    def refuse(*args, **kwargs):
        raise AssertionError('nested autograd.grad in the SE backward')

    monkeypatch.setattr(torch.autograd, 'grad', refuse)
    out.sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in se.parameters())


def test_squeeze_excite_backward_makes_two_passes_over_the_map():
    """The input's and the gate's gradients cost two operators on full-size maps (the gate's
    product summed per channel, then ``addcmul``) where autograd's backward of the stock
    expression runs five (two products, the sum, the mean's broadcast, the add)."""
    se = SqueezeExcite(16, 4)
    x = torch.randn(2, 16, 9, 7, requires_grad=True)
    for forward, passes in ((se, 2), (lambda t: _stock_se(se, t), 5)):
        out = forward(x)
        grad = torch.ones_like(out)
        with DispatchRecorder() as mode:
            torch.autograd.grad(out, [x, *se.parameters()], grad)
        full_maps = [func.__name__ for func, y in mode.calls
                     if isinstance(y, torch.Tensor) and y.shape == x.shape]
        assert len(full_maps) == passes, full_maps


def test_squeeze_excite_training_form_with_checkpointing_and_autocast():
    torch.manual_seed(0)
    se = SqueezeExcite(16, 4, dict(type='SiLU'))
    x = torch.randn(2, 16, 9, 7, requires_grad=True)
    out = torch.utils.checkpoint.checkpoint(se, x, use_reentrant=False)
    got = torch.autograd.grad(out.sum(), [x, *se.parameters()])
    want = torch.autograd.grad(_stock_se(se, x).sum(), [x, *se.parameters()])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out, ref = se(x.bfloat16()), _stock_se(se, x.bfloat16())
    assert out.dtype == ref.dtype == torch.bfloat16
    torch.testing.assert_close(out, ref, rtol=1e-2, atol=1e-2)
    got = torch.autograd.grad(out.float().sum(), [x, *se.parameters()])
    want = torch.autograd.grad(ref.float().sum(), [x, *se.parameters()])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=2e-2, atol=2e-2)
