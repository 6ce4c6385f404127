"""ops._dispatch.call: the custom op's implementation directly where nothing needs the op as a
node (eager inference), the op itself under autograd, tracing, compile, dispatch modes and tensor
subclasses."""
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


def test_autograd_keeps_the_op():
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
