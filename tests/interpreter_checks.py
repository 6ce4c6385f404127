"""What Triton's interpreter cannot see of a GPU run, checked while it runs the kernel tests.

The CPU tests run every kernel in Triton's interpreter, which executes programs one after another
and takes the compiler's hints as comments. Two kinds of bug pass there and fail only on a GPU:

* **A false vectorisation hint.** ``tl.multiple_of`` and ``tl.max_contiguous`` are promises the
  compiler turns into 8- and 16-byte loads and stores without checking them, so a hint that does
  not hold for some shape reads or writes the wrong addresses on a GPU. :func:`install` makes the
  interpreter hold each hint to the values it describes, as the kernel sets it (Triton's
  documented semantics, along each axis): aligned runs of the hinted length count up by one
  (``max_contiguous``); the first value of every run -- of the hinted contiguity, or before such
  a hint, of the longest aligned runs the values have -- is a multiple of the hinted divisor
  (``multiple_of``). Integer tensors only (the kernels hint offsets, not pointers).
* **Two programs storing to one address.** A GPU runs a launch's programs in any order at once,
  so such stores race (the last writer differs run to run); the interpreter's fixed order hides
  it. :func:`install` also logs every launch's plain stores (atomics excepted: they are meant to
  meet) and checks that no address was stored by two programs.

Every failure is kept in :data:`violations` too (a caller may catch the error, e.g. the tuner
skipping a failing launch config with a warning): ``tests/conftest.py`` fails the test during
which one occurred.
"""
import numpy as np

_DIVISIBILITY, _CONTIGUITY = 'tt.divisibility', 'tt.contiguity'
violations = []


class InterpreterCheckError(AssertionError):
    """A kernel did something the GPU would not do as the interpreter did."""

    def __init__(self, message: str):
        super().__init__(message)
        violations.append(message)


class HintViolation(InterpreterCheckError):
    """A kernel's hint does not hold for the values it was given."""


class StoreRace(InterpreterCheckError):
    """Two programs of one launch stored to the same address."""


def _shown(data: np.ndarray) -> str:
    values = data.ravel()
    more = f', ... ({values.size} values)' if values.size > 16 else ''
    return f'[{", ".join(str(v) for v in values[:16])}{more}]'


def _runs_along(data: np.ndarray, axis: int, length: int) -> np.ndarray:
    """``data`` with ``axis`` last, cut into aligned runs: shape (..., runs, length)."""
    moved = np.moveaxis(data, axis, -1)
    length = min(length, moved.shape[-1])
    return moved.reshape(*moved.shape[:-1], moved.shape[-1] // length, length)


def aligned_run_length(data: np.ndarray, axis: int) -> int:
    """The longest power-of-two run length whose aligned runs along ``axis`` all count up by
    one (1 where they do not)."""
    length = 1
    while length * 2 <= data.shape[axis] and data.shape[axis] % (length * 2) == 0 and \
            np.all(np.diff(_runs_along(data, axis, length * 2), axis=-1) == 1):
        length *= 2
    return length


def check_hints(data: np.ndarray, divisibility=None, contiguity=None, where: str = '') -> None:
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


def check_stores(stores, where: str = '') -> None:
    """StoreRace unless each address of ``stores`` ((addresses, program) pairs of one launch)
    was stored by one program only."""
    if len({program for _, program in stores}) < 2:
        return
    addresses = np.concatenate([a for a, _ in stores])
    programs = np.concatenate([np.full(a.size, p, dtype=np.int64) for a, p in stores])
    order = np.lexsort((programs, addresses))
    addresses, programs = addresses[order], programs[order]
    clash = (addresses[1:] == addresses[:-1]) & (programs[1:] != programs[:-1])
    if clash.any():
        i = int(np.argmax(clash))
        raise StoreRace(f'{where}programs {programs[i]} and {programs[i + 1]} (linear grid index) '
                        f'both store to address {addresses[i]:#x} ({int(clash.sum())} clashes)')


def install() -> bool:
    """Make Triton's interpreter run both checks for the rest of the process; False where this
    Triton's interpreter is not the one this module knows (3.6-3.9)."""
    try:
        from triton.runtime import interpreter
    except ImportError:  # pragma: no cover - Triton is optional
        return False
    handle, builder = interpreter.TensorHandle, interpreter.InterpreterBuilder
    executor = interpreter.GridExecutor
    if getattr(handle.set_attr, 'checked', False):
        return True
    set_attr, store, run = handle.set_attr, builder.create_masked_store, executor.__call__

    def checked_set_attr(self, key, value):
        set_attr(self, key, value)
        if key in (_DIVISIBILITY, _CONTIGUITY):
            check_hints(self.data, self.attr.get(_DIVISIBILITY), self.attr.get(_CONTIGUITY),
                        'Triton hint ')

    def logged_store(self, ptrs, value, mask, *args, **kwargs):
        log = getattr(self, 'store_log', None)
        if log is not None:
            x, y, z = self.grid_idx
            program = (x * self.grid_dim[1] + y) * self.grid_dim[2] + z
            log.append((np.asarray(ptrs.data)[np.asarray(mask.data, dtype=bool)].ravel(),
                        program))
        return store(self, ptrs, value, mask, *args, **kwargs)

    def checked_run(self, *args, **kwargs):
        builder_ = interpreter.interpreter_builder
        builder_.store_log = []
        try:
            result = run(self, *args, **kwargs)
            check_stores(builder_.store_log, f'{self.fn.__name__}: ')
        finally:
            builder_.store_log = None
        return result

    checked_set_attr.checked = True
    handle.set_attr, builder.create_masked_store = checked_set_attr, logged_store
    executor.__call__ = checked_run
    return True
