"""Draw what a config's data pipeline feeds the model, with its ground truth, as mmdet's and
mmseg's ``browse_dataset`` do.

    python tools/analysis_tools/browse_dataset.py CONFIG [--split train] [--num 20] [--out-dir DIR]

Each sample goes through the split's whole pipeline (the training augmentations: crops, flips,
resizing, colour jitter), so the pictures show what training sees: detection boxes with class
names (mmdet's visualizer), segmentation maps with a legend of their classes (mmseg's, ignored
pixels left undrawn). The split's data is checked first, as ``train.py`` checks it. Drawings are
saved (default ``work_dirs/<config name>/browse_<split>``), named after their images, prefixed by
the sample's index so that repeated images (a ``RepeatDataset``) keep one drawing each.
"""
import argparse
import os
import os.path as osp

import mmcv

import mux_backbones  # noqa: F401  (registers MUXNet and applies the stack fixes)
from mux_backbones.cli import (ToolError, cfg_options_action, check_folder_can_be_made,
                               exits_cleanly, int_at_least, read_config, task_of)
from mux_backbones.datasets import check_datasets, insert_seg_map_validation
from mux_backbones.utils.drawing import save_segmentation

SPLITS = ('train', 'val', 'test')


def parse_args():
    parser = argparse.ArgumentParser(description='Draw the samples a config\'s pipeline makes')
    parser.add_argument('config', help='config file')
    parser.add_argument('--split', choices=SPLITS, default='train',
                        help='whose dataloader to browse (default: train)')
    parser.add_argument('--num', type=int_at_least(1), default=20,
                        help='samples to draw, from the first (default: 20)')
    parser.add_argument('--out-dir', help='folder for the drawings (default: '
                        'work_dirs/<config name>/browse_<split>)')
    parser.add_argument('--cfg-options', nargs='+', action=cfg_options_action(),
                        help='override settings of the config, as key=value pairs')
    return parser.parse_args()


def build_dataset_and_visualizer(cfg, split: str):
    """The split's dataset and the config's visualizer (without storage backends: the tool
    writes its drawings itself), both in the config's scope, the visualizer knowing the
    dataset's classes and palette."""
    from mmengine.registry import init_default_scope
    if task_of(cfg) == 'det':
        from mmdet.registry import DATASETS, VISUALIZERS
        from mmdet.utils import register_all_modules
    else:
        from mmseg.registry import DATASETS, VISUALIZERS
        from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    init_default_scope(cfg.default_scope)
    dataset = DATASETS.build(cfg[f'{split}_dataloader'].dataset)
    visualizer = VISUALIZERS.build(dict(cfg.visualizer, vis_backends=None))
    visualizer.dataset_meta = dataset.metainfo
    return dataset, visualizer


def draw_sample(visualizer, item: dict, task: str, out_file: str) -> str:
    """Draw one packed sample's image with its ground truth; what it holds, in words."""
    image = item['inputs'].permute(1, 2, 0).cpu().numpy()
    image = mmcv.imconvert(image, 'bgr', 'rgb')  # (mmcv loads BGR)
    sample = item['data_samples']
    if task == 'det':
        boxes = sample.gt_instances.bboxes
        # The pipeline packs mmdet's box objects; its visualizer draws plain (N, 4) tensors.
        sample.gt_instances.bboxes = getattr(boxes, 'tensor', boxes)
        visualizer.add_datasample('sample', image, sample, draw_gt=True, draw_pred=False,
                                  show=False, out_file=out_file)
        classes = visualizer.dataset_meta['classes']
        labels = sample.gt_instances.labels.tolist()
        return f'{len(labels)} boxes ({", ".join(sorted({classes[i] for i in labels}))})'
    return f'classes: {", ".join(save_segmentation(visualizer, image, sample, out_file, True))}'


@exits_cleanly
def main():
    args = parse_args()
    cfg = read_config(args.config, args.cfg_options)
    task = task_of(cfg)
    if not isinstance(cfg.get(f'{args.split}_dataloader', None), dict):
        raise ToolError(f'the config has no {args.split}_dataloader')
    out_dir = args.out_dir or osp.join(
        'work_dirs', osp.splitext(osp.basename(args.config))[0], f'browse_{args.split}')
    check_folder_can_be_made(out_dir, '--out-dir')
    if task == 'seg':
        insert_seg_map_validation(cfg)
    check_datasets(cfg, (args.split, ))
    dataset, visualizer = build_dataset_and_visualizer(cfg, args.split)
    count = min(args.num, len(dataset))
    os.makedirs(out_dir, exist_ok=True)
    for index in range(count):
        item = dataset[index]
        name = osp.basename(item['data_samples'].img_path)
        out_file = osp.join(out_dir, f'{index:04d}_{osp.splitext(name)[0]}.png')
        print(f'{name}: {draw_sample(visualizer, item, task, out_file)}')
    print(f'saved {count} drawings of the {args.split} pipeline in {out_dir}')


if __name__ == '__main__':
    main()
