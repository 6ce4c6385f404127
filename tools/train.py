"""Train an mmdet or mmseg model (MUXNet or any other backbone) from a config.

Example:
    python tools/train.py configs/ssd/ssdlite_muxnet-m_8xb24-600e_voc0712.py
    python tools/train.py CONFIG --resume                 # continue from the last checkpoint
    python tools/train.py CONFIG --cfg-options train_cfg.max_iters=100
"""
import argparse
import os.path as osp

from mmengine.runner import Runner

from mux_backbones.apis import (DatasetError, add_runner_args, check_datasets,
                                check_segmentation_config, insert_seg_map_validation, load_config,
                                task_of)


def parse_args():
    parser = argparse.ArgumentParser(description='Train a detector or a segmentor')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--amp', action='store_true', help='enable automatic mixed precision')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate by the real batch size')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from this checkpoint, or from the latest one in work_dir if none is given')
    add_runner_args(parser)
    return parser.parse_args()


def main():
    args = parse_args()
    cfg = load_config(args.config, args)
    try:
        if task_of(cfg) == 'seg':
            check_segmentation_config(cfg)
            insert_seg_map_validation(cfg)
        check_datasets(cfg, ('train', 'val') if cfg.get('val_cfg') else ('train', ))
    except (DatasetError, ValueError) as err:
        raise SystemExit(f'error: {err}')

    if args.amp:
        if cfg.optim_wrapper.get('type', 'OptimWrapper') == 'AmpOptimWrapper':
            print('AMP training is already enabled in the config.')
        else:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise SystemExit('--auto-scale-lr needs "auto_scale_lr.base_batch_size" in the config')
        cfg.auto_scale_lr.enable = True

    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise SystemExit(f'checkpoint to resume from not found: {args.resume}')
        cfg.resume = True
        cfg.load_from = args.resume

    runner = Runner.from_cfg(cfg)
    runner.train()


if __name__ == '__main__':
    main()
