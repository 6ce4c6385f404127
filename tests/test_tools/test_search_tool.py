"""tools/search/search_muxnet.py end to end: a small search prints its front and writes its
files, resumes, exports a config that trains as it is, and names bad input in one line; and
tools/search/compare_algorithms.py's hypervolume curves over algorithms and seeds."""
import csv
import os.path as osp

from .helpers import run_tool

TOOL = 'tools/search/search_muxnet.py'
CONFIG = 'configs/search/muxnet_search_synflow.py'
SMALL = ('--budget', '8', '--pop-size', '4', '--workers', '1')


def test_search_prints_the_front_and_exports_a_config(tmp_path):
    work = str(tmp_path / 'search')
    out = run_tool(TOOL, CONFIG, '--work-dir', work, *SMALL).stdout
    assert 'Pareto front' in out and 'hypervolume' in out
    for name in ('pareto.csv', 'history.csv', 'pareto.png', 'search.log', 'state.pkl'):
        assert osp.getsize(osp.join(work, name)) > 0, name
    with open(osp.join(work, 'pareto.csv')) as f:
        rows = list(csv.DictReader(f))
    assert rows and rows[0]['arch'].startswith('muxnet_stem')
    best = run_tool(TOOL, CONFIG, '--work-dir', work, '--within', 'params=10', 'madds=1000')
    assert best.stdout.startswith('Pareto row ') and 'muxnet_stem' in best.stdout
    score = float(best.stdout.split('score ')[1].split()[0])
    # acc is a score to reach; a limit is named with its own option
    for limits, message in ((('acc=1e9', ), 'no Pareto architecture within'),
                            (('latency=5', ), 'has no latency_ms column'),
                            (('madds', ), "--within 'madds': expected OBJECTIVE=NUMBER"),
                            (('speed=3', ), "--within 'speed=3': objective must be one of")):
        proc = run_tool(TOOL, CONFIG, '--work-dir', work, '--within', *limits, check=False)
        assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
        assert message in proc.stderr, proc.stderr[-500:]
    reached = run_tool(TOOL, CONFIG, '--work-dir', work, '--within', f'acc={score}')
    assert reached.stdout == best.stdout
    # A finished search resumes to the same front without evaluating anything again.
    again = run_tool(TOOL, CONFIG, '--work-dir', work, *SMALL, '--resume')
    assert 'resumed at generation' in again.stderr and 'Pareto front' in again.stdout
    out = run_tool(TOOL, CONFIG, '--work-dir', work, '--export-config', '0', '--task',
                   'seg').stdout
    path = osp.join(work, 'configs', 'muxnet-pareto0_seg.py')
    assert f'wrote {path}' in out
    for target, message in ((tmp_path, 'is a folder'), (tmp_path / 'c.txt', 'ends in .py')):
        proc = run_tool(TOOL, CONFIG, '--work-dir', work, '--export-config', '0', '--out',
                        str(target), check=False)
        assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
        assert message in proc.stderr
    root = _toy_ade_root(tmp_path)
    train = run_tool('tools/train.py', path, '--work-dir', str(tmp_path / 'train'),
                     '--cfg-options', 'train_cfg.max_iters=1', 'train_cfg.val_interval=5',
                     'train_dataloader.batch_size=2', 'train_dataloader.num_workers=0',
                     'train_dataloader.persistent_workers=False',
                     f'train_dataloader.dataset.data_root={root}',
                     f'val_dataloader.dataset.data_root={root}', 'custom_hooks=[]',
                     check=False)
    assert train.returncode == 0, train.stderr[-3000:]
    assert osp.isfile(tmp_path / 'train' / 'iter_1.pth')


def _toy_ade_root(tmp_path):
    from mux_backbones.datasets import make_toy_ade20k
    root = str(tmp_path / 'ade' / 'ADEChallengeData2016')
    make_toy_ade20k(root, num_train=4, num_val=2, seed=1)
    return root


