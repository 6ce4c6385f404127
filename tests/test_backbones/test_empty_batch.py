"""Bad input: an empty batch (N = 0), as a detector's data pipeline hands on after it filtered out
every image, gives empty maps of the documented shapes -- in training with gradients, in eval, and
in both deploy forms -- over every registered arch and both op paths."""
import pytest
import torch

from mux_backbones import MUXNet, arch_settings
from ..helpers import randomise_bn

ALL_ARCHS = sorted(arch_settings)
OUT_INDICES = (2, 4, 7)
SIZE = (45, 37)


def _expected_shapes(model):
    return [(0, info['num_chs'], -(-SIZE[0] // info['reduction']), -(-SIZE[1] // info['reduction']))
            for info in model.feature_info]


@pytest.mark.parametrize('fused_ops', [False, True])
@pytest.mark.parametrize('arch', ALL_ARCHS)
def test_empty_batch_trains(arch, fused_ops, outside_interpreter):
    model = MUXNet(arch, out_indices=OUT_INDICES, fused_ops=fused_ops).train()
    x = torch.randn(0, 3, *SIZE, requires_grad=True)
    outs = model(x)
    assert [tuple(o.shape) for o in outs] == _expected_shapes(model)
    sum(o.sum() for o in outs).backward()
    assert x.grad.shape == x.shape
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.parameters())


@pytest.mark.parametrize('fused_ops', [False, True])
@pytest.mark.parametrize('arch', ALL_ARCHS)
def test_empty_batch_in_eval_and_deploy(arch, fused_ops, outside_interpreter):
    model = randomise_bn(MUXNet(arch, out_indices=OUT_INDICES))
    expected = _expected_shapes(model)
    x = torch.randn(0, 3, *SIZE)
    with torch.no_grad():
        assert [tuple(o.shape) for o in model(x)] == expected
        model.switch_to_deploy(channels_last=True, fused_ops=fused_ops)
        outs = model(x.contiguous(memory_format=torch.channels_last))
    assert [tuple(o.shape) for o in outs] == expected


@pytest.mark.parametrize('arch', ALL_ARCHS)
def test_empty_batch_on_the_triton_kernels(arch):
    """The same on the Triton kernels (interpreted on CPU tensors): no launch plan of no work."""
    pytest.importorskip('triton')
    from mux_backbones.ops import _triton
    if not _triton.interpreting():
        pytest.skip('runs the kernels on CPU tensors: needs TRITON_INTERPRET=1')
    model = MUXNet(arch, out_indices=OUT_INDICES, fused_ops=True).train()
    x = torch.randn(0, 3, *SIZE, requires_grad=True)
    outs = model(x)
    expected = _expected_shapes(model)
    assert [tuple(o.shape) for o in outs] == expected
    sum(o.sum() for o in outs).backward()
    assert x.grad.shape == x.shape
    randomise_bn(model).switch_to_deploy(channels_last=True, fused_ops=True)
    with torch.no_grad():
        outs = model(x.detach().contiguous(memory_format=torch.channels_last))
    assert [tuple(o.shape) for o in outs] == expected
