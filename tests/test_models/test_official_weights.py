"""Official checkpoint conversion: round trip, equality with the official forward, bad files."""
import re

import pytest
import torch

from mux_backbones import MUXNetClassifier
from mux_backbones.engine import CheckpointError, CheckpointRefusedError
from mux_backbones.models.official_weights import (CheckpointMismatchError,
                                                   convert_official_state_dict,
                                                   load_official_checkpoint)
from .official_reference import official_forward

# Inverse of the converter's mapping, written independently from the key patterns.
_INV_BLOCK = [('expand_conv.conv', 'conv_pw'), ('expand_conv.bn', 'bn1'),
              ('depthwise_conv.convs', 'conv_dw'), ('depthwise_conv', 'conv_dw'),
              ('project_conv.conv', 'conv_pwl'), ('project_conv.bn', 'bn3'), ('se', 'se')]
_INV_DS = [('depthwise_conv', 'conv_dw'), ('depthwise_norm', 'bn1'), ('se', 'se'),
           ('project_conv.conv', 'conv_pw'), ('project_conv.bn', 'bn2')]


def to_official(state):
    """Our classifier state dict -> an official (timm layout) one, for MUXNet-m."""
    rows, out = {}, {}
    for key in state:
        m = re.match(r'backbone\.layer(\d)\.(\d+)\.', key)
        if m:
            rows.setdefault((int(m.group(1)), int(m.group(2))), None)
    order = {k: i for i, k in enumerate(sorted(rows))}
    for key, value in state.items():
        m = re.match(r'backbone\.layer(\d)\.(\d+)\.(body\.)?(.+)', key)
        if m:
            row = order[(int(m.group(1)), int(m.group(2)))]
            rest = m.group(4)
            table = _INV_DS if int(m.group(1)) == 1 else _INV_BLOCK
            if table is _INV_BLOCK:
                rest = rest.replace('depthwise_norm', 'bn2')
            for ours, theirs in table:
                if rest.startswith(ours):
                    rest = theirs + rest[len(ours):]
                    break
            out[f'blocks.{row}.0.{rest}'] = value
            continue
        for ours, theirs in (('backbone.stem.conv', 'conv_stem'), ('backbone.stem.bn', 'bn1'),
                             ('backbone.conv_head.conv', 'conv_head'),
                             ('backbone.conv_head.bn', 'bn2'), ('head.fc', 'classifier')):
            if key.startswith(ours):
                out[theirs + key[len(ours):]] = value
    return out


@pytest.fixture(scope='module')
def official_m():
    torch.manual_seed(0)
    model = MUXNetClassifier('m')
    for m in model.modules():  # non-trivial BN statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.3, 0.3)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return to_official(model.state_dict())


def test_official_layout_has_the_official_key_count(official_m):
    assert len(official_m) == 413  # the official MUXNet-m checkpoint
    assert 'blocks.17.0.conv_pwl.weight' in official_m
    assert 'blocks.13.0.conv_dw.4.weight' in official_m


def test_converted_model_equals_official_forward(official_m):
    model = MUXNetClassifier('m').eval()
    model.load_state_dict(convert_official_state_dict(official_m, 'm'))
    for shape in ((2, 3, 224, 224), (1, 3, 97, 131)):
        x = torch.randn(*shape)
        with torch.no_grad():
            ours, ref = model(x), official_forward(official_m, x)
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('wrapper', [None, 'state_dict', 'state_dict_ema'])
def test_wrapped_checkpoints_round_trip(official_m, tmp_path, wrapper):
    path = tmp_path / 'official.pth'
    torch.save(official_m if wrapper is None else {wrapper: official_m, 'epoch': 3}, path)
    converted = convert_official_state_dict(load_official_checkpoint(str(path)), 'm')
    assert len(converted) == len(official_m)
    assert to_official(converted).keys() == official_m.keys()
    for k, v in to_official(converted).items():
        assert torch.equal(v, official_m[k])


def test_backbone_pretrained_from_converted(official_m, tmp_path):
    from mux_backbones import MUXNet
    path = tmp_path / 'converted.pth'
    converted = convert_official_state_dict(official_m, 'm')
    torch.save(dict(state_dict=converted), path)
    backbone = MUXNet('m', out_indices=(7, ), init_cfg=dict(type='Pretrained',
                                                            checkpoint=str(path),
                                                            prefix='backbone.'))
    backbone.init_weights()
    assert torch.equal(backbone.stem.conv.weight, official_m['conv_stem.weight'])


def test_wrong_arch_is_rejected(official_m):
    with pytest.raises(CheckpointMismatchError, match='MUXNet-l'):
        convert_official_state_dict(official_m, 'l')


def test_missing_and_extra_keys_are_rejected(official_m):
    partial = dict(official_m)
    partial.pop('blocks.3.0.conv_pwl.weight')
    with pytest.raises(CheckpointMismatchError, match='missing'):
        convert_official_state_dict(partial, 'm')
    extra = dict(official_m, **{'blocks.3.0.foo.weight': torch.zeros(1)})
    with pytest.raises(CheckpointMismatchError, match='foo'):
        convert_official_state_dict(extra, 'm')


@pytest.mark.parametrize('content, message', [
    (b'', 'is empty'),
    (b'not a checkpoint at all', 'is not a PyTorch checkpoint'),
])
def test_corrupt_files_get_no_advice_to_trust_them(tmp_path, content, message):
    bad = tmp_path / 'corrupt.pth'
    bad.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as info:
        load_official_checkpoint(str(bad))
    assert 'trust' not in str(info.value)


def test_unsafe_files_need_trust(tmp_path):
    unsafe = tmp_path / 'unsafe.pth'
    torch.save({'state_dict': {'w': torch.zeros(1)}, 'args': re.compile('x')}, unsafe)
    with pytest.raises(CheckpointRefusedError, match='pickles re._compile.*--trust-checkpoint'):
        load_official_checkpoint(str(unsafe))
    assert 'w' in load_official_checkpoint(str(unsafe), trust=True)
