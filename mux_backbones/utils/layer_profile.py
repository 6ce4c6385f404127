"""Where a model's forward spends its device time, kind of layer by kind of layer, against memory
bandwidth: the profile a speed goal's miss is explained by (issue "MUXNet as fast as MobileNetV2
on GPU").

Every module's forward runs inside a profiler range of its own, so the kernels a layer launches
through ATen -- cuDNN's, cuBLAS's, PyTorch's own -- count for that layer. Kernels launched by
Triton's own launcher (the fused kernels of :mod:`mux_backbones.ops`) reach the profiler without
a CPU-side event under the range (session 40, H200: 91% of MUXNet-m's fused forward fell
outside every layer). Those are matched by order instead: every planned launch tells
:func:`~mux_backbones.ops._launch.observe_launches` its kernel's name and which layer's range is
open, and on one stream the n-th kernel of a name that runs is the n-th launched; a name whose
counts disagree (a launch that bypassed the plan) stays ``(outside layers)``.

Per kind of layer (its class) the table gives the calls and device time per forward and, for
layers without submodules, the bytes their inputs, outputs, parameters and buffers take (what a
kernel must move at least once) and the bandwidth that time achieves against the peak (H200:
~4.8 TB/s). A layer with submodules is charged only its own operators (a block's residual
add, a channel-multiplexing interleave, a fused squeeze-excite gate), bytes unknown. What ran
outside every layer's range is its own row, so the rows add up to the whole forward.

On the CPU the times are the ranges' CPU time (how the tests check the attribution).
"""
from collections import defaultdict
from typing import Dict, List, NamedTuple, Optional

import torch
from torch import nn
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile, record_function

from ..ops._launch import observe_launches

_PREFIX = 'layer_profile::'
PEAK_TBPS = 4.8  # the H200's HBM3e bandwidth


class LayerCost(NamedTuple):
    """One row: a kind of layer (its class; ``(own ops)`` for a layer with submodules, charged
    only for the operators outside them), per forward."""
    kind: str
    calls: float
    time_us: float
    bytes: Optional[float]  # None: not known (a layer with submodules, or outside any layer)

    @property
    def tbps(self) -> Optional[float]:
        """Achieved bandwidth, terabytes per second."""
        return self.bytes / self.time_us / 1e6 if self.bytes and self.time_us > 0 else None


def _tensors(values) -> List[torch.Tensor]:
    found = []
    for v in values:
        if isinstance(v, torch.Tensor):
            found.append(v)
        elif isinstance(v, (list, tuple)):
            found += _tensors(v)
        elif isinstance(v, dict):
            found += _tensors(v.values())
    return found


