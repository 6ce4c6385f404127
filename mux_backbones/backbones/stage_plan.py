"""The stage plan of a MUXNet: every fact about its geometry, worked out once.

From an arch (a name of ``arch_settings`` or a dict), a width multiplier and the stride/dilation
settings, :func:`plan_stages` gives the stem width, each of the seven stages' decoded blocks,
output channels, stride, dilation and cumulative reduction, and the head width. The backbone
builds itself from it, :func:`muxnet_out_channels` reads channels off it without building a net,
and the tools read output strides off it; nobody works the geometry out a second time.
"""
import math
import re
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

from ..utils.arguments import is_int, is_real, is_sequence
from .block_spec import BlockSpec, decode_stage

NUM_STAGES = 7
# Output index 7 is the 1x1 head conv after the seven stages.
HEAD_INDEX = NUM_STAGES
STEM_STRIDE = 2
# Output stride -> (per-stage strides, per-stage dilations) for dense prediction.
OUTPUT_STRIDE_SETTINGS = {
    32: ((1, 2, 2, 2, 1, 2, 1), (1, 1, 1, 1, 1, 1, 1)),
    16: ((1, 2, 2, 2, 1, 1, 1), (1, 1, 1, 1, 1, 2, 2)),
    8: ((1, 2, 2, 1, 1, 1, 1), (1, 1, 1, 2, 2, 4, 4)),
}
_ARCH_KEYS = ('stem_channels', 'head_channels', 'stages')
# An arch written as one string (what a search writes to its CSV and a config can hold):
#   muxnet_stem<C>_head<C>|<stage 1>|...|<stage 7>, each stage its block strings joined by '+'.
_ARCH_PREFIX = 'muxnet_stem'


def make_divisible(channels: float, divisor: int = 8) -> int:
    """Round a width to a multiple of ``divisor``, never more than 10% below it."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * channels:
        rounded += divisor
    return rounded


def scale_width(channels: int, widen_factor: float) -> int:
    """A layer width under the width multiplier (unchanged at 1.0, as the official nets)."""
    return channels if widen_factor == 1.0 else make_divisible(channels * widen_factor)


def kernel_dilation(kernel_size: int, dilation: int) -> int:
    """Dilation of a k x k kernel in a stage dilated by ``dilation``: span near a dilated 3x3."""
    if dilation == 1 or kernel_size <= 3:
        return dilation
    return max(1, round(dilation * 2 / (kernel_size - 1)))


def arch_to_string(arch: dict) -> str:
    """One string for an arch dict, as ``MUXNet(arch=...)`` takes it (:func:`arch_from_string`)."""
    stages = '|'.join('+'.join(blocks) for blocks in arch['stages'])
    return f'{_ARCH_PREFIX}{arch["stem_channels"]}_head{arch["head_channels"]}|{stages}'


def arch_from_string(text: str) -> dict:
    """The arch dict of a string made by :func:`arch_to_string`."""
    head, *stages = text.split('|')
    match = re.fullmatch(rf'{_ARCH_PREFIX}(\d+)_head(\d+)', head)
    if not match or len(stages) != NUM_STAGES:
        raise ValueError(f'arch string {text!r} is not "{_ARCH_PREFIX}<C>_head<C>" followed by '
                         f'{NUM_STAGES} "|"-separated stages')
    return dict(stem_channels=int(match.group(1)), head_channels=int(match.group(2)),
                stages=[stage.split('+') for stage in stages])


def resolve_arch(arch, registry: Dict[str, dict]) -> dict:
    """The arch dict of a registered name or an arch string, or a user's dict checked for keys."""
    if isinstance(arch, str) and arch.startswith(_ARCH_PREFIX):
        arch = arch_from_string(arch)
    if isinstance(arch, str):
        if arch not in registry:
            raise ValueError(f'unknown MUXNet arch "{arch}"; choose one of {sorted(registry)} '
                             f'or pass a dict with keys {_ARCH_KEYS}')
        return registry[arch]
    if not isinstance(arch, dict):
        raise ValueError(f'arch must be a name or a dict, got {type(arch).__name__}')
    missing = [k for k in _ARCH_KEYS if k not in arch]
    if missing:
        raise ValueError(f'arch dict lacks "{missing[0]}" (an arch dict needs {_ARCH_KEYS})')
    stages = arch['stages']
    if not isinstance(stages, (list, tuple)) or len(stages) != NUM_STAGES or not all(
            isinstance(s, (list, tuple)) and s and all(isinstance(b, str) for b in s)
            for s in stages):
        raise ValueError(f'arch "stages" must be {NUM_STAGES} non-empty lists of block strings')
    for key in ('stem_channels', 'head_channels'):
        if not is_int(arch[key]) or arch[key] < 1:
            raise ValueError(f'arch "{key}" must be a positive int, got {arch[key]!r}')
    return arch


