"""The search loop: determinism, resume after kill with no evaluation repeated, outputs, and a
one-line error for every bad setting."""
import csv
import hashlib
import os.path as osp
import pickle

import numpy as np
import pytest

from mux_backbones.search import engine as search_engine
from mux_backbones.search.engine import Search, SearchError, SearchSettings
from mux_backbones.search.objectives import EVALUATORS


class ToyEvaluator:
    """A deterministic stand-in for training: a score in [0, 1] from the arch string."""
    name = 'toy'
    cheap = True
    calls = []
    crash_after = None

    def __call__(self, arch):
        if ToyEvaluator.crash_after is not None and len(ToyEvaluator.calls) >= \
                ToyEvaluator.crash_after:
            raise KeyboardInterrupt('killed mid-generation')
        ToyEvaluator.calls.append(arch)
        return int(hashlib.sha1(arch.encode()).hexdigest()[:6], 16) % 1000 / 1000


@pytest.fixture(autouse=True)
def toy_evaluator(monkeypatch):
    monkeypatch.setitem(EVALUATORS, 'toy', ToyEvaluator)
    ToyEvaluator.calls = []
    ToyEvaluator.crash_after = None


def _settings(**kwargs):
    values = dict(evaluator=dict(type='toy'), pop_size=4, budget=12, seed=3,
                  bounds=dict(acc=(1.0, 0.0), params=(1.0, 5.5), madds=(25.0, 650.0)))
    values.update(kwargs)
    return SearchSettings(**values)


def _run(work_dir, **kwargs):
    search = Search(_settings(**kwargs), str(work_dir))
    search.run()
    return search


@pytest.mark.parametrize('algorithm', ['moead', 'nsga2', 're'])
def test_same_seed_same_search(tmp_path, algorithm):
    a = _run(tmp_path / 'a', algorithm=algorithm)
    b = _run(tmp_path / 'b', algorithm=algorithm)
    assert [r['arch'] for r in a.history] == [r['arch'] for r in b.history]
    # The budget is spent in whole generations.
    assert 12 <= len(a.history) < 12 + 4 and a.progress[-1]['evaluations'] == len(a.history)
    c = _run(tmp_path / 'c', algorithm=algorithm, seed=4)
    assert [r['arch'] for r in a.history] != [r['arch'] for r in c.history]


def test_resume_after_a_kill_mid_generation_repeats_nothing(tmp_path):
    whole = _run(tmp_path / 'whole')
    calls_whole = list(ToyEvaluator.calls)
    ToyEvaluator.calls = []
    ToyEvaluator.crash_after = 6  # dies in the second generation, after two of its four
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / 'killed')
    before = list(ToyEvaluator.calls)
    ToyEvaluator.crash_after = None
    resumed = Search(_settings(), str(tmp_path / 'killed'), resume=True)
    resumed.run()
    assert [r['arch'] for r in resumed.history] == [r['arch'] for r in whole.history]
    assert [p['hypervolume'] for p in resumed.progress] == \
        [p['hypervolume'] for p in whole.progress]
    assert sorted(ToyEvaluator.calls) == sorted(calls_whole), 'every arch evaluated once'
    assert len(ToyEvaluator.calls) == len(set(ToyEvaluator.calls)) and len(before) == 6


