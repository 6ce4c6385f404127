"""Run a trained detector or segmentor on one image and save the picture of what it found.

    python tools/demo.py IMAGE CONFIG CHECKPOINT [--out-file out.jpg] [--score-thr 0.3]

Detection: boxes with class names and scores (mmdet's visualizer). Segmentation: the predicted
mask over the image (mmseg's visualizer) with a legend of the classes present.
"""
import argparse
import os
import os.path as osp

import mmcv
import numpy as np
from mmengine.config import Config

import mux_backbones  # noqa: F401  (registers MUXNet and applies the stack fixes)
from mux_backbones.cli import (ToolError, check_output_file, exits_cleanly, float_at_least, task_of,
                               usable_device, verify_checkpoint)
from mux_backbones.compat import mmengine_checkpoint_types
from mux_backbones.datasets import check_image_file

# Below this the visualizers' label boxes and our legend have no room (mmseg's visualizer
# crashes on a 1x1 image).
MIN_SIDE = 8


def parse_args():
    parser = argparse.ArgumentParser(description='Draw the predictions of a model on an image')
    parser.add_argument('img', help='image file')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out-file', default=None, help='output image (default: <img>_pred.jpg)')
    parser.add_argument('--device', default='cpu', help='device, e.g. cpu or cuda:0')
    parser.add_argument('--score-thr', type=float_at_least(0, 1), default=0.3,
                        help='detection score threshold, in [0, 1]')
    parser.add_argument('--opacity', type=float_at_least(0, 1), default=0.5,
                        help='segmentation mask opacity, in [0, 1]')
    return parser.parse_args()


def _legend(image: np.ndarray, names, colours) -> np.ndarray:
    """Append a legend panel (one colour swatch and name per class) to the right of ``image``."""
    import cv2
    row, width = 22, 180
    panel = np.full((max(image.shape[0], row * len(names) + 10), width, 3), 255, np.uint8)
    for i, (name, colour) in enumerate(zip(names, colours)):
        y = 5 + i * row
        cv2.rectangle(panel, (5, y), (25, y + 16), tuple(int(c) for c in colour), -1)
        cv2.putText(panel, str(name), (32, y + 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1,
                    cv2.LINE_AA)
    canvas = np.full((panel.shape[0], image.shape[1], 3), 255, np.uint8)
    canvas[:image.shape[0]] = image
    return np.concatenate([canvas, panel], axis=1)


def run_detection(args, out_file):
    from mmdet.apis import inference_detector, init_detector
    from mmdet.registry import VISUALIZERS
    with mmengine_checkpoint_types():
        model = init_detector(args.config, args.checkpoint, device=args.device)
    verify_checkpoint(model, args.checkpoint)
    result = inference_detector(model, args.img)
    visualizer = VISUALIZERS.build(model.cfg.visualizer)
    visualizer.dataset_meta = model.dataset_meta
    image = mmcv.imconvert(mmcv.imread(args.img), 'bgr', 'rgb')
    visualizer.add_datasample('prediction', image, result, draw_gt=False, show=False,
                              pred_score_thr=args.score_thr, out_file=out_file)
    kept = result.pred_instances.scores >= args.score_thr
    print(f'{int(kept.sum())} objects above score {args.score_thr}')


def run_segmentation(args, out_file):
    from mmseg.apis import inference_model, init_model
    from mmseg.registry import VISUALIZERS
    with mmengine_checkpoint_types():
        model = init_model(args.config, args.checkpoint, device=args.device)
    verify_checkpoint(model, args.checkpoint)
    result = inference_model(model, args.img)
    visualizer = VISUALIZERS.build(model.cfg.visualizer)
    visualizer.set_dataset_meta(model.dataset_meta['classes'], model.dataset_meta['palette'])
    visualizer.alpha = args.opacity
    image = mmcv.imconvert(mmcv.imread(args.img), 'bgr', 'rgb')
    visualizer.add_datasample('prediction', image, result, draw_gt=False, show=False,
                              with_labels=False)
    drawn = visualizer.get_image()
    labels = np.unique(result.pred_sem_seg.data.cpu().numpy())
    names = [model.dataset_meta['classes'][i] for i in labels]
    colours = [model.dataset_meta['palette'][i] for i in labels]
    mmcv.imwrite(mmcv.imconvert(_legend(drawn, names, colours), 'rgb', 'bgr'), out_file)
    print(f'classes found: {", ".join(names)}')


def check_out_file(out_file: str, img: str) -> None:
    """Refuse, before the model runs, an output the drawing cannot or must not be written to."""
    import cv2
    check_output_file(out_file, '--out-file', [(img, 'the input image')])
    if not cv2.haveImageWriter(out_file):
        raise ToolError(f'--out-file {out_file}: no image format for its extension '
                        '(e.g. .jpg, .png)')


@exits_cleanly
def main():
    args = parse_args()
    for path, what in ((args.img, 'image'), (args.config, 'config'),
                       (args.checkpoint, 'checkpoint')):
        if not osp.isfile(path):
            raise ToolError(f'{what} file not found: {path}')
    width, height = check_image_file(args.img)
    if min(width, height) < MIN_SIDE:
        raise ToolError(f'image {args.img} is {width}x{height}; the demo needs at least '
                        f'{MIN_SIDE} pixels a side')
    out_file = args.out_file or osp.splitext(args.img)[0] + '_pred.jpg'
    check_out_file(out_file, args.img)
    usable_device(args.device)
    os.makedirs(osp.dirname(osp.abspath(out_file)), exist_ok=True)
    task = task_of(Config.fromfile(args.config))
    (run_detection if task == 'det' else run_segmentation)(args, out_file)
    print(f'saved {out_file}')


if __name__ == '__main__':
    main()
