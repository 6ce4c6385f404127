"""Inverted residual and depth-wise separable blocks of MUXNet (MobileNetV2/EfficientNet style).

``InvertedResidual``: 1x1 expand -> spatial group-wise conv (plain, MixConv or spatially
multiplexed MUXConv) -> squeeze-excite -> 1x1 linear projection, with an identity shortcut when
shapes allow. ``DepthwiseSeparable`` is the expansion-free variant MUXNet uses right after its stem.

Each block owns its deploy form (:meth:`InvertedResidual.switch_to_deploy`): BN folded into every
conv; then either the fused kernels (``fused_ops`` on CUDA: spatial conv + BN + activation + the
SE's pooling in one op, the SE gate in one more, the expand conv one GEMM with its activation in the
epilogue, the project conv one GEMM that applies the SE gate as it loads its input and adds the
residual -- and, inside channel multiplexing, interleaves the result with the copied channels --
in its epilogue) or,
on the stock path, MixConv kernels merged into one conv and 2-channels-per-group convs rewritten as
two depth-wise convs (:mod:`.pairwise_group_conv`). On a CPU, ``fused_ops`` gives the blocks whose
spatial conv the ops' C++ kernel computes faster (2 channels per group, MixConv, a plain
depth-wise conv with its activation in the epilogue) the same fused form on the C++ kernels (the
expand conv the op's GEMM with its activation in the epilogue); spatially multiplexed blocks keep
their shuffles and BN (each scale's conv on the kernel) but take the same 1x1 convs and SE +
project tail, pooled by a sum. In eager inference each of these CPU blocks runs as one C++ call
of its kernels (:mod:`.block_call`).
"""
from typing import Optional, Sequence, Union

import torch
import torch.utils.checkpoint as cp
from mmcv.cnn import ConvModule, build_activation_layer, build_norm_layer
from mmcv.cnn.bricks import DropPath
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..ops._cpu_kernels import cpu_kernels_take
from ..ops._triton import can_use_triton
from ..utils.arguments import check_positive_int, is_real
from .block_call import OneCallBlock
from .conv_bn import (ConvAct, PointwiseConv2d, activate_in_place, activation_name, conv_of,
                      deploy_conv_module, fuse_conv_bn, trains_in_place)
from .fused_group_conv import FusedGroupConv
from .group_conv import build_group_conv
from .mixed_conv import MixedConv2d
from .pairwise_group_conv import PairwiseGroupConv, has_channel_pairs, pair_halves_permutation
from .spatial_mux_conv import SpatialMuxConv
from .squeeze_excite import SqueezeExcite


