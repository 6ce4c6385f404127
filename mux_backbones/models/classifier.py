"""ImageNet classifier around the MUXNet backbone (the paper's Table 1 networks).

Used to convert the official ImageNet checkpoints, to count params/MAdds against the paper and
to produce ``backbone.``-prefixed weights for ``init_cfg=dict(type='Pretrained', ...)``.
"""
import inspect
from typing import Optional

import torch
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from torch import nn

from ..backbones.muxnet import MUXNet
from ..utils.arguments import check_positive_int, is_real


class LinearClsHead(nn.Module):
    """Global average pool -> dropout -> fully connected classifier.

    Args:
        in_channels (int): Channels of the pooled feature.
        num_classes (int): Number of classes.
        drop_rate (float): Dropout before the classifier. Default: 0.2 (the official training).
    """

    def __init__(self, in_channels: int, num_classes: int, drop_rate: float = 0.2):
        super().__init__()
        check_positive_int('LinearClsHead', 'num_classes', num_classes)
        # a rate of 1 would train the classifier on zeros
        if not (is_real(drop_rate) and 0 <= drop_rate < 1):
            raise ValueError(f'LinearClsHead: drop_rate must lie in [0, 1), got {drop_rate!r}')
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(x.mean((2, 3))))


@MODELS.register_module()
class MUXNetClassifier(BaseModule):
    """MUXNet backbone with the ImageNet classification head.

    Args:
        arch (str | dict): MUXNet arch. Default: ``'m'``.
        num_classes (int): Number of classes. Default: 1000.
        drop_rate (float): Dropout before the classifier. Default: 0.2.
        backbone_cfg (dict, optional): Extra keyword arguments for :class:`MUXNet`, other than
            ``arch`` and ``out_indices`` (the classifier's own: the head reads output 7).
        init_cfg (dict, optional): Initialization config.
    """

    def __init__(self, arch='m', num_classes: int = 1000, drop_rate: float = 0.2,
                 backbone_cfg: Optional[dict] = None, init_cfg=None):
        super().__init__(init_cfg)
        if backbone_cfg is None:
            backbone_cfg = {}
        if not isinstance(backbone_cfg, dict):
            raise ValueError(f'backbone_cfg must be a dict of MUXNet arguments, got '
                             f'{backbone_cfg!r}')
        unknown = sorted(set(backbone_cfg) - set(inspect.signature(MUXNet).parameters))
        if unknown:
            raise ValueError(f'backbone_cfg: {unknown} are not MUXNet arguments')
        own = sorted({'arch', 'out_indices'} & set(backbone_cfg))
        if own:
            raise ValueError(f'backbone_cfg: {own} are set by the classifier (arch: its own '
                             f'argument; out_indices: the head reads output 7)')
        self.backbone = MUXNet(arch=arch, out_indices=(7, ), **backbone_cfg)
        self.head = LinearClsHead(self.backbone.out_channels[0], num_classes, drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)[0])
