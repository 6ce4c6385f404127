"""Decoder of the block strings that define MUXNet architectures.

The notation follows the official MUXNet release (itself derived from timm's EfficientNet
strings), so an official row such as ``sp_r1_k5_s1_e6_c80_se0.75_sr0.5_sg2_dwg2`` decodes
unchanged. One string describes ``r`` repeats of one block::

    <type>_r<repeats>_k<kernel[.kernel...]>_s<stride>_e<expand>_c<out channels>[options]

type:   ``ds`` depth-wise separable, ``ir`` inverted residual, ``sp`` channel-multiplexed
        inverted residual (Sec. 3.2 of the paper)
se<f>:  squeeze-excite width, a ratio of the block's input channels
sr<f>:  split ratio (fraction of channels processed by an ``sp`` block); sg<n>: shuffle groups
dwg<n>: channels per group of the spatial conv (1 = depth-wise)
sc<l>:  spatial-multiplexing scales, one per channel group, e.g. ``sc-1.0.1`` (Sec. 3.1);
        unlike the official parser, negative scales keep their sign
nre:    ReLU instead of the network's default activation (``nsw`` forces swish/SiLU)
"""
import re
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

_TOKEN = re.compile(r'^([a-z]+?)(-?\d[\d.\-]*)$')
_ACTS = {'nre': dict(type='ReLU'), 'nsw': dict(type='SiLU'), 'nr6': dict(type='ReLU6')}
_TYPES = ('ds', 'ir', 'sp')
_KEYS = ('r', 'k', 's', 'e', 'c', 'se', 'sr', 'sg', 'dwg', 'sc')


@dataclass
class BlockSpec:
    """One block of a MUXNet stage, as decoded from a block string."""
    block_type: str
    out_channels: int
    kernel_sizes: Tuple[int, ...]
    stride: int = 1
    expand_ratio: float = 1.0
    se_ratio: float = 0.0
    split_ratio: Optional[float] = None
    shuffle_groups: int = 2
    channels_per_group: int = 1
    scales: Optional[Tuple[int, ...]] = None
    act_cfg: Optional[dict] = field(default=None)


def _ints(text: str, token: str, block_str: str) -> Tuple[int, ...]:
    try:
        return tuple(int(v) for v in re.findall(r'-?\d+', text))
    except ValueError:
        raise ValueError(f'bad value in "{token}" of block string "{block_str}"') from None


def decode_block_string(block_str: str) -> Tuple[BlockSpec, int]:
    """Decode one block string into a :class:`BlockSpec` and its repeat count."""
    tokens = block_str.split('_')
    block_type, options, act_cfg = tokens[0], {}, None
    if block_type not in _TYPES:
        raise ValueError(f'unknown block type "{block_type}" in "{block_str}"; '
                         f'expected one of {_TYPES}')
    for token in tokens[1:]:
        if token in _ACTS:
            act_cfg = _ACTS[token]
            continue
        match = _TOKEN.match(token)
        if not match or match.group(1) not in _KEYS:
            raise ValueError(f'cannot parse "{token}" in block string "{block_str}"')
        options[match.group(1)] = match.group(2)
    for required in ('r', 'k', 'c'):
        if required not in options:
            raise ValueError(f'block string "{block_str}" lacks "{required}"')
    scales = _ints(options['sc'], 'sc', block_str) if 'sc' in options else None
    spec = BlockSpec(
        block_type=block_type,
        out_channels=int(options['c']),
        kernel_sizes=_ints(options['k'], 'k', block_str),
        stride=int(options.get('s', 1)),
        expand_ratio=float(options.get('e', 1)),
        se_ratio=float(options.get('se', 0)),
        split_ratio=float(options['sr']) if 'sr' in options else None,
        shuffle_groups=int(options.get('sg', 2)),
        channels_per_group=int(options.get('dwg', 1)),
        scales=scales,
        act_cfg=act_cfg)
    if block_type == 'sp' and spec.split_ratio is None:
        raise ValueError(f'"sp" block "{block_str}" needs a split ratio (sr)')
    if scales is not None and len(spec.kernel_sizes) not in (1, len(scales)):
        raise ValueError(f'block "{block_str}": {len(spec.kernel_sizes)} kernels for '
                         f'{len(scales)} scales')
    return spec, int(options['r'])


def decode_stage(block_strings: List[str]) -> List[BlockSpec]:
    """Decode the block strings of one stage into a flat list of block specs."""
    blocks = []
    for block_str in block_strings:
        spec, repeats = decode_block_string(block_str)
        for i in range(repeats):
            # Only the first block of a repeated row strides, as in EfficientNet.
            blocks.append(spec if i == 0 else BlockSpec(**{**spec.__dict__, 'stride': 1}))
    return blocks
