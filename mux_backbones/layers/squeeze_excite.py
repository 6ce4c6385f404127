"""Squeeze-and-excitation as the official MUXNet blocks use it.

The squeeze width is a ratio of the *block input* channels (not of the expanded channels it
gates), and the squeeze activation is the block's own activation; the gate is a sigmoid.

Deploy form (:meth:`SqueezeExcite.switch_to_deploy`): the two 1x1 convs on the pooled vector run
as ``linear`` layers (a conv on a 1x1 map pays the full conv dispatch for a matrix-vector
product). A block whose fused spatial conv already pooled the map (the kernel's epilogue) calls
:meth:`SqueezeExcite.gated_project`: the whole gate is one op (:mod:`mux_backbones.ops.se_gate`),
one launch instead of six, and the following 1x1 conv applies it to its input as its GEMM loads
it (the ``pointwise_conv`` op's ``scale``), so the gated map is never written.
"""
from typing import Optional

import torch
from mmcv.cnn import build_activation_layer
from torch import nn
from torch.nn import functional as F

from ..ops import se_gate
from ._eager import eager_autograd
from .conv_bn import PointwiseConv2d, activate_in_place, activation_name


@torch.no_grad()
def _conv1x1_to_linear(conv: nn.Conv2d) -> nn.Linear:
    linear = nn.Linear(conv.in_channels, conv.out_channels, conv.bias is not None).to(conv.weight)
    linear.weight.copy_(conv.weight.flatten(1))
    if conv.bias is not None:
        linear.bias.copy_(conv.bias)
    return linear


class SqueezeExcite(nn.Module):
    """Channel attention: global average pool, 1x1 reduce, act, 1x1 expand, sigmoid gate.

    Args:
        channels (int): Channels of the tensor being gated.
        squeeze_channels (int): Width of the bottleneck.
        act_cfg (dict, optional): Activation between the two 1x1 convs; None: none.
            Default: ReLU.
    """

    def __init__(self, channels: int, squeeze_channels: int,
                 act_cfg: Optional[dict] = dict(type='ReLU')):
        super().__init__()
        if squeeze_channels < 1:
            raise ValueError(f'SqueezeExcite: squeeze_channels must be >= 1, got '
                             f'{squeeze_channels}')
        self.conv_reduce = nn.Conv2d(channels, squeeze_channels, 1, bias=True)
        self.act = build_activation_layer(act_cfg) if act_cfg is not None else nn.Identity()
        self.conv_expand = nn.Conv2d(squeeze_channels, channels, 1, bias=True)
        self.deploy = False

    def gate(self, mean: torch.Tensor) -> torch.Tensor:
        """The (N, C) sigmoid gate from the (N, C) channel means (deploy form)."""
        return self.conv_expand(self.act(self.conv_reduce(mean.to(self.conv_reduce.weight))))\
            .sigmoid()

    def pooled_gate(self, sums: torch.Tensor, pixels: int) -> torch.Tensor:
        """The (N, C) gate from the per-channel sums of a map of ``pixels`` pixels, (N, C) or
        (N, T, C) partial sums (deploy form): the ``se_gate`` op (one kernel on CUDA, the stock
        computation elsewhere), or the stock gate where no kernel has the activation."""
        act = activation_name(self.act)
        if not self.deploy or act is None:
            sums = sums if sums.dim() == 2 else sums.sum(1)
            return self.gate(sums / pixels)
        return se_gate(sums, pixels, self.conv_reduce.weight, self.conv_reduce.bias,
                       self.conv_expand.weight, self.conv_expand.bias, act)

    def gated_project(self, x: torch.Tensor, sums: torch.Tensor, project: PointwiseConv2d,
                      residual: Optional[torch.Tensor] = None,
                      kept: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``project(self(x), residual, kept)`` from ``x``'s per-channel sums (see
        :meth:`pooled_gate`; deploy form). The gate is applied where ``project``'s GEMM reads
        its input (no gated copy of the map; :class:`PointwiseConv2d` with ``scale``), which
        also adds ``residual`` and interleaves ``kept`` in its epilogue."""
        return project(x, residual, kept, scale=self.pooled_gate(sums, x.shape[2] * x.shape[3]))

    def _gate_map(self, pooled: torch.Tensor) -> torch.Tensor:
        """The (N, C, 1, 1) sigmoid gate from the (N, C, 1, 1) channel means (training form):
        the 1x1 convs as matrix products on the pooled vectors, with the conv weights viewed
        as matrices (oneDNN's conv on a 1x1 map: ~3x the time, forward and backward)."""
        n, c = pooled.shape[:2]
        squeezed = self.act(F.linear(pooled.reshape(n, c), self.conv_reduce.weight.flatten(1),
                                     self.conv_reduce.bias))
        return F.linear(squeezed, self.conv_expand.weight.flatten(1), self.conv_expand.bias)\
            .sigmoid().view(n, c, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.deploy:
            return x * self.gate(x.mean((2, 3))).to(x.dtype)[:, :, None, None]
        if eager_autograd():  # (see its module)
            params = [p for p in self.parameters() if p.requires_grad]
            if x.requires_grad or params:
                return _GatedMap.apply(x, self._gate_map, *params)
        return x * self._gate_map(x.mean((2, 3), keepdim=True))

    def switch_to_deploy(self, fused_ops: bool = False) -> None:
        """Run the two 1x1 convs as ``linear`` layers (same parameters, flattened), the
        activation between them in place.

        Args:
            fused_ops (bool): Unused (no kernel of its own: its pooling is fused by the block).
        """
        if not self.deploy:
            self.conv_reduce = _conv1x1_to_linear(self.conv_reduce)
            self.conv_expand = _conv1x1_to_linear(self.conv_expand)
            activate_in_place(self.act)
            self.deploy = True


class _GatedMap(torch.autograd.Function):
    """``x * gate(mean(x))`` with a backward of two passes over the map instead of five.

    Autograd's backward of the stock expression writes ``g * s``, ``g * x`` (summed to the gate's
    gradient), the mean's gradient broadcast to a full map, and their sum. Here the gate's
    gradient is one product summed per channel, and the input's gradient one pass,
    ``g * s + d mean / (H W)`` (``addcmul``), the mean's gradient added as a broadcast. The
    gate's own small graph (1x1 convs on the pooled vector) is recorded in the forward and
    differentiated in the backward. Once differentiable (no double backward).
    """

    @staticmethod
    def forward(ctx, x, gate_map, *params):
        with torch.enable_grad():
            pooled = x.detach().mean((2, 3), keepdim=True).requires_grad_(x.requires_grad)
            gate = gate_map(pooled)
        ctx.save_for_backward(x)
        ctx.pooled, ctx.gate, ctx.params = pooled, gate, params
        return x * gate.detach()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, = ctx.saved_tensors
        pooled, gate, params = ctx.pooled, ctx.gate, ctx.params
        grad_gate = (grad * x).sum((2, 3), keepdim=True).to(gate.dtype)
        inputs = ((pooled, ) if pooled.requires_grad else ()) + tuple(params)
        grads = torch.autograd.grad(gate, inputs, grad_gate) if inputs else ()
        grad_x = None
        if pooled.requires_grad:
            pixels = x.shape[2] * x.shape[3]
            grad_x = torch.addcmul(grads[0].to(grad.dtype) / pixels, grad, gate.detach())
            grads = grads[1:]
        return (grad_x, None, *grads)
