"""What Triton's interpreter cannot see of a GPU run, checked while it runs the kernel tests.

The CPU tests run every kernel in Triton's interpreter, which executes programs one after another,
takes the compiler's hints as comments and reads CPU memory. Three kinds of bug pass there and fail
only on a GPU:

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
* **An access outside the tensors.** An unmasked lane past the end of a tensor reads whatever
  lies next to it in CPU memory (a test may pass on it), and faults or reads garbage on a GPU.
  :func:`install` checks every load and store of a launch against the extents of the tensors it
  was given.

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


class OutOfBounds(InterpreterCheckError):
    """A load or store outside every tensor the launch was given."""


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


def tensor_extents(tensors) -> np.ndarray:
    """The byte ranges ``[start, end)`` the elements of ``tensors`` span, merged where they
    overlap (views of one storage), sorted: shape (ranges, 2)."""
    spans = sorted((t.data_ptr(), t.data_ptr() + t.element_size() * (
        1 + sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride()))))
        for t in tensors if t.numel() > 0)
    merged = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return np.array(merged, dtype=np.int64).reshape(-1, 2)


def check_bounds(addresses: np.ndarray, itemsize: int, extents: np.ndarray,
                 where: str = '') -> None:
    """OutOfBounds unless every element at ``addresses`` lies inside one of ``extents``."""
    addresses = np.asarray(addresses, dtype=np.int64).ravel()
    if addresses.size == 0:
        return
    index = np.searchsorted(extents[:, 0], addresses, side='right') - 1
    inside = (index >= 0) & (addresses + itemsize <= extents[np.maximum(index, 0), 1])
    if not inside.all():
        bad = addresses[~inside]
        raise OutOfBounds(f'{where}{bad.size} accesses outside the launch\'s tensors, e.g. '
                          f'{int(bad[0]):#x} (tensors span {_shown(extents)})')


def _tensors(args):
    for arg in args:
        if isinstance(arg, (tuple, list)):
            yield from _tensors(arg)
        elif hasattr(arg, 'data_ptr') and hasattr(arg, 'element_size'):
            yield arg


def install() -> bool:
    """Make Triton's interpreter run the three checks for the rest of the process; False where
    this Triton's interpreter is not the one this module knows (3.6-3.9)."""
    try:
        from triton.runtime import interpreter
    except ImportError:  # pragma: no cover - Triton is optional
        return False
    handle, builder = interpreter.TensorHandle, interpreter.InterpreterBuilder
    executor = interpreter.GridExecutor
    if getattr(handle.set_attr, 'checked', False):
        return True
    set_attr, store, run = handle.set_attr, builder.create_masked_store, executor.__call__
    load, host_args = builder.create_masked_load, executor._init_args_hst

    def checked_set_attr(self, key, value):
        set_attr(self, key, value)
        if key in (_DIVISIBILITY, _CONTIGUITY):
            check_hints(self.data, self.attr.get(_DIVISIBILITY), self.attr.get(_CONTIGUITY),
                        'Triton hint ')

    def accessed(builder_, ptrs, mask, what):
        """The addresses a masked access touches, checked against the launch's tensors."""
        addresses = np.broadcast_to(np.asarray(ptrs.data), np.shape(mask.data))[
            np.asarray(mask.data, dtype=bool)]
        extents = getattr(builder_, 'extents', None)
        if extents is not None:
            check_bounds(addresses, ptrs.get_element_ty().primitive_bitwidth // 8, extents,
                         f'{what}: ')
        return addresses

    def checked_load(self, ptrs, mask, *args, **kwargs):
        accessed(self, ptrs, mask, 'load')
        return load(self, ptrs, mask, *args, **kwargs)

    def logged_store(self, ptrs, value, mask, *args, **kwargs):
        addresses = accessed(self, ptrs, mask, 'store')
        log = getattr(self, 'store_log', None)
        if log is not None:
            x, y, z = self.grid_idx
            log.append((addresses, (x * self.grid_dim[1] + y) * self.grid_dim[2] + z))
        return store(self, ptrs, value, mask, *args, **kwargs)

    def host_args_with_extents(self, args_dev, kwargs):
        args_hst, kwargs_hst = host_args(self, args_dev, kwargs)
        interpreter.interpreter_builder.extents = tensor_extents(
            _tensors(list(args_hst) + list(kwargs_hst.values())))
        return args_hst, kwargs_hst

    def checked_run(self, *args, **kwargs):
        builder_ = interpreter.interpreter_builder
        builder_.store_log = []
        try:
            result = run(self, *args, **kwargs)
            check_stores(builder_.store_log, f'{self.fn.__name__}: ')
        finally:
            builder_.store_log = builder_.extents = None
        return result

    checked_set_attr.checked = True
    handle.set_attr, builder.create_masked_store = checked_set_attr, logged_store
    builder.create_masked_load = checked_load
    executor.__call__, executor._init_args_hst = checked_run, host_args_with_extents
    return True
