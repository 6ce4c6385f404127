"""The ImageNet classifier: its forward, and a bad argument named in a ValueError (not a
negative-dimension RuntimeError, a TypeError from ``**`` or a classifier trained on zeros)."""
import pytest
import torch

from mux_backbones import MUXNetClassifier


def test_logits_and_backbone_arguments():
    model = MUXNetClassifier('tiny', num_classes=7, backbone_cfg=dict(frozen_stages=2)).eval()
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 7)
    assert model.backbone.out_indices == (7, ) and model.backbone.frozen_stages == 2


@pytest.mark.parametrize('kwargs, match', [
    (dict(num_classes=0), 'num_classes must be a positive integer, got 0'),
    (dict(num_classes=2.5), 'num_classes must be a positive integer, got 2.5'),
    (dict(drop_rate=1.0), r'drop_rate must lie in \[0, 1\), got 1.0'),
    (dict(drop_rate=float('nan')), r'drop_rate must lie in \[0, 1\), got nan'),
    (dict(backbone_cfg=[('widen_factor', 2)]), 'backbone_cfg must be a dict of MUXNet arguments'),
    (dict(backbone_cfg=dict(foo=1)), r"backbone_cfg: \['foo'\] are not MUXNet arguments"),
    (dict(backbone_cfg=dict(arch='m')), r"backbone_cfg: \['arch'\] are set by the classifier"),
    (dict(backbone_cfg=dict(out_indices=(4, ))), r"\['out_indices'\] are set by the classifier"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MUXNetClassifier('tiny', **kwargs)