def check_out_indices(out_indices: Sequence[int]) -> Tuple[int, ...]:
    """Output indices as a tuple: strictly increasing, each in 0..7 (returned in that order)."""
    if not is_sequence(out_indices):
        raise ValueError(f'out_indices must be a sequence of output indices such as (7, ), got '
                         f'{out_indices!r}')
    out_indices = tuple(out_indices)
    if not out_indices:
        raise ValueError('out_indices must name at least one output')
    for i in out_indices:
        if not is_int(i) or not 0 <= i <= HEAD_INDEX:
            raise ValueError(f'out_indices entry {i!r} is out of range 0..{HEAD_INDEX}')
    if any(b <= a for a, b in zip(out_indices, out_indices[1:])):
        raise ValueError(f'out_indices must be strictly increasing (outputs come in network '
                         f'order), got {out_indices}')
    return out_indices


def resolve_strides(default_strides: Sequence[int], strides: Optional[Sequence[int]],
                    dilations: Optional[Sequence[int]],
                    output_stride: Optional[int]) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """Per-stage strides and dilations from explicit lists or the ``output_stride`` shorthand."""
    if output_stride is not None:
        if strides is not None or dilations is not None:
            raise ValueError('give either output_stride or strides/dilations, not both')
        if output_stride not in OUTPUT_STRIDE_SETTINGS:
            raise ValueError(f'output_stride must be one of {sorted(OUTPUT_STRIDE_SETTINGS)}, '
                             f'got {output_stride!r}')
        return OUTPUT_STRIDE_SETTINGS[output_stride]
    strides = tuple(strides) if strides is not None else tuple(default_strides)
    dilations = tuple(dilations) if dilations is not None else (1, ) * NUM_STAGES
    if len(strides) != NUM_STAGES or len(dilations) != NUM_STAGES:
        raise ValueError(f'strides and dilations need {NUM_STAGES} entries, got '
                         f'{len(strides)} and {len(dilations)}')
    if not all(is_int(s) and s in (1, 2) for s in strides) or \
            not all(is_int(d) and d >= 1 for d in dilations):
        raise ValueError(f'strides must be 1 or 2 and dilations integers >= 1, got {strides}, '
                         f'{dilations}')
    return strides, dilations


@dataclass(frozen=True)
class StagePlan:
    """One of the seven stages.

    Attributes:
        blocks: The decoded blocks (repeats expanded; only the first may stride).
        out_channels: Output width after the width multiplier.
        stride: Stride of the stage's first block.
        dilation: Dilation of the stage (per kernel, see :func:`kernel_dilation`).
        reduction: Output stride of the network at the end of the stage.
    """
    blocks: Tuple[BlockSpec, ...]
    out_channels: int
    stride: int
    dilation: int
    reduction: int


@dataclass(frozen=True)
class MUXNetPlan:
    """Stem width, the seven stages and the head width of one MUXNet configuration."""
    stem_channels: int
    stages: Tuple[StagePlan, ...]
    head_channels: int

    def channels(self, index: int) -> int:
        """Output channels of output index ``index`` (0..6 stage ends, 7 the head conv)."""
        return self.head_channels if index == HEAD_INDEX else self.stages[index].out_channels

    def reduction(self, index: int) -> int:
        """Output stride of output index ``index``."""
        return self.stages[min(index, NUM_STAGES - 1)].reduction

    @property
    def output_stride(self) -> int:
        """Output stride of the deepest map (the end of the last stage and the head conv)."""
        return self.stages[-1].reduction


def plan_stages(arch, widen_factor: float = 1.0, strides: Optional[Sequence[int]] = None,
                dilations: Optional[Sequence[int]] = None,
                output_stride: Optional[int] = None,
                registry: Optional[Dict[str, dict]] = None) -> MUXNetPlan:
    """Work out the geometry of a MUXNet.

    Args:
        arch (str | dict): A name of ``registry`` (default: the released ``arch_settings``), a
            dict with ``stem_channels``, ``head_channels`` and seven ``stages`` of block strings,
            or that dict as one string (:func:`arch_to_string`).
        widen_factor (float): Width multiplier of every layer.
        strides (Sequence[int], optional): Stride of each stage (default: the arch's own).
        dilations (Sequence[int], optional): Dilation of each stage (default: all 1).
        output_stride (int, optional): 8, 16 or 32, shorthand for strides/dilations.
        registry (dict, optional): Named archs to resolve ``arch`` in.
    """
    if registry is None:
        from .muxnet import arch_settings as registry
    setting = resolve_arch(arch, registry)
    if not (is_real(widen_factor) and widen_factor > 0 and math.isfinite(widen_factor)):
        raise ValueError(f'widen_factor must be a positive finite number, got {widen_factor!r}')
    specs = [tuple(decode_stage(s)) for s in setting['stages']]
    strides, dilations = resolve_strides([s[0].stride for s in specs], strides, dilations,
                                         output_stride)
    stages, reduction = [], STEM_STRIDE
    for blocks, stride, dilation in zip(specs, strides, dilations):
        reduction *= stride
        stages.append(StagePlan(blocks, scale_width(blocks[-1].out_channels, widen_factor),
                                stride, dilation, reduction))
    return MUXNetPlan(scale_width(setting['stem_channels'], widen_factor), tuple(stages),
                      scale_width(setting['head_channels'], widen_factor))
