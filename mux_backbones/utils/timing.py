"""Timing of forward passes, shared by the benchmark and the search's latency objective.

Candidates are timed in interleaved rounds (one run of each per round, the order rotating), so a
slow phase of a shared machine hits all of them alike instead of whichever ran then. Each result
is the median and inter-quartile range of the runs, the peak memory, and the median host time:
how long the call took to return, before waiting for the device -- on a GPU what issuing the
launches costs (Python, dispatch, launch calls); where it comes close to the median, the run is
host-bound and faster kernels would not show. :func:`cpu_description` names what a CPU's times
depend on.
"""
import statistics
import time
from typing import List, NamedTuple

import torch


class Timing(NamedTuple):
    """What :func:`time_interleaved` measures for one candidate."""
    median_ms: float
    iqr_ms: float
    peak_mib: float
    host_ms: float = float('nan')  # median time until the call returned (before the sync)


def cpu_bf16_native() -> bool:
    """Whether oneDNN runs bf16 on this CPU's own instructions; elsewhere it emulates them, at
    ~30x fp32's time (a 2-core Zen 3: 11.8 s for an SSDLite training step that takes 0.36 s in
    fp32)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch built without oneDNN
        return False


def cpu_description() -> str:
    """The CPU as a timing table needs it: its vector ISA (the C++ kernels of
    mux_backbones.ops are built for it, with AVX-512 paths of their own), whether bf16 is native,
    and the thread count."""
    bf16 = 'native' if cpu_bf16_native() else 'emulated'
    return (f'CPU ({torch.backends.cpu.get_cpu_capability()}, bf16 {bf16}), '
            f'{torch.get_num_threads()} threads')


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued work (a no-op on the CPU, whose ops return done)."""
    if device.type == 'cuda':
        torch.cuda.synchronize()


def _peak_memory(device) -> float:
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _summary(times):
    q = statistics.quantiles(times, n=4)
    return statistics.median(times), q[2] - q[0]


def time_interleaved(fns, inputs, device, warmup, runs, labels=None) -> List[Timing]:
    """Median and IQR (ms) and peak memory (MiB) of each ``fns[i](inputs[i])``.

    The candidates are timed in interleaved rounds (one run of each per round, the order rotating),
    so a slow phase of a shared machine hits all of them alike instead of whichever ran then.
    Peak memory is the CUDA allocator's peak of a separate pass per candidate (on CPU the
    process's peak RSS, which only grows). Each candidate's warm-up ends in a synchronisation, so
    an error of its work (a CUDA fault surfaces only there) is raised naming ``labels[i]``.
    """
    with torch.no_grad():
        peaks = []
        for i, (fn, x) in enumerate(zip(fns, inputs)):
            synchronize(device)
            if device.type == 'cuda':
                torch.cuda.reset_peak_memory_stats(device)
            try:
                for _ in range(warmup):
                    fn(x)
                synchronize(device)
            except RuntimeError as err:
                if labels is None:
                    raise
                raise RuntimeError(f'{labels[i]} failed in its warm-up (the candidates before '
                                   f'it ran clean): {err}') from err
            peaks.append(_peak_memory(device))
        times, host = [[] for _ in fns], [[] for _ in fns]
        order = list(range(len(fns)))
        for r in range(runs):
            for i in order[r % len(order):] + order[:r % len(order)]:
                start = time.perf_counter()
                fns[i](inputs[i])
                returned = time.perf_counter()
                synchronize(device)
                times[i].append((time.perf_counter() - start) * 1e3)
                host[i].append((returned - start) * 1e3)
    return [Timing(*_summary(t), peak, statistics.median(h))
            for t, peak, h in zip(times, peaks, host)]


def time_forward(fn, x, device, warmup, runs) -> Timing:
    """Median and IQR (ms) of ``fn(x)``, and peak memory (MiB; CUDA allocator or CPU RSS)."""
    return time_interleaved([fn], [x], device, warmup, runs)[0]


def capture_cuda_graph(fn, calls: int = 1, warmup: int = 3):
    """``calls`` calls of ``fn()`` captured in one CUDA graph: ``(graph, last output)``.

    The graph keeps no tensor alive but the pool's: whatever ``fn`` reads (a model's weights)
    must outlive every replay, so a caller that keeps the graph keeps the model too.

    ``fn`` first runs ``warmup`` times on a side stream, so kernels are compiled and the caching
    allocator has settled before the capture (which forbids both).
    """
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            out = fn()
    return graph, out


def device_time_us(fn, device: torch.device, calls: int = 20, replays: int = 10) -> float:
    """Time of one ``fn()`` in microseconds, launch overhead excluded where possible.

    On CUDA, ``calls`` calls are captured in one CUDA graph and replayed (what a graph-captured
    or compiled model pays); elsewhere, the median of ``replays`` wall-clock runs.
    """
    if device.type != 'cuda':
        fn()  # warm-up (kernel compilation, allocator)
        times = []
        for _ in range(replays):
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1e6)
        return statistics.median(times)
    graph, _ = capture_cuda_graph(fn, calls)
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / (calls * replays)
