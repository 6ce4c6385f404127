"""Channel multiplexing (MUXConv paper, Sec. 3.2): leave out, copy, mix up.

Only ``split_ratio`` of the channels go through the wrapped block; the rest are copied unchanged,
the two parts are concatenated and a channel shuffle mixes them, so every channel is processed
every few blocks while each block pays for a fraction of them. This is the ``sp`` block of the
official MUXNet release (an inverted residual wrapped this way).

With two equal halves and a 2-group shuffle (every MUXNet arch), ``cat`` + shuffle is the
processed and the copied channels interleaved, written in one pass (:func:`interleave_halves`) in
the input's own memory layout, in training as in deploy. Deploy form
(:meth:`ChannelMux.switch_to_deploy`): where the body is a block in its fused deploy form
(``body.interleaves``), its last GEMM interleaves as it stores its output: no pass of its own.
"""
import torch
from torch import nn

from ..utils.arguments import is_int, is_real
from ._eager import eager_autograd
from .channel_shuffle import channel_shuffle, is_channels_last


def split_width(channels: int, split_ratio: float) -> int:
    """Channels processed by a channel-multiplexed block (rounded down as the official code)."""
    if not (is_real(split_ratio) and 0.0 < split_ratio < 1.0):
        raise ValueError(f'split_ratio must lie strictly between 0 and 1, got {split_ratio}')
    processed = int(channels * split_ratio)
    if processed == 0 or processed == channels:
        raise ValueError(f'split_ratio {split_ratio} leaves nothing to process or to copy '
                         f'out of {channels} channels')
    return processed


class ChannelMux(nn.Module):
    """Run ``body`` on the first ``split_ratio`` of the channels, copy the rest, shuffle.

    Args:
        body (nn.Module): Block applied to the processed channels; it must keep their number.
        channels (int): Channels of the input (and output).
        split_ratio (float): Fraction of the channels ``body`` processes.
        shuffle_groups (int): Groups of the channel shuffle that mixes the two parts.
    """

    def __init__(self, body: nn.Module, channels: int, split_ratio: float,
                 shuffle_groups: int = 2):
        super().__init__()
        self.processed = split_width(channels, split_ratio)
        if not is_int(shuffle_groups) or shuffle_groups < 1 or channels % shuffle_groups != 0:
            raise ValueError(f'ChannelMux: {channels} channels cannot be shuffled in '
                             f'{shuffle_groups} groups')
        self.body = body
        self.channels = channels
        self.split_ratio = split_ratio
        self.shuffle_groups = shuffle_groups
        # cat + shuffle as one interleaving pass (two equal halves, 2 groups)
        self.interleave = shuffle_groups == 2 and 2 * self.processed == channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:  # (a wrong split fails far from here)
            raise ValueError(f'ChannelMux: expected an (N, {self.channels}, H, W) input, got '
                             f'shape {tuple(x.shape)}')
        if _layout_keeping_grads(x):
            processed, copied = _SplitChannels.apply(x, self.processed)
        else:
            processed, copied = x[:, :self.processed], x[:, self.processed:]
        if self.interleave:
            if getattr(self.body, 'interleaves', False):
                return self.body(processed, kept=copied)
            return interleave_halves(self.body(processed), copied)
        out = torch.cat([self.body(processed), copied], dim=1)
        if self.shuffle_groups > 1:
            out = channel_shuffle(out, self.shuffle_groups)
        return out

    def one_call_step(self):
        """As a step of a stage's call (:class:`~.block_call.OneCallStage`): the body, on the
        processed channels, interleaving its output with the copied ones -- where it is a block
        that runs as one call and interleaves; else None."""
        step_of = getattr(self.body, 'one_call_step', None)
        step = step_of() if self.interleave and step_of is not None and \
            getattr(self.body, 'interleaves', False) else None
        return (step[0], self.processed) if step is not None and step[1] == 0 else None

    def switch_to_deploy(self, fused_ops: bool = False) -> None:
        """Deploy the body (see the block's ``switch_to_deploy``); a fused body interleaves."""
        self.body.switch_to_deploy(fused_ops)

    def extra_repr(self) -> str:
        return (f'channels={self.channels}, processed={self.processed}, '
                f'shuffle_groups={self.shuffle_groups}')


