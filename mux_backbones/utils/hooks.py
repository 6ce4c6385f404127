"""What given submodules of a model receive in one forward pass (for timing and analysis tools)."""
from typing import Dict, Iterable

import torch
from torch import nn


@torch.no_grad()
def module_inputs(model: nn.Module, modules: Iterable[nn.Module],
                  *args) -> Dict[nn.Module, torch.Tensor]:
    """The first positional input each of ``modules`` receives in one ``model(*args)``, by module
    (its first call's, if called more than once; absent if not called at all)."""
    inputs: Dict[nn.Module, torch.Tensor] = {}
    handles = [m.register_forward_pre_hook(lambda m, a: inputs.setdefault(m, a[0]))
               for m in modules]
    try:
        model(*args)
    finally:
        for h in handles:
            h.remove()
    return inputs
