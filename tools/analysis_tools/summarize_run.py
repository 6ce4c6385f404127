"""Print the evaluation metrics of a run before and after training, from its work_dir.

    python tools/analysis_tools/summarize_run.py work_dirs/ssdlite_muxnet-m_1xb8-300it_toyvoc

Reads the newest ``<timestamp>/vis_data/scalars.json`` that mmengine's LocalVisBackend wrote. An
evaluation logged before the first training record is the untrained model's
(``EvaluateBeforeTrainHook``); the line then compares it with the last evaluation.
"""
import argparse
import glob
import json
import os.path as osp

from mux_backbones.cli import ToolError, exits_cleanly

# The metrics shown first (VOC and ADE20K's); a run evaluated with others (COCO, Cityscapes)
# shows all of its evaluation's numbers instead.
METRICS = ('pascal_voc/mAP', 'mIoU', 'mAcc', 'aAcc')
# What mmengine logs beside the metrics of an evaluation, and what marks a training record.
_BOOKKEEPING = ('data_time', 'time', 'step', 'iter', 'epoch', 'memory')
_TRAINING = ('lr', 'loss')


def read_evaluations(work_dir):
    """The newest run's evaluations, each as ``(before_training, {metric: value})``."""
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not files:
        raise ToolError(f'no scalars.json under {work_dir}/*/vis_data')
    evals, trained = [], False
    with open(files[-1]) as f:
        for number, line in enumerate(f, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise ToolError(f'{files[-1]}, line {number}: not a JSON record (a run stopped '
                                'while writing it?)') from None
            if not isinstance(record, dict):
                raise ToolError(f'{files[-1]}, line {number}: not a JSON record')
            if any(key in record for key in _TRAINING):
                trained = True
                continue
            metrics = {k: v for k, v in record.items()
                       if k not in _BOOKKEEPING and isinstance(v, (int, float))}
            shown = {m: metrics[m] for m in METRICS if m in metrics} or metrics
            if shown:
                evals.append((not trained, shown))
    return evals


def fmt(metrics) -> str:
    return ', '.join(f'{k}={v:.4g}' for k, v in metrics.items())


@exits_cleanly
def main():
    parser = argparse.ArgumentParser(description='Summarise a run\'s evaluations')
    parser.add_argument('work_dirs', nargs='+')
    args = parser.parse_args()
    for work_dir in args.work_dirs:
        evals = read_evaluations(work_dir)
        if not evals:
            raise ToolError(f'no evaluation recorded in {work_dir}')
        name = osp.basename(osp.normpath(work_dir))
        (first_before, first), (last_before, last) = evals[0], evals[-1]
        if first_before and not last_before:
            print(f'{name}: before training {fmt(first)} -> after training {fmt(last)}')
        elif last_before:
            print(f'{name}: untrained {fmt(last)}')
        else:
            print(f'{name}: last evaluation {fmt(last)}')


if __name__ == '__main__':
    main()
