"""Deploy (inference) mode: BN folded into convolutions, fewer memory passes, same outputs.

``switch_to_deploy(model)`` rewrites a model in place for inference:

* every conv followed by a BatchNorm (mmcv ``ConvModule``s -- the stem, the 1x1 expand/project
  convs, the head conv -- and the spatial convs of the blocks) becomes one conv with a bias; the
  1x1 ones run as a single matrix product on channels-last input (:class:`PointwiseConv2d`);
* a MixConv (one kernel size per channel group, depth-wise) becomes a single depth-wise conv
  whose smaller kernels are zero-padded to the largest: one kernel launch instead of split +
  k convs + cat;
* channel multiplexing with a 2-group shuffle of two equal halves writes the processed and the
  copied halves interleaved in one pass (``stack`` + ``flatten``) instead of ``cat`` + shuffle;
* a group-wise conv with 2 channels per group (the ``dwg2`` convs of channel-multiplexed
  blocks), which oneDNN runs on a slow generic path (4-10x a depth-wise conv of the same size on
  CPU), becomes
  two depth-wise convs and a channel roll. The block's hidden channels are reordered so that the two
  members of every group lie half the channels apart (a permutation folded into the weights of the
  expand conv, the squeeze-excite and the project conv: free at run time);
* squeeze-excite runs its two 1x1 convs on the pooled vector as ``linear`` layers (a conv on a
  1x1 map pays the full conv dispatch for a matrix-vector product).

It works on any model built from mmcv ``ConvModule``s (mmdet's/mmseg's MobileNetV2 too), so a
benchmark can apply the same mode to a baseline. Outputs equal the eval-mode outputs (tested to
1e-4 for every arch). Spatially multiplexed convs keep their BN: a channel-to-space branch feeds
four output channels from one conv channel, which one folded bias per conv channel cannot express.
"""
from typing import Tuple

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .layers.channel_mux import ChannelMux
from .layers.mixed_conv import MixedConv2d
from .layers.squeeze_excite import SqueezeExcite


