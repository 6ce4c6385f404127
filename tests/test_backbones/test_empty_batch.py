"""Bad input: an empty batch (N = 0), as a detector's data pipeline hands on after it filtered out
every image, gives empty maps of the documented shapes -- in training with gradients, in eval, and
in both deploy forms -- over every registered arch, on the C++ and the Triton kernels."""
import pytest
import torch

from mux_backbones import MUXNet, arch_settings
from ..helpers import randomise_bn

ALL_ARCHS = sorted(arch_settings)
OUT_INDICES = (2, 4, 7)
SIZE = (45, 37)


def _shapes(outs):
    return [tuple(o.shape) for o in outs]


def _check_empty_batch(arch, fused_ops):
    """Train (with gradients), eval and deploy ``arch`` on an empty batch."""
    model = MUXNet(arch, out_indices=OUT_INDICES, fused_ops=fused_ops).train()
    expected = [(0, info['num_chs'], -(-SIZE[0] // info['reduction']),
                 -(-SIZE[1] // info['reduction'])) for info in model.feature_info]
    x = torch.randn(0, 3, *SIZE, requires_grad=True)
    outs = model(x)
    assert _shapes(outs) == expected
    sum(o.sum() for o in outs).backward()
    assert x.grad.shape == x.shape
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.parameters())
    x = x.detach()
    randomise_bn(model)  # (in eval mode)
    with torch.no_grad():
        assert _shapes(model(x)) == expected
        model.switch_to_deploy(channels_last=True, fused_ops=fused_ops)
        assert _shapes(model(x.contiguous(memory_format=torch.channels_last))) == expected


@pytest.mark.parametrize('fused_ops', [False, True])
@pytest.mark.parametrize('arch', ALL_ARCHS)
def test_empty_batch(arch, fused_ops, outside_interpreter):
    _check_empty_batch(arch, fused_ops)


@pytest.mark.parametrize('arch', ALL_ARCHS)
def test_empty_batch_on_the_triton_kernels(arch):
    """The same on the Triton kernels (interpreted on CPU tensors): no launch plan of no work."""
    pytest.importorskip('triton')
    from mux_backbones.ops import _triton
    if not _triton.interpreting():
        pytest.skip('runs the kernels on CPU tensors: needs TRITON_INTERPRET=1')
    _check_empty_batch(arch, True)
