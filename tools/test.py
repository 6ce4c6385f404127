"""Test (evaluate) a trained mmdet or mmseg model.

Example:
    python tools/test.py CONFIG CHECKPOINT
    python tools/test.py CONFIG CHECKPOINT --out results.pkl --show-dir vis
"""
import argparse
import os.path as osp

from mmengine.runner import Runner

from mux_backbones.apis import (DatasetError, add_runner_args, check_datasets,
                                enable_visualization, insert_seg_map_validation, load_config,
                                task_of)


def parse_args():
    parser = argparse.ArgumentParser(description='Test (and evaluate) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out', help='dump the predictions to this pickle file')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument('--show-dir', help='save images with predictions drawn to this dir')
    parser.add_argument('--wait-time', type=float, default=2, help='interval of --show (s)')
    add_runner_args(parser)
    return parser.parse_args()


def main():
    args = parse_args()
    if not osp.isfile(args.checkpoint):
        raise SystemExit(f'checkpoint file not found: {args.checkpoint}')
    cfg = load_config(args.config, args)
    task = task_of(cfg)
    cfg.load_from = args.checkpoint
    try:
        if task == 'seg':
            insert_seg_map_validation(cfg)
        check_datasets(cfg, ('test', ))
    except DatasetError as err:
        raise SystemExit(f'error: {err}')
    if args.show or args.show_dir:
        enable_visualization(cfg, args.show_dir, args.show, args.wait_time)
    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise SystemExit('--out must be a .pkl or .pickle file')
        dump = dict(type='DumpDetResults' if task == 'det' else 'DumpResults',
                    out_file_path=args.out)
        evaluator = cfg.test_evaluator
        cfg.test_evaluator = (list(evaluator) if isinstance(evaluator, (list, tuple)) else
                              [evaluator]) + [dump]

    runner = Runner.from_cfg(cfg)
    runner.test()


if __name__ == '__main__':
    main()
