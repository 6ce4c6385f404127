"""Launching the ops' Triton kernels without Triton's per-call binding (eager host time).

Each ``kernel[grid](*args, **meta)`` makes Triton bind the arguments to the kernel's signature,
specialise every integer and pointer, build and hash a cache key and look the compiled kernel up
before its C launcher runs: ~25 us of host time per launch on the CPU machine
(``tools/gpu/host_time.py``), and a fused MUXNet-m forward makes 72 launches. In eager deploy
mode the GPU waits on exactly that host time (issue "fused MUXConv kernels": eager batch 32 is
host-bound on both nets).

A launch planned by an op (its grid, integer arguments and compile-time arguments are fixed by
the call signature the plan is cached under) can skip all of it. :class:`KernelLaunch` is such a
launch. Its first call per *specialisation that can still vary* -- the tensors' dtypes, whether
each tensor's address is 16-byte aligned (what Triton specialises a pointer on), the current
device -- goes through ``kernel[grid]`` as before and keeps the kernel Triton compiled and the
launch's arguments in the kernel's own order; later calls hand those to the compiled kernel's
launcher (``CompiledKernel[grid]``, which still reads the stream, Triton's launch hooks and
profiler metadata per call). Where Triton does not return a compiled kernel -- its interpreter,
a stand-in -- every call goes through ``kernel[grid]``.

``MUX_BACKBONES_DIRECT_LAUNCH=0`` (read at import) sends every launch through ``kernel[grid]``.
"""
import contextlib
import functools
import inspect
import operator
import os
from typing import Callable, Dict, Tuple

import torch

from ._triton import interpreting

DIRECT = os.environ.get('MUX_BACKBONES_DIRECT_LAUNCH', '1') != '0'
# Callables told of every launch before it is issued (:func:`observe_launches`); empty: none.
_observers = []
_data_ptr, _dtype = torch.Tensor.data_ptr, operator.attrgetter('dtype')


_triton_driver = []  # triton.runtime.driver, imported at the first direct launch


def _driver():
    if not _triton_driver:
        from triton.runtime import driver
        _triton_driver.append(driver)
    return _triton_driver[0].active


@contextlib.contextmanager
def observe_launches(callback: Callable[['KernelLaunch'], None]):
    """Within the block, ``callback(launch)`` runs before every :class:`KernelLaunch` is issued,
    in issue order -- the order the kernels run in on one stream. Triton's launcher reaches
    the profiler without a CPU-side event to hang its kernels under, so the layer profile
    (:mod:`mux_backbones.utils.layer_profile`) matches the profiler's kernels to these calls by
    that order instead."""
    _observers.append(callback)
    try:
        yield
    finally:
        _observers.remove(callback)


def bound_values(kernel, args: tuple, kwargs: dict) -> tuple:
    """Every parameter of the ``@triton.jit`` ``kernel`` in its signature's order, as Triton's
    binder gives them to the compiled kernel's launcher: ``args`` positionally, then the
    keyword arguments that name parameters (compile-time ones; launch options such as
    ``num_warps`` are not parameters), then the defaults."""
    signature = getattr(kernel, 'signature', None) or inspect.signature(kernel.fn)
    bound = signature.bind(*args, **{k: v for k, v in kwargs.items()
                                     if k in signature.parameters})
    bound.apply_defaults()
    return tuple(bound.arguments.values())


class KernelLaunch:
    """One planned launch of a Triton kernel: ``launch(*tensors)`` is
    ``kernel[grid](*tensors, *scalars, **meta)`` (see the module docstring for what it skips).

    Args:
        kernel: The ``@triton.jit`` function, or a callable returning it (looked up at the
            first call, so a tool that swaps a module's kernel sees its stand-in).
        grid (tuple): The launch grid, one to three dimensions.
        scalars (tuple): The arguments after the tensors: integers and floats fixed by the plan
            (a plan is cached per call signature, so they never differ between its calls).
        meta (dict): Compile-time arguments and launch options (``num_warps``, ...).
    """

    __slots__ = ('kernel', 'grid', 'scalars', 'meta', '_compiled')

    def __init__(self, kernel, grid: Tuple[int, ...], scalars: tuple, meta: dict):
        # Three dimensions: ``kernel[grid]`` pads a shorter grid with ones, the compiled
        # kernel's launcher (Triton 3.6) reads grid[0], grid[1] and grid[2] as given.
        grid = tuple(grid) + (1,) * (3 - len(grid))
        self.kernel, self.grid, self.scalars, self.meta = kernel, grid, tuple(scalars), meta
        self._compiled: Dict[tuple, Tuple[object, tuple]] = {}

    def _jit(self):
        kernel = self.kernel
        return kernel if hasattr(kernel, '__getitem__') else kernel()

    @property
    def name(self) -> str:
        """The kernel's function name (what a profiler calls its launches)."""
        jit = self._jit()
        return getattr(jit, '__name__', None) or jit.fn.__name__

    def __call__(self, *tensors: torch.Tensor) -> None:
        if _observers:
            for observe in _observers:
                observe(self)
        if not DIRECT or interpreting():
            self._jit()[self.grid](*tensors, *self.scalars, **self.meta)
            return
        # The key, mostly in C (this runs per launch): the dtypes, and which tensors are
        # 16-byte aligned -- all of them, nearly always.
        pointers = tuple(map(_data_ptr, tensors))
        aligned = True if not functools.reduce(operator.or_, pointers) % 16 else \
            tuple(p % 16 == 0 for p in pointers)
        key = (_driver().get_current_device(), tuple(map(_dtype, tensors)), aligned)
        entry = self._compiled.get(key)
        if entry is not None:
            runner, tail = entry
            runner(*tensors, *tail)
            return
        jit = self._jit()
        compiled = jit[self.grid](*tensors, *self.scalars, **self.meta)
        if compiled is None or not hasattr(compiled, 'packed_metadata'):
            return  # (a stand-in, or a Triton that returns nothing: no direct path)
        values = bound_values(jit, tensors + self.scalars, self.meta)
        if any(v is not t for v, t in zip(values, tensors)):
            return  # the tensors do not lead the signature: leave it to Triton
        self._compiled[key] = compiled[self.grid], values[len(tensors):]
