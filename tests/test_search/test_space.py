"""The search space: released MUXNets are points of it, every point builds and runs."""
import numpy as np
import pytest
import torch

from mux_backbones import MUXNet, arch_settings
from mux_backbones.backbones.stage_plan import arch_from_string, arch_to_string
from mux_backbones.search import MUXNetSpace

SPACE = MUXNetSpace()


@pytest.mark.parametrize('arch', ['xs', 's', 'm', 'l'])
def test_released_archs_round_trip(arch):
    x = SPACE.encode(arch_settings[arch])
    assert SPACE.decode(x) == arch_settings[arch]
    assert (SPACE.canonical(x) == x).all()
    assert (SPACE.encode_string(arch_to_string(arch_settings[arch])) == x).all()


def test_random_points_round_trip_and_stay_canonical():
    X = SPACE.sample(np.random.default_rng(0), 50)
    assert len({SPACE.arch_string(x) for x in X}) == 50
    for x in X:
        assert (SPACE.encode(SPACE.decode(x)) == x).all()
        assert (SPACE.canonical(x) == x).all()
        assert ((SPACE.xl <= x) & (x <= SPACE.xu)).all()


def test_every_decoded_point_builds_and_runs():
    X = SPACE.sample(np.random.default_rng(1), 6)
    X = np.concatenate([X, SPACE.canonical(SPACE.xl)[None], SPACE.canonical(SPACE.xu)[None]])
    for x in X:
        model = MUXNet(SPACE.arch_string(x), out_indices=(4, 7)).eval()
        with torch.no_grad():
            outs = model(torch.randn(1, 3, 48, 48))
        assert tuple(o.shape[1] for o in outs) == model.out_channels
        assert all(torch.isfinite(o).all() for o in outs)


def test_arch_string_is_what_muxnet_and_configs_take():
    text = arch_to_string(arch_settings['m'])
    assert arch_from_string(text) == arch_settings['m']
    a, b = MUXNet(text, out_indices=(7, )), MUXNet('m', out_indices=(7, ))
    assert a.state_dict().keys() == b.state_dict().keys()
    with pytest.raises(ValueError, match='followed by 7'):
        MUXNet('muxnet_stem16_head960|ds_r1_k3_s1_c8')


def test_archs_outside_the_space_are_named():
    with pytest.raises(ValueError, match="not one of the space's choices|outside the search"):
        SPACE.encode(arch_settings['tiny'])


def test_canonical_zeroes_unused_genes_and_drops_impossible_scale_splits():
    x = SPACE.encode(arch_settings['s'])
    depth = SPACE._index('depth', 1)
    y = x.copy()
    y[depth] = 0
    z = SPACE.canonical(y)
    for name in ('e_rest', 'k_rest', 'mux', 'scales'):
        assert z[SPACE._index(name, 1)] == 0
    assert SPACE.decode(z)['stages'][1] == [arch_settings['s']['stages'][1][0]]


@pytest.mark.parametrize('point, match', [
    (np.zeros(10, int), 'a point of the space is 72 integers, got int64 of shape'),
    (np.ones(72, bool), 'a point of the space is 72 integers, got bool'),
    ('abc', 'a point of the space is 72 integers'),
    (np.r_[-1, np.zeros(71, int)], r'gene 0 \(stem\) is -1; its choices are 0..3'),
    (np.r_[0, 0, 0, 0, 0, 1, np.zeros(66, int)],
     r'gene 5 \(e_rest of stage 1\) is 1; its choices are 0..0'),
    (np.r_[0.5, np.zeros(71)], r'gene 0 \(stem\) is 0.5'),
])
def test_points_outside_the_space_are_named(point, match):
    """(numpy would wrap -1 to the last choice, and 0.5 would round down silently)"""
    with pytest.raises(ValueError, match=match):
        SPACE.decode(point)


def test_pymoos_float_points_and_empty_samples():
    x = SPACE.encode(arch_settings['m'])
    assert SPACE.decode(x.astype(float)) == arch_settings['m']
    assert SPACE.sample(np.random.default_rng(0), 0).shape == (0, SPACE.n_var)
    with pytest.raises(ValueError, match='arch dict lacks "stem_channels"'):
        SPACE.encode(dict(stages=[]))
