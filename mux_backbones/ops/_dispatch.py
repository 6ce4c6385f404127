"""Calling a ``torch.library`` custom op of this package without the dispatcher where that is safe.

A Python custom op pays for the dispatcher and its autograd wrapper on every call: ~40 us of CPU
here (a 4x4 map: 163 us through the op, 122 us calling its implementation), which in eager
inference is more than the kernel of a small layer and adds up over a fused MUXNet-m's 72 op
calls.
Where nothing needs the op as a graph node -- no compile or trace, no gradient, no tensor
subclass or dispatch mode -- :func:`call` runs the implementation directly; everything else goes
through the op, so ``torch.compile``, CUDA-graph capture, autograd, ``FakeTensor`` and profilers
see the same single node as before.
"""
import torch

_PLAIN = (torch.Tensor, torch.nn.Parameter)
# Bound once: this runs per op call (~50 per MUXNet-m forward), where a generator over the mode
# stacks and torch.jit.is_tracing's Python wrapper cost 0.4 ms of a 9.4 ms CPU forward.
_dispatch_modes = getattr(torch._C, '_len_torch_dispatch_stack', None)
_function_modes = getattr(torch._C, '_len_torch_function_stack', None)
_is_tracing = torch._C._is_tracing
_is_compiling = torch.compiler.is_compiling


def _modes_active() -> bool:
    if _dispatch_modes is None or _function_modes is None:  # a torch that cannot tell: assume so
        return True
    return _dispatch_modes() > 0 or _function_modes() > 0


def plain_eager() -> bool:
    """Whether this is plain eager execution: no compile, no trace, no dispatch or function
    mode -- nothing that needs to see each op as a node (gradients aside)."""
    return not (_is_compiling() or _is_tracing() or _modes_active())


def call(op, *args):
    """``op(*args)``, bypassing the dispatcher when nothing needs the op itself."""
    impl = getattr(op, '_init_fn', None)  # the implementation torch.library wraps
    if impl is None or not plain_eager():
        return op(*args)
    grad = torch.is_grad_enabled()
    for a in args:  # a tensor subclass, or one autograd must see, needs the op
        if isinstance(a, torch.Tensor) and (type(a) not in _PLAIN or grad and a.requires_grad):
            return op(*args)
    return impl(*args)