def test_outputs(tmp_path):
    import matplotlib
    before = matplotlib.get_backend()
    matplotlib.use('svg')  # the caller's backend (a notebook's, say)
    try:
        search = _run(tmp_path, surrogate_candidates=3, budget=16)
        assert matplotlib.get_backend() == 'svg', 'the plot must not switch the backend'
    finally:
        matplotlib.use(before)
    with open(tmp_path / 'pareto.csv') as f:
        front = list(csv.DictReader(f))
    with open(tmp_path / 'history.csv') as f:
        history = list(csv.DictReader(f))
    assert list(front[0]) == ['arch', 'params', 'madds', 'score']
    assert len(history) == len(search.history) >= 16 and history[0]['generation'] == '0'
    F = search.normalise([dict(r, score=float(r['score']), params=float(r['params']),
                               madds=float(r['madds'])) for r in front])
    for i, f in enumerate(F):  # nothing on the front dominates another point of it
        assert not any((g <= f).all() and (g < f).any() for j, g in enumerate(F) if j != i)
    assert osp.getsize(tmp_path / 'pareto.png') > 10000
    log = (tmp_path / 'search.log').read_text()
    assert f'generation {len(search.progress) - 1}: {len(history)} evaluations, hypervolume' in log
    assert 'surrogate Kendall tau' in log  # the surrogate pre-screened from generation 2 on
    hv = [p['hypervolume'] for p in search.progress]
    assert hv == sorted(hv), 'the archive only grows, so its hypervolume cannot drop'


@pytest.mark.parametrize('kwargs, message', [
    (dict(evaluator=dict(type='oracle')), 'unknown evaluator "oracle"'),
    (dict(objectives=('acc', 'beauty')), 'unknown objective "beauty"'),
    (dict(algorithm='annealing'), 'unknown algorithm "annealing"'),
    (dict(budget=3), 'budget 3 is below one generation'),
    (dict(ref_point=dict(params=0.2)), 'params=0.2M is unreachable'),
    (dict(ref_point=dict(acc=1.5)), 'acc=1.5 is unreachable'),
    (dict(ref_point=dict(latency=3.0)), 'not an objective of this search'),
    (dict(objectives=('acc', 'latency'), bounds=dict(acc=(1.0, 0.0))),
     'no bounds for objective "latency"'),
    (dict(limits=dict(acc=0.5)), 'limits are positive budgets'),
    (dict(limits=dict(params=0)), 'limits are positive budgets'),
    (dict(objectives=('acc', )), 'objectives must be at least two distinct names'),
    (dict(evaluator=dict(type='synflow', shape=-1)),
     'SynflowEvaluator: shape must be a positive integer, got -1'),
    (dict(evaluator=dict(type='synflow', out_indices=(9, ))), 'out_indices entry 9'),
    (dict(evaluator=dict(type='synflow', foo=1)), "unexpected keyword argument 'foo'"),
    (dict(algorithm_args=dict(foo=1)), "algorithm_args: .*unexpected keyword argument 'foo'"),
    (dict(pop_size='4'), "pop_size must be an integer >= 2, got '4'"),
    (dict(seed=-1), 'seed must be an integer >= 0, got -1'),
    (dict(seed=1.5), 'seed must be an integer >= 0, got 1.5'),
    (dict(surrogate_candidates=0), 'surrogate_candidates must be an integer >= 1'),
    (dict(roi_width=float('nan')), r'roi_width must lie in \(0, 1\], got nan'),
    (dict(bounds=dict(acc=(1.0, ))), r'bounds.acc must be \(best, worst\)'),
    (dict(bounds=dict(acc=(1.0, float('inf')), params=(1.0, 5.5), madds=(25.0, 650.0))),
     r'bounds.acc must be \(best, worst\), two finite numbers'),
    (dict(algorithm_args=[('n_neighbors', 3)]), 'algorithm_args must be a dict'),
    (dict(pop_size=2, budget=4), '2 reference directions for 3 objectives'),
    (dict(limits=dict(params=0.01)), 'limit params=0.01M is unreachable: the smallest'),
    (dict(ref_point=dict(acc=float('nan'))), 'reference point acc=nan: expected a finite'),
    (dict(pop_size=2, budget=4, algorithm='nsga3'), 'need a population of at least one per'),
])
def test_bad_settings_are_named(tmp_path, kwargs, message):
    """Each a SearchError (what the tool turns into one line), before any evaluation."""
    with pytest.raises(SearchError, match=message):
        Search(_settings(**kwargs), str(tmp_path))


