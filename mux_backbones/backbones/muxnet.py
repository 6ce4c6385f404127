"""MUXNet backbone (MUXConv paper, Sec. 4: the MUXNet family built from MUXConv).

Every variant is data: ``arch_settings`` below holds, per variant, the stem width, the head width
and seven stages of block strings (notation in :mod:`.block_spec`). One builder turns any of them
into an OpenMMLab backbone with the standard contract (``out_indices``, ``frozen_stages``,
``norm_eval``, ``with_cp``, ``init_cfg``) plus width and output-stride control.

The stage layout mirrors mmdet's MobileNetV2 (seven stages, then the 1x1 head conv as output
index 7), so configs written for it translate index for index.
"""
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..engine.checkpoint import load_weights
from ..layers import ChannelMux, DepthwiseSeparable, InvertedResidual, split_width
from ..layers.conv_bn import ConvAct, activation_name, trains_in_place
from ..ops import unsupported_reason
from ..utils.arguments import is_int, is_real
from .block_spec import BlockSpec
from .stage_plan import (HEAD_INDEX, NUM_STAGES, check_out_indices, kernel_dilation, plan_stages,
                         scale_width)

# Per arch: stem channels, head (1x1 conv) channels, and seven stages of block strings.
# Stages end at output strides 2, 4, 8, 16, 16, 32, 32 (indices 0..6); index 7 is the head conv.
_SE = 'se0.75'
_MUX = 'sr0.5_sg2_dwg2'
arch_settings: Dict[str, dict] = {
    # MUXNet-m, the official release row for row.
    'm': dict(stem_channels=24, head_channels=1280, stages=[
        ['ds_r1_k3_s1_c24_se0.25_nre'],
        [f'ir_r1_k3_s2_e4_c24_{_SE}_nre', f'sp_r2_k3_s1_e4_c24_{_SE}_{_MUX}_nre'],
        [f'ir_r1_k3.5.7_s2_e4_c40_{_SE}', f'sp_r2_k3_s1_e6_c40_{_SE}_{_MUX}'],
        [f'ir_r1_k3.5.7.9_s2_e4_c80_{_SE}', f'sp_r2_k5_s1_e6_c80_{_SE}_{_MUX}'],
        [f'ir_r1_k5_s1_e6_c112_{_SE}', f'sp_r2_k5_s1_e6_c112_{_SE}_{_MUX}'],
        [f'ir_r1_k3.5.7.9.11_s2_e4_c160_{_SE}', f'sp_r3_k5_s1_e6_c160_{_SE}_{_MUX}'],
        [f'ir_r1_k3_s1_e6_c200_{_SE}'],
    ]),
    # MUXNet-l, the official release row for row.
    'l': dict(stem_channels=24, head_channels=1536, stages=[
        ['ds_r1_k3_s1_c24_se0.25_nre'],
        [f'ir_r1_k3_s2_e6_c24_{_SE}_nre', f'sp_r2_k5_s1_e6_c24_{_SE}_{_MUX}_nre'],
        [f'ir_r1_k3.5.7_s2_e6_c40_{_SE}', f'sp_r3_k5_s1_e6_c40_{_SE}_{_MUX}'],
        [f'ir_r1_k3.5.7.9_s2_e6_c80_{_SE}', f'sp_r3_k5_s1_e6_c80_{_SE}_{_MUX}'],
        [f'ir_r1_k5_s1_e6_c120_{_SE}', f'sp_r3_k5_s1_e6_c120_{_SE}_{_MUX}'],
        [f'ir_r1_k3.5.7.9.11_s2_e6_c160_{_SE}', f'sp_r3_k5_s1_e6_c160_{_SE}_{_MUX}'],
        [f'ir_r1_k3_s1_e6_c200_{_SE}'],
    ]),
    # MUXNet-s: our design (never released; docs/architecture.md). m's layout, narrower, with
    # spatial multiplexing (scales -1/0/+1) in every channel-multiplexed block.
    # 2.406M params / 117.6M MAdds at 224 (paper: 2.4M / 117M).
    's': dict(stem_channels=16, head_channels=1152, stages=[
        ['ds_r1_k3_s1_c16_se0.25_nre'],
        [f'ir_r1_k3_s2_e2_c24_{_SE}_nre', f'sp_r1_k3_s1_e4_c24_{_SE}_{_MUX}_sc-1.0.1_nre'],
        [f'ir_r1_k3.5.7_s2_e3_c40_{_SE}', f'sp_r2_k3_s1_e4_c40_{_SE}_{_MUX}_sc-1.0.1'],
        [f'ir_r1_k3.5.7_s2_e4_c80_{_SE}', f'sp_r2_k5_s1_e4_c80_{_SE}_{_MUX}_sc-1.0.1'],
        [f'ir_r1_k5_s1_e4_c96_{_SE}', f'sp_r1_k5_s1_e6_c96_{_SE}_{_MUX}_sc-1.0.1'],
        [f'ir_r1_k3.5.7.9_s2_e4_c144_{_SE}', f'sp_r2_k5_s1_e6_c144_{_SE}_{_MUX}_sc-1.0.1'],
        [f'ir_r1_k3_s1_e4_c144_{_SE}'],
    ]),
    # MUXNet-xs: our design (never released; docs/architecture.md). A thinner stem block and
    # lighter expansions than s, spatial multiplexing in every channel-multiplexed block.
    # 1.771M params / 66.7M MAdds at 224 (paper: 1.8M / 66M).
    'xs': dict(stem_channels=16, head_channels=1024, stages=[
        ['ds_r1_k3_s1_c8_se0.25_nre'],
        [f'ir_r1_k3_s2_e3_c24_{_SE}_nre', f'sp_r1_k3_s1_e3_c24_{_SE}_{_MUX}_sc-1.0.1_nre'],
        [f'ir_r1_k3.5_s2_e2_c32_{_SE}', f'sp_r1_k3_s1_e3_c32_{_SE}_{_MUX}_sc-1.0.1'],
        [f'ir_r1_k3.5.7_s2_e3_c56_{_SE}', f'sp_r2_k3_s1_e4_c56_{_SE}_{_MUX}_sc-1.0.1'],
        [f'ir_r1_k5_s1_e3_c72_{_SE}', f'sp_r1_k5_s1_e4_c72_{_SE}_{_MUX}_sc-1.0.1'],
        [f'ir_r1_k3.5.7_s2_e4_c120_{_SE}', f'sp_r2_k5_s1_e4_c120_{_SE}_{_MUX}_sc-1.0.1'],
        [f'ir_r1_k3_s1_e4_c144_{_SE}'],
    ]),
    # A few-thousand-parameter net that exercises every block kind, for fast CPU tests.
    'tiny': dict(stem_channels=8, head_channels=64, stages=[
        ['ds_r1_k3_s1_c8_se0.25_nre'],
        ['ir_r1_k3_s2_e2_c16_se0.5_nre', f'sp_r1_k3_s1_e4_c16_se0.5_{_MUX}_sc-1.0.1_nre'],
        ['ir_r1_k3.5_s2_e2_c16_se0.5', f'sp_r1_k3_s1_e2_c16_se0.5_{_MUX}'],
        ['ir_r1_k3.5.7_s2_e2_c24_se0.5', 'sp_r1_k3.5_s1_e2_c24_se0.5_sr0.5_sg2_sc-1.0'],
        ['ir_r1_k3_s1_e2_c32_se0.5'],
        ['ir_r1_k3_s2_e2_c32_se0.5', f'sp_r1_k3_s1_e4_c32_se0.5_{_MUX}_sc0.1'],
        ['ir_r1_k3_s1_e2_c40_se0.5'],
    ]),
}


