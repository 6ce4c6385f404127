"""Deploy (inference) mode: BN folded into convolutions, fewer memory passes, same outputs.

``switch_to_deploy(model)`` rewrites a model in place for inference:

* every conv followed by a BatchNorm (mmcv ``ConvModule``s -- the stem, the 1x1 expand/project
  convs, the head conv -- and the spatial convs of the blocks) becomes one conv with a bias;
* a MixConv (one kernel size per channel group, depth-wise) becomes a single depth-wise conv whose
  smaller kernels are zero-padded to the largest: one kernel launch instead of split + k convs + cat;
* channel multiplexing with a 2-group shuffle of two equal halves writes the processed and the
  copied halves interleaved in one pass (``stack`` + ``flatten``) instead of ``cat`` + shuffle.

It works on any model built from mmcv ``ConvModule``s (mmdet's/mmseg's MobileNetV2 too), so a
benchmark can apply the same mode to a baseline. Outputs equal the eval-mode outputs (tested to
1e-4 for every arch). Spatially multiplexed convs keep their BN: a channel-to-space branch feeds
four output channels from one conv channel, which one folded bias per conv channel cannot express.
"""
from typing import Tuple

import torch
from mmcv.cnn import ConvModule
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .layers.channel_mux import ChannelMux
from .layers.mixed_conv import MixedConv2d


@torch.no_grad()
def fuse_conv_bn(conv: nn.Conv2d, bn: _BatchNorm) -> nn.Conv2d:
    """A conv whose output equals ``bn(conv(x))`` with ``bn`` in eval mode."""
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      conv.padding, conv.dilation, conv.groups, bias=True,
                      padding_mode=conv.padding_mode).to(conv.weight)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else \
        1.0 / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
    fused.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_((bias - bn.running_mean) * scale + shift)
    return fused


@torch.no_grad()
def mixed_to_single_conv(mixed: MixedConv2d) -> nn.Conv2d:
    """Merge a depth-wise MixConv into one depth-wise conv with the largest kernel."""
    convs = list(mixed.convs)
    if any(c.groups != c.in_channels for c in convs) or len({c.stride for c in convs}) > 1 or \
            len({c.dilation for c in convs}) > 1:
        raise ValueError('only a depth-wise MixConv with one stride/dilation can be merged')
    k = max(c.kernel_size[0] for c in convs)
    dilation, stride = convs[0].dilation[0], convs[0].stride[0]
    channels = mixed.out_channels
    merged = nn.Conv2d(channels, channels, k, stride, dilation * (k // 2), dilation,
                       groups=channels, bias=False).to(convs[0].weight)
    merged.weight.zero_()
    start = 0
    for c in convs:
        ck, n = c.kernel_size[0], c.out_channels
        off = (k - ck) // 2
        merged.weight[start:start + n, :, off:off + ck, off:off + ck] = c.weight
        start += n
    return merged


class ConvAct(nn.Module):
    """A fused conv (+ bias) and its activation: what a ConvModule becomes in deploy mode."""

    def __init__(self, conv: nn.Conv2d, act: nn.Module):
        super().__init__()
        self.conv = conv
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


def _fuse_conv_module(module: ConvModule) -> nn.Module:
    if not module.with_norm or not isinstance(module.norm, _BatchNorm) or \
            module.order != ('conv', 'norm', 'act') or not isinstance(module.conv, nn.Conv2d):
        return module
    act = module.activate if module.with_activation else nn.Identity()
    return ConvAct(fuse_conv_bn(module.conv, module.norm), act)


def _slice_bn(bn: _BatchNorm, start: int, end: int) -> nn.BatchNorm2d:
    part = nn.BatchNorm2d(end - start, eps=bn.eps).to(bn.running_mean)
    part.running_mean.copy_(bn.running_mean[start:end])
    part.running_var.copy_(bn.running_var[start:end])
    if bn.affine:
        part.weight.data.copy_(bn.weight[start:end])
        part.bias.data.copy_(bn.bias[start:end])
    return part


def _fuse_block_spatial_conv(block: nn.Module) -> None:
    conv, norm = block.depthwise_conv, block.depthwise_norm
    if isinstance(norm, nn.Identity) or not isinstance(norm, _BatchNorm):
        return
    if isinstance(conv, MixedConv2d):
        mergeable = all(c.groups == c.in_channels for c in conv.convs) and \
            len({c.dilation for c in conv.convs}) == 1
        if not mergeable:  # e.g. per-kernel dilations: fold BN into each kernel group instead
            start = 0
            for i, c in enumerate(conv.convs):
                conv.convs[i] = fuse_conv_bn(c, _slice_bn(norm, start, start + c.out_channels))
                start += c.out_channels
            block.depthwise_norm = nn.Identity()
            return
        conv = mixed_to_single_conv(conv)
    if isinstance(conv, nn.Conv2d):
        block.depthwise_conv = fuse_conv_bn(conv, norm)
        block.depthwise_norm = nn.Identity()


def _interleave_halves(processed: torch.Tensor, copied: torch.Tensor) -> torch.Tensor:
    # cat([p, c], 1) followed by a 2-group channel shuffle == p and c interleaved channel-wise.
    return torch.stack((processed, copied), dim=2).flatten(1, 2)


class FusedChannelMux(nn.Module):
    """Deploy form of :class:`ChannelMux` for two equal halves and a 2-group shuffle."""

    def __init__(self, mux: ChannelMux):
        super().__init__()
        self.body = mux.body
        self.processed = mux.processed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _interleave_halves(self.body(x[:, :self.processed]), x[:, self.processed:])


def switch_to_deploy(model: nn.Module, channels_last: bool = False) -> nn.Module:
    """Rewrite ``model`` in place for inference (see module docstring) and put it in eval mode.

    Args:
        model (nn.Module): A MUXNet backbone/classifier, a detector/segmentor or any model made of
            mmcv ConvModules.
        channels_last (bool): Also convert the weights to channels-last memory format (feed the
            input in channels-last too).

    Returns:
        nn.Module: The same model object.
    """
    model.eval()
    for name, child in list(model.named_children()):
        if isinstance(child, ConvModule):
            setattr(model, name, _fuse_conv_module(child))
        elif isinstance(child, ChannelMux) and child.shuffle_groups == 2 and \
                2 * child.processed == child.channels:
            switch_to_deploy(child.body)
            setattr(model, name, FusedChannelMux(child))
        else:
            switch_to_deploy(child)
    if hasattr(model, 'depthwise_conv') and hasattr(model, 'depthwise_norm'):
        _fuse_block_spatial_conv(model)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    return model


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
