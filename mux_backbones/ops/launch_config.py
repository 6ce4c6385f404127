"""Tuned launch configurations of the Triton kernels: the fastest tile, warp count and pipeline
depth measured per call signature on a device, kept in a process-wide table (as cuDNN's benchmark
mode keeps its choice per shape) that can be saved to JSON and loaded on the next run.

The kernels' launch planners derive a tile and a warp count from register and occupancy rules
(:mod:`.group_conv`); which of the candidates around that is fastest depends on the GPU, the
layer and the batch, and only a measurement says (:func:`mux_backbones.tuning.tune_kernels`,
``FusedGroupConv.tune``, ``tools/gpu/layer_bench.py --tune``). A signature without an entry runs
the planner's own choice.

A tuned tile changes how many partial sums a pooling forward returns (one per tile), and a
compiled graph fixes that count when it is traced: tune (or :func:`load`) before compiling or
capturing a model, not after.

The machinery every op's tuner shares lives here too: :func:`recorded_calls` (what a model asks of
an op, to replay it), :func:`precompile` (every candidate compiled ahead in worker processes) and
:func:`tune` (time each candidate, check it computes the same, keep the fastest).
"""
import contextlib
import functools
import json
import os
import warnings
from typing import Callable, Dict, Hashable, List, NamedTuple, Optional, Sequence, Tuple

import torch

from ._triton import interpreting

_FORMAT = 'mux_backbones.launch_configs/1'


class LaunchConfig(NamedTuple):
    """How a kernel is launched for one call signature: its tile and warps per program, and the
    software-pipeline depth of its main loop (the forward's tap rows, the weight gradient's tiles,
    a GEMM's reduction; 1: none; ``s``: the loads of ``s - 1`` iterations ahead in flight through
    shared memory while one is computed). A spatial conv's tile is ``tile_h x tile_w`` pixels; a
    GEMM's (:mod:`.pointwise_conv`) is ``tile_h`` rows x ``tile_w`` output channels, and
    ``tiles_per_program`` of those row tiles run one after another in one program (a loop the
    pipeline depth applies to; 1: one tile per program, the only value the spatial conv
    takes)."""
    tile_h: int
    tile_w: int
    num_warps: int
    num_stages: int = 1
    tiles_per_program: int = 1


def describe(config: LaunchConfig) -> str:
    """``config`` as a tuple for logs: ``tiles_per_program`` only where it is not 1 (the
    spatial conv's configs, and the GEMM's of one tile per program, read as they always did)."""
    values = tuple(config)
    return str(values if len(values) > 4 and values[4] != 1 else values[:4])


# A tuned entry that says: this call runs the op's stock PyTorch path (cuBLAS/cuDNN and plain
# passes), measured faster there than every kernel config (no kernel launches with 1 x 1 tiles).
STOCK = LaunchConfig(1, 1, 1, 1)

_table: Dict[Tuple, LaunchConfig] = {}
# Bumped by every change of the table, so the ops' launch planners may cache what they looked up.
_version = [0]


def _check(config: LaunchConfig) -> LaunchConfig:
    config = LaunchConfig(*(int(v) for v in config))
    powers_of_two = all(v > 0 and v & (v - 1) == 0 for v in config[:3] + config[4:])
    if not powers_of_two or config.num_warps > 32 or config.tile_h * config.tile_w > 16384 or \
            not 1 <= config.num_stages <= 4 or config.tiles_per_program > 64:
        raise ValueError(f'invalid launch config {describe(config)}: tile_h, tile_w, num_warps and '
                         f'tiles_per_program must be powers of two (num_warps <= 32, tile <= '
                         f'16384 values, tiles_per_program <= 64), num_stages 1-4')
    return config


@functools.lru_cache(maxsize=16)
def device_kind(device: torch.device) -> str:
    """What a tuned entry is valid for: the GPU's name (``NVIDIA H200``), else the device type."""
    if device.type == 'cuda':
        return torch.cuda.get_device_name(device)
    return device.type


