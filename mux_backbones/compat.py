"""Fixes for known breakages of the pinned OpenMMLab stack and of Triton's CPU interpreter,
applied once on import.

Only fixes of upstream bugs live here. Each is guarded (it applies once, only where the bug can
bite) and names the upstream issue. Nothing here edits installed files; everything is a runtime
patch of one named function.
"""
import functools
import pickle
from typing import TYPE_CHECKING, List

if TYPE_CHECKING:
    import torch

_applied = False


# The statistics HistoryBuffer pickles into every message hub, by name. mmengine pickles them as
# ``getattr(HistoryBuffer, '<name>')`` (protocol 2 has no other way to name a method).
_HISTORY_BUFFER_STATISTICS = ('min', 'max', 'current', 'mean')


def _history_buffer_getattr(obj, name):
    """Stands in for ``builtins.getattr`` while mmengine checkpoints are unpickled.

    It answers the only look-ups those checkpoints make -- HistoryBuffer's four built-in statistics
    methods, which the class holds anyway -- and refuses every other attribute of every other
    object, so a crafted file cannot reach any other callable through it.
    """
    from mmengine.logging.history_buffer import HistoryBuffer
    if obj is HistoryBuffer and name in _HISTORY_BUFFER_STATISTICS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(f'refused getattr({obj!r}, {name!r}) in a checkpoint: only '
                                 f'HistoryBuffer statistics {_HISTORY_BUFFER_STATISTICS} may be '
                                 f'looked up')


def _mmengine_checkpoint_globals() -> List[object]:
    """Data types mmengine 0.10.7 pickles into its own training checkpoints, and nothing more."""
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar
    dtypes = [type(np.dtype(t)) for t in ('float64', 'float32', 'int64', 'int32', 'bool')]
    # ``builtins.getattr`` itself is not admitted: the name resolves to the narrow stand-in above.
    return [HistoryBuffer, _reconstruct, scalar, np.ndarray, np.dtype, *dtypes,
            (_history_buffer_getattr, 'builtins.getattr')]


def mmengine_checkpoint_types():
    """Context manager: weights-only loading that also admits mmengine's own checkpoint types.

    For code that reads a run's training checkpoints without mmengine's loader (which has it, see
    :func:`_patch_mmengine_checkpoint_loading`), e.g. the checks of
    :func:`mux_backbones.engine.checkpoint.read_checkpoint`.
    """
    import torch
    return torch.serialization.safe_globals(_mmengine_checkpoint_globals())


def _patch_mmengine_checkpoint_loading() -> None:
    """Let mmengine read its own checkpoints, wherever it loads one.

    Under torch >= 2.6, mmengine 0.10.7 loads with torch's default ``weights_only=True``, which
    rejects the HistoryBuffer and numpy objects its message hub pickles into every training
    checkpoint (open-mmlab/mmengine PR 1670, unreleased). So resuming failed, and ``load_from``,
    the checkpoint hook's ``published_keys`` (publishing the last checkpoint after training),
    and mmdet's and mmseg's own inference APIs (``init_detector``, ``init_model``, the
    inferencers) given a checkpoint of a training run. All of them load through
    ``CheckpointLoader.load_checkpoint``, so that one call is patched: its loading stays
    weights-only -- no arbitrary unpickling -- with only those few data types allow-listed, and
    only for its duration. This is deliberately narrower than
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``, which disables the protection process-wide.
    """
    import torch
    from mmengine.runner.checkpoint import CheckpointLoader
    original = CheckpointLoader.__dict__['load_checkpoint'].__func__
    if getattr(original, '_mux_patched', False) or not hasattr(torch.serialization,
                                                               'safe_globals'):
        return

    @functools.wraps(original)
    def load_checkpoint(cls, *args, **kwargs):
        with mmengine_checkpoint_types():
            return original(cls, *args, **kwargs)

    load_checkpoint._mux_patched = True
    CheckpointLoader.load_checkpoint = classmethod(load_checkpoint)


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


def _patch_mmcv_nms_low_precision() -> None:
    """Run mmcv's NMS in float32 when boxes or scores come in half or bfloat16.

    Under autocast (``--amp``, or bf16 inference on CPU) SSD's boxes and scores reach
    ``mmcv.ops.nms`` in 16 bits; its CPU kernel accepts only float32 and stops with ``expected
    scalar type Float but found BFloat16``, and half-precision NMS suppresses wrongly where it does
    run (open-mmlab/mmcv issue 1663). Boxes and scores are cast to float32 for the op and the
    detections cast back to the boxes' dtype. ``batched_nms`` looks ``nms`` up in its module, so
    the one patch covers both.
    """
    import importlib

    import torch

    # ``mmcv.ops.nms`` the attribute is the function; the module is what batched_nms reads.
    nms_module = importlib.import_module('mmcv.ops.nms')
    if getattr(nms_module.nms, '_mux_patched', False):
        return
    original = nms_module.nms
    low = (torch.float16, torch.bfloat16)

    @functools.wraps(original)
    def nms(boxes, scores, *args, **kwargs):
        dtype = boxes.dtype if isinstance(boxes, torch.Tensor) else None
        if dtype not in low and getattr(scores, 'dtype', None) not in low:
            return original(boxes, scores, *args, **kwargs)
        dets, keep = original(boxes.float(), scores.float(), *args, **kwargs)
        return dets.to(dtype), keep

    nms._mux_patched = True
    nms_module.nms = nms


