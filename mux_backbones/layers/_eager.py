"""When the layers' eager forms run: their own autograd functions, or a block as one call.

Channel multiplexing's split and interleave and the squeeze-excite have autograd functions of
their own (gradients in the input's layout, fewer passes over the map). They run where autograd
records an eager forward; under ``torch.compile`` and tracing the stock expressions run instead:
Inductor fuses and lays those out itself, and a trace or an export must see stock operators.
"""
from typing import Tuple

import torch
from torch import nn
from torch.nn.modules import module as _module


def eager_autograd() -> bool:
    """Whether autograd records this forward outside ``torch.compile`` and tracing."""
    return torch.is_grad_enabled() and not (torch.compiler.is_compiling() or
                                            torch.jit.is_tracing())


def hook_dicts(module: nn.Module) -> Tuple[dict, ...]:
    """The forward (pre-)hook dicts of ``module``'s submodules (not its own: its call runs those);
    a hook registered later goes into one of them."""
    return tuple(d for m in module.modules() if m is not module
                 for d in (m._forward_pre_hooks, m._forward_hooks))


def hooked(dicts: Tuple[dict, ...]) -> bool:
    """Whether a forward hook is set on one of these modules (their :func:`hook_dicts`) or on
    every module (a global one): then a block that runs as one call (``block_call``,
    ``block_launches``) must run its modules one by one."""
    return bool(_module._global_forward_pre_hooks or _module._global_forward_hooks or
                any(dicts))