def empty() -> bool:
    """Whether nothing is tuned (every launch runs the planner's own choice)."""
    return not _table


def version() -> int:
    """A number that changes whenever the table does (what a cached launch plan depends on)."""
    return _version[0]


def lookup(key: Tuple) -> Optional[LaunchConfig]:
    """The tuned config of a call signature (None: the planner's own choice)."""
    return _table.get(key)


def record(key: Tuple, config: LaunchConfig) -> None:
    """Use ``config`` for the call signature ``key`` from now on."""
    _table[_frozen(key)] = _check(config)
    _version[0] += 1


def forget(key: Optional[Tuple] = None) -> None:
    """Drop the entry of ``key`` (every entry if None)."""
    if key is None:
        _table.clear()
    else:
        _table.pop(_frozen(key), None)
    _version[0] += 1


def entries() -> Dict[Tuple, LaunchConfig]:
    """A copy of the table."""
    return dict(_table)


def _frozen(value) -> Hashable:
    """``value`` with every list a tuple (JSON gives lists; the keys are tuples)."""
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    return value


def save(path: str) -> None:
    """Write the table as JSON (what :func:`load` reads)."""
    rows = [dict(key=list(key), config=config._asdict()) for key, config in _table.items()]
    with open(path, 'w') as f:
        json.dump(dict(format=_FORMAT, configs=rows), f, indent=1)


def load(path: str) -> int:
    """Add the entries of a file :func:`save` wrote (over the current ones); how many."""
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict) or data.get('format') != _FORMAT:
        raise ValueError(f'{path}: not a launch-config file (format {_FORMAT!r})')
    rows = data.get('configs', [])
    for row in rows:
        record(row['key'], LaunchConfig(**row['config']))
    return len(rows)


_recorders: Dict[str, List[list]] = {}


@contextlib.contextmanager
def recorded_calls(op: str):
    """Collect the arguments of every call of the op named ``op`` (``'group_conv'``,
    ``'pointwise_conv'``, ``'se_gate'``: its output last) made inside: the op's own arguments,
    after any dispatch -- what tuning needs to replay a model's calls."""
    calls: list = []
    _recorders.setdefault(op, []).append(calls)
    try:
        yield calls
    finally:
        _recorders[op].remove(calls)


def note_call(op: str, *args) -> None:
    """Called by op ``op`` with its arguments: kept by every :func:`recorded_calls` open."""
    for calls in _recorders.get(op, ()):
        calls.append(args)


_dry_runs = [0]


@contextlib.contextmanager
def dry_run():
    """Inside, the ops launch (and compile) nothing: each records its call
    (:func:`recorded_calls`) and returns outputs of the right shapes, strides and dtypes filled
    with random normal values (:func:`dry_outputs`). How tuning learns a model's calls before
    compiling their candidates in parallel: a real forward would first compile every planned
    kernel one after another."""
    _dry_runs[0] += 1
    try:
        yield
    finally:
        _dry_runs[0] -= 1


def dry_running() -> bool:
    """Whether a :func:`dry_run` is open (checked by the ops first thing)."""
    return _dry_runs[0] > 0


def observed() -> bool:
    """Whether the ops' calls are being watched: a :func:`dry_run` or a :func:`recorded_calls`
    open (then every call must reach its op; nothing may run the kernels around it)."""
    return _dry_runs[0] > 0 or any(_recorders.values())


def dry_outputs(outputs):
    """An op's outputs as a dry run hands them on (its fake implementation's tensors, a tensor
    or a tuple): filled with random normal values, so the tensors recorded downstream are data a
    tuner can compare candidates on."""
    for t in outputs if isinstance(outputs, tuple) else (outputs, ):
        if t.is_floating_point():
            t.normal_()
    return outputs


def _run_compile_jobs(jobs) -> int:
    """Run each job -- ``(function, *arguments)``, the function launching one candidate once on
    zeros -- in this process (in a worker: what compiles it into Triton's on-disk cache); how
    many ran (one that fails is left to the tuning, which skips it with a warning)."""
    ran = 0
    for job in jobs:
        try:
            job[0](*job[1:])
            ran += 1
        except Exception:  # e.g. out of shared memory for this config
            pass
    return ran


