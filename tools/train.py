"""Train an mmdet or mmseg model (MUXNet or any other backbone) from a config.

Example:
    python tools/train.py configs/ssd/ssdlite_muxnet-m_8xb24-600e_voc0712.py
    python tools/train.py CONFIG --resume                 # continue from the last checkpoint
    python tools/train.py CONFIG --cfg-options train_cfg.max_iters=100

Before the runner starts, a MUXNet backbone's arguments and every image and annotation the
config reads are checked (missing, undecodable, malformed, boxes outside their image), and a
checkpoint to resume from must be readable and fit the model exactly. Checkpoints are written
atomically (the ``atomic_local`` file backend) unless the config chose a storage backend itself.
"""
import argparse
import os.path as osp

from mmengine.runner import Runner
from mmengine.runner.checkpoint import find_latest_checkpoint

from mux_backbones.cli import (ToolError, add_runner_args, check_amp_device, check_schedule_length,
                               exits_cleanly, finished_schedule_note, load_config, task_of,
                               use_atomic_checkpoints, verify_checkpoint)
from mux_backbones.datasets import (check_datasets, check_segmentation_config,
                                    insert_seg_map_validation)


def parse_args():
    parser = argparse.ArgumentParser(description='Train a detector or a segmentor')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--amp', action='store_true', help='enable automatic mixed precision')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the learning rate by the real batch size')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from this checkpoint, or from the latest one in work_dir if none is given')
    parser.add_argument('--clip-boxes', action='store_true',
                        help='accept VOC boxes that extend outside their image (the pipeline '
                        'clips them) instead of stopping at the first one')
    add_runner_args(parser)
    return parser.parse_args()


@exits_cleanly
def main():
    args = parse_args()
    cfg = load_config(args.config, args)
    if task_of(cfg) == 'seg':
        check_segmentation_config(cfg)
        insert_seg_map_validation(cfg)
    clipped = check_datasets(cfg, ('train', 'val') if cfg.get('val_cfg') else ('train', ),
                             clip_boxes=args.clip_boxes)
    if clipped:
        print(f'--clip-boxes: {clipped} boxes extend outside their images; the pipeline clips '
              f'them to the image')

    if args.amp:
        if cfg.optim_wrapper.get('type', 'OptimWrapper') == 'AmpOptimWrapper':
            print('AMP training is already enabled in the config.')
        else:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.loss_scale = 'dynamic'
    check_amp_device(cfg)
    check_schedule_length(cfg)
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg or 'base_batch_size' not in cfg.auto_scale_lr:
            raise ToolError('--auto-scale-lr needs "auto_scale_lr.base_batch_size" in the config')
        cfg.auto_scale_lr.enable = True

    resume_from = None
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
        resume_from = find_latest_checkpoint(cfg.work_dir) if osp.isdir(cfg.work_dir) else None
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise ToolError(f'checkpoint to resume from not found: {args.resume}')
        cfg.resume = True
        cfg.load_from = resume_from = args.resume
    use_atomic_checkpoints(cfg)

    runner = Runner.from_cfg(cfg)
    for path in {resume_from, cfg.get('load_from')} - {None}:
        if '://' not in path:  # remote weights are left to mmengine's loader
            checkpoint = verify_checkpoint(runner.model, path)
            note = finished_schedule_note(cfg, checkpoint) if path == resume_from else None
            if note:
                print(note)
    runner.train()


if __name__ == '__main__':
    main()