def _size(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _leaf_bytes(model: nn.Module, args, leaves) -> Dict[nn.Module, int]:
    """Bytes each leaf layer reads and writes, summed over its calls in one forward: its inputs
    (keyword ones too), parameters and buffers, and its outputs. An output that is one of its
    inputs was written in place if the forward bumped its version (an in-place activation),
    else it was handed through untouched (``nn.Identity``, eval-mode dropout): then neither
    counts."""
    moved: Dict[nn.Module, int] = defaultdict(int)
    calls = []

    def before(module, inputs, kwargs):
        tensors = _tensors((inputs, kwargs))
        calls.append((tensors, [t._version for t in tensors]))

    def after(module, inputs, kwargs, output):
        tensors, versions = calls.pop()
        own = list(module.parameters(recurse=False)) + list(module.buffers(recurse=False))
        total = sum(_size(t) for t in tensors + own)
        for out in _tensors((output, )):
            same = [i for i, t in enumerate(tensors) if t is out]
            if not same:
                total += _size(out)
            elif out._version != versions[same[0]]:
                total += _size(out)  # written in place
            else:
                total -= _size(out)  # handed through: not read either
        moved[module] += total

    handles = [h for m in leaves for h in (m.register_forward_pre_hook(before, with_kwargs=True),
                                           m.register_forward_hook(after, with_kwargs=True))]
    try:
        with torch.no_grad():
            model(*args)
    finally:
        for h in handles:
            h.remove()
    return moved


def profile_layers(model: nn.Module, *args, runs: int = 10, warmup: int = 3) -> List[LayerCost]:
    """Device time (CPU time on the CPU) and bytes per kind of layer of ``model(*args)``, per
    forward, largest first; the last row, ``(outside layers)``, is what no layer's range held.

    Args:
        model (nn.Module): The model, as it will run (deploy forms, dtype, memory format).
        *args: What it is called with.
        runs (int): Forwards profiled (the table is per forward).
        warmup (int): Forwards run first (compiles, autotunes, allocator).
    """
    return profile_forward(model, *args, runs=runs, warmup=warmup)['kind']


def profile_forward(model: nn.Module, *args, runs: int = 10,
                    warmup: int = 3) -> Dict[str, List[LayerCost]]:
    """:func:`profile_layers`' rows from one profiled run two ways: ``'kind'``, per kind of
    layer, and ``'module'``, per layer (``name (Kind)``; which 1x1 conv of which block is the
    slow one), each list largest first with ``(outside layers)`` last."""
    modules = dict(model.named_modules())
    leaves = {m for m in modules.values() if next(m.children(), None) is None}
    kind = {m: type(m).__name__ + ('' if m in leaves else ' (own ops)') for m in modules.values()}
    moved = _leaf_bytes(model, args, leaves)
    range_name = {m: f'{_PREFIX}{name or "<model>"}' for name, m in modules.items()}
    range_kind = {range_name[m]: kind[m] for m in modules.values()}
    layer = {m: f'{name or "<model>"} ({kind[m]})' for name, m in modules.items()}
    open_ranges, open_names, launches = [], [], []

    def enter(module, inputs):
        open_ranges.append(record_function(range_name[module]))
        open_ranges[-1].__enter__()
        open_names.append(range_name[module])

    def leave(module, inputs, output):
        open_names.pop()
        open_ranges.pop().__exit__(None, None, None)

    def launched(launch):
        launches.append((launch.name, open_names[-1] if open_names else None))

    on_gpu = any(t.is_cuda for t in args if isinstance(t, torch.Tensor))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_gpu else [])
    handles = [h for m in modules.values() for h in (m.register_forward_pre_hook(enter),
                                                     m.register_forward_hook(leave))]
    try:
        with torch.no_grad():
            for _ in range(warmup):
                model(*args)
            if on_gpu:
                torch.cuda.synchronize()
            with profile(activities=activities) as prof, observe_launches(launched):
                for _ in range(runs):
                    model(*args)
                if on_gpu:
                    torch.cuda.synchronize()
    finally:
        for h in handles:
            h.remove()
    events = prof.events()
    launches = launches if on_gpu else []  # (on the CPU the ranges hold every kernel's time)
    range_layer = {range_name[m]: layer[m] for m in modules.values()}
    return {'kind': _costs(events, range_kind, moved, kind, runs, on_gpu, launches),
            'module': _costs(events, range_layer, moved, layer, runs, on_gpu, launches)}


def match_launches(events, launches) -> Dict[str, List[tuple]]:
    """The profiler's kernels of ``launches`` (``(kernel name, range name)`` in issue order)
    paired with them by order, per kernel name: ``{name: [(range name, us), ...]}``. A name
    whose kernel count differs from its launch count is left out (which kernel ran for which
    launch would be a guess)."""
    issued, ran = defaultdict(list), defaultdict(list)
    for name, range_name in launches:
        issued[name].append(range_name)
    for e in events:
        if e.device_type == DeviceType.CUDA and e.name in issued:
            ran[e.name].append(e)
    matched = {}
    for name, ranges in issued.items():
        kernels = sorted(ran[name], key=lambda e: e.time_range.start)
        if len(kernels) == len(ranges):
            matched[name] = [(r, k.self_device_time_total) for r, k in zip(ranges, kernels)]
    return matched


