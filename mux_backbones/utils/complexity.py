"""Parameter and multiply-add counts, measured the way the MUXNet figures were measured.

MAdds are the multiply-accumulates of convolutions and linear/matmul layers, counted by torch's
``FlopCounterMode`` on a real forward pass (one MAdd = two FLOPs). Element-wise ops (activations,
BN in eval, shuffles) are not counted, as in the paper and the official numbers.
"""
from typing import Callable, Optional, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

_COUNTED_OPS = ('convolution', 'addmm', 'mm', 'bmm', 'baddbmm', 'matmul', 'linear')


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: Sequence[int] = (1, 3, 224, 224),
               forward: Optional[Callable] = None) -> int:
    """Multiply-adds of conv and linear layers for one forward pass of ``input_shape``.

    Args:
        model (nn.Module): Model to measure; it is put in eval mode.
        input_shape (Sequence[int]): Shape of the input batch.
        forward (Callable, optional): Called with the input instead of ``model`` (e.g. a
            detector's tensor-mode ``_forward``).
    """
    model.eval()
    param = next(model.parameters(), None)
    x = torch.zeros(*input_shape, device=param.device if param is not None else 'cpu')
    counter = FlopCounterMode(display=False)
    with counter:
        (forward or model)(x)
    flops = 0
    for op, count in counter.get_flop_counts()['Global'].items():
        if any(name in str(op) for name in _COUNTED_OPS):
            flops += count
    return flops // 2