class PointwiseConv2d(nn.Conv2d):
    """A 1x1, stride-1, ungrouped conv that runs as one matrix product on channels-last input.

    With the channels innermost in memory, a 1x1 conv is ``(N*H*W, C_in) @ (C_in, C_out)`` on a
    view of the input; the BLAS product beats oneDNN's conv on the small maps of a mobile net
    (e.g. 48 vs 110 us for 480 -> 80 channels at 7x7 on 2 CPU threads). Other layouts take the conv.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.stride(1) != 1 or x.shape[1] == 1:
            return super().forward(x)
        b, c, h, w = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(b * h * w, c)  # a view for channels-last input
        weight = self.weight.reshape(self.out_channels, c).t()
        out = rows @ weight if self.bias is None else torch.addmm(self.bias, rows, weight)
        return out.view(b, h, w, self.out_channels).permute(0, 3, 1, 2)


def _is_pointwise(conv: nn.Conv2d) -> bool:
    return conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.groups == 1 and \
        conv.padding in ((0, 0), 0) and conv.padding_mode == 'zeros'


@torch.no_grad()
def fuse_conv_bn(conv: nn.Conv2d, bn: _BatchNorm) -> nn.Conv2d:
    """A conv whose output equals ``bn(conv(x))`` with ``bn`` in eval mode.

    1x1 convs come back as :class:`PointwiseConv2d` (a matrix product on channels-last input).
    """
    conv_type = PointwiseConv2d if _is_pointwise(conv) else nn.Conv2d
    fused = conv_type(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
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


class PairwiseGroupConv(nn.Module):
    """Deploy form of a conv with 2 channels per group, on channels reordered by pair halves.

    Input channel ``j`` and ``j + C/2`` form group ``j`` (see :func:`_pair_halves_permutation`).
    ``own`` holds, per channel, the weight of its own input; ``cross`` the weight each input
    contributes to its partner's output, which a roll by ``C/2`` moves into place.

    Args:
        conv (nn.Conv2d): The group-wise conv (2 in/out channels per group, bias allowed), in the
            original (interleaved) channel order.
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        channels = conv.in_channels
        if not _has_channel_pairs(conv):
            raise ValueError('PairwiseGroupConv needs a conv with 2 channels per group')
        self.half = channels // 2
        self.stride, self.padding, self.dilation = conv.stride, conv.padding, conv.dilation
        # conv.weight[o, i]: output channel o from input (o // 2) * 2 + i.
        weight = conv.weight.detach()
        perm = _pair_halves_permutation(channels)
        first, second = perm[:self.half], perm[self.half:]  # old channels 2g, 2g + 1
        own = torch.cat([weight[first, 0], weight[second, 1]])
        # The cross weight sits at the *input* channel; after the roll it lands on the output.
        cross = torch.cat([weight[second, 0], weight[first, 1]])
        self.own = nn.Parameter(own.unsqueeze(1).contiguous(), requires_grad=False)
        self.cross = nn.Parameter(cross.unsqueeze(1).contiguous(), requires_grad=False)
        bias = conv.bias.detach()[perm] if conv.bias is not None else None
        self.bias = None if bias is None else nn.Parameter(bias, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = 2 * self.half
        own = F.conv2d(x, self.own, self.bias, self.stride, self.padding, self.dilation, channels)
        cross = F.conv2d(x, self.cross, None, self.stride, self.padding, self.dilation, channels)
        return own + torch.roll(cross, self.half, 1)


def _has_channel_pairs(conv: nn.Module) -> bool:
    """Whether ``conv`` is a channel-preserving conv with exactly 2 channels per group."""
    return isinstance(conv, nn.Conv2d) and conv.groups * 2 == conv.in_channels == \
        conv.out_channels


def _pair_halves_permutation(channels: int) -> torch.Tensor:
    """New channel ``j`` = old channel ``perm[j]``: first members of the pairs, then second ones."""
    idx = torch.arange(channels)
    return torch.cat([idx[0::2], idx[1::2]])


def _conv_of(module: nn.Module):
    """The ``nn.Conv2d`` of a plain conv or a fused ``ConvAct``; None for anything else."""
    if isinstance(module, nn.Conv2d):
        return module
    if isinstance(module, ConvAct) and isinstance(module.conv, nn.Conv2d):
        return module.conv
    return None


@torch.no_grad()
def _rewrite_pairwise_group_conv(block: nn.Module) -> None:
    """Replace a block's 2-channels-per-group conv by :class:`PairwiseGroupConv`.

    Needs BN already folded (so nothing sits between the convs but the activation, SE and the
    project conv, all of which take a channel permutation in their weights).
    """
    conv = block.depthwise_conv
    if not _has_channel_pairs(conv) or not isinstance(block.depthwise_norm, nn.Identity):
        return
    expand = _conv_of(getattr(block, 'expand_conv', None))
    project = _conv_of(block.project_conv)
    se = block.se
    if expand is None or project is None or expand.groups != 1 or project.groups != 1 or \
            not isinstance(se, (LinearSqueezeExcite, nn.Identity)):
        return
    perm = _pair_halves_permutation(conv.in_channels).to(conv.weight.device)
    expand.weight.copy_(expand.weight[perm])
    if expand.bias is not None:
        expand.bias.copy_(expand.bias[perm])
    if isinstance(se, LinearSqueezeExcite):
        se.reduce.weight.copy_(se.reduce.weight[:, perm])
        se.expand.weight.copy_(se.expand.weight[perm])
        se.expand.bias.copy_(se.expand.bias[perm])
    project.weight.copy_(project.weight[:, perm])
    block.depthwise_conv = PairwiseGroupConv(conv)


class LinearSqueezeExcite(nn.Module):
    """Deploy form of :class:`SqueezeExcite`: the same gate computed with ``linear`` layers."""

    def __init__(self, se: SqueezeExcite):
        super().__init__()
        self.reduce = _conv1x1_to_linear(se.conv_reduce)
        self.act = se.act
        self.expand = _conv1x1_to_linear(se.conv_expand)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.expand(self.act(self.reduce(x.mean((2, 3))))).sigmoid()
        return x * scale[:, :, None, None]


@torch.no_grad()
def _conv1x1_to_linear(conv: nn.Conv2d) -> nn.Linear:
    linear = nn.Linear(conv.in_channels, conv.out_channels, conv.bias is not None).to(conv.weight)
    linear.weight.copy_(conv.weight.flatten(1))
    if conv.bias is not None:
        linear.bias.copy_(conv.bias)
    return linear


def _interleave_halves(processed: torch.Tensor, copied: torch.Tensor) -> torch.Tensor:
    # cat([p, c], 1) followed by a 2-group channel shuffle == p and c interleaved channel-wise.
    if processed.dim() == 4 and not processed.is_contiguous() and \
            processed.is_contiguous(memory_format=torch.channels_last):
        # Interleave in the channels-last layout itself: an NCHW-contiguous result would cost
        # the next conv a layout conversion (one more copy of the whole map).
        b, c, h, w = processed.shape
        out = torch.stack((processed.permute(0, 2, 3, 1), copied.permute(0, 2, 3, 1)), dim=4)
        return out.reshape(b, h, w, 2 * c).permute(0, 3, 1, 2)
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
        elif isinstance(child, SqueezeExcite):
            setattr(model, name, LinearSqueezeExcite(child))
        elif isinstance(child, ChannelMux) and child.shuffle_groups == 2 and \
                2 * child.processed == child.channels:
            switch_to_deploy(child.body)
            setattr(model, name, FusedChannelMux(child))
        else:
            switch_to_deploy(child)
    if hasattr(model, 'depthwise_conv') and hasattr(model, 'depthwise_norm'):
        _fuse_block_spatial_conv(model)
        _rewrite_pairwise_group_conv(model)
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
