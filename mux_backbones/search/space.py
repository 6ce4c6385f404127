"""The MUXNet search space (MUXConv paper, Sec. 4: the space MOEA/D searches), as integer genes.

An architecture is a vector of ``2 + 7 * 10`` integers: the stem and head widths, then per stage

=========  ================================================================================
gene       choices (index -> value)
=========  ================================================================================
width      the stage's output channels, from a per-stage list (``WIDTHS``)
depth      blocks after the stage's first one, 0..3 (0 in the stem stage and the last stage)
e_first    expansion ratio of the first block: 2, 3, 4, 6
e_rest     expansion ratio of the other blocks: 2, 3, 4, 6
k_first    kernel-size mix (MixConv groups) of the first block: 3, 5, 3.5, 3.5.7, 3.5.7.9,
           3.5.7.9.11
k_rest     kernel of the other blocks: 3, 5, 7
mux        the other blocks as plain inverted residuals (0) or channel-multiplexed ``sp`` blocks
           processing half their channels, 2 channels per group, 2-group shuffle (1)
scales     spatial multiplexing of the other blocks: none, -1.0.1, -1.0, 0.1
se         squeeze-excite ratio of every block: 0, 0.25, 0.5, 0.75
act        activation of every block: swish (0) or ReLU (1)
=========  ================================================================================

The first stage is the depth-wise separable block after the stem (only width, se and act vary);
the strides of the stages are MUXNet's (1, 2, 2, 2, 1, 2, 1). :meth:`MUXNetSpace.decode` writes
the project's own block strings (:mod:`mux_backbones.backbones.block_spec`), so a decoded point is
an arch dict that ``MUXNet(arch=...)`` builds through the same decoder as the released archs, and
the released ``m``, ``l`` and our ``xs``, ``s`` are points of the space
(:meth:`MUXNetSpace.encode` inverts ``decode`` on them). Genes a point does not use (``e_rest``
of a stage without further blocks, say) are kept at 0 by :meth:`MUXNetSpace.canonical`, so one
architecture has one vector.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..backbones.block_spec import decode_block_string, decode_stage
from ..backbones.stage_plan import NUM_STAGES, arch_from_string, arch_to_string, resolve_arch
from ..layers.channel_mux import split_width
from ..layers.spatial_mux_conv import split_for_scales

STEM_WIDTHS = (8, 16, 24, 32)
HEAD_WIDTHS = (960, 1024, 1152, 1280, 1536)
WIDTHS = (
    (8, 16, 24, 32),
    (16, 24, 32),
    (24, 32, 40, 48),
    (48, 56, 64, 72, 80, 96),
    (72, 80, 96, 112, 120, 128),
    (112, 120, 144, 160, 176, 192),
    (144, 160, 200, 240, 280),
)
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)
MAX_DEPTH = (0, 3, 3, 3, 3, 3, 0)
EXPANSIONS = (2, 3, 4, 6)
FIRST_KERNELS = ('3', '5', '3.5', '3.5.7', '3.5.7.9', '3.5.7.9.11')
REST_KERNELS = ('3', '5', '7')
SCALES = ((), (-1, 0, 1), (-1, 0), (0, 1))
SE_RATIOS = (0.0, 0.25, 0.5, 0.75)
STAGE_GENES = ('width', 'depth', 'e_first', 'e_rest', 'k_first', 'k_rest', 'mux', 'scales', 'se',
               'act')
_MUX = 'sr0.5_sg2_dwg2'


@dataclass(frozen=True)
class Gene:
    """One integer of the encoding: its name, stage (None: global) and number of choices."""
    name: str
    stage: Optional[int]
    choices: int


def _fmt(value: float) -> str:
    return f'{value:g}'


class MUXNetSpace:
    """Integer encoding of MUXNet architectures; see the module docstring for the genes."""

    def __init__(self):
        genes = [Gene('stem', None, len(STEM_WIDTHS)), Gene('head', None, len(HEAD_WIDTHS))]
        for s in range(NUM_STAGES):
            first_or_last = s in (0, NUM_STAGES - 1)
            sizes = dict(width=len(WIDTHS[s]), depth=MAX_DEPTH[s] + 1, e_first=len(EXPANSIONS),
                         e_rest=len(EXPANSIONS), k_first=len(FIRST_KERNELS),
                         k_rest=len(REST_KERNELS), mux=2, scales=len(SCALES),
                         se=len(SE_RATIOS), act=2)
            if s == 0:  # the depth-wise separable block: k3, no expansion, no further blocks
                sizes.update(e_first=1, k_first=1)
            if first_or_last:
                sizes.update(e_rest=1, k_rest=1, mux=1, scales=1)
            genes += [Gene(name, s, sizes[name]) for name in STAGE_GENES]
        self.genes: Tuple[Gene, ...] = tuple(genes)
        self.n_var = len(genes)
        self.xl = np.zeros(self.n_var, dtype=int)
        self.xu = np.array([g.choices - 1 for g in genes], dtype=int)

    # -- helpers -----------------------------------------------------------------------------
    def _index(self, name: str, stage: Optional[int]) -> int:
        return 2 + stage * len(STAGE_GENES) + STAGE_GENES.index(name) if stage is not None \
            else ('stem', 'head').index(name)

    def _stage(self, x: np.ndarray, s: int) -> Dict[str, int]:
        start = self._index('width', s)
        return dict(zip(STAGE_GENES, (int(v) for v in x[start:start + len(STAGE_GENES)])))

    # -- decoding ----------------------------------------------------------------------------
    def stage_strings(self, x: np.ndarray, s: int) -> List[str]:
        """The block strings of stage ``s`` of point ``x``."""
        g = self._stage(x, s)
        width = WIDTHS[s][g['width']]
        se = SE_RATIOS[g['se']]
        tail = (f'_se{_fmt(se)}' if se else '') + ('_nre' if g['act'] else '')
        if s == 0:
            return [f'ds_r1_k3_s1_c{width}{tail}']
        first = (f'ir_r1_k{FIRST_KERNELS[g["k_first"]]}_s{STAGE_STRIDES[s]}'
                 f'_e{_fmt(EXPANSIONS[g["e_first"]])}_c{width}{tail}')
        if not g['depth']:
            return [first]
        kind = 'sp' if g['mux'] else 'ir'
        rest = (f'{kind}_r{g["depth"]}_k{REST_KERNELS[g["k_rest"]]}_s1'
                f'_e{_fmt(EXPANSIONS[g["e_rest"]])}_c{width}'
                + (f'_se{_fmt(se)}' if se else '') + (f'_{_MUX}' if g['mux'] else '')
                + (f'_sc{_dotted(SCALES[g["scales"]])}' if g['scales'] else '')
                + ('_nre' if g['act'] else ''))
        return [first, rest]

    def check_point(self, x: Sequence[int]) -> np.ndarray:
        """``x`` as an integer vector; a ``ValueError`` naming the gene unless it has
        :attr:`n_var` whole-number genes, each within its choices (a float vector of whole
        numbers, as pymoo hands them, is taken)."""
        values = np.asarray(x)
        if values.shape != (self.n_var, ) or not (np.issubdtype(values.dtype, np.integer) or
                                                  np.issubdtype(values.dtype, np.floating)):
            raise ValueError(f'a point of the space is {self.n_var} integers, got '
                             f'{values.dtype} of shape {values.shape}')
        for i, (gene, value) in enumerate(zip(self.genes, values)):
            if value != np.rint(value) or not 0 <= value < gene.choices:
                where = '' if gene.stage is None else f' of stage {gene.stage + 1}'
                raise ValueError(f'gene {i} ({gene.name}{where}) is {value}; its choices are '
                                 f'0..{gene.choices - 1}')
        return values.astype(int)

    def decode(self, x: Sequence[int]) -> dict:
        """The arch dict of point ``x`` (buildable by ``MUXNet(arch=...)``)."""
        x = self.check_point(x)
        return dict(stem_channels=STEM_WIDTHS[x[0]], head_channels=HEAD_WIDTHS[x[1]],
                    stages=[self.stage_strings(x, s) for s in range(NUM_STAGES)])

    def arch_string(self, x: Sequence[int]) -> str:
        """Point ``x`` as one string that ``MUXNet(arch=...)`` and configs accept."""
        return arch_to_string(self.decode(x))

    # -- validity and canonical form -----------------------------------------------------------
    def _scales_fit(self, x: np.ndarray, s: int) -> bool:
        g = self._stage(x, s)
        if not g['depth'] or not g['scales']:
            return True
        width = WIDTHS[s][g['width']]
        processed = split_width(width, 0.5) if g['mux'] else width
        hidden = int(processed * EXPANSIONS[g['e_rest']])
        try:
            split_for_scales(hidden, SCALES[g['scales']], 2 if g['mux'] else 1)
        except ValueError:
            return False
        return True

    def canonical(self, x: Sequence[int]) -> np.ndarray:
        """``x`` clipped to the bounds, unused genes zeroed, impossible scale splits dropped."""
        x = np.clip(np.rint(np.asarray(x, dtype=float)), self.xl, self.xu).astype(int)
        for s in range(NUM_STAGES):
            start = self._index('width', s)
            g = self._stage(x, s)
            if not g['depth']:
                for name in ('e_rest', 'k_rest', 'mux', 'scales'):
                    x[start + STAGE_GENES.index(name)] = 0
            if not self._scales_fit(x, s):
                x[start + STAGE_GENES.index('scales')] = 0
        return x

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` uniformly drawn points, in canonical form: an ``(n, n_var)`` array."""
        raw = rng.integers(self.xl, self.xu + 1, size=(n, self.n_var))
        return np.array([self.canonical(x) for x in raw], dtype=int).reshape(n, self.n_var)

    # -- encoding ----------------------------------------------------------------------------
    def encode_string(self, arch: str) -> np.ndarray:
        """The point of an arch string (:meth:`arch_string` inverted)."""
        return self.encode(arch_from_string(arch))

    def encode(self, arch: dict) -> np.ndarray:
        """The point of an arch dict; ``ValueError`` if the space cannot express it."""
        arch = resolve_arch(arch, {})  # (a dict with the keys and 7 stages of strings)
        x = np.zeros(self.n_var, dtype=int)
        x[0] = _choice(STEM_WIDTHS, arch['stem_channels'], 'stem width')
        x[1] = _choice(HEAD_WIDTHS, arch['head_channels'], 'head width')
        for s, blocks in enumerate(arch['stages']):
            specs = [decode_block_string(b) for b in blocks]
            first, repeats = specs[0]
            if repeats != 1 or len(specs) > 2:
                raise ValueError(f'stage {s + 1}: the space has one first block and one row of '
                                 f'further blocks, got {blocks}')
            g = dict.fromkeys(STAGE_GENES, 0)
            g['width'] = _choice(WIDTHS[s], first.out_channels, f'stage {s + 1} width')
            g['se'] = _choice(SE_RATIOS, first.se_ratio, f'stage {s + 1} se')
            g['act'] = int(first.act_cfg is not None and first.act_cfg['type'] == 'ReLU')
            if s > 0:
                g['e_first'] = _choice(EXPANSIONS, first.expand_ratio, f'stage {s + 1} e')
                g['k_first'] = _choice(FIRST_KERNELS, _dotted(first.kernel_sizes),
                                       f'stage {s + 1} kernels')
            if len(specs) == 2:
                rest, depth = specs[1]
                g['depth'] = depth
                g['e_rest'] = _choice(EXPANSIONS, rest.expand_ratio, f'stage {s + 1} e')
                g['k_rest'] = _choice(REST_KERNELS, _dotted(rest.kernel_sizes),
                                      f'stage {s + 1} kernels')
                g['mux'] = int(rest.block_type == 'sp')
                g['scales'] = _choice(SCALES, tuple(rest.scales or ()), f'stage {s + 1} scales')
            start = self._index('width', s)
            x[start:start + len(STAGE_GENES)] = [g[name] for name in STAGE_GENES]
        if np.any(x > self.xu):
            raise ValueError('arch is outside the search space (a gene beyond its choices)')
        # Whatever the genes cannot say (another shuffle, SE differing within a stage, ...)
        # shows as a difference between the arch and the decoded point.
        for s, (given, decoded) in enumerate(zip(arch['stages'], self.decode(x)['stages'])):
            if decode_stage(given) != decode_stage(decoded):
                raise ValueError(f'stage {s + 1} {given} is outside the search space (closest '
                                 f'point: {decoded})')
        return x


def _dotted(values) -> str:
    return '.'.join(str(v) for v in values)


def _choice(options, value, what: str) -> int:
    for i, option in enumerate(options):
        if option == value:
            return i
    raise ValueError(f'{what} {value!r} is not one of the space\'s choices {tuple(options)}')
