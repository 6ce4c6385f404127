"""Sample efficiency of the search algorithms: hypervolume against evaluations (the paper's
search-efficiency comparison of MOEA/D against regularized evolution), over several seeds.

    python tools/search/compare_algorithms.py configs/search/muxnet_search_synflow.py \
        --work-dir work_dirs/search_compare --algos moead nsga2 re --seeds 0 1 2

Runs one search per (algorithm, seed) on the same evaluator, encoding and budget (each in its
own sub-folder, resumed if it is there already), then writes ``hv.csv`` (mean and standard
deviation of the archive's hypervolume at every evaluation count, per algorithm) and ``hv.png``,
and prints the table at a few budgets.
"""
import argparse
import csv
import os.path as osp

import numpy as np

from mux_backbones.cli import ToolError, exits_cleanly, int_at_least, positive_int
from mux_backbones.search.algorithms import ALGORITHMS
from mux_backbones.search.engine import LocalExecutor, Search, SearchError, settings_from_config


def parse_args():
    parser = argparse.ArgumentParser(description='Compare search algorithms by hypervolume')
    parser.add_argument('config', help='search config (configs/search/*.py)')
    parser.add_argument('--work-dir', required=True)
    parser.add_argument('--algos', nargs='+', choices=ALGORITHMS, default=['moead', 'nsga2', 're'])
    parser.add_argument('--seeds', nargs='+', type=int_at_least(0), default=[0, 1, 2])
    parser.add_argument('--budget', type=positive_int, help='evaluations per search')
    return parser.parse_args()


def hv_curve(progress, evaluations: np.ndarray) -> np.ndarray:
    """The archive's hypervolume after each count of evaluations (a step function, recorded at
    the end of each generation); NaN before the first generation ends, where there is none."""
    counts = np.array([p['evaluations'] for p in progress])
    hv = np.array([p['hypervolume'] for p in progress])
    idx = np.searchsorted(counts, evaluations, side='right') - 1
    return np.where(idx >= 0, hv[np.clip(idx, 0, None)], np.nan)


def _cell(value: float, digits: int = 5) -> str:
    return '' if np.isnan(value) else f'{value:.{digits}f}'


def plot(curves: dict, evaluations: np.ndarray, path: str, title: str) -> None:
    from matplotlib.figure import Figure  # (not pyplot: no window, no display needed)
    fig = Figure(figsize=(6.4, 4), dpi=120)
    ax = fig.subplots()
    for algo, runs in curves.items():
        mean, std = runs.mean(0), runs.std(0)
        ax.plot(evaluations, mean, label=f'{algo} ({len(runs)} seeds)')
        ax.fill_between(evaluations, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel('evaluations')
    ax.set_ylabel('hypervolume (normalised objectives)')
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)


@exits_cleanly
def main():
    args = parse_args()
    for name in ('algos', 'seeds'):  # a repeat would count one run twice in the mean and spread
        values = getattr(args, name)
        if len(set(values)) != len(values):
            raise ToolError(f'--{name} names a value twice: {values}')
    curves, budget = {}, None
    try:
        for algo in args.algos:
            runs = []
            for seed in args.seeds:
                settings = settings_from_config(args.config, algorithm=algo, seed=seed,
                                                budget=args.budget)
                budget = settings.budget
                work_dir = osp.join(args.work_dir, f'{algo}_seed{seed}')
                search = Search(settings, work_dir, executor=LocalExecutor(),
                                resume=osp.exists(osp.join(work_dir, 'state.pkl')))
                search.run()
                runs.append(search.progress)
            curves[algo] = runs
    except SearchError as err:
        raise ToolError(str(err)) from None
    evaluations = np.arange(1, budget + 1)
    curves = {a: np.stack([hv_curve(p, evaluations) for p in runs]) for a, runs in curves.items()}
    with open(osp.join(args.work_dir, 'hv.csv'), 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['evaluations'] + [f'{a}_{s}' for a in curves for s in ('mean', 'std')])
        for i, n in enumerate(evaluations):
            writer.writerow([n] + [_cell(v) for a in curves
                                   for v in (curves[a][:, i].mean(), curves[a][:, i].std())])
    plot(curves, evaluations, osp.join(args.work_dir, 'hv.png'),
         f'{osp.basename(args.config)}: hypervolume vs evaluations')
    marks = sorted({n for n in (budget // 4, budget // 2, 3 * budget // 4, budget) if n})
    print('hypervolume (mean +- std over seeds ' + ', '.join(map(str, args.seeds)) + ')')
    print(f'{"evaluations":>12}' + ''.join(f'{a:>18}' for a in curves))
    for n in marks:  # a mean over seeds is there once every seed's first generation is
        cells = [f'{_cell(curves[a][:, n - 1].mean(), 4)} +- {_cell(curves[a][:, n - 1].std(), 3)}'
                 if not np.isnan(curves[a][:, n - 1]).any() else '-' for a in curves]
        print(f'{n:>12}' + ''.join(f'{c:>18}' for c in cells))
    print(f'wrote {osp.join(args.work_dir, "hv.csv")} and hv.png')


if __name__ == '__main__':
    main()
