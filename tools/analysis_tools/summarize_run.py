"""Summarise runs from their work_dirs: the metrics before and after training, and their curves.

    python tools/analysis_tools/summarize_run.py work_dirs/ssdlite_muxnet-m_1xb8-300it_toyvoc
    python tools/analysis_tools/summarize_run.py work_dirs/A work_dirs/B --plot curves.png

Reads the ``<timestamp>/vis_data/scalars.json`` that mmengine's LocalVisBackend wrote: the newest
one, joined to the logs it resumed from (``train.py --resume``). An evaluation logged before the
first training record is the untrained model's (``EvaluateBeforeTrainHook``); the line then
compares it with the last evaluation.

``--plot`` draws, for every run given (so a MUXNet run and its MobileNetV2 baseline share the
axes), the training loss, the learning rate and each headline metric against the iteration.
"""
import argparse
import glob
import json
import os
import os.path as osp
from typing import List, NamedTuple, Sequence

from mux_backbones.cli import ToolError, check_output_file, exits_cleanly

# The metrics shown first (VOC and ADE20K's); a run evaluated with others (COCO, Cityscapes)
# shows all of its evaluation's numbers instead.
METRICS = ('pascal_voc/mAP', 'mIoU', 'mAcc', 'aAcc')
# What mmengine logs beside the metrics of an evaluation, and what marks a training record.
_BOOKKEEPING = ('data_time', 'time', 'step', 'iter', 'epoch', 'memory')
_TRAINING = ('lr', 'loss')
# What --plot draws of the training records by default.
TRAINING_KEYS = ('loss', 'lr')


class Evaluation(NamedTuple):
    """One evaluation: after how many training iterations, and what it measured."""
    iteration: int
    before_training: bool
    metrics: dict


class Run(NamedTuple):
    """What one run logged: its training records (with their iteration) and its evaluations."""
    name: str
    training: List[dict]
    evaluations: List[Evaluation]


def _logged_values(record: dict) -> dict:
    """The numbers a record logged: its metrics or losses, not mmengine's bookkeeping."""
    return {k: v for k, v in record.items()
            if k not in _BOOKKEEPING and isinstance(v, (int, float))}


def _read_scalars(path: str, last: bool):
    """One ``scalars.json``: its training records and evaluations.

    An evaluation is placed at the iteration of the training record before it: mmengine logs
    validation by epoch in epoch-based loops, so its own ``step`` is not an iteration there. A
    cut last line is an error in the newest file (``last``) and the mark of a killed run, which
    was resumed, in an earlier one.
    """
    training, evals, iteration = [], [], 0
    with open(path) as f:
        lines = f.readlines()
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines) and not last:
                break
            raise ToolError(f'{path}, line {number}: not a JSON record (a run stopped '
                            'while writing it?)') from None
        if not isinstance(record, dict):
            raise ToolError(f'{path}, line {number}: not a JSON record')
        if any(key in record for key in _TRAINING):
            iteration = int(record.get('step', record.get('iter', iteration + 1)))
            training.append(dict(record, iter=iteration))
            continue
        metrics = _logged_values(record)
        shown = {m: metrics[m] for m in METRICS if m in metrics} or metrics
        if shown:
            evals.append(Evaluation(iteration, not training, shown))
    return training, evals


def read_run(work_dir) -> Run:
    """The newest run under ``work_dir``, with the parts it resumed from.

    Every ``train.py --resume`` logs to a new timestamped folder, from the checkpoint's
    iteration on. A folder whose training starts past the iterations logged before it continues
    them (its records replace any logged again after the checkpoint); one that starts from
    the beginning, or trains nothing, is a new run and the earlier folders are not part of it.
    """
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not files:
        raise ToolError(f'no scalars.json under {work_dir}/*/vis_data')
    training, evals = [], []
    for index, path in enumerate(files):
        new_training, new_evals = _read_scalars(path, last=index == len(files) - 1)
        start = new_training[0]['iter'] if new_training else 0
        if not training or start <= training[0]['iter']:
            training, evals = [], []
        training = [r for r in training if r['iter'] < start]
        evals = [e for e in evals if e.iteration < start] + [
            e._replace(before_training=e.before_training and not training) for e in new_evals]
        training += new_training
    return Run(osp.basename(osp.normpath(work_dir)), training, evals)


def fmt(metrics) -> str:
    return ', '.join(f'{k}={v:.4g}' for k, v in metrics.items())


