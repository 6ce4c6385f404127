"""Fixes for known breakages of the pinned OpenMMLab stack, applied once on import.

Each fix is guarded (it only applies when the bug is present) and names the upstream issue.
Nothing here edits installed files; everything is a runtime patch of one named function.
"""
import os
import os.path as osp
import tempfile
from typing import List

_applied = False


def _mmengine_checkpoint_globals() -> List[object]:
    """Non-tensor types mmengine 0.10.7 pickles into its own training checkpoints."""
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    dtypes = [type(np.dtype(t)) for t in ('float64', 'float32', 'int64', 'int32', 'bool')]
    # HistoryBuffer pickles its statistics methods as ``getattr(HistoryBuffer, 'min')``. Admitting
    # ``getattr`` lets the weights-only unpickler look such attributes up, but never call them:
    # it still refuses to call anything outside its allow-list, so no code runs.
    return [HistoryBuffer, _reconstruct, scalar, np.ndarray, np.dtype, *dtypes, getattr]


def mmengine_checkpoint_types():
    """Context manager: weights-only loading that also admits mmengine's own checkpoint types.

    For tools that read the run's own training checkpoints outside the runner (e.g. the demo).
    """
    import torch
    return torch.serialization.safe_globals(_mmengine_checkpoint_globals())


def _patch_mmengine_checkpoint_loading() -> None:
    """Let ``Runner.load_checkpoint`` (resume, ``load_from``) read mmengine's own checkpoints.

    Under torch >= 2.6, mmengine 0.10.7 loads with torch's default ``weights_only=True``, which
    rejects the HistoryBuffer and numpy objects its message hub pickles into every training
    checkpoint, so resuming fails (open-mmlab/mmengine PR 1670, unreleased). Here the loading stays
    weights-only -- no arbitrary unpickling -- and only those few data types are allow-listed, and
    only for the duration of the runner's call. Backbone weights loaded through ``init_cfg``
    (``Pretrained``) are untouched and strictly weights-only. This is deliberately narrower than
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, which disables the protection process-wide.
    """
    import torch
    from mmengine.runner import Runner
    if getattr(Runner.load_checkpoint, '_mux_patched', False) or not hasattr(
            torch.serialization, 'safe_globals'):
        return
    original = Runner.load_checkpoint

    def load_checkpoint(self, *args, **kwargs):
        with mmengine_checkpoint_types():
            return original(self, *args, **kwargs)

    load_checkpoint._mux_patched = True
    load_checkpoint.__doc__ = original.__doc__
    Runner.load_checkpoint = load_checkpoint


def _patch_atomic_local_writes() -> None:
    """Write local files (checkpoints, ``last_checkpoint``) atomically.

    mmengine's ``LocalBackend.put``/``put_text`` write in place, so a run killed while saving leaves a
    truncated ``.pth`` under its final name, and ``last_checkpoint`` may point at it. Writing to a
    temporary file and renaming it means a file under its final name is always complete.
    """
    from mmengine.fileio.backends.local_backend import LocalBackend
    if getattr(LocalBackend.put, '_mux_patched', False):
        return

    def _atomic_write(data: bytes, filepath) -> None:
        filepath = str(filepath)
        directory = osp.dirname(osp.abspath(filepath))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f'.{osp.basename(filepath)}.',
                                   suffix='.partial')
        try:
            with os.fdopen(fd, 'wb') as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, filepath)
        except BaseException:
            if osp.exists(tmp):
                os.remove(tmp)
            raise

    def put(self, obj: bytes, filepath) -> None:
        _atomic_write(obj, filepath)

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        _atomic_write(obj.encode(encoding), filepath)

    put._mux_patched = True
    LocalBackend.put = put
    LocalBackend.put_text = put_text


def _patch_ssd_head_predict() -> None:
    """Give mmdet's ``SSDHead`` the ``loss_cls`` attribute its inference path reads.

    mmdet 3.3.0's ``BaseDenseHead._predict_by_feat_single`` reads ``self.loss_cls``, which
    ``SSDHead`` (softmax, hand-written loss) never defines, so every SSD/SSDLite predict crashes
    with ``'SSDHead' object has no attribute 'loss_cls'`` (open-mmlab/mmdetection issues 11063,
    11305, 11780; fix PR 11524 unreleased). ``None`` makes that check fall through to softmax,
    which is what SSD uses.
    """
    try:
        from mmdet.models.dense_heads import SSDHead
    except ImportError:
        return
    if getattr(SSDHead.__init__, '_mux_patched', False):
        return
    original = SSDHead.__init__

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if not hasattr(self, 'loss_cls'):
            self.loss_cls = None

    __init__._mux_patched = True
    __init__.__doc__ = original.__doc__
    SSDHead.__init__ = __init__


def apply() -> None:
    """Apply every fix once (idempotent)."""
    global _applied
    if _applied:
        return
    _patch_mmengine_checkpoint_loading()
    _patch_atomic_local_writes()
    _patch_ssd_head_predict()
    _applied = True
