"""Every config under configs/ builds and runs one loss and one predict step on CPU."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

import mux_backbones  # noqa: F401  (registers MUXNet)

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIGS = sorted(glob.glob(osp.join(REPO, 'configs', '**', '*.py'), recursive=True))
# Model configs (search configs hold a search, not a model: tests/test_search checks them).
CONFIGS = [c for c in CONFIGS if '_base_' not in c and f'{osp.sep}search{osp.sep}' not in c]


def _strip_pretrained(model_cfg):
    model_cfg.pop('pretrained', None)
    model_cfg.backbone.pop('init_cfg', None)
    model_cfg.backbone['init_cfg'] = None


def _det_batch(size, num_classes):
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData
    h, w = size
    sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1., 1.),
                                         pad_shape=(h, w), batch_input_shape=(h, w)))
    sample.gt_instances = InstanceData(
        bboxes=torch.tensor([[10., 20., 120., 150.], [150., 60., 250., 200.]]),
        labels=torch.tensor([0, num_classes - 1]))
    # Two images: BN on the 1x1 top level needs more than one value per channel.
    return dict(inputs=[torch.randint(0, 255, (3, h, w), dtype=torch.uint8) for _ in range(2)],
                data_samples=[sample, sample.clone()])


def _seg_batch(size):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    h, w = size
    sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
    label = torch.randint(0, 150, (1, h, w))
    label[:, :8] = 255
    sample.gt_sem_seg = PixelData(data=label)
    return dict(inputs=[torch.randint(0, 255, (3, h, w), dtype=torch.uint8) for _ in range(2)],
                data_samples=[sample, sample.clone()])


def _run(model, batch):
    model.train()
    data = model.data_preprocessor(batch, True)
    losses = model(**data, mode='loss')
    total = sum(v.sum() for k, v in losses.items() if 'loss' in k
                for v in (v if isinstance(v, (list, tuple)) else [v]))
    assert torch.isfinite(total)
    total.backward()
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(batch, False)
        return model(**data, mode='predict')


@pytest.mark.parametrize('path', CONFIGS, ids=[osp.relpath(c, REPO) for c in CONFIGS])
def test_config_builds_and_runs(path, outside_interpreter):
    """(As a CPU user runs it: a backbone with ``fused_ops`` on the C++ kernels.)"""
    cfg = Config.fromfile(path)
    assert 'mux_backbones' in cfg.custom_imports['imports']
    _strip_pretrained(cfg.model)
    scope = cfg.default_scope
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope(scope):
        if scope == 'mmdet':
            from mmdet.registry import MODELS
            model = MODELS.build(cfg.model)
            size = (cfg.get('input_size', 320), ) * 2
            num_classes = cfg.model.bbox_head.num_classes
            preds = _run(model, _det_batch(size, num_classes))
            inst = preds[0].pred_instances
            assert inst.bboxes.shape[1] == 4 and len(inst.scores) == len(inst.labels)
        else:
            from mmseg.registry import MODELS
            size = (128, 128)
            cfg.model.data_preprocessor['size'] = size
            model = MODELS.build(cfg.model)
            preds = _run(model, _seg_batch(size))
            assert preds[0].pred_sem_seg.data.shape[-2:] == size


def test_encoder_pieces_give_the_backbones_channels():
    from mux_backbones import muxnet_out_channels
    for name, channels in (('muxnet-m-d8', muxnet_out_channels('m', (5, 6))),
                           ('mobilenetv2-d8', (160, 320))):
        cfg = Config.fromfile(osp.join(REPO, f'configs/_base_/models/encoders/{name}.py'))
        assert (cfg.deepsup_channels, cfg.fc_dim) == channels, name


def test_config_channels_come_from_the_backbone():
    cfg = Config.fromfile(osp.join(REPO, 'configs/ssd/ssdlite_muxnet-m_8xb24-600e_voc0712.py'))
    assert tuple(cfg.model.neck.in_channels) == (112, 1280)
    cfg = Config.fromfile(
        osp.join(REPO, 'configs/pspnet/pspnet_muxnet-m-d8_4xb4-160k_ade20k-512x512.py'))
    assert (cfg.model.auxiliary_head.in_channels, cfg.model.decode_head.in_channels) == (160, 200)


def test_swap_configs_are_at_most_ten_lines():
    for path in glob.glob(osp.join(REPO, 'configs', 'swap', '*.py')):
        with open(path) as f:
            assert len(f.read().strip().splitlines()) <= 10, path
