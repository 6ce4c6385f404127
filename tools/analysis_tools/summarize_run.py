"""Print the evaluation metrics of a run before and after training, from its work_dir.

    python tools/analysis_tools/summarize_run.py work_dirs/ssdlite_muxnet-m_1xb8-300it_toyvoc

Reads the newest ``<timestamp>/vis_data/scalars.json`` that mmengine's LocalVisBackend wrote; the
first evaluation is the untrained model's when ``EvaluateBeforeTrainHook`` is on.
"""
import argparse
import glob
import json
import os.path as osp

from mux_backbones.cli import ToolError, exits_cleanly

METRICS = ('pascal_voc/mAP', 'mIoU', 'mAcc', 'aAcc')


def read_evaluations(work_dir):
    files = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not files:
        raise ToolError(f'no scalars.json under {work_dir}/*/vis_data')
    evals = []
    with open(files[-1]) as f:
        for line in f:
            record = json.loads(line)
            if any(m in record for m in METRICS):
                evals.append({m: record[m] for m in METRICS if m in record})
    return evals


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
        fmt = ', '.join
        before = fmt(f'{k}={v:.4g}' for k, v in evals[0].items())
        after = fmt(f'{k}={v:.4g}' for k, v in evals[-1].items())
        if len(evals) > 1:
            print(f'{name}: before training {before} -> after training {after}')
        else:
            print(f'{name}: {after}')


if __name__ == '__main__':
    main()
