"""MixConv-style multi-kernel group-wise convolution (the ``k3.5.7`` blocks of MUXNet).

The channels are split into one group per kernel size, each group gets its own depth-wise (or
group-wise) convolution, and the results are concatenated. MUXNet-m/-l use it in the first block
of each down-sampling stage. The split puts the remainder on the first group, as the official
release does, so official weights load unchanged.

With ``fused_ops`` all groups run in one call of the fused kernel
(:mod:`mux_backbones.ops.group_conv`), each at its own kernel size. Its deploy forms live here
too: :meth:`MixedConv2d.fused_form` (the fused kernel, BN and activation folded in) and
:meth:`MixedConv2d.merged_conv` (one depth-wise conv, smaller kernels zero-padded: the stock path).
"""
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..utils.arguments import check_positive_int, is_int, is_sequence
from .conv_bn import bn_scale_shift, fuse_conv_scale_shift
from .fused_group_conv import FusedGroupConv, KernelOrderWeights, kernel_forward, kernel_passes


def split_channels(channels: int, num_groups: int) -> List[int]:
    """Split ``channels`` into ``num_groups`` near-equal parts, remainder on the first."""
    if not is_int(channels) or num_groups < 1 or channels < num_groups:
        raise ValueError(f'cannot split {channels} channels into {num_groups} groups')
    parts = [channels // num_groups] * num_groups
    parts[0] += channels - sum(parts)
    return parts


def same_padding(kernel_size: int, dilation: int = 1) -> int:
    """Padding that keeps the size at stride 1 (and gives ceil(H / s) at stride s).

    Every spatial conv of the layers gets its padding here, so here its kernel size and
    dilation are checked: a positive odd integer and a positive integer.
    """
    if not (is_int(kernel_size) and kernel_size >= 1 and kernel_size % 2 == 1):
        raise ValueError(f'only positive odd kernel sizes are supported, got {kernel_size!r}')
    if not (is_int(dilation) and dilation >= 1):
        raise ValueError(f'dilation must be a positive integer, got {dilation!r}')
    return dilation * (kernel_size // 2)


def kernel_size_tuple(kernel_sizes: Union[int, Sequence[int]]) -> Tuple[int, ...]:
    """``kernel_sizes`` as a non-empty tuple: one integer is one kernel size."""
    if is_int(kernel_sizes):
        return (kernel_sizes, )
    if not is_sequence(kernel_sizes) or not kernel_sizes:
        raise ValueError(f'kernel_sizes must be an odd integer or a non-empty sequence of them, '
                         f'got {kernel_sizes!r}')
    return tuple(kernel_sizes)


def _per_kernel(value: Union[int, Sequence[int]], count: int) -> List[int]:
    if is_int(value):
        return [value] * count
    if not is_sequence(value):
        raise ValueError(f'dilation must be an integer or one per kernel, got {value!r}')
    if len(value) != count:
        raise ValueError(f'{len(value)} dilations given for {count} kernels')
    return list(value)


class MixedConv2d(KernelOrderWeights, nn.Module):
    """Group-wise convolution with one kernel size per channel group.

    Args:
        channels (int): Input and output channels.
        kernel_sizes (int | Sequence[int]): One odd kernel size per channel group.
        stride (int): Stride of every group. Default: 1.
        dilation (int | Sequence[int]): Dilation of every group, or one per kernel. Default: 1.
        channels_per_group (int): Channels per convolution group inside each kernel group;
            1 is depth-wise. Default: 1.
        bias (bool): Give every kernel group a bias (used when no norm follows). Default: False.
        fused_ops (bool | str): Run all groups in one call of the fused kernel where the
            input's device and dtype allow (else the stock convs, after one warning);
            ``'gradients'``: only their gradients (see
            :data:`~.fused_group_conv.TRAINING_FORMS`). Default: False.
    """

    def __init__(self, channels: int, kernel_sizes: Union[int, Sequence[int]], stride: int = 1,
                 dilation: Union[int, Sequence[int]] = 1, channels_per_group: int = 1,
                 bias: bool = False, fused_ops: bool = False):
        super().__init__()
        self.kernel_sizes = kernel_size_tuple(kernel_sizes)
        self.stride = check_positive_int('MixedConv2d', 'stride', stride)
        self.channels_per_group = check_positive_int('MixedConv2d', 'channels_per_group',
                                                     channels_per_group)
        self.dilations = dilations = _per_kernel(dilation, len(self.kernel_sizes))
        self.splits = split_channels(channels, len(self.kernel_sizes))
        convs = []
        for k, c, d in zip(self.kernel_sizes, self.splits, dilations):
            if c % channels_per_group != 0:
                raise ValueError(f'MixedConv2d: group of {c} channels is not divisible by '
                                 f'channels_per_group={channels_per_group}')
            convs.append(
                nn.Conv2d(c, c, k, stride, same_padding(k, d), d,
                          groups=c // channels_per_group, bias=bias))
        self.convs = nn.ModuleList(convs)
        self.in_channels = self.out_channels = channels
        self.fused_ops = fused_ops

    def _kernel_convs(self):
        return list(self.convs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = kernel_forward(self.convs, x, self.fused_ops) if self.fused_ops else None
        if y is not None:
            return y
        parts = torch.split(x, self.splits, dim=1)
        return torch.cat([conv(p) for conv, p in zip(self.convs, parts)], dim=1)

    def kernel_passes(self, x: torch.Tensor) -> Tuple[bool, bool]:
        """``(forward, gradients)``: the passes a kernel would compute for ``x`` (see
        :func:`~.fused_group_conv.kernel_passes`)."""
        return kernel_passes(self.convs, x)

    def fused_form(self, norm: Optional[_BatchNorm], act: nn.Module) -> Optional[FusedGroupConv]:
        """Deploy form on the fused kernel: ``norm`` folded, ``act`` as epilogue (None where the
        kernel cannot compute it)."""
        return FusedGroupConv.from_convs(self.convs, norm, act)

    @torch.no_grad()
    def fold_norm(self, norm: _BatchNorm) -> None:
        """Fold ``norm`` (over all channels) into the groups' convs, in place (they get biases)."""
        scale, shift = bn_scale_shift(norm)
        start = 0
        for i, c in enumerate(self.convs):
            end = start + c.out_channels
            self.convs[i] = fuse_conv_scale_shift(c, scale[start:end], shift[start:end])
            start = end

    def can_merge(self) -> bool:
        """Whether :meth:`merged_conv` applies: depth-wise, one dilation for every kernel."""
        return all(c.groups == c.in_channels for c in self.convs) and \
            len(set(self.dilations)) == 1

    @torch.no_grad()
    def merged_conv(self) -> nn.Conv2d:
        """One depth-wise conv with the largest kernel, the smaller ones zero-padded to it: one
        launch of the stock conv instead of split + k convs + cat (the deploy form off the fused
        kernel). Biases are merged too."""
        if not self.can_merge():
            raise ValueError('only a depth-wise MixConv with one dilation can be merged')
        k = max(self.kernel_sizes)
        dilation, channels = self.dilations[0], self.out_channels
        merged = nn.Conv2d(channels, channels, k, self.stride, dilation * (k // 2), dilation,
                           groups=channels, bias=self.convs[0].bias is not None)
        merged = merged.to(self.convs[0].weight)
        merged.weight.zero_()
        start = 0
        for c in self.convs:
            ck, n = c.kernel_size[0], c.out_channels
            off = (k - ck) // 2
            merged.weight[start:start + n, :, off:off + ck, off:off + ck] = c.weight
            if c.bias is not None:
                merged.bias[start:start + n] = c.bias
            start += n
        return merged
