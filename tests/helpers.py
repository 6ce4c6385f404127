"""Helpers the test modules share."""
import collections
import contextlib
import os

import torch
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils._python_dispatch import TorchDispatchMode

# Threads per test process: the cores shared among pytest-xdist's workers, at most 2 (the CI
# machine's cores). A tool a test starts gets as many (OMP_NUM_THREADS). More threads than cores
# make OpenMP's barriers wait on descheduled threads: two 2-thread training runs on 2 cores took
# 8x as long as two 1-thread runs.
TEST_THREADS = max(1, min(2, (os.cpu_count() or 1) //
                          int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', '1'))))


@contextlib.contextmanager
def torch_threads(threads: int):
    """``threads`` torch threads inside the block, the process's own again after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class DispatchRecorder(TorchDispatchMode):
    """Records every operator dispatched inside its block, as ``(operator, output)`` pairs in
    ``calls`` (the outputs kept alive: autograd then copies a gradient it would have stored as
    it came -- count with :class:`OperatorCounts` where that matters)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.calls.append((func, out))
        return out


class OperatorCounts(TorchDispatchMode):
    """Counts the operators dispatched inside its block by name (``'aten.clone'``) in
    ``counts``; keeps no tensor."""

    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def randomise_bn(model):
    """``model`` in eval mode with non-trivial BN statistics and affine parameters (seeded), so
    folding them into the convs is tested for real."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    model.eval()  # not chained: mmdet's MobileNetV2.train() returns None
    return model


def deployed_muxnet(arch='tiny', seed=0, **kwargs):
    """A MUXNet (outputs of stages 2, 4, 7; non-trivial BN) in its fused deploy form,
    channels-last: on the C++ kernels outside the interpreter, on the Triton kernels in it."""
    from mux_backbones import MUXNet
    from mux_backbones.deploy import switch_to_deploy
    torch.manual_seed(seed)
    model = randomise_bn(MUXNet(arch, out_indices=(2, 4, 7), **kwargs))
    return switch_to_deploy(model, channels_last=True, fused_ops=True)


def channels_last_input(batch=2, size=(45, 37)):
    """A seeded (N, 3, H, W) input with its channels innermost."""
    torch.manual_seed(1)
    return torch.randn(batch, 3, *size).contiguous(memory_format=torch.channels_last)


def set_op_switches(monkeypatch, interpret=None, cpu_kernels=None):
    """For one test, the ops' environment switches as a process started with them has them:
    ``TRITON_INTERPRET`` (``interpret``, a bool) and ``MUX_BACKBONES_CPU_KERNELS``
    (``cpu_kernels``: True, False, or 'unset') -- the variables, for the subprocesses a test
    starts, and the values :mod:`mux_backbones.ops` read at import; None leaves one as it is."""
    from mux_backbones.ops import _cpu_kernels, _triton
    if interpret is not None:
        monkeypatch.setenv('TRITON_INTERPRET', '1' if interpret else '0')
        monkeypatch.setattr(_triton, '_interpreting', interpret)
    if cpu_kernels == 'unset':
        monkeypatch.delenv('MUX_BACKBONES_CPU_KERNELS', raising=False)
    elif cpu_kernels is not None:
        monkeypatch.setenv('MUX_BACKBONES_CPU_KERNELS', '1' if cpu_kernels else '0')
    if cpu_kernels is not None:
        monkeypatch.setattr(_cpu_kernels, '_switched_off', cpu_kernels is False)
