"""MUXNet backbone (MUXConv paper, Sec. 4: the MUXNet family built from MUXConv).

Every variant is data: ``arch_settings`` below holds, per variant, the stem width, the head width
and seven stages of block strings (notation in :mod:`.block_spec`). One builder turns any of them
into an OpenMMLab backbone with the standard contract (``out_indices``, ``frozen_stages``,
``norm_eval``, ``with_cp``, ``init_cfg``) plus width and output-stride control.

The stage layout mirrors mmdet's MobileNetV2 (seven stages, then the 1x1 head conv as output
index 7), so configs written for it translate index for index.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmcv.cnn import ConvModule
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..layers import ChannelMux, DepthwiseSeparable, InvertedResidual, split_width
from .block_spec import BlockSpec, decode_stage

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
NUM_STAGES = 7
# Output stride -> (per-stage strides, per-stage dilations) for dense prediction.
_OUTPUT_STRIDE = {
    32: ((1, 2, 2, 2, 1, 2, 1), (1, 1, 1, 1, 1, 1, 1)),
    16: ((1, 2, 2, 2, 1, 1, 1), (1, 1, 1, 1, 1, 2, 2)),
    8: ((1, 2, 2, 1, 1, 1, 1), (1, 1, 1, 2, 2, 4, 4)),
}


def make_divisible(channels: float, divisor: int = 8) -> int:
    """Round a width to a multiple of ``divisor``, never more than 10% below it."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * channels:
        rounded += divisor
    return rounded


def kernel_dilation(kernel_size: int, dilation: int) -> int:
    """Dilation of a k x k kernel in a stage dilated by ``dilation``: span near a dilated 3x3."""
    if dilation == 1 or kernel_size <= 3:
        return dilation
    return max(1, round(dilation * 2 / (kernel_size - 1)))


def _scaled(channels: int, widen_factor: float) -> int:
    return channels if widen_factor == 1.0 else make_divisible(channels * widen_factor)


def _arch(arch) -> dict:
    if isinstance(arch, dict):
        return arch
    if arch not in arch_settings:
        raise ValueError(f'unknown MUXNet arch "{arch}"; choose one of '
                         f'{sorted(arch_settings)} or pass a dict')
    return arch_settings[arch]


def muxnet_out_channels(arch='m', out_indices: Sequence[int] = (7, ),
                        widen_factor: float = 1.0) -> Tuple[int, ...]:
    """Channels of the given output indices of a MUXNet arch, without building it.

    Configs call this so head/neck ``in_channels`` never have to be copied by hand.
    """
    setting = _arch(arch)
    widths = [_scaled(decode_stage(s)[-1].out_channels, widen_factor)
              for s in setting['stages']]
    widths.append(_scaled(setting['head_channels'], widen_factor))
    for i in out_indices:
        if not 0 <= i <= NUM_STAGES:
            raise ValueError(f'out_indices entry {i} is out of range 0..{NUM_STAGES}')
    return tuple(widths[i] for i in out_indices)


