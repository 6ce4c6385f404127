"""Calling a ``torch.library`` custom op of this package without the dispatcher where that is safe.

A Python custom op pays for the dispatcher and its autograd wrapper on every call: ~40 us of CPU
here (a 4x4 map: 163 us through the op, 122 us calling its implementation), which in eager
inference is more than the kernel of a small layer and adds up over a MUXNet's 36 op calls.
Where nothing needs the op as a graph node -- no compile or trace, no gradient, no tensor
subclass or dispatch mode -- :func:`call` runs the implementation directly; everything else goes
through the op, so ``torch.compile``, CUDA-graph capture, autograd, ``FakeTensor`` and profilers
see the same single node as before.
"""
import torch


def _modes_active() -> bool:
    stacks = (getattr(torch._C, '_len_torch_dispatch_stack', None),
              getattr(torch._C, '_len_torch_function_stack', None))
    return any(stack is None or stack() > 0 for stack in stacks)


def _plain(value) -> bool:
    return not isinstance(value, torch.Tensor) or type(value) in (torch.Tensor, torch.nn.Parameter)


def call(op, *args):
    """``op(*args)``, bypassing the dispatcher when nothing needs the op itself."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return op(*args)
    impl = getattr(op, '_init_fn', None)  # the implementation torch.library wraps
    if impl is None or _modes_active() or not all(_plain(a) for a in args):
        return op(*args)
    if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad
                                       for a in args):
        return op(*args)
    return impl(*args)
