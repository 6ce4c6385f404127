"""Generic tests over every registered MUXNet arch, plus the OpenMMLab backbone contract."""
import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from mux_backbones import MUXNet, arch_settings, muxnet_out_channels

ALL_ARCHS = sorted(arch_settings)
ALL_OUT = tuple(range(8))


def _x(h, w, n=1):
    torch.manual_seed(0)
    return torch.randn(n, 3, h, w)


@pytest.mark.parametrize('arch', ALL_ARCHS)
def test_forward_shapes_channels_no_nan(arch):
    model = MUXNet(arch, out_indices=ALL_OUT).eval()
    assert model.out_channels == muxnet_out_channels(arch, ALL_OUT)
    reductions = [2, 4, 8, 16, 16, 32, 32, 32]
    with torch.no_grad():
        for h, w in ((64, 64), (97, 131)):
            outs = model(_x(h, w))
            assert len(outs) == 8
            for out, info, red in zip(outs, model.feature_info, reductions):
                assert out.shape[1] == info['num_chs']
                assert info['reduction'] == red
                assert out.shape[-2:] == (-(-h // red), -(-w // red))
                assert torch.isfinite(out).all()


@pytest.mark.parametrize('arch', ALL_ARCHS)
def test_every_parameter_gets_a_gradient(arch):
    model = MUXNet(arch, out_indices=(4, 7)).train()
    outs = model(_x(64, 64, n=2))
    sum(o.float().pow(2).mean() for o in outs).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f'{name} has no gradient'
        assert torch.isfinite(p.grad).all(), f'{name} has a non-finite gradient'


@pytest.mark.parametrize('fused_ops', [False, True])
@pytest.mark.parametrize('arch', ALL_ARCHS)
def test_channels_last_model_keeps_channels_last_in_training(arch, fused_ops, outside_interpreter):
    """Every layer's output of a channels-last model in training is channels-last (a layer that
    hands on an NCHW map makes each later conv, and its gradient, convert layouts), and the
    outputs equal the NCHW model's."""
    model = MUXNet(arch, out_indices=(4, 7), fused_ops=fused_ops).train()
    x = _x(64, 64, n=2)
    ref = model(x)
    model = model.to(memory_format=torch.channels_last)
    nchw = []

    def check(module, args, out):
        if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[-2:].numel() > 1 and \
                not out.is_contiguous(memory_format=torch.channels_last):
            nchw.append(type(module).__name__)

    for module in model.modules():
        module.register_forward_hook(check)
    outs = model(x.contiguous(memory_format=torch.channels_last))
    assert not nchw, f'layers returning other layouts: {sorted(set(nchw))}'
    for out, r in zip(outs, ref):
        torch.testing.assert_close(out, r, atol=1e-4, rtol=1e-4)
    sum(o.pow(2).mean() for o in outs).backward()


@pytest.mark.parametrize('hw', [(300, 300), (513, 513), (97, 131)])
@pytest.mark.parametrize('output_stride', [8, 16, 32])
def test_odd_sizes_and_output_strides(hw, output_stride):
    model = MUXNet('tiny', out_indices=(6, ), output_stride=output_stride).eval()
    with torch.no_grad():
        out = model(_x(*hw))[0]
    assert out.shape[-2:] == tuple(-(-s // output_stride) for s in hw)


def test_strides_and_dilations_equal_output_stride_shorthand():
    a = MUXNet('tiny', out_indices=(6, ), output_stride=8)
    b = MUXNet('tiny', out_indices=(6, ), strides=(1, 2, 2, 1, 1, 1, 1),
               dilations=(1, 1, 1, 2, 2, 4, 4))
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    x = _x(64, 64)
    torch.testing.assert_close(a(x)[0], b(x)[0])
    assert a.feature_info[0]['reduction'] == 8


def test_with_cp_gives_same_outputs_and_grads():
    torch.manual_seed(0)
    plain = MUXNet('tiny', out_indices=(2, 7)).train()
    ckpt = MUXNet('tiny', out_indices=(2, 7), with_cp=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x1 = _x(48, 48, n=2).requires_grad_()
    x2 = x1.detach().clone().requires_grad_()
    o1, o2 = plain(x1), ckpt(x2)
    for a, b in zip(o1, o2):
        torch.testing.assert_close(a, b)
    sum(o.sum() for o in o1).backward()
    sum(o.sum() for o in o2).backward()
    torch.testing.assert_close(x1.grad, x2.grad)
    for (n, p), (_, q) in zip(plain.named_parameters(), ckpt.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=n)


@pytest.mark.parametrize('frozen_stages', [-1, 0, 1, 4, 7])
def test_frozen_stages(frozen_stages):
    model = MUXNet('tiny', out_indices=ALL_OUT, frozen_stages=frozen_stages)
    model.train()
    # As mmdet's MobileNetV2: the stem and stages 1..i; the head conv is never frozen.
    frozen = [] if frozen_stages < 0 else \
        ['stem'] + [f'layer{i}' for i in range(1, frozen_stages + 1)]
    for name in ['stem'] + model.layers:
        module = getattr(model, name)
        is_frozen = name in frozen
        for p in module.parameters():
            assert p.requires_grad is not is_frozen, name
        for m in module.modules():
            if isinstance(m, _BatchNorm):
                assert m.training is not is_frozen, name


def test_norm_eval_keeps_bn_in_eval():
    model = MUXNet('tiny', norm_eval=True)
    model.train()
    assert all(not m.training for m in model.modules() if isinstance(m, _BatchNorm))
    assert model.training


def test_widen_factor_and_truncation():
    model = MUXNet('m', widen_factor=0.5, out_indices=(2, 4))
    assert not hasattr(model, 'conv_head') and model.layers[-1] == 'layer5'
    assert model.out_channels == muxnet_out_channels('m', (2, 4), widen_factor=0.5)
    with torch.no_grad():
        outs = model.eval()(_x(64, 64))
    assert tuple(o.shape[1] for o in outs) == model.out_channels


def test_custom_norm_and_act():
    model = MUXNet('tiny', norm_cfg=dict(type='GN', num_groups=4),
                   act_cfg=dict(type='HSwish'), out_indices=(3, ))
    with torch.no_grad():
        assert model(_x(32, 32))[0].shape[1] == model.out_channels[0]


@pytest.mark.parametrize('kwargs, match', [
    (dict(arch='xxl'), 'unknown MUXNet arch'),
    (dict(out_indices=(8, )), 'out of range'),
    (dict(out_indices=()), 'at least one'),
    (dict(frozen_stages=8), r'frozen_stages must be in range\(-1, 8\)'),
    (dict(frozen_stages=-2), r'frozen_stages must be in range\(-1, 8\)'),
    (dict(out_indices=(7, 4)), 'strictly increasing'),
    (dict(out_indices=(4, 4)), 'strictly increasing'),
    (dict(arch=dict(stem_channels=8, head_channels=16)), 'arch dict lacks "stages"'),
    (dict(arch=dict(stem_channels=8, head_channels=16, stages=[['ds_r1_k3_s1_c8']])),
     '7 non-empty lists'),
    (dict(pretrained='x.pth', init_cfg=dict(type='Pretrained', checkpoint='y.pth')),
     'not both'),
    (dict(output_stride=4), 'output_stride'),
    (dict(output_stride=8, strides=(1, 2, 2, 2, 1, 2, 1)), 'not both'),
    (dict(strides=(1, 2)), '7 entries'),
    (dict(widen_factor=0), 'widen_factor'),
    (dict(widen_factor=float('inf')), 'positive finite number'),
    (dict(widen_factor='1.0'), 'positive finite number'),
    # Too narrow to multiplex over three scales: the message names the block and the width.
    (dict(arch='xs', widen_factor=0.35),
     r'MUXNet-xs: block layer2.1 at widen_factor 0.35: SpatialMuxConv: 12 channels'),
    (dict(fused_ops='auto'), 'fused_ops must be True or False'),
    # Values Python would let through where an int or a range is meant.
    (dict(out_indices=7), 'sequence of output indices'),
    (dict(out_indices=(True, )), 'out of range'),
    (dict(frozen_stages=3.0), 'frozen_stages must be in range'),
    (dict(frozen_stages=True), 'frozen_stages must be in range'),
    (dict(strides=(1, 2, 2, 2, 1, 2, 1.5)), 'strides must be 1 or 2'),
    (dict(dilations=(1, 1, 1, 1, 1, 1, 1.5)), 'dilations integers'),
    (dict(output_stride='8'), "got '8'"),
    (dict(drop_path_rate=1.0), r'drop_path_rate must be in \[0, 1\)'),
    (dict(drop_path_rate=-0.1), 'drop_path_rate'),
    (dict(drop_path_rate=float('nan')), 'drop_path_rate'),
    (dict(norm_cfg='BN'), 'norm_cfg must be a dict'),
    (dict(act_cfg='SiLU'), 'act_cfg must be a dict'),
])
def test_bad_arguments(kwargs, match):
    kwargs.setdefault('arch', 'tiny')
    with pytest.raises(ValueError, match=match):
        MUXNet(**kwargs)


def test_pretrained_init_cfg_loads_weights(tmp_path):
    src = MUXNet('tiny')
    state = {f'backbone.{k}': v for k, v in src.state_dict().items()}
    path = tmp_path / 'tiny.pth'
    torch.save(dict(state_dict=state), path)
    dst = MUXNet('tiny', init_cfg=dict(type='Pretrained', checkpoint=str(path),
                                       prefix='backbone.'))
    dst.init_weights()
    for k, v in src.state_dict().items():
        torch.testing.assert_close(dst.state_dict()[k], v)


def test_registered_in_mmdet_and_mmseg_registries():
    from mmdet.registry import MODELS as DET
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS as SEG
    for scope, registry in (('mmdet', DET), ('mmseg', SEG)):
        with DefaultScope.overwrite_default_scope(scope):
            model = registry.build(dict(type='MUXNet', arch='tiny', out_indices=(4, )))
        assert isinstance(model, MUXNet)


def test_zero_init_residual_starts_blocks_as_identity():
    model = MUXNet('tiny', out_indices=(1, ))
    model.init_weights()
    block = model.layer2[0]  # first block of a stage: strided, no residual
    assert not block.has_residual and block.project_conv.norm.weight.abs().sum() > 0
    mux_body = model.layer2[1].body
    assert mux_body.has_residual and torch.all(mux_body.project_conv.norm.weight == 0)
    plain = MUXNet('tiny', out_indices=(1, ), zero_init_residual=False)
    plain.init_weights()
    assert plain.layer2[1].body.project_conv.norm.weight.abs().sum() > 0


def test_dilated_large_kernels_keep_a_3x3_span():
    from mux_backbones.backbones.muxnet import kernel_dilation
    assert [kernel_dilation(k, 4) for k in (3, 5, 7, 9, 11)] == [4, 2, 1, 1, 1]
    assert [kernel_dilation(k, 2) for k in (3, 5)] == [2, 1]
    assert kernel_dilation(11, 1) == 1
    model = MUXNet('m', output_stride=8, out_indices=(5, ))
    convs = model.layer6[0].depthwise_conv.convs
    assert [c.dilation[0] for c in convs] == [4, 2, 1, 1, 1]
    full = MUXNet('m', output_stride=8, out_indices=(5, ), dilate_large_kernels=True)
    assert [c.dilation[0] for c in full.layer6[0].depthwise_conv.convs] == [4] * 5
    # Same weights either way.
    full.load_state_dict(model.state_dict())


def test_frozen_stages_on_a_truncated_backbone():
    # Like mmdet's MobileNetV2: the range does not depend on out_indices; stages that are not
    # built are simply not there to freeze.
    model = MUXNet('tiny', out_indices=(4, ), frozen_stages=7)
    model.train()
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize('arch', ALL_ARCHS)
def test_norm_cfg_none_means_no_norm_anywhere(arch):
    model = MUXNet(arch, out_indices=ALL_OUT, norm_cfg=None)
    norms = [n for n, m in model.named_modules()
             if isinstance(m, (_BatchNorm, torch.nn.GroupNorm, torch.nn.LayerNorm))]
    assert norms == []
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.bias is not None for c in convs), 'a conv without a norm needs its bias'
    with torch.no_grad():
        outs = model.eval()(_x(64, 64))
    assert all(torch.isfinite(o).all() for o in outs)


@pytest.mark.parametrize('arch', ALL_ARCHS)
def test_act_cfg_none_means_no_activation_anywhere(arch):
    from mux_backbones.layers import SqueezeExcite
    model = MUXNet(arch, out_indices=ALL_OUT, act_cfg=None)
    acts = (torch.nn.ReLU, torch.nn.ReLU6, torch.nn.SiLU, torch.nn.Hardswish, torch.nn.GELU)
    assert [n for n, m in model.named_modules() if isinstance(m, acts)] == []
    # SE keeps only its sigmoid gate.
    assert all(isinstance(m.act, torch.nn.Identity)
               for m in model.modules() if isinstance(m, SqueezeExcite))


def test_pretrained_argument_is_deprecated_but_works(tmp_path):
    src = MUXNet('tiny')
    path = tmp_path / 'tiny.pth'
    torch.save(dict(state_dict={f'backbone.{k}': v for k, v in src.state_dict().items()}), path)
    with pytest.warns(DeprecationWarning, match='pretrained is deprecated'):
        dst = MUXNet('tiny', pretrained=str(path))
    assert dst.init_cfg == dict(type='Pretrained', checkpoint=str(path))
    dst.init_weights()
    for k, v in src.state_dict().items():
        torch.testing.assert_close(dst.state_dict()[k], v)


def test_mmseg_encoder_decoder_passes_pretrained():
    from mmengine.config import ConfigDict
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS
    cfg = ConfigDict(type='EncoderDecoder', pretrained='nowhere.pth',
                     backbone=dict(type='MUXNet', arch='tiny', out_indices=(6, )),
                     decode_head=dict(type='FCNHead', in_channels=40, channels=8, num_classes=3))
    with DefaultScope.overwrite_default_scope('mmseg'), pytest.warns(DeprecationWarning):
        model = MODELS.build(cfg)
    assert model.backbone.init_cfg['checkpoint'] == 'nowhere.pth'


def _converted(tmp_path, arch, name='weights.pth', **kwargs):
    src = MUXNet(arch, **kwargs)
    path = tmp_path / name
    torch.save(dict(state_dict={f'backbone.{k}': v for k, v in src.state_dict().items()},
                    meta=dict(arch=arch)), path)
    return src, str(path)


def test_pretrained_of_another_arch_is_refused_naming_a_key(tmp_path):
    from mux_backbones.engine import CheckpointError
    _, path = _converted(tmp_path, 'xs')
    model = MUXNet('tiny', init_cfg=dict(type='Pretrained', checkpoint=path, prefix='backbone.'))
    with pytest.raises(CheckpointError, match=f'checkpoint {path} does not fit the model: .*'
                       r'\(first: "[\w.]+"'):
        model.init_weights()
    # strict=False: load what fits, keep the rest initialised.
    loose = MUXNet('tiny', init_cfg=dict(type='Pretrained', checkpoint=path, strict=False))
    loose.init_weights()


def test_truncated_backbone_loads_a_full_checkpoint(tmp_path):
    src, path = _converted(tmp_path, 'tiny')
    model = MUXNet('tiny', out_indices=(3, ),
                   init_cfg=dict(type='Pretrained', checkpoint=path, prefix='backbone.'))
    model.init_weights()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, src.state_dict()[k])


@pytest.mark.parametrize('arch', ALL_ARCHS)
@pytest.mark.parametrize('output_stride', [8, 32])
def test_stage_plan_is_what_gets_built(arch, output_stride):
    from mux_backbones.backbones import plan_stages
    plan = plan_stages(arch, 0.75, output_stride=output_stride)
    model = MUXNet(arch, widen_factor=0.75, output_stride=output_stride, out_indices=ALL_OUT)
    assert model.out_channels == tuple(plan.channels(i) for i in ALL_OUT)
    assert [f['reduction'] for f in model.feature_info] == [plan.reduction(i) for i in ALL_OUT]
    assert model.stem.conv.out_channels == plan.stem_channels
    assert plan.output_stride == output_stride
    for i, stage in enumerate(plan.stages):
        assert len(getattr(model, f'layer{i + 1}')) == len(stage.blocks)
