"""When the layers' training forms run their own autograd functions.

Channel multiplexing's split and interleave and the squeeze-excite have autograd functions of
their own (gradients in the input's layout, fewer passes over the map). They run where autograd
records an eager forward; under ``torch.compile`` and tracing the stock expressions run instead:
Inductor fuses and lays those out itself, and a trace or an export must see stock operators.
"""
import torch


def eager_autograd() -> bool:
    """Whether autograd records this forward outside ``torch.compile`` and tracing."""
    return torch.is_grad_enabled() and not (torch.compiler.is_compiling() or
                                            torch.jit.is_tracing())
