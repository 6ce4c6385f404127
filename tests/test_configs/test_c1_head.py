"""The C1 configs realise the CSAIL benchmark's C1 head layer for layer with mmseg's FCNHead."""
import os.path as osp

import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from torch import nn

import mux_backbones  # noqa: F401

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def csail_c1(fc_dim, num_class):
    """CSAIL C1: conv3x3(fc_dim -> fc_dim // 4, no bias) + BN + ReLU, then a 1x1 classifier."""
    return nn.Sequential(
        nn.Conv2d(fc_dim, fc_dim // 4, 3, 1, 1, bias=False), nn.BatchNorm2d(fc_dim // 4),
        nn.ReLU(inplace=True), nn.Conv2d(fc_dim // 4, num_class, 1, 1, 0))


def _layers(module):
    kinds = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Dropout, nn.Dropout2d)
    return [m for m in module.modules() if isinstance(m, kinds)]


def _describe(m):
    if isinstance(m, nn.Conv2d):
        return ('conv', m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                m.dilation, m.groups, m.bias is not None)
    if isinstance(m, nn.BatchNorm2d):
        return ('bn', m.num_features)
    return (type(m).__name__, )


def test_c1_heads_match_csail_definition():
    for name, fc_dim, deepsup_in in (('c1_muxnet-m-d8', 200, 160), ('c1_mobilenetv2-d8', 320, 160)):
        cfg = Config.fromfile(osp.join(REPO, f'configs/c1/{name}_4xb4-160k_ade20k-512x512.py'))
        for key in ('decode_head', 'auxiliary_head'):
            cfg.model[key]['norm_cfg'] = dict(type='BN')
        with DefaultScope.overwrite_default_scope('mmseg'):
            from mmseg.registry import MODELS
            decode = MODELS.build(cfg.model.decode_head).eval()
            aux = MODELS.build(cfg.model.auxiliary_head).eval()
        assert decode.dropout is None and aux.dropout is None
        ref = csail_c1(fc_dim, 150).eval()
        # In forward order: the conv block, then the classifier (mmseg registers it first).
        layers = _layers(decode.convs) + _layers(decode.conv_seg)
        assert len(layers) == len(_layers(decode))
        assert [_describe(m) for m in layers] == [_describe(m) for m in _layers(ref)]
        assert _describe(_layers(aux.convs)[0])[1:3] == (deepsup_in, fc_dim // 4)
        # Same weights -> same logits.
        ref[0].weight.data.copy_(decode.convs[0].conv.weight)
        ref[1].load_state_dict(decode.convs[0].bn.state_dict())
        ref[3].load_state_dict(decode.conv_seg.state_dict())
        x = torch.randn(1, fc_dim, 9, 11)
        with torch.no_grad():
            torch.testing.assert_close(decode.forward([None, x]), ref(x))
