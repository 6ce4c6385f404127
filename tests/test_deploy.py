"""Fast inference paths give the eval-mode outputs: deploy mode, jit.trace, torch.compile, ONNX."""
import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from mux_backbones import MUXNet, arch_settings
from mux_backbones.deploy import RawOutputs, count_modules, switch_to_deploy
from mux_backbones.layers import InvertedResidual, MixedConv2d, PairwiseGroupConv, PointwiseConv2d
from .helpers import randomise_bn

ALL_ARCHS = sorted(arch_settings)


def _outputs(model, x):
    with torch.no_grad():
        return [o.float() for o in model(x)]


@pytest.mark.parametrize('arch', ALL_ARCHS)
@pytest.mark.parametrize('channels_last', [False, True])
def test_deploy_equals_eval(arch, channels_last):
    model = randomise_bn(MUXNet(arch, out_indices=(2, 4, 7)))
    x = torch.randn(2, 3, 65, 81)
    ref = _outputs(model, x)
    model.switch_to_deploy(channels_last=channels_last)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    for a, b in zip(ref, _outputs(model, x)):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)
    if arch in ('m', 'l'):  # no spatial multiplexing: every BN is folded
        assert count_modules(model, (_BatchNorm, )) == 0
    # every activation that can writes its fresh input in place (as mmcv's ConvModule's do)
    assert all(m.inplace for m in model.modules() if hasattr(m, 'inplace') and
               isinstance(m, (torch.nn.ReLU, torch.nn.SiLU, torch.nn.Hardtanh)))