def test_bad_resume_states_are_named(tmp_path):
    with pytest.raises(SearchError, match='nothing to resume'):
        Search(_settings(), str(tmp_path / 'none'), resume=True)
    _run(tmp_path / 'a')
    with pytest.raises(SearchError, match='state.pkl exists: pass --resume'):
        Search(_settings(), str(tmp_path / 'a'))
    with pytest.raises(SearchError, match="cannot resume: seed was 3 in the saved search and "
                       "is 4 now"):
        Search(_settings(seed=4), str(tmp_path / 'a'), resume=True)
    state = tmp_path / 'a' / 'state.pkl'
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(SearchError, match='resume state in .* is corrupt'):
        Search(_settings(), str(tmp_path / 'a'), resume=True)
    state.write_bytes(pickle.dumps(dict(version=0)))
    with pytest.raises(SearchError, match='not a search state of this version'):
        Search(_settings(), str(tmp_path / 'a'), resume=True)


def test_export_config_builds_through_mmdet_and_mmseg(tmp_path, outside_interpreter):
    import torch
    from mmengine.config import Config

    from mux_backbones.cli import build_model_from_config
    from mux_backbones.search import MUXNetSpace
    from mux_backbones.search.export import write_candidate_config
    space = MUXNetSpace()
    arch = space.arch_string(space.sample(np.random.default_rng(0), 1)[0])
    for task, shape in (('det', 320), ('seg', 128)):
        path = write_candidate_config(arch, task, str(tmp_path / f'{task}.py'))
        cfg = Config.fromfile(path)
        assert cfg.model.backbone.arch == arch
        model = build_model_from_config(cfg).eval()
        with torch.no_grad():
            outs = model._forward(torch.randn(1, 3, shape, shape))
        assert outs is not None


def test_evaluate_arch_measures_every_objective():
    from mux_backbones.search import MUXNetSpace
    space = MUXNetSpace()
    arch = space.arch_string(space.canonical(space.xl))
    row = search_engine.evaluate_arch(arch, dict(type='toy'), ('acc', 'params', 'madds',
                                                               'latency'),
                                      dict(device='cpu', batch_sizes=(1, 2), shape=32))
    assert set(row) >= {'arch', 'params', 'madds', 'score', 'latency_ms', 'latency_b1_ms',
                        'latency_b2_ms'}
    assert row['latency_ms'] == row['latency_b1_ms']


def test_search_configs_load_as_settings():
    import glob

    from mux_backbones.search.engine import settings_from_config
    from tests.conftest import REPO
    paths = glob.glob(osp.join(REPO, 'configs', 'search', '*.py'))
    assert len(paths) >= 2
    for path in paths:
        settings = settings_from_config(path)
        assert settings.budget >= settings.pop_size
        build_evaluator_type = settings.evaluator['type']
        assert build_evaluator_type in EVALUATORS


def test_limits_keep_the_front_within_the_budget(tmp_path):
    search = _run(tmp_path, limits=dict(params=2.5, madds=150), budget=16)
    front = search.pareto_rows()
    assert all(r['params'] <= 2.5 and r['madds'] <= 150 for r in front)
    over = [r for r in search.history if r['params'] > 2.5 or r['madds'] > 150]
    assert over, 'the random start has architectures over the budget'
    assert (search.normalise(over) > 1).any(axis=1).all(), 'they are penalised'


def test_process_pool_gives_the_same_search(tmp_path):
    from mux_backbones.search.engine import LocalExecutor
    serial = _run(tmp_path / 'serial', budget=8)
    pooled = Search(_settings(budget=8), str(tmp_path / 'pooled'), executor=LocalExecutor(2))
    pooled.run()
    assert [r['arch'] for r in pooled.history] == [r['arch'] for r in serial.history]
    assert [r['score'] for r in pooled.history] == [r['score'] for r in serial.history]
