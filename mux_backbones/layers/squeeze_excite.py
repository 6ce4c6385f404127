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
from ..ops.gated_map import gated_map_kernel
from ..utils.arguments import check_positive_int
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
        fused_ops (bool): Train on the suite's kernels where they take the input
            (:func:`~mux_backbones.ops.gated_map.gated_map`: one C++ call each way on fp32 CPU
            tensors, three Triton launches forward and four backward on CUDA, the block's
            activation before the SE included: see :meth:`forward`); elsewhere, and when False,
            the stock training form. Same parameters either way. Default: False.
    """

    def __init__(self, channels: int, squeeze_channels: int,
                 act_cfg: Optional[dict] = dict(type='ReLU'), fused_ops: bool = False):
        super().__init__()
        check_positive_int('SqueezeExcite', 'channels', channels)
        check_positive_int('SqueezeExcite', 'squeeze_channels', squeeze_channels)
        self.conv_reduce = nn.Conv2d(channels, squeeze_channels, 1, bias=True)
        self.act = build_activation_layer(act_cfg) if act_cfg is not None else nn.Identity()
        self.conv_expand = nn.Conv2d(squeeze_channels, channels, 1, bias=True)
        self.deploy = False
        self.fused_ops = fused_ops

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

    def forward(self, x: torch.Tensor, map_act: Optional[nn.Module] = None) -> torch.Tensor:
        """The gated map ``y * gate(y)``.

        Args:
            x (Tensor): The (N, C, H, W) map; with ``map_act``, before it.
            map_act (nn.Module, optional): The activation that gives the map the SE gates,
                ``y = map_act(x)`` (the block's, after its spatial conv). With ``fused_ops``,
                where the kernels take the map and have the activation, the training form applies
                it itself: ``y`` is then never written, and the module is not called (its hooks
                do not run). None: ``y = x``. Default: None.
        """
        network = (self.act, self.conv_reduce.weight, self.conv_reduce.bias,
                   self.conv_expand.weight, self.conv_expand.bias)
        trains = not self.deploy and eager_autograd() and (
            x.requires_grad or any(p.requires_grad for p in self.parameters()))
        kernel_act = activation_name(self.act) if trains and self.fused_ops else None
        kernel = gated_map_kernel(x, *network[1:]) if kernel_act is not None else None
        if kernel is not None:
            map_act_name = activation_name(map_act) if map_act is not None else 'none'
            if map_act_name is None:  # (no kernel code for it: the module, then the node)
                x, map_act_name = map_act(x), 'none'
            return kernel(x, *network[1:], kernel_act, map_act_name)
        if map_act is not None:
            x = map_act(x)
        if self.deploy:
            return x * self.gate(x.mean((2, 3))).to(x.dtype)[:, :, None, None]
        if trains:
            return _GatedMap.apply(x, *network)
        n, c = x.shape[:2]
        return x * _gate_network(x.mean((2, 3)), *network)[2].view(n, c, 1, 1)

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
            self.fused_ops = False  # (the training form's kernels; the deploy form has its own)


def _gate_network(pooled: torch.Tensor, act: nn.Module, w_reduce: torch.Tensor,
                  b_reduce: torch.Tensor, w_expand: torch.Tensor, b_expand: torch.Tensor):
    """``(z, h, gate)`` of the training form's gate from the (N, C) channel means:
    ``z = W1 mean + b1``, ``h = act(z)`` (``z`` kept where ``act`` works in place: its
    gradient reads it), ``gate = sigmoid(W2 h + b2)``. The 1x1 convs run as matrix products on
    their weights viewed as matrices (oneDNN's conv on a 1x1 map: ~3x the time, forward and
    backward); under autocast on weights cast to its dtype, as ``F.linear`` runs there."""
    c = pooled.shape[1]
    z = F.linear(pooled, w_reduce.view(-1, c), b_reduce)
    h = act(z.clone() if getattr(act, 'inplace', False) else z)
    return z, h, F.linear(h, w_expand.view(c, -1), b_expand).sigmoid()


def _activation_backward(grad: torch.Tensor, z: torch.Tensor, h: torch.Tensor,
                         act: nn.Module) -> torch.Tensor:
    """The gradient through ``h = act(z)``: for the activations the blocks use, the backward
    operator autograd itself would run; for any other, autograd on ``act`` alone."""
    name = activation_name(act)
    if name == 'none':
        return grad
    if name == 'relu':
        return torch.ops.aten.threshold_backward(grad, h, 0)
    if name == 'silu':
        return torch.ops.aten.silu_backward(grad, z)
    if name == 'relu6':
        return torch.ops.aten.hardtanh_backward(grad, z, 0.0, 6.0)
    with torch.enable_grad():
        leaf = z.detach().requires_grad_()
        return torch.autograd.grad(act(leaf), leaf, grad)[0]


class _GatedMap(torch.autograd.Function):
    """``x * sigmoid(W2 act(W1 mean(x) + b1) + b2)`` with a backward of two passes over the map
    instead of five, and no autograd graph of its own.

    Autograd's backward of the stock expression writes ``g * s``, ``g * x`` (summed to the gate's
    gradient), the mean's gradient broadcast to a full map, and their sum. Here the gate's
    gradient is one product summed per channel, and the input's gradient one pass,
    ``g * s + d mean / (H W)`` (``addcmul``), the mean's gradient added as a broadcast. The
    gate's own small network on the pooled (N, C) vectors is differentiated by its formulas,
    in the dtypes its forward ran in (autocast's), with autograd's own backward operators of
    the activation: the same gradients, without recording that network in the forward and
    running a nested ``autograd.grad`` over it in the backward, which cost the host a third
    more per block and step (docs/speed_log.md, session 30). Once differentiable (no double
    backward).
    (With ``fused_ops``, where the kernels take the tensors, the same formulas run as one
    autograd node on the suite's kernels: :func:`~mux_backbones.ops.gated_map.gated_map`.)
    """

    @staticmethod
    def forward(ctx, x, act, w_reduce, b_reduce, w_expand, b_expand):
        n, c = x.shape[:2]
        pooled = x.mean((2, 3))
        z, h, gate = _gate_network(pooled, act, w_reduce, b_reduce, w_expand, b_expand)
        ctx.act = act
        ctx.save_for_backward(x, pooled, z, h, gate, w_reduce, w_expand)
        return x * gate.view(n, c, 1, 1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        x, pooled, z, h, gate, w_reduce, w_expand = ctx.saved_tensors
        n, c = x.shape[:2]
        needs_x, _, needs_w1, needs_b1, needs_w2, needs_b2 = ctx.needs_input_grad
        gate_map = gate.view(n, c, 1, 1)
        # d loss / d logit of the gate; the small products in the forward's dtype
        grad_logit = torch.ops.aten.sigmoid_backward((grad * x).sum((2, 3)).to(gate.dtype), gate)
        grad_w2 = (grad_logit.t() @ h).view_as(w_expand).to(w_expand.dtype) if needs_w2 else None
        grad_b2 = grad_logit.sum(0).to(w_expand.dtype) if needs_b2 else None
        grad_x = grad_w1 = grad_b1 = None
        if needs_x or needs_w1 or needs_b1:
            grad_h = grad_logit @ w_expand.view(c, -1).to(h.dtype)
            grad_z = _activation_backward(grad_h, z, h, ctx.act)
            if needs_w1:
                grad_w1 = (grad_z.t() @ pooled.to(z.dtype)).view_as(w_reduce).to(w_reduce.dtype)
            if needs_b1:
                grad_b1 = grad_z.sum(0).to(w_reduce.dtype)
            if needs_x:
                grad_mean = (grad_z @ w_reduce.view(-1, c).to(z.dtype)).to(grad.dtype)
                pixels = x.shape[2] * x.shape[3]
                grad_x = torch.addcmul((grad_mean / pixels).view(n, c, 1, 1), grad,
                                       gate_map.to(grad.dtype))
        return grad_x, None, grad_w1, grad_b1, grad_w2, grad_b2
