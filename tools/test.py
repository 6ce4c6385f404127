"""Test (evaluate) a trained mmdet or mmseg model.

Example:
    python tools/test.py CONFIG CHECKPOINT
    python tools/test.py CONFIG CHECKPOINT --out results.pkl --show-dir vis
    python tools/test.py CONFIG CHECKPOINT --tta
    python tools/test.py SEG_CONFIG CHECKPOINT --out label_maps/   # predicted maps as PNGs

The checkpoint must be readable and fill the model exactly (no missing, unexpected or mis-shaped
key): another model's weights are refused, naming the first key that does not fit.
"""
import argparse
import os.path as osp

from mmengine.runner import Runner

from mux_backbones.cli import (ToolError, add_runner_args, check_folder_can_be_made,
                               check_output_file, enable_visualization, exits_cleanly,
                               float_at_least, load_config, task_of, use_test_time_augmentation,
                               verify_checkpoint)
from mux_backbones.datasets import check_datasets, insert_seg_map_validation


def parse_args():
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='dump the predictions to this pickle file; a segmentation '
                        'config also takes a folder, for its predicted label maps as PNGs')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument('--show-dir', help='save images with predictions drawn to this dir')
    parser.add_argument('--wait-time', type=float_at_least(0), default=2,
                        help='interval of --show (s)')
    parser.add_argument('--tta', action='store_true',
                        help='test-time augmentation: the config\'s tta_model and tta_pipeline '
                        '(detection without them: each image as is and flipped, boxes merged '
                        'by NMS)')
    add_runner_args(parser)
    return parser.parse_args()


PICKLES = ('.pkl', '.pickle')


def dump_results(cfg, task: str, args) -> None:
    """``--out FILE.pkl``: every prediction pickled, next to the config's own evaluation."""
    if not args.out.endswith(PICKLES):
        raise ToolError('--out must be a .pkl or .pickle file (a segmentation config also takes '
                        'a folder for its label maps)')
    # found otherwise when the results are written, after the whole test run
    check_output_file(args.out, '--out', [(args.checkpoint, 'the checkpoint'),
                                          (args.config, 'the config')])
    dump = dict(type='DumpDetResults' if task == 'det' else 'DumpResults', out_file_path=args.out)
    evaluator = cfg.test_evaluator
    cfg.test_evaluator = (list(evaluator) if isinstance(evaluator, (list, tuple)) else
                          [evaluator]) + [dump]


def save_label_maps(cfg, out_dir: str) -> None:
    """``--out FOLDER`` on a segmentation config, as mmseg's test tool: every predicted label map
    saved as a PNG named after its image by the ``IoUMetric`` (ADE20K's 0-150 numbering where
    the dataset reduces the zero label), for offline evaluation or a benchmark server."""
    if osp.isfile(out_dir):
        raise ToolError(f'--out {out_dir} is a file: give a folder for the label maps, or a '
                        '.pkl file for the pickled predictions')
    check_folder_can_be_made(out_dir, '--out')
    evaluators = cfg.test_evaluator
    evaluators = list(evaluators) if isinstance(evaluators, (list, tuple)) else [evaluators]
    metrics = [e for e in evaluators if isinstance(e, dict)
               and str(e.get('type', '')).rpartition('.')[2] == 'IoUMetric']
    if not metrics:
        raise ToolError(f'--out {out_dir}: the test evaluator has no IoUMetric to save the label '
                        'maps; give a .pkl file to pickle the predictions instead')
    for metric in metrics:
        metric['output_dir'] = out_dir


@exits_cleanly
def main():
    args = parse_args()
    cfg = load_config(args.config, args)
    task = task_of(cfg)
    cfg.load_from = args.checkpoint
    if args.tta:
        use_test_time_augmentation(cfg)
    if task == 'seg':
        insert_seg_map_validation(cfg)
    check_datasets(cfg, ('test', ))
    if args.show or args.show_dir:
        enable_visualization(cfg, args.show_dir, args.show, args.wait_time)
    if args.out is not None:
        if task == 'seg' and not args.out.endswith(PICKLES):
            save_label_maps(cfg, args.out)
        else:
            dump_results(cfg, task, args)

    runner = Runner.from_cfg(cfg)
    verify_checkpoint(runner.model, args.checkpoint)
    runner.test()


if __name__ == '__main__':
    main()
