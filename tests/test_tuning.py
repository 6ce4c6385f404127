"""Per-layer choice of the training forms (``choose_training_kernels``): the faster form kept,
the model's numbers, state dict and BN statistics unchanged."""
import copy
import sys

import pytest
import torch

from mux_backbones import MUXNet
from mux_backbones.layers import KERNEL_GRADIENTS, TRAINING_FORMS, GroupConv2d, MixedConv2d
from mux_backbones.ops.launch_config import recorded_calls
from mux_backbones.tuning import choose_training_kernels


def _spatial_convs(model):
    return {name: m for name, m in model.named_modules()
            if isinstance(m, (GroupConv2d, MixedConv2d))}


@pytest.fixture
def pretend_timer(monkeypatch):
    """A timer that runs ``fn`` and says, by what ran: the stock conv 2 us; the kernels 1 us on
    MixConvs and 2-channels-per-group convs, 3 us on plain depth-wise ones; the stock forward
    with the kernels' gradients (the op ran the stock conv inside) 1.2 us on MixConvs and pairs
    (the kernels win), on plain depth-wise ones 1.5 us at stride 2 (it wins) and 2.5 us at
    stride 1 (the stock conv wins): every form wins somewhere in the tiny net."""
    ops = sys.modules['mux_backbones.ops.group_conv']
    stock_forwards = []
    reference = ops.reference_group_conv

    def counted(*args, **kwargs):
        stock_forwards.append(1)
        return reference(*args, **kwargs)

    monkeypatch.setattr(ops, 'reference_group_conv', counted)

    def time_us(fn):
        stock_forwards.clear()
        with recorded_calls('group_conv') as calls:
            fn()
        if not calls:
            return 2.0
        splits, stride, cpg = calls[0][3], calls[0][6], calls[0][7]
        if len(splits) > 1 or cpg == 2:
            return 1.2 if stock_forwards else 1.0
        return (1.5 if stride == 2 else 2.5) if stock_forwards else 3.0

    return time_us


def _expected_form(conv):
    if isinstance(conv, MixedConv2d) or conv.in_channels // conv.groups == 2:
        return True
    return KERNEL_GRADIENTS if conv.stride == (2, 2) else False


def test_choice_keeps_the_fastest_form_and_the_numbers(pretend_timer):
    torch.manual_seed(0)
    model = MUXNet('tiny', fused_ops=True, out_indices=(4, 7)).train()
    stock = copy.deepcopy(model)
    for m in _spatial_convs(stock).values():
        m.fused_ops = False
    x = torch.randn(2, 3, 32, 32)
    buffers = [b.clone() for b in model.buffers()]
    times = choose_training_kernels(model, x, time_us=pretend_timer)

    convs = _spatial_convs(model)
    assert set(times) == set(convs)  # every spatial conv runs on a kernel under the interpreter
    for name, conv in convs.items():
        assert conv.fused_ops == _expected_form(conv), name
        assert list(times[name]) == list(TRAINING_FORMS), name  # stock first
        assert times[name][False] == 2.0
    assert {c.fused_ops for c in convs.values()} == set(TRAINING_FORMS)
    for b, saved in zip(model.buffers(), buffers):  # the timing runs left no BN statistics
        torch.testing.assert_close(b, saved, rtol=0, atol=0)
    assert model.state_dict().keys() == stock.state_dict().keys()

    with recorded_calls('group_conv') as calls:
        outs = model(x)
    assert len(calls) == sum(bool(c.fused_ops) for c in convs.values())
    refs = stock(x)
    for out, ref in zip(outs, refs):
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    sum(o.square().mean() for o in outs).backward()
    sum(r.square().mean() for r in refs).backward()
    for (name, p), q in zip(model.named_parameters(), stock.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-4, rtol=1e-3, msg=name)


def test_choice_on_the_cpu_kernels_times_only_the_layers_they_serve(outside_interpreter):
    model = MUXNet('tiny', fused_ops=True, out_indices=(4, 7)).train()
    clock = iter(range(1000, 0, -1))  # each form timed faster than the one before it
    times = choose_training_kernels(model, torch.randn(2, 3, 32, 32),
                                    time_us=lambda fn: float(next(clock)))
    # 2 channels per group or a MixConv: both passes on the kernels where at most an eighth of
    # each group's channels lie past its 8-channel vectors -- timed in all three forms --, the
    # forward alone where more do (the gradient kernels compute those one by one) -- two forms;
    # oneDNN keeps the rest (not timed, flag unchanged), here all the plain depth-wise convs too
    # (3x3, undilated: their gradients stay oneDNN's as well).
    both = {'layer2.1.body.depthwise_conv.convs.0', 'layer3.0.depthwise_conv',
            'layer3.1.body.depthwise_conv', 'layer6.1.body.depthwise_conv.convs.0',
            'layer6.1.body.depthwise_conv.convs.1'}
    forward_only = {'layer2.1.body.depthwise_conv.convs.1',
                    'layer2.1.body.depthwise_conv.convs.2', 'layer4.0.depthwise_conv'}
    assert set(times) == both | forward_only
    assert all(list(times[name]) == [False, True, KERNEL_GRADIENTS] for name in both)
    assert all(list(times[name]) == [False, True] for name in forward_only)
    for name, conv in _spatial_convs(model).items():  # the fastest form each (the last timed)
        assert conv.fused_ops == (KERNEL_GRADIENTS if name in both else True)


def test_choice_on_the_cpu_kernels_times_the_stock_forward_only_where_it_differs(
        outside_interpreter):
    """A plain depth-wise conv whose gradients alone the C++ kernels take (5x5 here): its
    kernels' form already runs oneDNN's forward, so only two forms are timed."""
    model = MUXNet('tiny', fused_ops=True, out_indices=(2, )).train()
    conv = model.layer1[0].depthwise_conv  # (tiny's is 3x3: its gradients stay oneDNN's)
    model.layer1[0].depthwise_conv = wide = GroupConv2d(
        conv.in_channels, conv.out_channels, 5, padding=2, groups=conv.groups, bias=False,
        fused_ops=True)
    times = choose_training_kernels(model, torch.randn(2, 3, 32, 32), time_us=lambda fn: 1.0)
    assert list(times['layer1.0.depthwise_conv']) == [False, True]
    assert wide.fused_ops is False  # a tie keeps the stock conv


def test_frozen_layers_are_timed_forward_only():
    model = MUXNet('tiny', fused_ops=True, out_indices=(4, 7), frozen_stages=7).train()
    seen = []

    def time_us(fn):
        out = fn()
        seen.append(isinstance(out, torch.Tensor))  # no gradients asked for: the output itself
        return 1.0

    choose_training_kernels(model, torch.randn(2, 3, 32, 32), time_us=time_us)
    assert seen and all(seen)


def test_a_failed_timing_leaves_every_layer_as_it_was(outside_interpreter):
    model = MUXNet('tiny', fused_ops=True, out_indices=(4, 7)).train()
    timed = []

    def time_us(fn):
        timed.append(fn)
        if len(timed) == 5:
            raise RuntimeError('capture failed')
        return float(len(timed) % 2 == 0)  # stock 0, kernel 1: each would turn it off

    with pytest.raises(RuntimeError, match='capture failed'):
        choose_training_kernels(model, torch.randn(2, 3, 32, 32), time_us=time_us)
    assert all(conv.fused_ops for conv in _spatial_convs(model).values())
