"""ops._dispatch.call: the custom op's implementation directly where nothing needs the op as a
node (eager inference), an autograd function of the op's own implementation and formulas where
autograd records an eager call, the op itself under tracing, compile, dispatch modes, functorch
transforms and tensor subclasses."""
from typing import Tuple

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from mux_backbones.ops._dispatch import call


class _Op:
    """Stands in for a torch.library custom op: records which way it was called."""

    def __init__(self):
        self.paths = []

    def __call__(self, x):
        self.paths.append('op')
        return x * 2

    def _init_fn(self, x):
        self.paths.append('impl')
        return x * 2


class _Passthrough(TorchDispatchMode):

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


class _FunctionPassthrough(TorchFunctionMode):

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def test_eager_inference_skips_the_dispatcher():
    op, x = _Op(), torch.randn(3)
    with torch.no_grad():
        torch.testing.assert_close(call(op, x), x * 2)
        call(op, torch.nn.Parameter(x))  # parameters are plain tensors too
    assert op.paths == ['impl', 'impl']


def test_autograd_without_a_registered_formula_keeps_the_op():
    op = _Op()
    call(op, torch.randn(3, requires_grad=True))
    call(op, torch.randn(3))  # nothing to differentiate: no need for the op
    with torch.no_grad():
        call(op, torch.randn(3, requires_grad=True))
    assert op.paths == ['op', 'impl', 'impl']


def test_modes_subclasses_and_tracing_keep_the_op():
    op = _Op()
    with _Passthrough():
        call(op, torch.randn(3))
    with _FunctionPassthrough():
        call(op, torch.randn(3))
    from torch._subclasses.fake_tensor import FakeTensorMode
    with FakeTensorMode() as mode:
        fake = mode.from_tensor(torch.randn(3))
    call(op, fake)
    torch.jit.trace(lambda x: call(op, x), torch.randn(3), check_trace=False)
    assert op.paths == ['op'] * 4


def test_objects_without_an_implementation_are_called():
    assert call(lambda x: x + 1, torch.zeros(1)).item() == 1


# A custom op with a formula of its own (register_autograd), and a default argument.
@torch.library.custom_op('mux_backbones_tests::scaled', mutates_args=())
def _scaled(x: torch.Tensor, w: torch.Tensor, factor: float = 3.0) -> torch.Tensor:
    _scaled_paths.append('impl')
    return x * w * factor


_scaled_paths = []


@_scaled.register_fake
def _(x, w, factor=3.0):
    return torch.empty_like(x)


def _scaled_setup(ctx, inputs, output):
    x, w, ctx.factor = inputs  # (all arguments, the default filled in)
    ctx.save_for_backward(x, w)


def _scaled_backward(ctx, grad):
    x, w = ctx.saved_tensors
    _scaled_paths.append('backward')
    return grad * w * ctx.factor, (grad * x * ctx.factor).sum(0), None


_scaled.register_autograd(_scaled_backward, setup_context=_scaled_setup)


def test_eager_autograd_runs_the_ops_formulas_without_the_dispatcher():
    """Where autograd records an eager call: one autograd function of the op's implementation,
    context and backward (the default argument filled in as the op's wrapper does), with the
    op's outputs and gradients; inside a functorch transform, and under a dispatch mode, the
    op."""
    x, w = torch.randn(4, 3, requires_grad=True), torch.randn(3, requires_grad=True)
    _scaled_paths.clear()
    out = call(_scaled, x, w)
    assert type(out.grad_fn).__name__ == 'EagerBackwardFor_scaledBackward'
    got = torch.autograd.grad(out.square().sum(), [x, w])
    ref = _scaled(x, w)
    assert 'EagerBackward' not in type(ref.grad_fn).__name__
    want = torch.autograd.grad(ref.square().sum(), [x, w])
    torch.testing.assert_close(out, ref)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    assert _scaled_paths == ['impl', 'backward', 'impl', 'backward']
    out = call(_scaled, x, w, 0.5)
    torch.testing.assert_close(out, x * w * 0.5)
    # (torch.library's own wrapper does not serve functorch transforms; the call gets the op's
    # answer, not another)
    for run in (_scaled, lambda *args: call(_scaled, *args)):
        with pytest.raises(RuntimeError, match='functorch transforms'):
            torch.func.grad(lambda v: run(v, w.detach()).sum())(x.detach())
    with _Passthrough():
        assert 'EagerBackward' not in type(call(_scaled, x, w).grad_fn).__name__


# A custom op with two outputs, for gradients that reach only one of them.
@torch.library.custom_op('mux_backbones_tests::pair', mutates_args=())
def _pair(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    return x * 2, x * 3


@_pair.register_fake
def _(x):
    return torch.empty_like(x), torch.empty_like(x)


_pair_grads = []


def _pair_backward(ctx, grad_first, grad_second):
    _pair_grads.append((grad_first is None, grad_second is None))
    grads = [g * f for g, f in ((grad_first, 2), (grad_second, 3)) if g is not None]
    return sum(grads)


_pair.register_autograd(_pair_backward, setup_context=lambda ctx, inputs, output: None)


def test_eager_autograd_leaves_unused_output_gradients_unmaterialised():
    """An output nothing differentiates reaches the eager path's backward as None (the op's
    wrapper fills a zero tensor: one allocation and fill per call); the gradients agree."""
    x = torch.randn(5, requires_grad=True)
    _pair_grads.clear()
    got = torch.autograd.grad(call(_pair, x)[0].sum(), x)[0]
    with _Passthrough():  # the op itself
        want = torch.autograd.grad(call(_pair, x)[0].sum(), x)[0]
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(got, torch.full_like(x, 2.0))
    assert _pair_grads == [(False, True), (False, False)]
