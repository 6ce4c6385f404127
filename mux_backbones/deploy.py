"""Deploy (inference) mode: a walker that puts every layer of a model into its deploy form.

``switch_to_deploy(model)`` rewrites a model in place for inference, same outputs:

* a layer that owns a deploy form (MUXNet's blocks, channel multiplexing, squeeze-excite: their
  ``switch_to_deploy`` methods, next to their training forms in :mod:`mux_backbones.layers`;
  also other libraries' re-parameterisable blocks) switches itself;
* every mmcv ``ConvModule`` (conv -> BN -> act) becomes one conv with a bias and its activation
  (:func:`mux_backbones.layers.conv_bn.deploy_conv_module`) -- so it works on any OpenMMLab model
  (mmdet's/mmseg's MobileNetV2 too), and a benchmark can give a baseline the same treatment.

With ``fused_ops=True`` MUXNet's spatial convs take the fused Triton kernel
(:mod:`mux_backbones.ops.group_conv`); by default the stock-path forms (merged MixConv kernels,
pairwise rewrite of 2-channels-per-group convs), which measured faster for inference on an H200
(docs/speed.md: the kernel is not yet tuned), so the kernel is opt-in. Outputs equal the
eval-mode outputs (tested to 1e-4 for every arch). Spatially multiplexed convs keep their BN: a
channel-to-space branch feeds four output channels from one conv channel, which one folded bias
per conv channel cannot express.
"""
from typing import Optional, Tuple

import torch
from mmcv.cnn import ConvModule
from torch import nn

from .layers.conv_bn import deploy_conv_module


def switch_to_deploy(model: nn.Module, channels_last: bool = False,
                     fused_ops: Optional[bool] = None) -> nn.Module:
    """Rewrite ``model`` in place for inference (see module docstring) and put it in eval mode.

    Args:
        model (nn.Module): A MUXNet backbone/classifier, a detector/segmentor or any model made of
            mmcv ConvModules.
        channels_last (bool): Also convert the weights to channels-last memory format (feed the
            input in channels-last too).
        fused_ops (bool, optional): Use the fused Triton kernels for MUXNet's spatial convs.
            None or False (default): the stock-path forms.

    Returns:
        nn.Module: The same model object.
    """
    fused_ops = bool(fused_ops)
    model.eval()
    if type(model).__module__.startswith('mux_backbones.layers.'):
        model.switch_to_deploy(fused_ops=fused_ops)  # a single layer given directly
    else:
        _walk(model, fused_ops)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def _walk(module: nn.Module, fused_ops: bool) -> None:
    for name, child in list(module.named_children()):
        if isinstance(child, ConvModule):
            setattr(module, name, deploy_conv_module(child))
        elif hasattr(child, 'switch_to_deploy'):
            if type(child).__module__.startswith('mux_backbones.'):
                child.switch_to_deploy(fused_ops=fused_ops)
            else:  # another library's re-parameterisable block (mmpretrain's MobileOne, ...)
                child.switch_to_deploy()
        else:
            _walk(child, fused_ops)


class RawOutputs(nn.Module):
    """A detector/segmentor up to its raw head outputs (``_forward``), as a flat tensor tuple.

    What ONNX export and tracing need: no data samples, no post-processing.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        flat = []

        def walk(out):
            if isinstance(out, (list, tuple)):
                for item in out:
                    walk(item)
            else:
                flat.append(out)

        walk(self.model._forward(x))
        return tuple(flat)


def count_modules(model: nn.Module, types: Tuple[type, ...]) -> int:
    """How many submodules of the given types remain (e.g. BatchNorms after fusing)."""
    return sum(isinstance(m, types) for m in model.modules())
