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
"""
import functools
import json
from typing import Dict, Hashable, NamedTuple, Optional, Tuple

import torch

_FORMAT = 'mux_backbones.launch_configs/1'


class LaunchConfig(NamedTuple):
    """How a kernel is launched for one call signature: its tile and warps per program, and the
    software-pipeline depth of its main loop (the forward's tap rows, the weight gradient's tiles;
    1: none; ``s``: the loads of ``s - 1`` iterations ahead in flight through shared memory while
    one is computed)."""
    tile_h: int
    tile_w: int
    num_warps: int
    num_stages: int = 1


_table: Dict[Tuple, LaunchConfig] = {}


def _check(config: LaunchConfig) -> LaunchConfig:
    config = LaunchConfig(*(int(v) for v in config))
    powers_of_two = all(v > 0 and v & (v - 1) == 0 for v in config[:3])
    if not powers_of_two or config.num_warps > 32 or config.tile_h * config.tile_w > 4096 or \
            not 1 <= config.num_stages <= 4:
        raise ValueError(f'invalid launch config {tuple(config)}: tile_h, tile_w and num_warps '
                         f'must be powers of two (num_warps <= 32, tile <= 4096 pixels), '
                         f'num_stages 1-4')
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


def lookup(key: Tuple) -> Optional[LaunchConfig]:
    """The tuned config of a call signature (None: the planner's own choice)."""
    return _table.get(key)


def record(key: Tuple, config: LaunchConfig) -> None:
    """Use ``config`` for the call signature ``key`` from now on."""
    _table[_frozen(key)] = _check(config)


def forget(key: Optional[Tuple] = None) -> None:
    """Drop the entry of ``key`` (every entry if None)."""
    if key is None:
        _table.clear()
    else:
        _table.pop(_frozen(key), None)


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
