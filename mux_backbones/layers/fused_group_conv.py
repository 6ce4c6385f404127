"""Group-wise spatial convs on the fused kernel (:mod:`mux_backbones.ops.group_conv`).

* :class:`GroupConv2d` -- the training form: an ``nn.Conv2d`` (same parameters, same state-dict
  keys) whose forward runs the fused kernel when ``fused_ops`` is set and the input allows it;
* :class:`FusedGroupConv` -- the deploy form of any MUXNet spatial conv (plain, MixConv, 2 channels
  per group) with its BatchNorm folded in and its activation and the squeeze-excite pooling as
  the kernel's epilogue.
"""
from typing import Optional, Sequence, Tuple

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..ops import group_conv, pack_weights
from ..ops._dispatch import call
from ..ops.group_conv import _group_conv, check_args, compile_jobs, cpu_kernel_serves
from ..ops.group_conv import kernel_passes as group_conv_kernel_passes
from ..ops.group_conv import tune_forward
from .conv_bn import activation_name, bn_scale_shift

# The training forms a layer's ``fused_ops`` selects: False, the stock conv; True, the fused op
# (forward and gradients on the kernels wherever they run); KERNEL_GRADIENTS, the stock conv's
# forward inside the op and the kernels' gradients -- for a layer whose forward the library does
# well and whose backward it does not; chosen per layer by
# :func:`mux_backbones.tuning.choose_training_kernels`, which times the three.
KERNEL_GRADIENTS = 'gradients'
TRAINING_FORMS = (False, True, KERNEL_GRADIENTS)


