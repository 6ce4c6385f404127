"""layers.conv_bn: which training-form activations overwrite their input, and the deploy form's."""
import pytest
import torch
from mmcv.cnn import ConvModule, build_activation_layer
from torch import nn

from mux_backbones import MUXNet
from mux_backbones.layers.conv_bn import deploy_conv_module, trains_in_place
from ..helpers import OperatorCounts


@pytest.mark.parametrize('act_type', ['ReLU', 'LeakyReLU', 'ELU', 'SiLU', 'ReLU6', 'HSwish'])
def test_in_place_training_activations_are_those_autograd_does_not_copy(act_type):
    """``trains_in_place`` holds exactly where an in-place call costs autograd no copy of its
    input (its formula reads the output): pinned to torch's own behaviour."""
    act = build_activation_layer(dict(type=act_type, inplace=True))
    x = torch.randn(2, 4, 5, 5, requires_grad=True)
    with OperatorCounts() as ops:
        act(x * 1.0).sum().backward()  # (an in-place call needs a non-leaf input)
    assert (ops.counts['aten.clone'] == 0) == trains_in_place(dict(type=act_type))


def test_muxnet_trains_silu_out_of_place_and_deploys_it_in_place():
    """MUXNet-m's ConvModules (stem, expand, head): SiLU out of place in training (in place it
    costs a copy of the map per call), ReLU (its "nre" blocks) in place; every activation of
    the deploy form in place."""
    model = MUXNet('m', out_indices=(7, ))
    acts = [m.activate for m in model.modules() if isinstance(m, ConvModule) and m.with_activation]
    assert {type(a) for a in acts} == {nn.SiLU, nn.ReLU}
    assert all(a.inplace == isinstance(a, nn.ReLU) for a in acts)
    x = torch.randn(2, 3, 32, 32)
    with OperatorCounts() as ops:
        model(x)[0].sum().backward()
    assert ops.counts['aten.silu_'] == 0 and ops.counts['aten.silu'] > 0
    module = ConvModule(4, 8, 1, norm_cfg=dict(type='BN'), act_cfg=dict(type='SiLU'),
                        inplace=False)
    assert deploy_conv_module(module.eval()).act.inplace