def _patch_triton_interpreter_index() -> None:
    """Let Triton's CPU interpreter use a runtime integer as a loop bound under numpy >= 2.4.

    Triton 3.6's interpreter (the Triton torch 2.11 ships with) converts a scalar to a Python
    integer with ``int()`` of a one-element array; numpy 2.4 refuses that for arrays of one
    dimension, so every ``range``/``tl.range`` whose bound is a kernel argument stops with ``only
    0-dimensional arrays can be converted to Python scalars`` (triton-lang/triton issue 9171,
    fixed upstream by PR 9172 after 3.6). The kernels compiled for a GPU are not affected; the
    interpreter (``TRITON_INTERPRET=1``, how the tests check the kernels) is. Applied only where
    that interpreter is in use and its conversion is the unfixed one.
    """
    from .ops._triton import HAS_TRITON, interpreting
    if not (HAS_TRITON and interpreting()):
        return
    import inspect

    import numpy as np
    from triton.runtime import interpreter
    original = interpreter._patch_lang_tensor
    if getattr(original, '_mux_patched', False):
        return
    try:
        unfixed = 'int(self.handle.data)' in inspect.getsource(original)
    except (OSError, TypeError):  # no source to read: leave it as it is
        return
    if not unfixed:
        return

    @functools.wraps(original)
    def _patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, '__index__', lambda self: int(np.asarray(self.handle.data).item()))

    _patch_lang_tensor._mux_patched = True
    interpreter._patch_lang_tensor = _patch_lang_tensor


def pixel_unshuffle(x: 'torch.Tensor', downscale_factor: int) -> 'torch.Tensor':
    """``F.pixel_unshuffle`` with the documented output shape, and gradient, for an input without
    elements (an empty batch).

    On CPU tensors torch returns a copy of a zero-element input in the *input's* shape (``(0, C,
    H, W)`` stays ``(0, C, H, W)`` where ``(0, 4C, H/2, W/2)`` is documented and what CUDA, meta
    and ``torch.compile`` give), so the group-wise conv after it fails on the channel count
    (pytorch/pytorch PR 192816, open; the early return came with PR 86262). ``pixel_shuffle``'s
    forward is right but its backward is this op, hence :func:`pixel_shuffle`. Without elements
    the result is a reshape (a view: autograd reaches the input); otherwise torch's op.
    """
    import torch.nn.functional as F
    y = F.pixel_unshuffle(x, downscale_factor)  # (its shape checks stay torch's)
    if x.numel():
        return y
    *lead, c, h, w = x.shape
    r = downscale_factor
    return x.reshape(*lead, c * r * r, h // r, w // r)


def pixel_shuffle(x: 'torch.Tensor', upscale_factor: int) -> 'torch.Tensor':
    """``F.pixel_shuffle`` whose gradient has the input's shape for an input without elements
    (its backward is the ``pixel_unshuffle`` of :func:`pixel_unshuffle`'s upstream bug)."""
    import torch.nn.functional as F
    y = F.pixel_shuffle(x, upscale_factor)
    if x.numel():
        return y
    *lead, c, h, w = x.shape
    r = upscale_factor
    return x.reshape(*lead, c // (r * r), h * r, w * r)


def _quiet_mmengine_pkg_resources() -> None:
    """mmengine 0.10.7 finds ``mmdet::``/``mmseg::`` base configs with ``pkg_resources``, whose
    import warns that it is deprecated, twice, at the top of every tool's output with a config.
    The user cannot act on it: mmcv's build needs ``setuptools<82``, which still has the module
    (tools/install.sh). Upstream moved to ``importlib`` (open-mmlab/mmengine#1676, after 0.10.7),
    so only this one message is silenced, and only while mmengine has no such fix."""
    import warnings

    from mmengine.utils import package_utils
    if 'pkg_resources' not in package_utils.is_installed.__code__.co_names:
        return
    warnings.filterwarnings('ignore', message='pkg_resources is deprecated as an API',
                            category=UserWarning)


def apply() -> None:
    """Apply every fix once (idempotent)."""
    global _applied
    if _applied:
        return
    _patch_mmengine_checkpoint_loading()
    _patch_mmcv_nms_low_precision()
    _patch_ssd_head_predict()
    _patch_triton_interpreter_index()
    _quiet_mmengine_pkg_resources()
    _applied = True
