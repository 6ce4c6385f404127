"""Objectives: exact params/MAdds, a deterministic zero-cost score, clear errors."""
import numpy as np
import pytest

from mux_backbones import MUXNetClassifier
from mux_backbones.search import MUXNetSpace
from mux_backbones.search.objectives import (SynflowEvaluator, arch_hash, build_evaluator,
                                             check_objectives, complexity, measure_latency)
from mux_backbones.utils import count_macs, count_params


def test_params_and_madds_agree_with_the_counter():
    space = MUXNetSpace()
    arch = space.arch_string(space.sample(np.random.default_rng(3), 1)[0])
    model = MUXNetClassifier(arch)
    params, madds = complexity(arch)
    assert params == count_params(model) / 1e6
    assert madds == count_macs(model, (1, 3, 224, 224)) / 1e6


def test_released_counts_are_the_papers():
    from mux_backbones import arch_settings
    from mux_backbones.backbones.stage_plan import arch_to_string
    params, madds = complexity(arch_to_string(arch_settings['m']))
    assert (round(params, 3), round(madds, 1)) == (3.354, 216.8)


def test_synflow_is_deterministic_and_grows_with_capacity():
    space = MUXNetSpace()
    small = space.arch_string(space.canonical(space.xl))
    large = space.arch_string(space.canonical(space.xu))
    score = SynflowEvaluator(shape=32)
    assert score(small) == score(small)
    assert score(large) > score(small)


def test_latency_is_measured_per_batch():
    space = MUXNetSpace()
    times = measure_latency(space.arch_string(space.canonical(space.xl)), 'cpu', (1, 2),
                            shape=32, warmup=1, runs=2)
    assert set(times) == {1, 2} and all(t > 0 for t in times.values())


def test_unknown_evaluator_and_objective():
    with pytest.raises(ValueError, match='unknown evaluator "oracle"'):
        build_evaluator(dict(type='oracle'))
    with pytest.raises(ValueError, match='unknown objective "beauty"'):
        check_objectives(('acc', 'beauty'))
    with pytest.raises(ValueError, match='at least two distinct'):
        check_objectives(('params', 'params'))


def test_train_evaluator_trains_through_the_runner(tmp_path, toy_voc, outside_interpreter):
    """(As the search tool runs it on a CPU: the toy config's ``fused_ops`` on the C++ kernels.)"""
    from mux_backbones.search.objectives import TrainEvaluator
    space = MUXNetSpace()
    arch = space.arch_string(space.canonical(space.xl))
    loader = dict(num_workers=0, persistent_workers=False, batch_size=2)
    options = {f'{split}_dataloader.{k}': v for split in ('train', 'val')
               for k, v in dict(loader, **{'dataset.data_root': toy_voc}).items()}
    evaluator = TrainEvaluator('det', work_root=str(tmp_path), max_iters=2, cfg_options=options)
    score = evaluator(arch)
    assert 0 <= score <= 1
    assert (tmp_path / arch_hash(arch) / 'candidate.py').exists()
