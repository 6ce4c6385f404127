"""A CPU model's weights gathered into one buffer, on huge pages where the OS offers them.

At batch 1 a CPU forward reads each weight once, and a network's weights (MUXNet-m deployed:
~8 MB, MobileNetV2 ~8.5 MB) do not stay in the caches between forwards: every block starts on
weights from L3 or memory. Where they lie matters: left where deploying put them -- one
allocation each, between the temporaries of BN folding and weight packing -- they spread over
more pages and cache sets than their size needs. :func:`gather_weights` copies them into one
buffer, each at a 64-byte boundary, and asks Linux for transparent huge pages there (2 MiB
pages: one TLB entry instead of 512; ``madvise``, the kernel's default mode; ordinary memory
for a buffer of less than 1 MiB). Measured on the
CPU machine (2 cores, batch 1, deploy with the C++ kernels, gathered vs not in one process,
interleaved, three runs): MobileNetV2 -3..-6% per forward, MUXNet-xs -11..-13%, s -1..-2%,
m -1..-3%, l -2..-4%; never slower.

The tensors stay the same objects with the same values, shapes and strides (a weight kept in a
kernel's layout keeps it); moving or converting the model (``.to``, ``.half()``) gives them
memory of their own again. Each tensor gets a storage of its own that views its place in the
buffer, rather than one storage the tensors all view: whatever serialises a tensor with its
whole storage -- plain ``pickle`` (multiprocessing pools, Ray, joblib) does so for every view,
``torch.save`` once -- then writes each weight once (one shared storage made a pickled MUXNet-m
1.9 GB instead of 8 MB, and a saved state dict 2 MiB larger than its weights).
"""
import mmap

import torch
from torch import nn

_ALIGN = 64  # bytes: a cache line, and every dtype's alignment
_HUGE_PAGE = 2 << 20


def _owns_dense_storage(t: torch.Tensor) -> bool:
    """A CPU tensor whose storage is all its own, dense (non-overlapping, no gaps) and torch's
    (resizable): moved with its strides as they are. Views of a shared storage -- tied weights,
    a memory-mapped checkpoint -- and tensors already in a :func:`gather_weights` buffer (their
    storages view memory torch did not allocate) stay where they are."""
    if t.device.type != 'cpu' or t.numel() == 0 or t.storage_offset() != 0:
        return False
    storage = t.untyped_storage()
    return storage.resizable() and storage.nbytes() == t.numel() * t.element_size() and \
        torch.empty_like(t).stride() == t.stride()


def _memory(nbytes: int) -> memoryview:
    """``nbytes`` writable bytes of an anonymous mapping, which lives as long as anything views
    it. From ``_HUGE_PAGE`` / 2 on they start at a huge-page boundary and are advised to the
    kernel as huge pages where it takes the advice (Linux); below that a huge page would be
    mostly empty."""
    huge = nbytes >= _HUGE_PAGE // 2
    size = nbytes + (_HUGE_PAGE if huge else 0)
    if hasattr(mmap, 'MAP_PRIVATE'):  # (private: huge pages are for anonymous private memory)
        mapping = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    else:  # Windows: no such flags, no huge pages
        mapping = mmap.mmap(-1, size)
    skip = 0
    if huge:
        if hasattr(mmap, 'MADV_HUGEPAGE'):
            try:
                mapping.madvise(mmap.MADV_HUGEPAGE)
            except OSError:  # e.g. a kernel built without transparent huge pages
                pass
        skip = -torch.frombuffer(mapping, dtype=torch.uint8, count=1).data_ptr() % _HUGE_PAGE
    return memoryview(mapping)[skip:skip + nbytes]


@torch.no_grad()
def gather_weights(model: nn.Module) -> int:
    """Copy ``model``'s floating-point CPU parameters and buffers into one buffer, in the order
    the model registers them (its forward's order, for a backbone), in place: the same tensor
    objects, values, shapes and strides. Returns the bytes gathered (0: nothing to gather)."""
    tensors, seen = [], set()
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) not in seen and t.is_floating_point() and _owns_dense_storage(t):
            seen.add(id(t))
            tensors.append(t)
    if not tensors:
        return 0
    offsets, nbytes = [], 0
    for t in tensors:
        offsets.append(nbytes)
        nbytes += -(-t.numel() * t.element_size() // _ALIGN) * _ALIGN
    memory = _memory(nbytes)
    for t, offset in zip(tensors, offsets):
        place = memory[offset:offset + t.numel() * t.element_size()]
        moved = torch.frombuffer(place, dtype=torch.uint8).view(t.dtype)
        moved = moved.as_strided(t.shape, t.stride())
        moved.copy_(t)
        t.data = moved
    return nbytes
