"""The tuned launch-config table: record, look up, forget, and the JSON round trip; bad configs
and foreign files are refused."""
import json

import pytest
import torch

from mux_backbones.ops import launch_config
from mux_backbones.ops.launch_config import LaunchConfig


@pytest.fixture(autouse=True)
def clean_table():
    launch_config.forget()
    yield
    launch_config.forget()


KEY = ('group_conv', 'NVIDIA H200', 'float16', (32, 96, 112, 112), (96, ), (3, ), (1, ), 2, 1)


def test_record_lookup_forget():
    assert launch_config.empty() and launch_config.lookup(KEY) is None
    launch_config.record(KEY, (8, 16, 2))
    assert not launch_config.empty()
    assert launch_config.lookup(KEY) == LaunchConfig(8, 16, 2, 1)  # not pipelined by default
    launch_config.forget(KEY)
    assert launch_config.lookup(KEY) is None and launch_config.empty()


def test_json_round_trip(tmp_path):
    other = KEY[:3] + ((1, 480, 7, 7), ) + KEY[4:]
    launch_config.record(KEY, LaunchConfig(4, 16, 8))
    launch_config.record(other, LaunchConfig(2, 8, 4, 3))
    looped = KEY[:3] + ((1, 96, 56, 56), ) + KEY[4:]
    launch_config.record(looped, LaunchConfig(64, 128, 8, 3, 16))
    path = str(tmp_path / 'configs.json')
    launch_config.save(path)
    saved = launch_config.entries()
    launch_config.forget()
    assert launch_config.load(path) == 3
    assert launch_config.entries() == saved  # nested tuples survive JSON's lists
    assert saved[looped].tiles_per_program == 16 and saved[KEY].tiles_per_program == 1


def test_files_without_tiles_per_program_load(tmp_path):
    """A table saved before configs had ``tiles_per_program`` (session 40's committed H200
    table) loads with one tile per program."""
    path = tmp_path / 'old.json'
    path.write_text(json.dumps({'format': 'mux_backbones.launch_configs/1', 'configs': [
        {'key': list(KEY), 'config': {'tile_h': 4, 'tile_w': 16, 'num_warps': 2,
                                      'num_stages': 1}}]}))
    assert launch_config.load(str(path)) == 1
    assert launch_config.lookup(KEY) == LaunchConfig(4, 16, 2, 1, 1)


@pytest.mark.parametrize('config', [(3, 16, 4), (8, 16, 64), (128, 256, 4), (0, 16, 4),
                                    (8, 16, 4, 0), (8, 16, 4, 5), (64, 64, 4, 3, 3),
                                    (64, 64, 4, 3, 128)])
def test_impossible_configs_are_refused(config):
    with pytest.raises(ValueError, match='invalid launch config'):
        launch_config.record(KEY, config)
    assert launch_config.empty()


def test_foreign_file_is_refused(tmp_path):
    path = tmp_path / 'other.json'
    path.write_text(json.dumps({'configs': []}))
    with pytest.raises(ValueError, match='not a launch-config file'):
        launch_config.load(str(path))


def test_device_kind():
    assert launch_config.device_kind(torch.device('cpu')) == 'cpu'
