"""Conversion of the official MUXNet ImageNet checkpoints (timm-style keys) to this project.

The official release stores one block per row of its arch definition (``blocks.<row>.0.*``) with
timm layer names; here every row is a block of one of seven stages with mmcv names. The mapping is
derived from the same arch table the backbone is built from, and a conversion is accepted only if
every official key is used and every key of the project's model is filled with the same shape.
"""
import re
from collections import OrderedDict
from typing import Dict, List, Tuple

import torch

from ..backbones.block_spec import decode_stage
from ..backbones.muxnet import arch_settings
from ..engine.checkpoint import (CheckpointError, CheckpointRefusedError, read_checkpoint,
                                 state_dict_of)
from .classifier import MUXNetClassifier

# Official layer name -> project layer name, per block type.
_BLOCK_LAYERS = {
    'ds': {'conv_dw': 'depthwise_conv', 'bn1': 'depthwise_norm', 'se': 'se',
           'conv_pw': 'project_conv.conv', 'bn2': 'project_conv.bn'},
    'ir': {'conv_pw': 'expand_conv.conv', 'bn1': 'expand_conv.bn', 'conv_dw': 'depthwise_conv',
           'bn2': 'depthwise_norm', 'se': 'se', 'conv_pwl': 'project_conv.conv',
           'bn3': 'project_conv.bn'},
}
_BLOCK_LAYERS['sp'] = {k: f'body.{v}' for k, v in _BLOCK_LAYERS['ir'].items()}
_TOP_LEVEL = {'conv_stem': 'backbone.stem.conv', 'bn1': 'backbone.stem.bn',
              'conv_head': 'backbone.conv_head.conv', 'bn2': 'backbone.conv_head.bn',
              'classifier': 'head.fc'}
_WRAPPERS = ('state_dict_ema', 'state_dict', 'model')


class CheckpointMismatchError(CheckpointError):
    """The checkpoint is not an official MUXNet checkpoint of the requested arch."""


def _block_rows(arch: str) -> List[Tuple[str, str]]:
    """(project block prefix, block type) for every official row of ``arch``, in order."""
    rows = []
    for i, stage in enumerate(arch_settings[arch]['stages']):
        for j, spec in enumerate(decode_stage(stage)):
            rows.append((f'backbone.layer{i + 1}.{j}', spec.block_type))
    return rows


def map_official_key(key: str, rows: List[Tuple[str, str]]) -> str:
    """Project key of one official key; raises ``CheckpointMismatchError`` if it has none."""
    match = re.fullmatch(r'blocks\.(\d+)\.0\.([a-z_]+\d?)\.(.+)', key)
    if match:
        row, layer, rest = int(match.group(1)), match.group(2), match.group(3)
        if row >= len(rows):
            raise CheckpointMismatchError(f'key "{key}": block row {row} does not exist '
                                          f'(the arch has {len(rows)} rows)')
        prefix, block_type = rows[row]
        if layer not in _BLOCK_LAYERS[block_type]:
            raise CheckpointMismatchError(f'key "{key}": no layer "{layer}" in a '
                                          f'"{block_type}" block')
        if layer == 'conv_dw' and re.fullmatch(r'\d+\.weight', rest):
            rest = f'convs.{rest}'  # MixConv kernels
        return f'{prefix}.{_BLOCK_LAYERS[block_type][layer]}.{rest}'
    head, _, rest = key.partition('.')
    if head in _TOP_LEVEL and rest:
        return f'{_TOP_LEVEL[head]}.{rest}'
    raise CheckpointMismatchError(f'key "{key}" is not part of an official MUXNet checkpoint')


def unwrap_state_dict(checkpoint) -> Dict[str, torch.Tensor]:
    """The state dict inside an official checkpoint (plain, or under state_dict[_ema])."""
    if not isinstance(checkpoint, dict):
        raise CheckpointMismatchError(f'expected a dict checkpoint, got '
                                      f'{type(checkpoint).__name__}')
    for wrapper in _WRAPPERS:
        if isinstance(checkpoint.get(wrapper), dict):
            checkpoint = checkpoint[wrapper]
            break
    try:
        return OrderedDict(state_dict_of(checkpoint))
    except CheckpointError:
        raise CheckpointMismatchError('checkpoint holds no state dict of tensors') from None


def convert_official_state_dict(state: Dict[str, torch.Tensor],
                                arch: str) -> 'OrderedDict[str, torch.Tensor]':
    """Convert an official MUXNet-m/-l state dict to the :class:`MUXNetClassifier` layout.

    Raises:
        CheckpointMismatchError: a key has no counterpart, a project key stays unfilled or a shape
            differs -- i.e. the checkpoint is not of ``arch``.
    """
    if arch not in ('m', 'l'):
        raise ValueError(f'official checkpoints exist for arch "m" and "l" only, not "{arch}"')
    num_classes = state['classifier.weight'].shape[0] if 'classifier.weight' in state else 1000
    target = MUXNetClassifier(arch, num_classes=num_classes).state_dict()
    rows = _block_rows(arch)
    converted = OrderedDict()
    for key, value in state.items():
        new_key = map_official_key(key, rows)
        if new_key not in target:
            raise CheckpointMismatchError(f'key "{key}" maps to "{new_key}", which MUXNet-{arch} '
                                          f'does not have: is this a MUXNet-{arch} checkpoint?')
        if tuple(target[new_key].shape) != tuple(value.shape):
            raise CheckpointMismatchError(
                f'key "{key}" has shape {tuple(value.shape)} but MUXNet-{arch} expects '
                f'{tuple(target[new_key].shape)}: is this a MUXNet-{arch} checkpoint?')
        converted[new_key] = value
    missing = [k for k in target if k not in converted]
    if missing:
        raise CheckpointMismatchError(f'{len(missing)} weights of MUXNet-{arch} are missing from '
                                      f'the checkpoint, e.g. "{missing[0]}"')
    return OrderedDict((k, converted[k]) for k in target)


def load_official_checkpoint(path: str, trust: bool = False) -> Dict[str, torch.Tensor]:
    """Read an official checkpoint file, weights-only unless ``trust`` is set.

    Official training checkpoints may pickle training arguments; loading those needs ``trust``
    (full unpickling), which must only be used for files from a trusted source.

    Raises:
        CheckpointError: The file is missing, empty, truncated or corrupt (one line naming it).
        CheckpointRefusedError: It pickles an object weights-only loading refuses; the message
            says that ``--trust-checkpoint`` would load it.
        CheckpointMismatchError: It holds no state dict of tensors.
    """
    try:
        checkpoint = read_checkpoint(path, trust=trust)
    except CheckpointRefusedError as err:
        raise CheckpointRefusedError(
            f'{err} (if the file comes from a trusted source, --trust-checkpoint loads it)',
            err.global_name) from None
    return unwrap_state_dict(checkpoint)