def summary_line(run: Run) -> str:
    if not run.evaluations:
        raise ToolError(f'no evaluation recorded in {run.name}')
    first, last = run.evaluations[0], run.evaluations[-1]
    if first.before_training and not last.before_training:
        return (f'{run.name}: before training {fmt(first.metrics)} -> after training '
                f'{fmt(last.metrics)}')
    if last.before_training:
        return f'{run.name}: untrained {fmt(last.metrics)}'
    return f'{run.name}: last evaluation {fmt(last.metrics)}'


def headline(evaluation: Evaluation) -> str:
    """The metric a run is judged by: VOC's mAP or ADE20K's mIoU, else its first one."""
    return next(iter(evaluation.metrics))


def plot_runs(runs: List[Run], path: str, keys: Sequence[str] = TRAINING_KEYS) -> None:
    """Write the curves of ``runs`` to one image: one panel per training key (``keys``), then
    one per headline metric."""
    import matplotlib
    from matplotlib.figure import Figure  # (not pyplot: no window, no display needed)
    from matplotlib.lines import Line2D

    metrics = list(dict.fromkeys(headline(e) for run in runs for e in run.evaluations[:1]))
    panels = list(keys) + metrics
    fig = Figure(figsize=(4.2 * len(panels), 3.6), dpi=110)
    axes = fig.subplots(1, len(panels), squeeze=False)
    colours = matplotlib.rcParams['axes.prop_cycle'].by_key()['color']
    handles = []
    for index, run in enumerate(runs):
        colour = colours[index % len(colours)]
        handles.append(Line2D([], [], color=colour, lw=1.5, label=run.name))
        for axis, key in zip(axes[0], keys):
            points = [(r['iter'], r[key]) for r in run.training if key in r]
            if points:
                # (a lone record, as a run resumed for one iteration logs, as a dot)
                axis.plot(*zip(*points), color=colour, lw=1.2,
                          marker='o' if len(points) == 1 else None, ms=4)
        for axis, metric in zip(axes[0][len(keys):], metrics):
            points = [(e.iteration, e.metrics[metric]) for e in run.evaluations
                      if metric in e.metrics]
            if points:
                axis.plot(*zip(*points), color=colour, marker='o', ms=4, lw=1.2)
    for axis, key in zip(axes[0], panels):
        axis.set_title({'loss': 'training loss', 'lr': 'learning rate'}.get(key, key),
                       fontsize=10)
        axis.set_xlabel('iteration')
        axis.grid(alpha=0.3)
    # One legend for all panels, above them: a run has one colour everywhere.
    rows = -(-len(runs) // 3)
    fig.legend(handles=handles, loc='upper center', ncol=min(len(runs), 3), fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.07 * rows))
    fig.savefig(path)


@exits_cleanly
def main():
    parser = argparse.ArgumentParser(description='Summarise a run\'s evaluations')
    parser.add_argument('work_dirs', nargs='+')
    parser.add_argument('--plot', metavar='FILE.png', default=None,
                        help='also draw every run\'s loss, learning rate and metric curves')
    parser.add_argument('--keys', nargs='+', default=list(TRAINING_KEYS),
                        help='the training records\' keys to draw with --plot, e.g. loss '
                        'loss_cls loss_bbox (default: loss lr)')
    args = parser.parse_args()
    if args.plot:
        check_output_file(args.plot, '--plot')
        from matplotlib.backend_bases import FigureCanvasBase
        supported = FigureCanvasBase.get_supported_filetypes()
        if osp.splitext(args.plot)[1][1:].lower() not in supported:
            raise ToolError(f'--plot {args.plot}: no image format for its extension '
                            '(e.g. .png, .pdf, .svg)')
    runs = [read_run(work_dir) for work_dir in args.work_dirs]
    for run in runs:
        print(summary_line(run))
    if args.plot:
        logged = sorted({k for run in runs for r in run.training for k in _logged_values(r)})
        missing = [k for k in args.keys if k not in logged]
        if missing:
            raise ToolError(f'--keys {" ".join(missing)}: not in any run\'s training records; '
                            f'they have {", ".join(logged) or "none"}')
        os.makedirs(osp.dirname(osp.abspath(args.plot)), exist_ok=True)
        plot_runs(runs, args.plot, args.keys)
        print(f'saved {args.plot}')


if __name__ == '__main__':
    main()
