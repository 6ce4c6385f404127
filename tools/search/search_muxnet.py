"""Tri-objective MUXNet architecture search (MUXConv paper, Sec. 4) with MOEA/D-PBI and friends.

    python tools/search/search_muxnet.py configs/search/muxnet_search_synflow.py --work-dir DIR
    python tools/search/search_muxnet.py CONFIG --work-dir DIR --algo nsga2 --seed 1 --budget 96
    python tools/search/search_muxnet.py CONFIG --work-dir DIR --ref-point params=1.8 madds=66
    python tools/search/search_muxnet.py CONFIG --work-dir DIR --resume       # after kill -9
    python tools/search/search_muxnet.py CONFIG --work-dir DIR --export-config 0 --task det

CONFIG holds ``search = dict(...)`` (the fields of ``SearchSettings``); the options below
override it. Writes ``DIR/pareto.csv`` (the non-dominated architectures: ``arch``, a string
``MUXNet(arch=...)`` and configs take as it is, then params, MAdds, score, latency),
``DIR/history.csv`` (every evaluation), ``DIR/pareto.png``, and ``DIR/search.log`` (hypervolume
and the surrogate's rank correlation per generation). ``--export-config IDX`` writes an mm config
(SSDLite or PSPNet with the IDX-th architecture of ``pareto.csv``) that ``tools/train.py`` trains
as it is.
"""
import argparse
import csv
import math
import os.path as osp

from mux_backbones.cli import (ToolError, check_output_file, exits_cleanly, int_at_least,
                               positive_int)
from mux_backbones.search.algorithms import ALGORITHMS
from mux_backbones.search.engine import (LocalExecutor, RayExecutor, Search, SearchError,
                                         SearchSettings, settings_from_config)
from mux_backbones.search.export import write_candidate_config
from mux_backbones.search.objectives import OBJECTIVES, default_workers


def parse_args():
    parser = argparse.ArgumentParser(description='Search MUXNet architectures')
    parser.add_argument('config', help='search config (configs/search/*.py)')
    parser.add_argument('--work-dir', required=True, help='where results and state go')
    parser.add_argument('--budget', type=positive_int, help='evaluations in all')
    parser.add_argument('--pop-size', type=int_at_least(2), help='evaluations per generation')
    parser.add_argument('--algo', choices=ALGORITHMS, help='search algorithm')
    parser.add_argument('--objectives', nargs='+', choices=OBJECTIVES)
    parser.add_argument('--ref-point', nargs='+', metavar='OBJ=VALUE',
                        help='preferred point, e.g. params=1.8 madds=66 acc=0.7 (M for params '
                        'and MAdds)')
    parser.add_argument('--roi-width', type=float, help='region-of-interest width in (0, 1]')
    parser.add_argument('--limits', nargs='+', metavar='OBJ=LIMIT',
                        help='hard budgets, e.g. params=1.8 madds=66 (M): architectures beyond '
                        'them are penalised and kept off the front')
    parser.add_argument('--seed', type=int, help='seed of everything random')
    parser.add_argument('--workers', type=positive_int, default=None,
                        help='local evaluation processes (default: one per two cores)')
    parser.add_argument('--ray-address', help='evaluate on this Ray cluster (e.g. auto)')
    parser.add_argument('--resume', action='store_true', help='continue the search in work-dir')
    parser.add_argument('--export-config', type=int_at_least(0), metavar='IDX',
                        help='write an mm config for row IDX of work-dir/pareto.csv and exit')
    parser.add_argument('--within', nargs='+', metavar='OBJ=LIMIT',
                        help='print the best-scoring Pareto architecture within these limits '
                        '(e.g. params=1.8 madds=66; acc=0.7: a score of at least 0.7) and exit')
    parser.add_argument('--task', choices=['det', 'seg'], default='det',
                        help='task of --export-config')
    parser.add_argument('--out', help='file of --export-config (default: in work-dir)')
    return parser.parse_args()


