"""Checks of the kernels' alignment and contiguity hints, run inside Triton's interpreter.

``tl.multiple_of`` and ``tl.max_contiguous`` are promises to Triton's compiler: on a GPU it
vectorises loads and stores on them without checking, so a hint that does not hold for some shape
reads or writes the wrong addresses there -- while Triton's interpreter, which runs the CPU
tests, records the hints and ignores them. :func:`install` makes the interpreter hold every hint
to the values it describes, so each kernel test also checks the promises the compiled kernels
rely on:

* ``max_contiguous(x, C)``: along each axis, every aligned run of ``C`` values counts up by one;
* ``multiple_of(x, D)``: along each axis, the first value of every run (of the hinted contiguity,
  or before such a hint, of the longest aligned runs the values have) is a multiple of ``D``.

Semantics as Triton's documentation of the two hints gives them; integer tensors only (the
kernels hint offsets, not pointers).
"""
import numpy as np

_DIVISIBILITY, _CONTIGUITY = 'tt.divisibility', 'tt.contiguity'
# Every violation raised, also those a caller caught (e.g. the tuner skipping a failing launch
# config with a warning): the tests' fixture fails the test that caused one.
violations = []


class HintViolation(AssertionError):
    """A kernel's hint does not hold for the values it was given."""

    def __init__(self, message: str):
        super().__init__(message)
        violations.append(message)


def _runs_along(data: np.ndarray, axis: int, length: int) -> np.ndarray:
    """``data`` with ``axis`` last, cut into aligned runs: shape (..., runs, length)."""
    moved = np.moveaxis(data, axis, -1)
    length = min(length, moved.shape[-1])
    return moved.reshape(*moved.shape[:-1], moved.shape[-1] // length, length)


def _shown(data: np.ndarray) -> str:
    values = data.ravel()
    more = f', ... ({values.size} values)' if values.size > 16 else ''
    return f'[{", ".join(str(v) for v in values[:16])}{more}]'


def aligned_run_length(data: np.ndarray, axis: int) -> int:
    """The longest power-of-two run length whose aligned runs along ``axis`` all count up by
    one (1 where they do not)."""
    length = 1
    while length * 2 <= data.shape[axis] and data.shape[axis] % (length * 2) == 0 and \
            np.all(np.diff(_runs_along(data, axis, length * 2), axis=-1) == 1):
        length *= 2
    return length


def check(data: np.ndarray, divisibility=None, contiguity=None, where: str = '') -> None:
    """HintViolation unless ``data`` (integers) holds the hints (one value per axis)."""
    data = np.asarray(data).reshape(np.shape(data) or (1, ))
    if not np.issubdtype(data.dtype, np.integer):
        return
    runs = list(contiguity) if contiguity is not None else \
        [aligned_run_length(data, axis) for axis in range(data.ndim)]
    for axis in range(data.ndim):
        if contiguity is not None and runs[axis] > 1 and \
                not np.all(np.diff(_runs_along(data, axis, runs[axis]), axis=-1) == 1):
            raise HintViolation(f'{where}max_contiguous({runs[axis]}) along axis {axis} does not '
                                f'hold for {_shown(data)}')
        if divisibility is not None and divisibility[axis] > 1:
            first = _runs_along(data, axis, runs[axis])[..., 0]
            if np.any(first % divisibility[axis]):
                raise HintViolation(
                    f'{where}multiple_of({divisibility[axis]}) along axis {axis} (runs of '
                    f'{runs[axis]}) does not hold for {_shown(data)}')


def install() -> bool:
    """Make Triton's interpreter check each hint as a kernel sets it (for the rest of the
    process); False where this Triton's interpreter is not the one this module knows (3.6-3.9:
    ``TensorHandle.set_attr``)."""
    try:
        from triton.runtime.interpreter import TensorHandle
    except ImportError:  # pragma: no cover - depends on the Triton version
        return False
    set_attr = getattr(TensorHandle, 'set_attr', None)
    if set_attr is None or getattr(set_attr, 'checks_hints', False):
        return set_attr is not None

    def checked_set_attr(handle, key, value):
        set_attr(handle, key, value)
        if key in (_DIVISIBILITY, _CONTIGUITY):
            check(handle.data, handle.attr.get(_DIVISIBILITY), handle.attr.get(_CONTIGUITY),
                  'Triton hint ')

    checked_set_attr.checks_hints = True
    TensorHandle.set_attr = checked_set_attr
    return True