def muxnet_out_channels(arch='m', out_indices: Sequence[int] = (7, ),
                        widen_factor: float = 1.0) -> Tuple[int, ...]:
    """Channels of the given output indices of a MUXNet arch, without building it.

    Configs call this so head/neck ``in_channels`` never have to be copied by hand.
    """
    plan = plan_stages(arch, widen_factor)
    return tuple(plan.channels(i) for i in check_out_indices(out_indices))


@MODELS.register_module()
class MUXNet(BaseModule):
    """MUXNet backbone.

    Args:
        arch (str | dict): ``'xs'``, ``'s'``, ``'m'``, ``'l'``, ``'tiny'`` or a dict with
            ``stem_channels``, ``head_channels`` and seven ``stages`` of block strings.
            Default: ``'m'``.
        widen_factor (float): Width multiplier for every layer. Default: 1.0.
        out_indices (Sequence[int]): Outputs to return, strictly increasing: 0..6 are the ends of
            the seven stages, 7 is the 1x1 head conv. Stages after the last requested one are not
            built. Default: (7, ).
        frozen_stages (int): Stages to freeze (eval mode, no grad), as mmdet's MobileNetV2:
            -1 none, 0 the stem, i in 1..7 the stem and stages 1..i (stages that are not built
            are skipped). The head conv is never frozen. Default: -1.
        strides (Sequence[int], optional): Stride of each of the seven stages.
        dilations (Sequence[int], optional): Dilation of each of the seven stages.
        output_stride (int, optional): 8, 16 or 32: shorthand for the strides/dilations of a
            dilated backbone (as mmseg's ``-d8`` models); exclusive with strides/dilations.
        dilate_large_kernels (bool): In a dilated stage, dilate every kernel by the stage's full
            factor (keeps the undilated net's receptive field exactly, but a 11x11 kernel at
            dilation 4 spans 41 pixels of a stride-8 map). False (default): each kernel of size k
            gets dilation ``max(1, round(d * 2 / (k - 1)))``, so its span stays near that of a
            dilated 3x3 (the smallest kernel), as a dilated MobileNetV2 sees. Weights are the
            same either way.
        conv_cfg (dict, optional): Conv config of the 1x1 convs. Default: None.
        norm_cfg (dict, optional): Norm config; None: no normalisation anywhere (every conv
            then has a bias). Default: ``dict(type='BN')`` (eps 1e-5, momentum 0.1 as the
            official nets).
        act_cfg (dict, optional): The network's main activation; blocks marked ``nre`` use ReLU.
            None: no activation anywhere (the SE gate keeps its sigmoid).
            Default: ``dict(type='SiLU')`` (swish, as the paper).
        drop_path_rate (float): Stochastic depth, growing linearly over the blocks to this
            rate at the last block; in [0, 1). Default: 0.
        norm_eval (bool): Keep norm layers in eval mode while training. Default: False.
        with_cp (bool): Activation checkpointing in every block. Default: False.
        fused_ops (bool): Run the spatial convs (MixConv, depth-wise, 2 channels per group) on the
            fused kernels (:mod:`mux_backbones.ops`), in training and inference, and use them
            in :meth:`switch_to_deploy`: Triton's on CUDA; on fp32 CPU tensors the C++ kernels,
            forward and gradients, for the convs oneDNN has no fast path for (2 channels per
            group, MixConvs; groups with many channels past the kernels' vectors: the forward
            alone), in training the gradients of the plain depth-wise convs above 3x3 or
            dilated (oneDNN's backward is slow for them; their forward stays oneDNN's, as do
            the other convs). Same parameters and state-dict keys either way, so checkpoints
            move between the two. Inputs no kernel takes (no Triton on CUDA, half or double
            precision on the CPU) run the stock path after one warning. Feed channels-last input
            (the kernels' layout) to avoid conversions; keep the kernels only where they are
            faster with :func:`mux_backbones.tuning.choose_training_kernels`. Default: False.
        zero_init_residual (bool): Start every residual block as the identity by zero-initialising
            the scale of its last norm (as mmdet's ResNet and timm's ``zero_init_last``); helps
            training from scratch. Pretrained weights overwrite it. Default: True.
        pretrained (str, optional): Deprecated, as in mmdet/mmseg backbones: a checkpoint path,
            mapped to ``init_cfg=dict(type='Pretrained', checkpoint=pretrained)``.
        init_cfg (dict | list[dict], optional): Initialization config. ``dict(type='Pretrained',
            checkpoint=..., prefix='backbone.')`` loads a checkpoint made by
            ``tools/model_converters/muxnet_official_to_mmengine.py`` (or any checkpoint whose
            keys under ``prefix`` are this backbone's; without ``prefix``, ``backbone.`` is used
            when present). Loading is exact: a missing, unexpected or mis-shaped key is an error
            naming it (the stages a truncated backbone does not build may be in the file); add
            ``strict=False`` to load what fits and keep the rest initialised.
    """

    def __init__(self, arch='m', widen_factor: float = 1.0,
                 out_indices: Sequence[int] = (7, ), frozen_stages: int = -1,
                 strides: Optional[Sequence[int]] = None,
                 dilations: Optional[Sequence[int]] = None,
                 output_stride: Optional[int] = None, dilate_large_kernels: bool = False,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: Optional[dict] = dict(type='BN'),
                 act_cfg: Optional[dict] = dict(type='SiLU'),
                 drop_path_rate: float = 0.0, norm_eval: bool = False, with_cp: bool = False,
                 zero_init_residual: bool = True, fused_ops: bool = False,
                 pretrained: Optional[str] = None, init_cfg=None):
        if pretrained is not None:
            if init_cfg is not None:
                raise ValueError('give either pretrained (deprecated) or init_cfg, not both')
            if not isinstance(pretrained, str):
                raise ValueError(f'pretrained must be a checkpoint path, got {pretrained!r}')
            warnings.warn('MUXNet: pretrained is deprecated, use init_cfg=dict(type='
                          '"Pretrained", checkpoint=...) instead', DeprecationWarning)
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        if init_cfg is None:
            init_cfg = [
                dict(type='Kaiming', layer='Conv2d', mode='fan_out', nonlinearity='relu'),
                dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm'])
            ]
        super().__init__(init_cfg)
        plan = plan_stages(arch, widen_factor, strides, dilations, output_stride)
        out_indices = check_out_indices(out_indices)
        if not isinstance(fused_ops, bool):
            raise ValueError(f'fused_ops must be True or False, got {fused_ops!r} (per layer, '
                             f'choose_training_kernels may also pick the kernels\' gradients '
                             f'alone)')
        if not is_int(frozen_stages) or frozen_stages not in range(-1, NUM_STAGES + 1):
            raise ValueError(f'frozen_stages must be in range(-1, {NUM_STAGES + 1}) (-1: none, '
                             f'0: the stem, i: the stem and stages 1..i), got {frozen_stages!r}')
        if not (is_real(drop_path_rate) and 0 <= drop_path_rate < 1):
            # The deepest block drops its branch with this probability: 1 or more would always drop
            # it (and DropPath would divide by a keep probability of zero or less).
            raise ValueError(f'drop_path_rate must be in [0, 1), got {drop_path_rate!r}')
        for name, cfg in (('conv_cfg', conv_cfg), ('norm_cfg', norm_cfg), ('act_cfg', act_cfg)):
            if cfg is not None and not isinstance(cfg, dict):
                raise ValueError(f'{name} must be a dict such as dict(type=...) or None, got '
                                 f'{cfg!r}')
        self.arch = arch if isinstance(arch, str) else 'custom'
        self.plan = plan
        self.widen_factor = widen_factor
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.zero_init_residual = zero_init_residual
        self.dilate_large_kernels = dilate_large_kernels
        self.fused_ops = fused_ops

        self.stem = ConvModule(3, plan.stem_channels, 3, stride=2, padding=1, conv_cfg=conv_cfg,
                               norm_cfg=norm_cfg, act_cfg=act_cfg,
                               inplace=trains_in_place(act_cfg))
        num_blocks = sum(len(stage.blocks) for stage in plan.stages)
        block_idx, in_channels = 0, plan.stem_channels
        self.layers: List[str] = []
        for i, stage in enumerate(plan.stages[:max(out_indices) + 1]):
            blocks = []
            for j, spec in enumerate(stage.blocks):
                out_channels = scale_width(spec.out_channels, widen_factor)
                rate = drop_path_rate * block_idx / max(num_blocks - 1, 1)
                dilation = tuple(stage.dilation if dilate_large_kernels else
                                 kernel_dilation(k, stage.dilation) for k in spec.kernel_sizes)
                # No activation anywhere when act_cfg is None, "nre" blocks included.
                act = None if act_cfg is None else (spec.act_cfg or act_cfg)
                try:
                    blocks.append(self._make_block(spec, in_channels, out_channels,
                                                   stage.stride if j == 0 else 1, dilation,
                                                   norm_cfg, act, rate, fused_ops))
                except ValueError as err:
                    # The layer's own message names its channels, not the block or the width
                    # multiplier that made them.
                    name = f'MUXNet-{arch}' if self.arch in arch_settings else 'MUXNet'
                    raise ValueError(f'{name}: block layer{i + 1}.{j} at widen_factor '
                                     f'{widen_factor}: {err}') from err
                in_channels = out_channels
                block_idx += 1
            self.add_module(f'layer{i + 1}', nn.Sequential(*blocks))
            self.layers.append(f'layer{i + 1}')
        if max(out_indices) == HEAD_INDEX:
            self.conv_head = ConvModule(in_channels, plan.head_channels, 1, conv_cfg=conv_cfg,
                                        norm_cfg=norm_cfg, act_cfg=act_cfg,
                                        inplace=trains_in_place(act_cfg))
            self.layers.append('conv_head')
        self.feature_info = [
            dict(num_chs=plan.channels(i), reduction=plan.reduction(i), module=self.layers[i])
            for i in out_indices
        ]
        self.set_with_cp(with_cp)
        self._freeze_stages()

    @property
    def out_channels(self) -> Tuple[int, ...]:
        """Channels of each returned feature map, in ``out_indices`` order."""
        return tuple(info['num_chs'] for info in self.feature_info)

    @staticmethod
    def _make_block(spec: BlockSpec, in_channels: int, out_channels: int, stride: int,
                    dilation: Tuple[int, ...], norm_cfg: Optional[dict],
                    act_cfg: Optional[dict], drop_path_rate: float, fused_ops: bool):
        common = dict(kernel_sizes=spec.kernel_sizes, stride=stride, dilation=dilation,
                      se_ratio=spec.se_ratio, channels_per_group=spec.channels_per_group,
                      scales=spec.scales, norm_cfg=norm_cfg, act_cfg=act_cfg,
                      drop_path_rate=drop_path_rate, fused_ops=fused_ops)
        if spec.block_type == 'ds':
            return DepthwiseSeparable(in_channels, out_channels, **common)
        if spec.block_type == 'ir':
            return InvertedResidual(in_channels, out_channels, expand_ratio=spec.expand_ratio,
                                    **common)
        if in_channels != out_channels or stride != 1:
            raise ValueError(f'an "sp" block keeps its shape: got {in_channels}->{out_channels} '
                             f'channels at stride {stride}')
        processed = split_width(in_channels, spec.split_ratio)
        body = InvertedResidual(processed, processed, expand_ratio=spec.expand_ratio, **common)
        return ChannelMux(body, in_channels, spec.split_ratio, spec.shuffle_groups)

    def _unbuilt_prefixes(self) -> Tuple[str, ...]:
        """State-dict prefixes of the stages (and head) this truncated backbone did not build."""
        names = [f'layer{i + 1}.' for i in range(NUM_STAGES)] + ['conv_head.']
        return tuple(n for n in names if n[:-1] not in self.layers)

    def load_pretrained(self, checkpoint: str, prefix: Optional[str] = None,
                        map_location='cpu', strict: bool = True) -> int:
        """Load weights as an ``init_cfg`` ``Pretrained`` entry does: exactly, but for the
        checkpoint's stages this truncated backbone did not build.

        Args:
            checkpoint (str): A backbone's, classifier's, detector's or segmentor's checkpoint
                (a local file or any URI mmengine reads).
            prefix (str, optional): Keys to take, e.g. ``'backbone.'``. None: ``'backbone.'``
                when the checkpoint has such keys, else all.
            map_location: Passed to the loader. Default: ``'cpu'``.
            strict (bool): Refuse missing and mis-shaped weights. Default: True.

        Returns:
            int: Number of tensors loaded.
        """
        return load_weights(self, checkpoint, prefix, map_location, strict,
                            ignore_prefixes=self._unbuilt_prefixes())

    def init_weights(self):
        """Initialise as ``init_cfg`` says; ``Pretrained`` entries load exactly (see Args)."""
        if self.is_init:
            return
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else [self.init_cfg]
        pretrained = [c for c in cfgs if isinstance(c, dict) and c.get('type') == 'Pretrained']
        own = self.init_cfg
        self.init_cfg = [c for c in cfgs if c is not None and c not in pretrained] or None
        try:
            super().init_weights()
        finally:
            self.init_cfg = own
        for cfg in pretrained:
            unknown = set(cfg) - {'type', 'checkpoint', 'prefix', 'map_location', 'strict'}
            if unknown:
                raise ValueError(f'MUXNet init_cfg Pretrained: unknown key "{sorted(unknown)[0]}"')
            self.load_pretrained(cfg['checkpoint'], cfg.get('prefix'),
                                 cfg.get('map_location', 'cpu'), cfg.get('strict', True))
        if self.zero_init_residual and not pretrained:
            for m in self.modules():
                if isinstance(m, (InvertedResidual, DepthwiseSeparable)) and m.has_residual:
                    norm = m.project_conv.norm
                    if getattr(norm, 'weight', None) is not None:
                        nn.init.zeros_(norm.weight)

    def _freeze_stages(self):
        if self.frozen_stages < 0:
            return
        stages = [n for n in self.layers if n != 'conv_head'][:self.frozen_stages]
        for module in [self.stem] + [getattr(self, n) for n in stages]:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def set_with_cp(self, with_cp: bool):
        """Switch activation checkpointing of every block."""
        self.with_cp = with_cp
        for module in self.modules():
            if hasattr(module, 'with_cp') and module is not self:
                module.with_cp = with_cp

    def switch_to_deploy(self, channels_last: bool = False, fused_ops=None,
                         example_input: Optional[torch.Tensor] = None,
                         stock_blocks: Sequence[str] = ()) -> 'MUXNet':
        """Every layer in its deploy form (see :mod:`mux_backbones.deploy`).

        Args:
            channels_last (bool): Also convert the weights to channels-last. Default: False.
            fused_ops (bool | str, optional): Fused Triton kernels (True; the head conv's
                activation then goes into its GEMM too), the stock forms (False), or per block
                the faster on ``example_input`` (``'auto'``). None (default): ``self.fused_ops``.
            example_input (Tensor, optional): What ``'auto'`` times the forms on.
            stock_blocks (Sequence[str]): Blocks, by module name, kept on the stock form (as
                ``'auto'`` logs them). Default: none.
        """
        from ..deploy import switch_to_deploy
        if fused_ops is None:
            fused_ops = self.fused_ops
        switch_to_deploy(self, channels_last, fused_ops, example_input,
                         stock_blocks=stock_blocks)
        head = getattr(self, 'conv_head', None)
        if fused_ops is True and isinstance(head, ConvAct) and \
                unsupported_reason(head.conv.weight) is None:
            # The head's output is the widest map after the blocks': no activation pass over it
            # (the GEMM applies it, as in the fused blocks' expand convs).
            head.activate_in_epilogue(activation_name(head.act))
        return self

    def set_fused_ops(self, fused_ops: bool) -> None:
        """Switch the fused kernels of every spatial conv on or off (weights are unchanged)."""
        self.fused_ops = fused_ops
        for module in self.modules():
            if hasattr(module, 'fused_ops') and module is not self:
                module.fused_ops = fused_ops

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        x = self.stem(x)
        outs = []
        for i, name in enumerate(self.layers):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)

    def train(self, mode: bool = True):
        """Set train mode, keeping frozen stages and (with ``norm_eval``) norms in eval."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self