class _ResidualBlock(OneCallBlock, nn.Module):
    """Shared forward: residual, drop-path and activation checkpointing."""

    has_residual: bool
    with_cp: bool

    def _check_arguments(self, in_channels: int, out_channels: int, se_ratio: float,
                         drop_path_rate: float) -> None:
        """The arguments a block adds to its layers' own checks, each named in a ValueError."""
        owner = type(self).__name__
        check_positive_int(owner, 'in_channels', in_channels)
        check_positive_int(owner, 'out_channels', out_channels)
        if not (is_real(se_ratio) and se_ratio >= 0):
            raise ValueError(f'{owner}: se_ratio must be a number >= 0 (0: no squeeze-excite), '
                             f'got {se_ratio!r}')
        # a rate of 1 would divide the kept paths by a keep probability of 0
        if not (is_real(drop_path_rate) and 0 <= drop_path_rate < 1):
            raise ValueError(f'{owner}: drop_path_rate must lie in [0, 1), got '
                             f'{drop_path_rate!r}')

    def _build_tail(self, in_channels: int, channels: int, out_channels: int,
                    kernel_sizes: Sequence[int], stride: int, dilation: Union[int, Sequence[int]],
                    se_ratio: float, channels_per_group: int, scales: Optional[Sequence[int]],
                    norm_cfg: Optional[dict], act_cfg: Optional[dict], drop_path_rate: float,
                    with_cp: bool, fused_ops: bool) -> None:
        """Spatial conv -> norm -> act -> SE -> 1x1 linear projection on ``channels``."""
        self.in_channels, self.out_channels = in_channels, out_channels
        self.stride = stride
        self.with_cp = with_cp
        self.has_residual = stride == 1 and in_channels == out_channels
        self.deploy = False
        self.tail_in_ops = False  # deploy: SE gate and project conv as the ops (_fused_tail)
        self.fused_tail_in_eager_only = False  # deploy on a CPU: see _fused_tail
        # Deploy on a CPU: the fused form as one C++ call where it can (see .block_call).
        self._init_one_call()
        # Without a norm the spatial conv gets a bias, as ConvModule's bias='auto' does.
        self.depthwise_conv = build_group_conv(channels, kernel_sizes, stride, dilation,
                                               channels_per_group, scales, bias=norm_cfg is None,
                                               fused_ops=fused_ops)
        self.depthwise_norm = (build_norm_layer(norm_cfg, channels)[1]
                               if norm_cfg is not None else nn.Identity())
        self.depthwise_act = build_activation_layer(act_cfg) if act_cfg is not None else \
            nn.Identity()
        # SE width is a ratio of the block *input* channels, as the official release.
        self.se = (SqueezeExcite(channels, max(1, int(in_channels * se_ratio)), act_cfg,
                                 fused_ops=fused_ops) if se_ratio > 0 else nn.Identity())
        self.project_conv = ConvModule(channels, out_channels, 1, norm_cfg=norm_cfg,
                                       act_cfg=None)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def _body(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None,
              kept: Optional[torch.Tensor] = None) -> torch.Tensor:
        raise NotImplementedError

    @property
    def pool_in_kernel(self) -> bool:
        """Whether the tail's SE pooling is the spatial conv's kernel's (its fused form)."""
        return self.tail_in_ops and isinstance(self.depthwise_conv, FusedGroupConv)

    @property
    def _spatial_pools(self) -> bool:
        """Whether the spatial conv's fused or deploy form gives the tail its SE's pooled sums
        (``with_pool``): the kernel's epilogue, or spatial multiplexing's folded norm."""
        conv = self.depthwise_conv
        return self.pool_in_kernel or self.tail_in_ops and isinstance(conv, SpatialMuxConv) and \
            conv.norm_scale is not None

    def _fused_tail(self) -> bool:
        """Whether the fused form's tail runs: the SE's pooling (in the spatial conv's kernel
        where :attr:`pool_in_kernel`), the gate op, the project GEMM with the gate, residual and
        interleave in its epilogue. On a CPU only in eager mode: there its C++ calls replace
        ~10 stock ones and their Python dispatch (MUXNet-m 6% faster), while under
        ``torch.compile``, which generates one loop for the stock SE product, add and
        interleave, the stock tail is the faster (MUXNet-m compiled: 9.25 vs 9.88 ms)."""
        return self.tail_in_ops and not (self.fused_tail_in_eager_only and
                                         torch.compiler.is_compiling())

    @property
    def interleaves(self) -> bool:
        """Whether :meth:`forward` takes ``kept``: the fused deploy form, whose project conv
        adds the residual and interleaves in its epilogue."""
        return self._fused_tail()

    def _spatial_to_project(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None,
                            kept: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Spatial conv -> norm -> act -> SE -> project (+ ``residual``, interleaved with
        ``kept``: the fused form only)."""
        if self._fused_tail():
            if self._spatial_pools:
                y, sums = self.depthwise_conv(x, with_pool=True)
            else:  # (CPU) a stock spatial conv: oneDNN's depth-wise
                y = self.depthwise_act(self.depthwise_norm(self.depthwise_conv(x)))
                sums = y.sum((2, 3), dtype=torch.float32)
            return self.se.gated_project(y, sums, self.project_conv.conv, residual, kept)
        x = self.depthwise_norm(self.depthwise_conv(x))
        if isinstance(self.se, SqueezeExcite):  # (its training form may apply the activation)
            return self.project_conv(self.se(x, map_act=self.depthwise_act))
        return self.project_conv(self.depthwise_act(x))

    def switch_to_deploy(self, fused_ops: bool = False) -> None:
        """Rewrite the block in place for inference (eval-mode outputs unchanged).

        Args:
            fused_ops (bool): Use the suite's kernels: on CUDA (and on the CPU under the Triton
                interpreter) the fused forms below; on an fp32 CPU model the fused form on the
                C++ kernels where they beat oneDNN (2 channels per group, MixConv, a plain
                depth-wise conv with its activation in the epilogue: see
                :func:`~mux_backbones.ops.group_conv.cpu_kernel_serves`), its SE + project tail
                on them in every block; elsewhere one
                warning and the stock forms. False: the stock-path forms (merged MixConv,
                pairwise convs).
        """
        if self.deploy:
            return
        self.deploy = True
        activate_in_place(self.depthwise_act)
        if isinstance(getattr(self, 'expand_conv', None), ConvModule):
            self.expand_conv = deploy_conv_module(self.expand_conv)
        if isinstance(self.project_conv, ConvModule):
            self.project_conv = deploy_conv_module(self.project_conv)
        if isinstance(self.se, SqueezeExcite):
            self.se.switch_to_deploy()
        conv = self.depthwise_conv
        # Deploy on the target device: the Triton kernels' forms where they run; on a CPU the
        # C++ kernels where they serve; elsewhere (after one warning) the stock forms, which are
        # faster than the op's fallback.
        param = next(conv.parameters())
        cpu_kernel = fused_ops and cpu_kernels_take(param)
        if cpu_kernel:
            # The 1x1 convs and the SE + project tail on the C++ kernels, whatever the spatial
            # conv.
            for conv_act in (getattr(self, 'expand_conv', None), self.project_conv):
                if isinstance(conv_act, ConvAct):
                    conv_act.use_cpu_kernel()
            self.tail_in_ops = self.fused_tail_in_eager_only = self._tail_fits_ops()
            self.set_block_call(True)
        norm = self.depthwise_norm
        if not isinstance(norm, (_BatchNorm, nn.Identity)):
            return  # e.g. GroupNorm: nothing to fold
        bn = norm if isinstance(norm, _BatchNorm) else None
        fused_ops = fused_ops and not cpu_kernel and can_use_triton(param, 'group_conv')
        if (fused_ops or cpu_kernel) and hasattr(conv, 'fused_form'):
            fused = conv.fused_form(bn, self.depthwise_act)
            # On the CPU where the C++ kernel beats oneDNN: 2 channels per group, MixConv, and
            # a plain depth-wise conv whose activation rides in the kernel's epilogue.
            if fused is not None and (fused_ops or fused.cpu_kernel_serves()):
                self._use_fused_form(fused, on_cpu=not fused_ops)
                return
        if isinstance(conv, SpatialMuxConv) and (fused_ops or cpu_kernel):
            for c in conv.convs:  # the shuffles stay stock; each scale's conv runs fused
                c.fused_ops = True  # (on the CPU: where the C++ kernel serves, see kernel_passes)
            act = activation_name(self.depthwise_act)
            if cpu_kernel and bn is not None and bn.running_var is not None and act is not None:
                # BN, activation and the SE's pooling in one pass (the norm_act op's C++ kernel;
                # on CUDA the modules stay, which a compiler fuses with their neighbours)
                conv.fold_norm(bn, act)
                self.depthwise_norm = self.depthwise_act = nn.Identity()
                return
        elif not (fused_ops or cpu_kernel):  # the stock forms, whatever the training form ran
            for m in conv.modules():  # (e.g. a MixConv that keeps its groups, below)
                if hasattr(m, 'fused_ops'):
                    m.fused_ops = False
        if bn is None:
            return
        if isinstance(conv, MixedConv2d):
            if not conv.can_merge():  # e.g. per-kernel dilations: fold into each group
                conv.fold_norm(bn)
                self.depthwise_norm = nn.Identity()
                return
            conv = conv.merged_conv()
        if isinstance(conv, nn.Conv2d):
            self.depthwise_conv = fuse_conv_bn(conv, bn)
            self.depthwise_norm = nn.Identity()
            self._rewrite_channel_pairs()

    def _use_fused_form(self, fused: FusedGroupConv, on_cpu: bool) -> None:
        """The fused deploy form: spatial conv + BN + activation + the SE's pooling in one op,
        the SE gate in one more, the project conv's gate, residual and interleave in its GEMM
        (the ``pointwise_conv`` op; see :meth:`_fused_tail` for the CPU), and on Triton's GEMM
        the expand conv's activation in its epilogue too (on the CPU: set with the other
        1x1 convs' CPU forms, :meth:`ConvAct.use_cpu_kernel`)."""
        self.depthwise_conv = fused
        self.depthwise_norm = self.depthwise_act = nn.Identity()
        self.tail_in_ops = self._tail_fits_ops()
        self.fused_tail_in_eager_only = on_cpu
        expand = getattr(self, 'expand_conv', None)
        if not on_cpu and isinstance(expand, ConvAct):  # no activation pass over the widest map
            expand.activate_in_epilogue(activation_name(expand.act))

    def _tail_fits_ops(self) -> bool:
        """Whether the block has the tail the ops compute: an SE and a plain 1x1 project conv."""
        project = self.project_conv
        return isinstance(self.se, SqueezeExcite) and isinstance(project, ConvAct) and \
            isinstance(project.act, nn.Identity) and isinstance(project.conv, PointwiseConv2d)

    @torch.no_grad()
    def _rewrite_channel_pairs(self) -> None:
        """Stock path: a 2-channels-per-group conv becomes :class:`PairwiseGroupConv`, its channel
        reorder folded into the expand conv, the SE and the project conv."""
        conv = self.depthwise_conv
        if not has_channel_pairs(conv):
            return
        expand = conv_of(getattr(self, 'expand_conv', None))
        project = conv_of(self.project_conv)
        if expand is None or project is None or expand.groups != 1 or project.groups != 1:
            return
        perm = pair_halves_permutation(conv.in_channels).to(conv.weight.device)
        expand.weight.copy_(expand.weight[perm])
        if expand.bias is not None:
            expand.bias.copy_(expand.bias[perm])
        if isinstance(self.se, SqueezeExcite):
            self.se.conv_reduce.weight.copy_(self.se.conv_reduce.weight[:, perm])
            self.se.conv_expand.weight.copy_(self.se.conv_expand.weight[perm])
            self.se.conv_expand.bias.copy_(self.se.conv_expand.bias[perm])
        project.weight.copy_(project.weight[:, perm])
        self.depthwise_conv = PairwiseGroupConv(conv)

    def _forward(self, x: torch.Tensor, kept: Optional[torch.Tensor] = None) -> torch.Tensor:
        if self.interleaves:  # deploy: no drop path, the residual add is the GEMM's epilogue
            out = self._one_call(x, kept)
            if out is not None:
                return out
            return self._body(x, x if self.has_residual else None, kept)
        if kept is not None:
            raise ValueError(f'{type(self).__name__}: only the fused deploy form interleaves its '
                             f'output with kept channels (see `interleaves`)')
        out = self._body(x)
        if self.has_residual:
            out = x + self.drop_path(out)
        return out

    def _runs_on_cpu_kernels(self) -> bool:  # (see OneCallBlock)
        return self.tail_in_ops and self.fused_tail_in_eager_only

    def forward(self, x: torch.Tensor, kept: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The block on ``x``; where :attr:`interleaves`, its output interleaved channel by
        channel with ``kept`` (channel multiplexing's ``cat`` + 2-group shuffle)."""
        if self.with_cp and x.requires_grad:
            return cp.checkpoint(self._forward, x, kept, use_reentrant=False)
        return self._forward(x, kept)


class InvertedResidual(_ResidualBlock):
    """Inverted residual block with optional MixConv / spatial multiplexing and SE.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        kernel_sizes (Sequence[int]): Kernel size(s) of the spatial conv.
        stride (int): Stride of the spatial conv. Default: 1.
        dilation (int | Sequence[int]): Dilation of the spatial conv (one per kernel allowed).
        expand_ratio (float): Hidden channels = ``int(in_channels * expand_ratio)``.
        se_ratio (float): SE width as a ratio of ``in_channels``; 0 disables SE.
        channels_per_group (int): Channels per group of the spatial conv (1: depth-wise).
        scales (Sequence[int], optional): Spatial-multiplexing scales (see SpatialMuxConv).
        norm_cfg (dict, optional): Norm layer config; None: no norm (the convs get biases).
        act_cfg (dict, optional): Activation config (also used inside SE); None: no activation.
        drop_path_rate (float): Stochastic depth on the residual branch.
        with_cp (bool): Trade compute for memory with activation checkpointing.
        fused_ops (bool): Spatial conv on the fused kernel where the input allows.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_sizes: Sequence[int],
                 stride: int = 1, dilation: Union[int, Sequence[int]] = 1,
                 expand_ratio: float = 6.0,
                 se_ratio: float = 0.0, channels_per_group: int = 1,
                 scales: Optional[Sequence[int]] = None,
                 norm_cfg: Optional[dict] = dict(type='BN'),
                 act_cfg: Optional[dict] = dict(type='ReLU'), drop_path_rate: float = 0.0,
                 with_cp: bool = False, fused_ops: bool = False):
        super().__init__()
        self._check_arguments(in_channels, out_channels, se_ratio, drop_path_rate)
        mid_channels = int(in_channels * expand_ratio) if is_real(expand_ratio) else 0
        if mid_channels < 1:
            raise ValueError(f'InvertedResidual: expand_ratio {expand_ratio!r} leaves no hidden '
                             f'channels out of {in_channels} input channels')
        self.expand_conv = ConvModule(in_channels, mid_channels, 1, norm_cfg=norm_cfg,
                                      act_cfg=act_cfg, inplace=trains_in_place(act_cfg))
        self._build_tail(in_channels, mid_channels, out_channels, kernel_sizes, stride, dilation,
                         se_ratio, channels_per_group, scales, norm_cfg, act_cfg,
                         drop_path_rate, with_cp, fused_ops)

    def _body(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None,
              kept: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self._spatial_to_project(self.expand_conv(x), residual, kept)


class DepthwiseSeparable(_ResidualBlock):
    """Depth-wise conv -> SE -> 1x1 linear projection, with identity shortcut when possible.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        kernel_sizes (Sequence[int]): Kernel size(s) of the depth-wise conv.
        stride (int): Stride. Default: 1.
        dilation (int | Sequence[int]): Dilation (one per kernel allowed). Default: 1.
        se_ratio (float): SE width as a ratio of ``in_channels``; 0 disables SE.
        channels_per_group (int): Channels per group of the spatial conv (1: depth-wise).
        scales (Sequence[int], optional): Spatial-multiplexing scales.
        norm_cfg (dict, optional): Norm layer config; None: no norm (the convs get biases).
        act_cfg (dict, optional): Activation config (also used inside SE); None: no activation.
        drop_path_rate (float): Stochastic depth on the residual branch.
        with_cp (bool): Use activation checkpointing.
        fused_ops (bool): Spatial conv on the fused kernel where the input allows.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_sizes: Sequence[int],
                 stride: int = 1, dilation: Union[int, Sequence[int]] = 1,
                 se_ratio: float = 0.0,
                 channels_per_group: int = 1, scales: Optional[Sequence[int]] = None,
                 norm_cfg: Optional[dict] = dict(type='BN'),
                 act_cfg: Optional[dict] = dict(type='ReLU'),
                 drop_path_rate: float = 0.0, with_cp: bool = False, fused_ops: bool = False):
        super().__init__()
        self._check_arguments(in_channels, out_channels, se_ratio, drop_path_rate)
        self._build_tail(in_channels, in_channels, out_channels, kernel_sizes, stride, dilation,
                         se_ratio, channels_per_group, scales, norm_cfg, act_cfg,
                         drop_path_rate, with_cp, fused_ops)

    def _body(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None,
              kept: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self._spatial_to_project(x, residual, kept)
