"""Calling a ``torch.library`` custom op of this package without the dispatcher where that is safe.

A Python custom op pays for the dispatcher and its autograd wrapper on every call: ~40 us of CPU
here (a 4x4 map: 163 us through the op, 122 us calling its implementation), which in eager
inference is more than the kernel of a small layer and adds up over a fused MUXNet-m's 72 op
calls. With gradients the wrapper costs more: the dispatcher, torch.library's autograd function,
its redispatch and its re-filling of the schema's defaults (which re-reads the schema's argument
list once per argument).
Where nothing needs the op as a graph node -- no compile or trace, no tensor subclass, dispatch
mode or functorch transform -- :func:`call` runs the implementation directly, and where autograd
must record the call, an autograd function of the op's own implementation and of the formulas
it registered (``register_autograd``): the same forward, context and backward as the op's, in
one Python call. Everything else goes through the op, so ``torch.compile``, CUDA-graph capture,
``FakeTensor`` and profilers see the same single node as before.
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
    """``op(*args)``, bypassing the dispatcher when nothing needs the op itself. ``args`` are the
    op's arguments in its schema's order (the ones left out take their defaults)."""
    impl = getattr(op, '_init_fn', None)  # the implementation torch.library wraps
    if impl is None or not plain_eager():
        return op(*args)
    grad = torch.is_grad_enabled()
    recorded = False
    for a in args:
        if isinstance(a, torch.Tensor):
            if type(a) not in _PLAIN:  # a tensor subclass needs the op
                return op(*args)
            recorded = recorded or grad and a.requires_grad
    if not recorded:
        return impl(*args)
    eager = _eager_functions.get(op)
    if eager is None:
        if getattr(op, '_backward_fn', None) is None:  # (the op says what it lacks)
            return op(*args)
        eager = _eager_functions[op] = _eager_function(op)
    if _functorch_level() is not None:  # a transform's wrapped tensors need the op
        return op(*args)
    function, defaults = eager
    if len(args) < len(defaults):  # (as the op's wrapper fills them in for its context)
        args += defaults[len(args):]
    return function.apply(*args)


_eager_functions = {}
_functorch_level = torch._C._functorch.peek_interpreter_stack


def _eager_function(op):
    """An autograd function running ``op``'s implementation with the context and backward
    functions it registered (what torch.library's wrapper runs, without the dispatcher), and the
    defaults of the op's arguments.

    Its forward sets the context itself (no ``setup_context`` of its own): ``Function.apply``
    binds an autograd function's arguments to its forward's signature with ``inspect`` on
    every call where one is defined (~35 us here), and :func:`call` passes them complete."""
    impl, setup_context = op._init_fn, op._setup_context_fn

    def forward(ctx, *args):
        # An output nothing differentiates gets None, not a zero tensor autograd would fill
        # (a group conv's unused pooled sums: one allocation and fill per call and step); the
        # ops' backward formulas take either.
        ctx.set_materialize_grads(False)
        output = impl(*args)
        setup_context(ctx, args, output)
        return output

    function = type(f'EagerBackwardFor_{op._name}', (torch.autograd.Function, ), dict(
        forward=staticmethod(forward), backward=staticmethod(op._backward_fn)))
    return function, tuple(a.default_value for a in op._opoverload._schema.arguments)
