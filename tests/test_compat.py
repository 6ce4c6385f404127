"""The upstream fixes of :mod:`mux_backbones.compat`, each checked by the breakage it mends."""
import argparse

import numpy as np
import pytest
import torch

from mux_backbones import compat
from mux_backbones.ops._triton import HAS_TRITON, interpreting


@pytest.mark.skipif(not (HAS_TRITON and interpreting()), reason='needs Triton\'s interpreter')
def test_interpreter_takes_a_kernel_argument_as_loop_bound():
    """triton-lang/triton issue 9171: under numpy >= 2.4, Triton 3.6's interpreter could not turn
    a kernel's integer argument into a ``range`` bound."""
    import triton
    import triton.language as tl

    @triton.jit
    def prefix_sums(out_ptr, count, stop):
        start = tl.program_id(0) * count
        total = 0
        for j in tl.range(start, tl.minimum(start + count, stop)):
            total += j
        tl.store(out_ptr + tl.program_id(0), total)

    out = torch.zeros(4, dtype=torch.int32)
    prefix_sums[(4, )](out, 3, 10)
    assert out.tolist() == [0 + 1 + 2, 3 + 4 + 5, 6 + 7 + 8, 9]


def test_nms_takes_half_precision_boxes_and_scores():
    """open-mmlab/mmcv issue 1663: the CPU NMS refused 16-bit boxes (as autocast hands them)."""
    import importlib

    from mmcv.ops import batched_nms
    nms = importlib.import_module('mmcv.ops.nms').nms  # what batched_nms calls
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    for dtype in (torch.float16, torch.bfloat16):
        dets, keep = nms(boxes.to(dtype), scores.to(dtype), 0.5)
        assert dets.dtype == dtype and keep.tolist() == [0, 2]
        dets, keep = batched_nms(boxes.to(dtype), scores.to(dtype), torch.tensor([0, 0, 1]),
                                 dict(type='nms', iou_threshold=0.5))
        assert dets.dtype == dtype and keep.tolist() == [0, 2]


def test_ssd_head_has_the_attribute_its_predict_reads():
    """open-mmlab/mmdetection issue 11063: SSDHead's predict read a ``loss_cls`` it never set."""
    from mmdet.models.dense_heads import SSDHead
    head = SSDHead(num_classes=3, in_channels=(8, 8, 8), anchor_generator=dict(
        type='SSDAnchorGenerator', scale_major=False, input_size=64, strides=[8, 16, 32],
        ratios=[[2], [2], [2]], min_sizes=[8, 16, 32], max_sizes=[16, 32, 64]))
    assert head.loss_cls is None


def test_mmengine_config_lookup_does_not_warn_about_pkg_resources():
    """open-mmlab/mmengine#1676: mmengine 0.10.7 imports ``pkg_resources`` (deprecated) to find
    ``mmdet::`` base configs; a tool's output no longer starts with that warning, twice."""
    import subprocess
    import sys
    code = ('import mux_backbones\n'
            'from mmengine.utils import is_installed\n'
            'assert is_installed("mmdet")\n')
    proc = subprocess.run([sys.executable, '-W', 'default', '-c', code], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert 'pkg_resources' not in proc.stderr, proc.stderr


def test_apply_is_idempotent():
    import importlib
    nms_module = importlib.import_module('mmcv.ops.nms')
    before = nms_module.nms
    compat.apply()
    compat._patch_mmcv_nms_low_precision()
    compat._patch_triton_interpreter_index()
    assert nms_module.nms is before


@pytest.mark.parametrize('op, factor, shape, expected', [
    ('pixel_unshuffle', 2, (0, 3, 6, 4), (0, 12, 3, 2)),
    ('pixel_shuffle', 2, (0, 12, 3, 2), (0, 3, 6, 4)),
    ('pixel_unshuffle', 3, (2, 0, 6, 9), (2, 0, 2, 3)),
    ('pixel_shuffle', 7, (0, 49, 1, 2), (0, 1, 7, 14)),  # (49 * (1 / 49) is 0.999... in floats)
])
def test_pixel_shuffles_of_empty_maps_have_the_documented_shape(op, factor, shape, expected):
    """An empty batch through the spatial multiplexing's folds: the documented shape forward, the
    input's shape backward (torch's CPU op keeps the input's shape: compat.pixel_unshuffle)."""
    x = torch.randn(shape, requires_grad=True)
    y = getattr(compat, op)(x, factor)
    assert y.shape == expected
    assert y.shape == getattr(torch.nn.functional, op)(x.to('meta'), factor).shape
    y.sum().backward()
    assert x.grad.shape == x.shape


def test_pixel_shuffles_keep_torchs_results_and_checks():
    x = torch.randn(2, 8, 6, 4)
    torch.testing.assert_close(compat.pixel_shuffle(compat.pixel_unshuffle(x, 2), 2), x)
    with pytest.raises(RuntimeError):
        compat.pixel_unshuffle(torch.randn(0, 3, 5, 4), 2)  # 5 rows do not fold by 2


def test_mmdet_and_mmseg_inference_apis_read_a_training_checkpoint(tmp_path):
    """A run's checkpoint pickles mmengine's message hub (HistoryBuffer, numpy values), which
    torch's default weights-only loading refuses: mmdet's ``init_detector`` and every other
    mmengine load must read it, and still refuse a global outside mmengine's few."""
    from mmengine.logging import HistoryBuffer
    from mmengine.runner.checkpoint import CheckpointLoader, _load_checkpoint
    hub = HistoryBuffer()
    hub.update(np.float64(0.5))
    path = str(tmp_path / 'iter_1.pth')
    torch.save(dict(state_dict=dict(w=torch.ones(2)), message_hub=dict(log_scalars=dict(
        loss=hub)), meta=dict(iter=1)), path)
    checkpoint = _load_checkpoint(path, map_location='cpu')
    assert checkpoint['message_hub']['log_scalars']['loss'].current() == 0.5
    refused = str(tmp_path / 'refused.pth')
    torch.save(dict(state_dict=dict(w=torch.ones(2)), meta=argparse.Namespace(a=1)), refused)
    with pytest.raises(Exception, match='Namespace'):
        CheckpointLoader.load_checkpoint(refused, map_location='cpu')