def _costs(events, range_kind, moved, kind, runs: int, on_gpu: bool,
           launches=()) -> List[LayerCost]:
    memo: Dict[int, float] = {}
    matched = match_launches(events, launches)

    def inclusive(event) -> float:
        """The event's time with everything under it: on the CPU its span; on the GPU the
        kernels it and its descendants launched, summed from the kernels themselves (a range's
        own GPU-side annotation span, which CUPTI may attach to it, is no kernel; a kernel
        matched to its launch counts there instead)."""
        if not on_gpu:
            return event.cpu_time_total
        if id(event) not in memo:
            memo[id(event)] = sum(k.duration for k in event.kernels
                                  if not k.name.startswith(_PREFIX) and k.name not in matched) + \
                sum(inclusive(c) for c in event.cpu_children)
        return memo[id(event)]

    ranges = [e for e in events if e.name in range_kind and e.device_type == DeviceType.CPU]
    time, calls = defaultdict(float), defaultdict(float)
    for e in ranges:
        children = sum(inclusive(c) for c in e.cpu_children if c.name in range_kind)
        time[range_kind[e.name]] += inclusive(e) - children
        calls[range_kind[e.name]] += 1
    for pairs in matched.values():  # each matched kernel to the layer whose range launched it
        for range_name, us in pairs:
            if range_name in range_kind:
                time[range_kind[range_name]] += us
    if on_gpu:  # every kernel once, whether an operator or a range launched it
        total = sum(e.self_device_time_total for e in events
                    if e.device_type == DeviceType.CUDA and not e.name.startswith(_PREFIX))
    else:
        total = sum(e.cpu_time_total for e in events if e.cpu_parent is None)
    bytes_by_kind = defaultdict(float)
    for module, size in moved.items():
        bytes_by_kind[kind[module]] += size
    rows = [LayerCost(k, calls[k] / runs, time[k] / runs,
                      bytes_by_kind[k] if k in bytes_by_kind else None)
            for k in sorted(time, key=time.get, reverse=True)]
    attributed = sum(time.values())
    rows.append(LayerCost('(outside layers)', 0.0, max(0.0, total - attributed) / runs, None))
    return rows


def format_layer_costs(rows: List[LayerCost], peak_tbps: float = PEAK_TBPS,
                       top: Optional[int] = None) -> str:
    """The rows as a table: calls, time and share per forward, MiB, achieved TB/s and the time
    the bytes alone would take at ``peak_tbps``; with ``top``, only the ``top`` slowest rows
    and ``(outside layers)`` are listed (shares and the total still of every row)."""
    total = sum(r.time_us for r in rows) or 1.0
    title = 'layer kind' if top is None else f'slowest {top} layers'
    listed = rows if top is None else \
        sorted(rows[:-1], key=lambda r: r.time_us, reverse=True)[:top] + rows[-1:]
    width = max([34] + [len(r.kind) + 1 for r in listed])
    lines = [f'{title:<{width}}{"calls":>7}{"us":>10}{"share":>7}{"MiB":>9}{"TB/s":>7}'
             f'{f"us@{peak_tbps:g}TB/s":>13}']
    for r in listed:
        size = f'{r.bytes / 2**20:9.1f}' if r.bytes else f'{"-":>9}'
        tbps = f'{r.tbps:7.2f}' if r.tbps is not None else f'{"-":>7}'
        floor = f'{r.bytes / peak_tbps / 1e6:13.1f}' if r.bytes else f'{"-":>13}'
        lines.append(f'{r.kind:<{width}}{r.calls:7.0f}{r.time_us:10.1f}{r.time_us / total:7.0%}'
                     f'{size}{tbps}{floor}')
    known = [r for r in rows if r.bytes]
    lines.append(f'{"total":<{width}}{"":>7}{total:10.1f}{"":>7}'
                 f'{sum(r.bytes for r in known) / 2**20:9.1f}{"":>7}'
                 f'{sum(r.bytes for r in known) / peak_tbps / 1e6:13.1f}')
    return '\n'.join(lines)