def _layout_keeping_grads(x: torch.Tensor) -> bool:
    """Whether the split and the interleave run as the autograd functions below, whose
    gradients keep ``x``'s layout (see :mod:`._eager`)."""
    return x.requires_grad and eager_autograd()


class _SplitChannels(torch.autograd.Function):
    """``x[:, :width], x[:, width:]`` whose gradient is one tensor in ``x``'s memory layout.

    Autograd's own backward of the two slices writes a zero map per slice in the default
    (NCHW) layout, copies each slice's gradient into it and adds the two: three passes, and an
    NCHW gradient for the layer before, whose channels-last BN backward then reads it across
    the layout (measured: 15.9 ms instead of ~1.2 for a 24-channel map at 80x80, batch 8).
    """

    @staticmethod
    def forward(ctx, x, width):
        ctx.width, ctx.shape, ctx.dtype, ctx.device = width, x.shape, x.dtype, x.device
        ctx.memory_format = torch.channels_last if is_channels_last(x) else torch.contiguous_format
        return x[:, :width], x[:, width:]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_first, grad_rest):
        if grad_first is not None and grad_rest is not None:
            # One pass (a copy per half before); ``cat`` keeps its inputs' common layout.
            grad = torch.cat((grad_first, grad_rest), 1)
            return grad.contiguous(memory_format=ctx.memory_format), None
        grad = torch.empty(ctx.shape, dtype=ctx.dtype, device=ctx.device,
                           memory_format=ctx.memory_format)
        for part, g in ((grad[:, :ctx.width], grad_first), (grad[:, ctx.width:], grad_rest)):
            if g is None:
                part.zero_()
            else:
                part.copy_(g)
        return grad, None


class _InterleaveHalves(torch.autograd.Function):
    """:func:`interleave_halves` whose two gradients are contiguous in the incoming gradient's
    layout (autograd's backward of the stacking hands on every second channel of it: a strided
    view, which the BN backward before it reads at a fraction of its speed)."""

    @staticmethod
    def forward(ctx, processed, copied):
        return _interleave(processed, copied)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        channels_last = is_channels_last(grad)
        if channels_last:  # (N, H, W, C/2, pair)
            pairs = grad.permute(0, 2, 3, 1).unflatten(3, (-1, 2))
        else:  # (N, C/2, pair, H, W)
            pairs = grad.unflatten(1, (-1, 2)).movedim(2, -1)
        if all(ctx.needs_input_grad):  # both halves in one pass, each contiguous in the layout
            halves = list(pairs.movedim(-1, 0).contiguous())
        else:
            halves = [pairs[..., i].contiguous() if needed else None
                      for i, needed in enumerate(ctx.needs_input_grad)]
        return tuple(h.permute(0, 3, 1, 2) if channels_last and h is not None else h
                     for h in halves)


def interleave_halves(processed: torch.Tensor, copied: torch.Tensor) -> torch.Tensor:
    """``channel_shuffle(cat([processed, copied], 1), 2)`` for two equal halves, in one pass."""
    if _layout_keeping_grads(processed) or _layout_keeping_grads(copied):
        return _InterleaveHalves.apply(processed, copied)
    return _interleave(processed, copied)


def _interleave(processed: torch.Tensor, copied: torch.Tensor) -> torch.Tensor:
    if is_channels_last(processed):
        # Interleave in the channels-last layout itself: an NCHW-contiguous result would cost
        # the next conv a layout conversion (one more copy of the whole map).
        b, c, h, w = processed.shape
        out = torch.stack((processed.permute(0, 2, 3, 1), copied.permute(0, 2, 3, 1)), dim=4)
        return out.reshape(b, h, w, 2 * c).permute(0, 3, 1, 2)
    return torch.stack((processed, copied), dim=2).flatten(1, 2)
