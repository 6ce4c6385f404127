"""Checkpoint safety: pretrained weights stay weights-only; local writes are atomic."""
import os

import pytest
import torch

from mux_backbones import MUXNet
from mux_backbones.compat import mmengine_checkpoint_types


class Payload:
    """A class a weights-only load must refuse to instantiate."""


def test_pretrained_refuses_arbitrary_pickles(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'payload': Payload()}, path)
    model = MUXNet('tiny', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(Exception, match='(?i)weights.only|unpickl'):
        model.init_weights()
    with mmengine_checkpoint_types(), pytest.raises(Exception, match='(?i)weights.only|unpickl'):
        torch.load(path)


def test_weights_only_is_not_switched_off_globally():
    assert os.environ.get('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD') in (None, '', '0')


def test_local_writes_are_atomic(tmp_path, monkeypatch):
    import mux_backbones  # noqa: F401  (applies the patch)
    from mmengine.fileio.backends.local_backend import LocalBackend
    target = tmp_path / 'iter_10.pth'
    backend = LocalBackend()
    backend.put(b'complete', str(target))
    assert target.read_bytes() == b'complete'

    def crash(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, 'replace', crash)
    with pytest.raises(KeyboardInterrupt):
        backend.put(b'half', str(target))
    assert target.read_bytes() == b'complete'
    assert os.listdir(tmp_path) == ['iter_10.pth']