def _triton_cache_entries() -> Optional[int]:
    """How many entries Triton's on-disk cache holds (one more per kernel compiled or launcher
    built); None where this Triton does not say where its cache is."""
    try:
        from triton import knobs
        folder = knobs.cache.dir
    except (ImportError, AttributeError):  # pragma: no cover - Triton before 3.4
        return None
    return len(os.listdir(folder)) if folder and os.path.isdir(folder) else 0


def precompile(jobs: Sequence[tuple], processes: int) -> int:
    """Compile the candidates' launches (the ops' ``compile_jobs``) in ``processes`` worker
    processes at once, so tuning (one compile per candidate and call, ~1-2 s each) finds them
    in Triton's on-disk cache instead of compiling one after another. Best effort: a worker that
    fails leaves its jobs to be compiled when tuning runs them.

    The jobs run in this process first as long as each finds its kernel in the cache (a warm
    cache: a rerun, or one built ahead, ``tools/gpu/prebuild_triton_cache.py``): a worker costs
    seconds to start (imports, a CUDA context), a cached job milliseconds. The first job that
    adds to the cache (a compile) hands the rest to the workers. Returns how many jobs ran."""
    jobs = list(jobs)
    if processes < 2 or len(jobs) < 2 or interpreting():  # the interpreter compiles nothing
        return 0
    done = ran = 0
    entries = _triton_cache_entries()
    while entries is not None and done < len(jobs):
        ran += _run_compile_jobs(jobs[done:done + 1])
        done += 1
        if _triton_cache_entries() != entries:
            break
    rest = jobs[done:]
    if len(rest) < 2:
        return ran + _run_compile_jobs(rest)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    chunks = [rest[i::processes] for i in range(min(processes, len(rest)))]
    # spawn: a forked child cannot initialise CUDA once the parent has.
    with ProcessPoolExecutor(len(chunks),
                             mp_context=multiprocessing.get_context('spawn')) as pool:
        for future in [pool.submit(_run_compile_jobs, chunk) for chunk in chunks]:
            try:
                ran += future.result()
            except Exception as err:  # the parent compiles them itself
                warnings.warn(f'precompile: a worker failed ({err})', RuntimeWarning)
    return ran


def timer(time_us: Optional[Callable], device: torch.device) -> Callable:
    """``time_us`` or, if None, CUDA-graph replays on ``device``
    (:func:`mux_backbones.utils.timing.device_time_us`)."""
    if time_us is not None:
        return time_us
    from ..utils.timing import device_time_us
    return functools.partial(device_time_us, device=device)


def tune(key: tuple, candidates: Sequence[LaunchConfig], run: Callable, same: Callable,
         time_us: Callable) -> Dict[LaunchConfig, float]:
    """Time ``run()`` with each candidate recorded for ``key`` and keep the fastest; a candidate
    that raises (e.g. out of registers or shared memory) or whose result ``same(result,
    first result)`` rejects is skipped with a warning.

    Returns:
        dict: Microseconds per candidate that ran, in the candidates' order (empty if none did:
        then the entry ``key`` had before is kept).
    """
    previous = lookup(key)
    times, reference = {}, None
    with torch.no_grad():
        for config in candidates:
            record(key, config)
            try:
                result = run()
            except Exception as err:
                warnings.warn(f'{key[0]} tuning: config {describe(config)} failed ({err}); '
                              f'skipped', RuntimeWarning)
                continue
            if reference is None:
                reference = result
            elif not same(result, reference):
                warnings.warn(f'{key[0]} tuning: config {describe(config)} changed the result; '
                              f'skipped', RuntimeWarning)
                continue
            times[config] = time_us(run)
    if not times:
        forget(key)
        if previous is not None:
            record(key, previous)
        return {}
    record(key, min(times, key=times.get))
    return times
