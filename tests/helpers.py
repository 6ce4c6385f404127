"""Helpers the test modules share."""
import torch
from torch.nn.modules.batchnorm import _BatchNorm


def randomise_bn(model):
    """``model`` in eval mode with non-trivial BN statistics and affine parameters (seeded), so
    folding them into the convs is tested for real."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    model.eval()  # not chained: mmdet's MobileNetV2.train() returns None
    return model