@MODELS.register_module()
class MUXNet(BaseModule):
    """MUXNet backbone.

    Args:
        arch (str | dict): ``'xs'``, ``'s'``, ``'m'``, ``'l'``, ``'tiny'`` or a dict with
            ``stem_channels``, ``head_channels`` and seven ``stages`` of block strings.
            Default: ``'m'``.
        widen_factor (float): Width multiplier for every layer. Default: 1.0.
        out_indices (Sequence[int]): Outputs to return: 0..6 are the ends of the seven stages,
            7 is the 1x1 head conv. Stages after the last requested one are not built.
            Default: (7, ).
        frozen_stages (int): Stages to freeze (eval mode, no grad): -1 none, 0 the stem,
            i the stem and stages up to index i - 1. Default: -1.
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
        norm_cfg (dict): Norm config. Default: ``dict(type='BN')`` (eps 1e-5, momentum 0.1 as the
            official nets).
        act_cfg (dict): The network's main activation; blocks marked ``nre`` use ReLU.
            Default: ``dict(type='SiLU')`` (swish, as the paper).
        drop_path_rate (float): Stochastic depth, growing linearly over the blocks. Default: 0.
        norm_eval (bool): Keep norm layers in eval mode while training. Default: False.
        with_cp (bool): Activation checkpointing in every block. Default: False.
        zero_init_residual (bool): Start every residual block as the identity by zero-initialising
            the scale of its last norm (as mmdet's ResNet and timm's ``zero_init_last``); helps
            training from scratch. Pretrained weights overwrite it. Default: True.
        init_cfg (dict | list[dict], optional): Initialization config; use
            ``dict(type='Pretrained', checkpoint=..., prefix='backbone.')`` for a checkpoint made
            by ``tools/model_converters/muxnet_official_to_mmengine.py``.
    """

    def __init__(self, arch='m', widen_factor: float = 1.0,
                 out_indices: Sequence[int] = (7, ), frozen_stages: int = -1,
                 strides: Optional[Sequence[int]] = None,
                 dilations: Optional[Sequence[int]] = None,
                 output_stride: Optional[int] = None, dilate_large_kernels: bool = False,
                 conv_cfg: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN'), act_cfg: dict = dict(type='SiLU'),
                 drop_path_rate: float = 0.0, norm_eval: bool = False, with_cp: bool = False,
                 zero_init_residual: bool = True, init_cfg=None):
        if init_cfg is None:
            init_cfg = [
                dict(type='Kaiming', layer='Conv2d', mode='fan_out', nonlinearity='relu'),
                dict(type='Constant', val=1, layer=['_BatchNorm', 'GroupNorm'])
            ]
        super().__init__(init_cfg)
        setting = _arch(arch)
        if widen_factor <= 0:
            raise ValueError(f'widen_factor must be positive, got {widen_factor}')
        out_indices = tuple(out_indices)
        if not out_indices:
            raise ValueError('out_indices must name at least one output')
        for i in out_indices:
            if not 0 <= i <= NUM_STAGES:
                raise ValueError(f'out_indices entry {i} is out of range 0..{NUM_STAGES}')
        if not -1 <= frozen_stages <= max(out_indices) + 1:
            raise ValueError(f'frozen_stages={frozen_stages} is out of range '
                             f'-1..{max(out_indices) + 1} for out_indices={out_indices}')
        strides, dilations = self._resolve_strides(setting, strides, dilations, output_stride)
        self.arch = arch if isinstance(arch, str) else 'custom'
        self.widen_factor = widen_factor
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        self.zero_init_residual = zero_init_residual
        self.dilate_large_kernels = dilate_large_kernels

        stem_channels = _scaled(setting['stem_channels'], widen_factor)
        self.stem = ConvModule(3, stem_channels, 3, stride=2, padding=1, conv_cfg=conv_cfg,
                               norm_cfg=norm_cfg, act_cfg=act_cfg)
        stage_specs = [decode_stage(s) for s in setting['stages']]
        num_blocks = sum(len(s) for s in stage_specs)
        block_idx, in_channels, reduction = 0, stem_channels, 2
        self.layers: List[str] = []
        self.feature_info: List[dict] = []
        for i, specs in enumerate(stage_specs):
            if i > max(out_indices):
                break
            blocks = []
            reduction *= strides[i]
            for j, spec in enumerate(specs):
                stride = strides[i] if j == 0 else 1
                out_channels = _scaled(spec.out_channels, widen_factor)
                rate = drop_path_rate * block_idx / max(num_blocks - 1, 1)
                dilation = tuple(dilations[i] if dilate_large_kernels else
                                 kernel_dilation(k, dilations[i]) for k in spec.kernel_sizes)
                blocks.append(self._make_block(spec, in_channels, out_channels, stride,
                                               dilation, norm_cfg, act_cfg, rate))
                in_channels = out_channels
                block_idx += 1
            name = f'layer{i + 1}'
            self.add_module(name, nn.Sequential(*blocks))
            self.layers.append(name)
            self.feature_info.append(dict(num_chs=in_channels, reduction=reduction, module=name))
        if max(out_indices) == NUM_STAGES:
            head_channels = _scaled(setting['head_channels'], widen_factor)
            self.conv_head = ConvModule(in_channels, head_channels, 1, conv_cfg=conv_cfg,
                                        norm_cfg=norm_cfg, act_cfg=act_cfg)
            self.layers.append('conv_head')
            self.feature_info.append(
                dict(num_chs=head_channels, reduction=reduction, module='conv_head'))
        self.feature_info = [self.feature_info[i] for i in out_indices]
        self.set_with_cp(with_cp)
        self._freeze_stages()

    @property
    def out_channels(self) -> Tuple[int, ...]:
        """Channels of each returned feature map, in ``out_indices`` order."""
        return tuple(info['num_chs'] for info in self.feature_info)

    @staticmethod
    def _resolve_strides(setting, strides, dilations, output_stride):
        if output_stride is not None:
            if strides is not None or dilations is not None:
                raise ValueError('give either output_stride or strides/dilations, not both')
            if output_stride not in _OUTPUT_STRIDE:
                raise ValueError(f'output_stride must be one of {sorted(_OUTPUT_STRIDE)}, '
                                 f'got {output_stride}')
            return _OUTPUT_STRIDE[output_stride]
        default = tuple(decode_stage(s)[0].stride for s in setting['stages'])
        strides = tuple(strides) if strides is not None else default
        dilations = tuple(dilations) if dilations is not None else (1, ) * NUM_STAGES
        if len(strides) != NUM_STAGES or len(dilations) != NUM_STAGES:
            raise ValueError(f'strides and dilations need {NUM_STAGES} entries, got '
                             f'{len(strides)} and {len(dilations)}')
        if any(s not in (1, 2) for s in strides) or any(d < 1 for d in dilations):
            raise ValueError(f'strides must be 1 or 2 and dilations >= 1, got {strides}, '
                             f'{dilations}')
        return strides, dilations

    @staticmethod
    def _make_block(spec: BlockSpec, in_channels: int, out_channels: int, stride: int,
                    dilation: Tuple[int, ...], norm_cfg: dict, act_cfg: dict,
                    drop_path_rate: float):
        common = dict(kernel_sizes=spec.kernel_sizes, stride=stride, dilation=dilation,
                      se_ratio=spec.se_ratio, channels_per_group=spec.channels_per_group,
                      scales=spec.scales, norm_cfg=norm_cfg, act_cfg=spec.act_cfg or act_cfg,
                      drop_path_rate=drop_path_rate)
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

    def init_weights(self):
        super().init_weights()
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else [self.init_cfg]
        pretrained = any(isinstance(c, dict) and c.get('type') == 'Pretrained' for c in cfgs)
        if self.zero_init_residual and not pretrained:
            for m in self.modules():
                if isinstance(m, (InvertedResidual, DepthwiseSeparable)) and m.has_residual:
                    norm = m.project_conv.norm
                    if getattr(norm, 'weight', None) is not None:
                        nn.init.zeros_(norm.weight)

    def _freeze_stages(self):
        if self.frozen_stages < 0:
            return
        modules = [self.stem] + [getattr(self, n) for n in self.layers[:self.frozen_stages]]
        for module in modules:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def set_with_cp(self, with_cp: bool):
        """Switch activation checkpointing of every block."""
        self.with_cp = with_cp
        for module in self.modules():
            if hasattr(module, 'with_cp') and module is not self:
                module.with_cp = with_cp

    def switch_to_deploy(self, channels_last: bool = False) -> 'MUXNet':
        """Fold BN, merge MixConv kernels, fuse split/shuffle (see :mod:`mux_backbones.deploy`)."""
        from ..deploy import switch_to_deploy
        return switch_to_deploy(self, channels_last)

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
