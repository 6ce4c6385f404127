"""Checkpoint safety: weights-only reading with one-line errors, an allow-list that reaches no
callable, exact loading, and atomic writes that are a named backend (not an import side effect)."""
import os
import pickle
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.logging.history_buffer import HistoryBuffer

from mux_backbones import MUXNet
from mux_backbones.compat import mmengine_checkpoint_types
from mux_backbones.engine import (CheckpointError, CheckpointRefusedError, check_state_dict,
                                  read_checkpoint)
from mux_backbones.engine.atomic_backend import BACKEND_NAME, remove_stale_partials


class Payload:
    """A class a weights-only load must refuse to instantiate."""


class _Reduce:
    """Pickles as ``func(*args)``: how a crafted checkpoint asks the unpickler to call things."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _save(path, obj):
    torch.save(obj, path)
    return str(path)


def test_pretrained_refuses_arbitrary_pickles(tmp_path):
    path = _save(tmp_path / 'evil.pth', {'state_dict': {}, 'payload': Payload()})
    model = MUXNet('tiny', init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(CheckpointRefusedError, match='pickles .*Payload, which weights-only'):
        model.init_weights()
    with mmengine_checkpoint_types(), pytest.raises(Exception, match='(?i)weights.only|unpickl'):
        torch.load(path)


def test_weights_only_is_not_switched_off_globally():
    assert os.environ.get('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD') in (None, '', '0')


@pytest.mark.parametrize('payload', [
    _Reduce(getattr, HistoryBuffer, '__init__'),  # the way to __globals__ and __builtins__
    _Reduce(getattr, HistoryBuffer, 'register_statistics'),
    _Reduce(getattr, np.ndarray, 'tofile'),
    _Reduce(getattr, torch.Tensor, '__init__'),
    _Reduce(eval, '1 + 1'),
    _Reduce(os.system, 'true'),
])
def test_allow_list_reaches_no_callable(tmp_path, payload):
    hub = HistoryBuffer()
    hub.update(1.0)
    path = _save(tmp_path / 'crafted.pth', {'meta': {}, 'hub': hub, 'x': payload})
    with mmengine_checkpoint_types(), pytest.raises(pickle.UnpicklingError):
        torch.load(path)
    with pytest.raises(CheckpointError):
        read_checkpoint(path, training_state=True)


def test_history_buffer_statistics_still_load(tmp_path):
    hub = HistoryBuffer()
    hub.update(3.0)
    path = _save(tmp_path / 'hub.pth', {'hub': hub, 'array': np.arange(3)})
    loaded = read_checkpoint(path, training_state=True)
    assert loaded['hub'].current() == 3.0 and loaded['array'].tolist() == [0, 1, 2]


@pytest.mark.parametrize('content, message', [
    (b'', 'is empty'),
    (None, 'is truncated'),
    (bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8)) + b'x',
     'is not a PyTorch checkpoint'),
    (b'\x80\x02garbage', 'cannot read checkpoint'),
], ids=['empty', 'truncated', 'foreign-bytes', 'bad-pickle'])
def test_corrupt_checkpoints_give_one_line(tmp_path, content, message):
    path = tmp_path / 'bad.pth'
    if content is None:
        torch.save(MUXNet('tiny').state_dict(), path)
        content = path.read_bytes()[:path.stat().st_size // 2]
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as info:
        read_checkpoint(str(path))
    assert '\n' not in str(info.value) and str(path) in str(info.value)
    assert 'weights_only=False' not in str(info.value)


def test_missing_unexpected_and_misshaped_keys_are_named():
    model = MUXNet('tiny').state_dict()
    with pytest.raises(CheckpointError, match=r'1 of the model\'s \d+ weights are missing '
                       r'\(first: "stem.conv.weight"\)'):
        check_state_dict(model, {k: v for k, v in model.items() if k != 'stem.conv.weight'}, 'x')
    with pytest.raises(CheckpointError, match='1 keys have no place in the model'):
        check_state_dict(model, {**model, 'head.fc.weight': torch.zeros(1)}, 'x')
    with pytest.raises(CheckpointError, match=r'first: "stem.conv.weight", checkpoint \(1,\)'):
        check_state_dict(model, {**model, 'stem.conv.weight': torch.zeros(1)}, 'x')
    check_state_dict(model, model, 'x')


def test_atomic_backend_is_opt_in(tmp_path):
    # Importing the suite leaves mmengine's local writes as they are.
    code = ('import mux_backbones, inspect\n'
            'from mmengine.fileio.backends.local_backend import LocalBackend\n'
            'assert "atomic" not in inspect.getsource(LocalBackend.put)\n'
            'print("stock")')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.stdout.strip() == 'stock', out.stderr[-2000:]


def test_atomic_writes_keep_mode_and_leave_nothing_half(tmp_path, monkeypatch):
    from mmengine.fileio import get_file_backend
    backend = get_file_backend(str(tmp_path), backend_args=dict(backend=BACKEND_NAME))
    target = tmp_path / 'iter_10.pth'
    old = os.umask(0o022)
    try:
        backend.put(b'complete', str(target))
    finally:
        os.umask(old)
    assert target.read_bytes() == b'complete'
    assert target.stat().st_mode & 0o777 == 0o644

    def crash(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, 'replace', crash)
    with pytest.raises(KeyboardInterrupt):
        backend.put(b'half', str(target))
    assert target.read_bytes() == b'complete'
    assert os.listdir(tmp_path) == ['iter_10.pth']


def test_partial_files_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                          capture_output=True, text=True).stdout.strip()
    host = socket.gethostname()
    stale = tmp_path / f'.iter_4.pth.{host}.{dead}.partial'
    alive = tmp_path / f'.iter_5.pth.{host}.{os.getpid()}.partial'
    other_host = tmp_path / f'.iter_6.pth.elsewhere.{dead}.partial'
    for path in (stale, alive, other_host):
        path.write_bytes(b'x' * 10)
    assert remove_stale_partials(str(tmp_path)) == 1
    assert sorted(os.listdir(tmp_path)) == sorted([alive.name, other_host.name])