def test_deploy_applies_to_mmdet_mobilenetv2():
    from mmdet.models.backbones import MobileNetV2
    model = randomise_bn(MobileNetV2(out_indices=(7, )))
    x = torch.randn(1, 3, 64, 64)
    ref = _outputs(model, x)
    switch_to_deploy(model)
    assert count_modules(model, (_BatchNorm, )) == 0
    torch.testing.assert_close(_outputs(model, x)[0], ref[0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('stride,dilation,bias', [(1, 1, True), (2, 1, False), (1, 2, True)])
def test_pairwise_group_conv_equals_grouped_conv(stride, dilation, bias):
    """On channels reordered into pair halves, two depth-wise convs + a roll == the grouped conv."""
    conv = torch.nn.Conv2d(12, 12, 5, stride, 2 * dilation, dilation, groups=6, bias=bias)
    x = torch.randn(2, 12, 15, 13)
    perm = torch.cat([torch.arange(0, 12, 2), torch.arange(1, 12, 2)])
    with torch.no_grad():
        torch.testing.assert_close(PairwiseGroupConv(conv)(x[:, perm]), conv(x)[:, perm],
                                   atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match='2 channels per group'):
        PairwiseGroupConv(torch.nn.Conv2d(12, 12, 3, groups=4))


def test_pairwise_rewrite_keeps_block_outputs():
    """The channel reorder is folded into expand, SE and project: block outputs are unchanged."""
    block = randomise_bn(InvertedResidual(16, 16, (3, ), expand_ratio=3, se_ratio=0.5,
                                          channels_per_group=2))
    x = torch.randn(2, 16, 9, 9)
    with torch.no_grad():
        ref = block(x)
        switch_to_deploy(block)
        assert isinstance(block.depthwise_conv, PairwiseGroupConv)
        torch.testing.assert_close(block(x), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('arch', ['m', 'l'])
def test_no_grouped_conv_left_in_deploy(arch):
    """Every 2-channels-per-group conv of m/l (oneDNN's slow path) is rewritten."""
    model = MUXNet(arch).switch_to_deploy()
    grouped = [m for m in model.modules()
               if isinstance(m, torch.nn.Conv2d) and 1 < m.groups < m.in_channels]
    assert not grouped and count_modules(model, (PairwiseGroupConv, )) > 0


@pytest.mark.parametrize('layout', ['nchw', 'channels_last', 'channel_slice'])
@pytest.mark.parametrize('bias', [True, False])
def test_pointwise_conv_as_matrix_product(layout, bias):
    """The GEMM form of a 1x1 conv equals the conv on any layout (views, slices, batches)."""
    conv = torch.nn.Conv2d(6, 5, 1, bias=bias)
    fast = PointwiseConv2d(6, 5, 1, bias=bias)
    fast.load_state_dict(conv.state_dict())
    x = torch.randn(3, 12, 7, 9)
    if layout != 'nchw':
        x = x.contiguous(memory_format=torch.channels_last)
    x = x[:, :6] if layout == 'channel_slice' else x[:, 6:].contiguous(
        memory_format=torch.channels_last if layout == 'channels_last' else torch.contiguous_format)
    with torch.no_grad():
        out = fast(x)
        torch.testing.assert_close(out, conv(x), atol=1e-5, rtol=1e-5)
    if layout != 'nchw':
        assert out.is_contiguous(memory_format=torch.channels_last)


def test_mixconv_merge_is_exact():
    mixed = MixedConv2d(30, (3, 5, 7), stride=2)
    x = torch.randn(1, 30, 17, 17)
    torch.testing.assert_close(mixed.merged_conv()(x), mixed(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('arch', ALL_ARCHS)
def test_jit_trace(arch):
    model = randomise_bn(MUXNet(arch, out_indices=(4, 7)))
    x = torch.randn(1, 3, 96, 96)
    ref = _outputs(model, x)
    with torch.no_grad():
        traced = torch.jit.trace(model.switch_to_deploy(), x)
    for a, b in zip(ref, _outputs(traced, x)):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)


def test_torch_compile_tiny():
    model = randomise_bn(MUXNet('tiny', out_indices=(4, 7)))
    x = torch.randn(1, 3, 64, 64)
    ref = _outputs(model, x)
    compiled = torch.compile(model.switch_to_deploy(), backend='aot_eager')
    for a, b in zip(ref, _outputs(compiled, x)):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)


def _onnx_roundtrip(module, x, path):
    ort = pytest.importorskip('onnxruntime')
    pytest.importorskip('onnx')
    # The exporter restores the wrapper's mode afterwards, so a wrapper left in train mode would
    # flip every submodule back to training.
    module.eval()
    with torch.no_grad():
        torch.onnx.export(module, (x, ), str(path), input_names=['input'], opset_version=17,
                          dynamo=False)
        ref = module(x)
    ref = list(ref) if isinstance(ref, (list, tuple)) else [ref]
    sess = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    outs = sess.run(None, {'input': x.numpy()})
    assert len(outs) == len(ref)
    for a, b in zip(ref, outs):
        torch.testing.assert_close(torch.from_numpy(b), a.float(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('arch', ALL_ARCHS)
def test_onnx_backbone(arch, tmp_path):
    model = randomise_bn(MUXNet(arch, out_indices=(4, 7))).switch_to_deploy()
    _onnx_roundtrip(model, torch.randn(1, 3, 97, 131), tmp_path / f'{arch}.onnx')


def _dense_model(task):
    """SSDLite-MUXNet-m or PPM-MUXNet-m-d8 from the toy configs (random BN statistics), and
    the input size."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope

    from tests.test_tools.helpers import REPO
    if task == 'det':
        from mmdet.registry import MODELS
        cfg = Config.fromfile(f'{REPO}/configs/ssd/ssdlite_muxnet-m_1xb8-300it_toyvoc.py')
        size = (320, 320)
    else:
        from mmseg.registry import MODELS
        cfg = Config.fromfile(
            f'{REPO}/configs/pspnet/pspnet_muxnet-m-d8_1xb4-220it_toyade-192x192.py')
        size = (96, 144)  # PPM's adaptive pools export only when scales divide the map
    cfg.model.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = MODELS.build(cfg.model)
    return randomise_bn(model), size


@pytest.mark.parametrize('task', ['det', 'seg'])
def test_onnx_detector_and_segmentor(task, tmp_path, outside_interpreter):
    model, size = _dense_model(task)
    model = switch_to_deploy(model)
    _onnx_roundtrip(RawOutputs(model), torch.randn(1, 3, *size), tmp_path / f'{task}.onnx')


@pytest.mark.parametrize('fused_ops', [None, True])
@pytest.mark.parametrize('task', ['det', 'seg'])
def test_deploy_detector_and_segmentor_equal_eval(task, fused_ops, outside_interpreter):
    """Whole models in channels-last deploy mode (necks and heads fused too; with ``fused_ops``
    on the CPU kernels, every 1x1 conv of the heads in its kernel form) give the same raw head
    outputs as in eval mode, on channels-last input and (the kernel forms) on NCHW input."""
    model, size = _dense_model(task)
    x = torch.randn(2, 3, *size)
    ref = _outputs(RawOutputs(model), x)
    switch_to_deploy(model, channels_last=True, fused_ops=fused_ops)
    inputs = [x.contiguous(memory_format=torch.channels_last)] + ([x] if fused_ops else [])
    if fused_ops:  # every 1x1 conv, backbone, neck and heads
        pointwise = [m for m in model.modules() if isinstance(m, PointwiseConv2d)]
        assert len(pointwise) > 30 and all(m.kernel_form for m in pointwise)
    for inp in inputs:
        out = _outputs(RawOutputs(model), inp)
        assert len(out) == len(ref)
        for a, b in zip(ref, out):
            torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('arch', ['xs', 'm'])
def test_deploy_equals_eval_dilated(arch):
    model = randomise_bn(MUXNet(arch, output_stride=8, out_indices=(4, 6)))
    x = torch.randn(1, 3, 64, 80)
    ref = _outputs(model, x)
    model.switch_to_deploy()
    for a, b in zip(ref, _outputs(model, x)):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)


def test_stock_deploy_of_a_fused_ops_model_calls_no_op(outside_interpreter):
    """``switch_to_deploy(model)`` (the stock forms) of a model built with ``fused_ops=True``, as
    the CPU toy configs build it: no layer left calling the ops -- here the dilated MixConvs
    that keep their kernel groups -- so tracing and ONNX export take it; the eval outputs."""
    model = randomise_bn(MUXNet('tiny', output_stride=8, out_indices=(6, ), fused_ops=True))
    x = torch.randn(1, 3, 48, 40)
    ref = _outputs(model, x)
    switch_to_deploy(model)
    assert any(isinstance(m, MixedConv2d) for m in model.modules())  # groups kept
    assert not any(getattr(m, 'fused_ops', False) for m in model.modules()
                   if m is not model)
    traced = torch.jit.trace(model, x)
    assert 'mux_backbones::' not in str(traced.inlined_graph)
    for a, b in zip(ref, _outputs(traced, x)):
        torch.testing.assert_close(b, a, atol=1e-4, rtol=1e-4)