def _ref_point(items, option: str = '--ref-point'):
    """``['params=1.8', ...]`` as ``{'params': 1.8, ...}`` (None when empty); a bad item is
    named with its ``option``."""
    ref = {}
    for item in items or ():
        name, sep, value = item.partition('=')
        try:
            ref[name] = float(value)
        except ValueError:
            raise ToolError(f'{option} {item!r}: expected OBJECTIVE=NUMBER') from None
        if not sep or name not in OBJECTIVES:
            raise ToolError(f'{option} {item!r}: objective must be one of {OBJECTIVES}')
    return ref or None


def load_settings(args) -> SearchSettings:
    return settings_from_config(
        args.config, budget=args.budget, pop_size=args.pop_size, algorithm=args.algo,
        objectives=args.objectives, ref_point=_ref_point(args.ref_point),
        roi_width=args.roi_width, seed=args.seed, limits=_ref_point(args.limits, '--limits'))


def _pareto(work_dir):
    path = osp.join(work_dir, 'pareto.csv')
    if not osp.isfile(path):
        raise ToolError(f'no {path}: run the search first')
    with open(path) as f:
        return path, list(csv.DictReader(f))


# pareto.csv's column of each objective; acc is a score to reach, the others limits to stay under
_COLUMNS = dict(acc='score', params='params', madds='madds', latency='latency_ms')


def within(args) -> None:
    limits = _ref_point(args.within, '--within')
    path, rows = _pareto(args.work_dir)
    for name in limits:
        if rows and _COLUMNS[name] not in rows[0]:
            raise ToolError(f'--within {name}: {path} has no {_COLUMNS[name]} column (the '
                            'search did not have that objective)')

    def fits(row) -> bool:
        return all(float(row[_COLUMNS[k]]) >= v if k == 'acc' else float(row[_COLUMNS[k]]) <= v
                   for k, v in limits.items())

    def score(item) -> float:  # rows without a score (no acc objective) rank by order
        value = float(item[1].get('score') or 'nan')
        return -math.inf if math.isnan(value) else value

    candidates = [(i, r) for i, r in enumerate(rows) if fits(r)]
    if not candidates:
        raise ToolError(f'no Pareto architecture within {args.within}')
    i, row = max(candidates, key=score)
    print(f'Pareto row {i}: {float(row["params"]):.3f}M params, {float(row["madds"]):.1f}M '
          f'MAdds, score {row.get("score")}\n{row["arch"]}')


def export(args) -> None:
    path, rows = _pareto(args.work_dir)
    if args.export_config >= len(rows):
        raise ToolError(f'--export-config {args.export_config}: {path} has {len(rows)} rows')
    out = args.out or osp.join(args.work_dir, 'configs',
                               f'muxnet-pareto{args.export_config}_{args.task}.py')
    check_output_file(out, '--out')
    if not out.endswith('.py'):
        raise ToolError(f'--out {out}: an mm config file ends in .py')
    write_candidate_config(rows[args.export_config]['arch'], args.task, out)
    print(f'wrote {out}: train it with python tools/train.py {out}')


@exits_cleanly
def main():
    args = parse_args()
    if args.export_config is not None:
        return export(args)
    if args.within:
        return within(args)
    try:
        settings = load_settings(args)
        executor = RayExecutor(args.ray_address) if args.ray_address else \
            LocalExecutor(args.workers or default_workers())
        try:
            search = Search(settings, args.work_dir, resume=args.resume, executor=executor)
        except SearchError:
            executor.close()
            raise
        search.run(progress_bar=True)
    except SearchError as err:
        raise ToolError(str(err)) from None
    front = search.pareto_rows()
    print(f'Pareto front ({len(front)} of {len(search.history)} evaluated), hypervolume '
          f'{search.hypervolume():.4f}:')
    print(f'{"#":>3} {"params":>8} {"MAdds":>8} {"score":>9}  arch')
    for i, row in enumerate(front):
        print(f'{i:>3} {row["params"]:7.3f}M {row["madds"]:7.1f}M '
              f'{row.get("score", float("nan")):9.4f}  {row["arch"][:60]}...')
    print(f'results in {args.work_dir}: pareto.csv, history.csv, pareto.png, search.log')


if __name__ == '__main__':
    main()