def kernel_can_run(conv: nn.Conv2d) -> bool:
    """Whether the fused kernel computes ``conv``: channel-preserving, 1 or 2 channels per group,
    odd square kernel, "same" zero padding, stride 1 or 2."""
    k, d = conv.kernel_size[0], conv.dilation[0]
    return conv.in_channels == conv.out_channels and \
        conv.in_channels // conv.groups in (1, 2) and \
        conv.kernel_size == (k, k) and k % 2 == 1 and conv.dilation == (d, d) and \
        conv.padding == (d * (k // 2), ) * 2 and conv.padding_mode == 'zeros' and \
        conv.stride in ((1, 1), (2, 2))


def _layout(convs: Sequence[nn.Conv2d]):
    """``(splits, kernel sizes, dilations, stride, channels per group)`` of side-by-side convs."""
    first = convs[0]
    return ([c.out_channels for c in convs], [c.kernel_size[0] for c in convs],
            [c.dilation[0] for c in convs], first.stride[0], first.in_channels // first.groups)


def _concat_bias(convs: Sequence[nn.Conv2d]) -> Optional[torch.Tensor]:
    """The convs' biases end to end (zeros for a conv without one); None if none has one."""
    if all(c.bias is None for c in convs):
        return None
    return torch.cat([c.bias if c.bias is not None else c.weight.new_zeros(c.out_channels)
                      for c in convs])


def check_training_form(fused_ops) -> None:
    """Raise ``ValueError`` unless ``fused_ops`` is one of :data:`TRAINING_FORMS`."""
    if fused_ops not in TRAINING_FORMS:
        raise ValueError(f'fused_ops must be one of {TRAINING_FORMS}, got {fused_ops!r}')


def kernel_passes(convs: Sequence[nn.Conv2d], x: torch.Tensor) -> Tuple[bool, bool]:
    """Which passes of the side-by-side convs a kernel computes on ``x``, as ``(forward,
    gradients)`` (see :func:`mux_backbones.ops.group_conv.kernel_passes`; gradients only where
    autograd will ask for them: grad mode on and ``x`` or a weight requiring grad)."""
    if not all(kernel_can_run(c) for c in convs):
        return False, False
    splits, kernel_sizes, dilations, _, cpg = _layout(convs)
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad or any(c.weight.requires_grad for c in convs))
    return group_conv_kernel_passes(x, splits, kernel_sizes, dilations, cpg, needs_grad)


def kernel_forward(convs: Sequence[nn.Conv2d], x: torch.Tensor,
                   fused_ops=True) -> Optional[torch.Tensor]:
    """The side-by-side convs (each on its own channels of ``x``) in one call of the fused op,
    in the training form ``fused_ops`` names (:data:`TRAINING_FORMS`); None where no kernel
    would compute a pass of it on ``x`` (:func:`kernel_passes`; for ``'gradients'``, where
    none are asked for): the caller's stock convs run instead."""
    forward, gradients = kernel_passes(convs, x)
    stock_forward = fused_ops == KERNEL_GRADIENTS
    runs = gradients if stock_forward else forward or gradients
    if not runs:
        return None
    splits, kernel_sizes, dilations, stride, cpg = _layout(convs)
    return group_conv(x, pack_weights([c.weight for c in convs]), _concat_bias(convs), splits,
                      kernel_sizes, dilations, stride, cpg, stock_forward=stock_forward)


def in_kernel_order(weight: torch.Tensor) -> bool:
    """Whether a ``(C, cpg, K, K)`` conv weight lies in memory in the op's packed order (taps,
    channel in the group, channel: see :func:`~mux_backbones.ops.pack_weights`)."""
    return weight.permute(2, 3, 1, 0).is_contiguous()


class KernelOrderWeights:
    """Keeps the conv weights of a layer with ``fused_ops`` in the op's packed order in memory.

    The same parameters -- shape, values, state-dict keys -- with other strides: the channels
    innermost, so :func:`~mux_backbones.ops.pack_weights` of a weight is a view of it, not a
    permuted copy per call, and its gradient comes back in the parameter's own layout, which
    autograd stores as it is instead of copying it once more: two launches per conv weight and
    training step (54 of a MUXNet-m step). Without ``fused_ops``, the layout is the user's (the
    standard one after the kernel's order). Setting ``fused_ops``, moving or converting the
    module (``.to``, ``.cuda``, ``.half``, channels-last) keeps the order its ``fused_ops`` asks
    for. Checkpoints load either way (values are copied into the parameters' own layout);
    the state dict's tensors are the parameters themselves, strides included (as a
    channels-last model's conv weights are): ``.contiguous()`` them for a format that requires
    it (safetensors).
    """

    def _kernel_convs(self):
        """The ``nn.Conv2d`` modules whose weights the layer packs for the op."""
        raise NotImplementedError

    @property
    def fused_ops(self):
        """The training form (:data:`TRAINING_FORMS`); setting it lays the weights out for it."""
        # (a module pickled whole before the layout kept the value under the plain name)
        return self.__dict__.get('_fused_ops', self.__dict__.get('fused_ops', False))

    @fused_ops.setter
    def fused_ops(self, value) -> None:
        check_training_form(value)
        self._fused_ops = value
        self._lay_out_weights()

    def _lay_out_weights(self) -> None:
        kernel_order = bool(self.fused_ops)
        with torch.no_grad():
            for conv in self._kernel_convs():
                w = conv.weight
                if kernel_order and not in_kernel_order(w):
                    w.data = w.data.permute(2, 3, 1, 0).contiguous().permute(3, 2, 0, 1)
                elif not kernel_order and in_kernel_order(w) and not w.is_contiguous():
                    w.data = w.data.contiguous()  # (any other layout is the user's: kept)

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        self._lay_out_weights()
        return out


class GroupConv2d(KernelOrderWeights, nn.Conv2d):
    """A depth-wise / group-wise ``nn.Conv2d`` that can run on the fused kernel.

    Takes ``nn.Conv2d``'s arguments plus ``fused_ops`` (see :data:`TRAINING_FORMS`); the kernel
    is used only where :func:`kernel_can_run` holds and the input's device and dtype are
    supported (else the stock conv runs, after one warning). With ``fused_ops`` its weight lies
    in the kernel's order (see :class:`KernelOrderWeights`).
    """

    def __init__(self, *args, fused_ops=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.fused_ops = fused_ops

    def _kernel_convs(self):
        return [self]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = kernel_forward([self], x, self.fused_ops) if self.fused_ops else None
        return super().forward(x) if y is None else y

    def kernel_passes(self, x: torch.Tensor) -> Tuple[bool, bool]:
        """``(forward, gradients)``: the passes a kernel would compute for ``x`` (see
        :func:`kernel_passes`)."""
        return kernel_passes([self], x)

    def cpu_kernel_serves(self) -> bool:
        """Whether its inference forward runs the op's C++ kernel (``fused_ops=True`` and the
        kernel the CPU's faster path for it: see
        :func:`mux_backbones.ops.group_conv.cpu_kernel_serves`)."""
        return self.fused_ops is True and cpu_kernel_serves(
            self.weight, [self.out_channels], self.in_channels // self.groups)

    def fused_form(self, norm: Optional[_BatchNorm], act: nn.Module) -> Optional['FusedGroupConv']:
        """Its deploy form with ``norm`` folded and ``act`` fused (None where not computable)."""
        return FusedGroupConv.from_convs([self], norm, act)


class FusedGroupConv(nn.Module):
    """Deploy form of a (mixed-kernel) group-wise conv + BN + activation, in one op.

    Build it with :meth:`from_convs`. ``forward(x, with_pool=True)`` also returns the output's
    per-channel sums, as (N, T, C) partial sums over tiles of the map, for the squeeze-excite
    that follows.

    Args:
        weight (Tensor): Packed weights (see :func:`mux_backbones.ops.pack_weights`), BN folded.
        bias (Tensor): (C, ) bias, BN folded.
        splits, kernel_sizes, dilations (Sequence[int]): Channels, kernel size and dilation of
            every kernel-size group.
        stride (int): 1 or 2.
        channels_per_group (int): 1 or 2.
        act (str): Epilogue activation name (see :data:`mux_backbones.ops.group_conv.ACTIVATIONS`).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, splits: Sequence[int],
                 kernel_sizes: Sequence[int], dilations: Sequence[int], stride: int,
                 channels_per_group: int, act: str):
        super().__init__()
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = nn.Parameter(bias, requires_grad=False)
        self.splits, self.kernel_sizes = list(splits), list(kernel_sizes)
        self.dilations = list(dilations)
        self.stride, self.channels_per_group, self.act = stride, channels_per_group, act

    @classmethod
    @torch.no_grad()
    def from_convs(cls, convs: Sequence[nn.Conv2d], norm: Optional[_BatchNorm],
                   act: nn.Module) -> Optional['FusedGroupConv']:
        """Side-by-side group convs (one per kernel size) with ``norm`` (over all their channels)
        folded in and ``act`` as the epilogue; None where the kernel cannot compute them."""
        act_name = activation_name(act)
        if act_name is None or not all(kernel_can_run(c) for c in convs):
            return None
        splits, kernel_sizes, dilations, stride, cpg = _layout(convs)
        bias = _concat_bias(convs)
        if bias is None:
            bias = convs[0].weight.new_zeros(sum(splits))
        weights = [c.weight for c in convs]
        if norm is not None:
            scale, shift = bn_scale_shift(norm)
            weights = [w * s.view(-1, 1, 1, 1) for w, s in zip(weights, scale.split(splits))]
            bias = bias * scale + shift
        weight = pack_weights(weights).clone(memory_format=torch.contiguous_format)
        check_args(torch.empty(1, sum(splits), 1, 1), weight, splits, kernel_sizes, dilations,
                   stride, cpg, act_name)
        return cls(weight, bias, splits, kernel_sizes, dilations, stride, cpg, act_name)

    def cpu_kernel_serves(self) -> bool:
        """Whether the op's C++ kernel is the faster CPU path for this form (see
        :func:`mux_backbones.ops.group_conv.cpu_kernel_serves`; its activation rides in the
        kernel's epilogue), so a CPU deploy keeps it rather than the stock conv."""
        return cpu_kernel_serves(self.weight, self.splits, self.channels_per_group,
                                 epilogue=self.act != 'none')

    def forward(self, x: torch.Tensor, with_pool: bool = False):
        # The op itself (arguments were checked when this module was built): the Python checks
        # of ``group_conv`` cost more than a small layer's kernel in eager mode.
        y, pool = call(_group_conv, x, self.weight, self.bias, self.splits, self.kernel_sizes,
                       self.dilations, self.stride, self.channels_per_group, self.act, with_pool)
        return (y, pool) if with_pool else y

    def compile_jobs(self, x: torch.Tensor, with_pool: bool = False) -> list:
        """What :meth:`tune` will compile, as jobs for
        :func:`mux_backbones.ops.launch_config.precompile`."""
        return compile_jobs(x, self.weight, self.bias, self.splits, self.kernel_sizes,
                            self.dilations, self.stride, self.channels_per_group, self.act,
                            with_pool)

    def tune(self, x: torch.Tensor, with_pool: bool = False, time_us=None) -> dict:
        """Time the kernel's launch configs on ``x`` (as :meth:`forward` takes it) and keep the
        fastest for every call like this one (see
        :func:`mux_backbones.ops.group_conv.tune_forward`, which says what it returns)."""
        return tune_forward(x, self.weight, self.bias, self.splits, self.kernel_sizes,
                            self.dilations, self.stride, self.channels_per_group, self.act,
                            with_pool, time_us)

    def extra_repr(self) -> str:
        return (f'splits={self.splits}, kernel_sizes={self.kernel_sizes}, '
                f'dilations={self.dilations}, stride={self.stride}, '
                f'channels_per_group={self.channels_per_group}, act={self.act}')
