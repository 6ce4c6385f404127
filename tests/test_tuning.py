"""Per-layer choice of the training forms (``choose_training_kernels``): the faster form kept,
the model's numbers, state dict and BN statistics unchanged."""
import copy

import pytest
import torch

from mux_backbones import MUXNet
from mux_backbones.layers import GroupConv2d, MixedConv2d
from mux_backbones.ops.launch_config import recorded_calls
from mux_backbones.tuning import choose_training_kernels


def _spatial_convs(model):
    return {name: m for name, m in model.named_modules()
            if isinstance(m, (GroupConv2d, MixedConv2d))}


def _pretend_plain_depthwise_loses(fn):
    """A timer that runs ``fn`` and says: the kernel wins on MixConvs and 2-channels-per-group
    convs (1 us against the stock conv's 2) and loses on plain depth-wise ones (3 us)."""
    with recorded_calls('group_conv') as calls:
        fn()
    if not calls:
        return 2.0
    splits, cpg = calls[0][3], calls[0][7]
    return 1.0 if len(splits) > 1 or cpg == 2 else 3.0


def test_choice_keeps_the_faster_form_and_the_numbers():
    torch.manual_seed(0)
    model = MUXNet('tiny', fused_ops=True, out_indices=(4, 7)).train()
    stock = copy.deepcopy(model)
    for m in _spatial_convs(stock).values():
        m.fused_ops = False
    x = torch.randn(2, 3, 32, 32)
    buffers = [b.clone() for b in model.buffers()]
    times = choose_training_kernels(model, x, time_us=_pretend_plain_depthwise_loses)

    convs = _spatial_convs(model)
    assert set(times) == set(convs)  # every spatial conv runs on a kernel under the interpreter
    for name, conv in convs.items():
        mixed_or_pairs = isinstance(conv, MixedConv2d) or conv.in_channels // conv.groups == 2
        assert conv.fused_ops == mixed_or_pairs, name
        assert times[name] == (2.0, 1.0 if mixed_or_pairs else 3.0)
    assert any(not c.fused_ops for c in convs.values())
    for b, saved in zip(model.buffers(), buffers):  # the timing runs left no BN statistics
        torch.testing.assert_close(b, saved, rtol=0, atol=0)
    assert model.state_dict().keys() == stock.state_dict().keys()

    with recorded_calls('group_conv') as calls:
        outs = model(x)
    assert len(calls) == sum(c.fused_ops for c in convs.values())
    refs = stock(x)
    for out, ref in zip(outs, refs):
        torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    sum(o.square().mean() for o in outs).backward()
    sum(r.square().mean() for r in refs).backward()
    for (name, p), q in zip(model.named_parameters(), stock.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-4, rtol=1e-3, msg=name)


def test_choice_on_the_cpu_kernels_times_only_the_layers_they_serve(outside_interpreter):
    model = MUXNet('tiny', fused_ops=True, out_indices=(4, 7)).train()
    timed = []

    def time_us(fn):
        timed.append(fn)
        return float(len(timed) % 2)  # stock 1, kernel 0: the kernel kept

    times = choose_training_kernels(model, torch.randn(2, 3, 32, 32), time_us=time_us)
    # 2 channels per group or a MixConv, at most an eighth of each group's channels past its
    # 8-channel vectors; oneDNN keeps the rest (not timed, flag unchanged), here all the plain
    # depth-wise convs too (3x3, undilated: their gradients stay oneDNN's as well)
    assert set(times) == {'layer2.1.body.depthwise_conv.convs.0', 'layer3.0.depthwise_conv',
                          'layer3.1.body.depthwise_conv', 'layer6.1.body.depthwise_conv.convs.0',
                          'layer6.1.body.depthwise_conv.convs.1'}
    assert len(timed) == 2 * len(times)
    assert all(conv.fused_ops for conv in _spatial_convs(model).values())


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