def test_search_bad_input(tmp_path):
    cases = [
        (('--budget', '2', '--pop-size', '4'), 'budget 2 is below one generation'),
        (('--ref-point', 'params=0.1'), 'params=0.1M is unreachable'),
        (('--ref-point', 'speed=3'), "--ref-point 'speed=3'"),
        (('--limits', 'params'), "--limits 'params': expected OBJECTIVE=NUMBER"),
        (('--objectives', 'acc'), 'objectives must be at least two distinct names'),
        (('--resume', ), 'nothing to resume'),
        (('--export-config', '0'), 'run the search first'),
        (('--within', 'params=1'), 'run the search first'),
    ]
    for args, message in cases:
        proc = run_tool(TOOL, CONFIG, '--work-dir', str(tmp_path / 'w'), *args, check=False)
        assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
        assert message in proc.stderr.strip().splitlines()[-1], proc.stderr[-500:]


def test_compare_algorithms_writes_hypervolume_curves(tmp_path):
    work = str(tmp_path / 'compare')
    args = (CONFIG, '--work-dir', work, '--algos', 'nsga2', 're', '--seeds', '0', '1',
            '--budget', '12')
    out = run_tool('tools/search/compare_algorithms.py', *args).stdout
    assert 'hypervolume (mean +- std over seeds 0, 1)' in out
    for algo in ('nsga2', 're'):
        for seed in (0, 1):
            assert osp.isfile(osp.join(work, f'{algo}_seed{seed}', 'state.pkl'))
    with open(osp.join(work, 'hv.csv')) as f:
        rows = list(csv.DictReader(f))
    assert [int(r['evaluations']) for r in rows] == list(range(1, 13))
    assert set(rows[0]) == {'evaluations', 'nsga2_mean', 'nsga2_std', 're_mean', 're_std'}
    # No archive before the first generation (12 evaluations) ends: no number, not a 0.
    assert all(r['nsga2_mean'] == '' for r in rows[:11]) and rows[11]['nsga2_mean'] != ''
    for algo in ('nsga2', 're'):  # an archive's hypervolume never shrinks as it grows
        means = [float(r[f'{algo}_mean']) for r in rows[11:]]
        assert means[0] > 0 and all(b >= a - 1e-9 for a, b in zip(means, means[1:]))
    assert osp.getsize(osp.join(work, 'hv.png')) > 0
    # Run again: every search resumes finished, and the curves are the same.
    before = open(osp.join(work, 'hv.csv')).read()
    run_tool('tools/search/compare_algorithms.py', *args)
    assert open(osp.join(work, 'hv.csv')).read() == before


def test_search_work_dir_that_cannot_be_made(tmp_path):
    afile = tmp_path / 'taken'
    afile.write_text('')
    for tool, extra in ((TOOL, SMALL), ('tools/search/compare_algorithms.py',
                                        ('--algos', 're', '--seeds', '0', '--budget', '12'))):
        proc = run_tool(tool, CONFIG, '--work-dir', str(afile / 'w'), *extra, check=False)
        assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
        assert 'cannot be made: Not a directory' in proc.stderr


def test_compare_algorithms_bad_input(tmp_path):
    tool = 'tools/search/compare_algorithms.py'
    work = ('--work-dir', str(tmp_path / 'w'))
    proc = run_tool(tool, CONFIG, *work, '--seeds', '0', '0', check=False)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr
    assert '--seeds names a value twice: [0, 0]' in proc.stderr
    proc = run_tool(tool, CONFIG, *work, '--seeds', '-1', check=False)
    assert proc.returncode == 2 and 'argument --seeds: -1 is below the minimum 0' in proc.stderr
    proc = run_tool(tool, CONFIG, *work, '--budget', '4', check=False)
    assert proc.returncode == 1 and 'budget 4 is below one generation' in proc.stderr
    assert not osp.exists(tmp_path / 'w' / 'hv.csv')
