"""Run a trained detector or segmentor on images and save the pictures of what it found.

    python tools/demo.py IMAGE CONFIG CHECKPOINT [--out-file out.jpg] [--score-thr 0.3]
    python tools/demo.py FOLDER CONFIG CHECKPOINT [--out-dir drawings/]

Detection: boxes with class names and scores (mmdet's visualizer). Segmentation: the predicted
mask over the image (mmseg's visualizer) with a legend of the classes present. A folder: every
image directly in it (by extension, as mmdet's inferencer lists them), the model built once; an
image that does not decode is skipped with a warning.
"""
import argparse
import os
import os.path as osp
import sys

import mmcv
from mmengine.config import Config

import mux_backbones  # noqa: F401  (registers MUXNet and applies the stack fixes)
from mux_backbones.cli import (ToolError, check_output_file, exits_cleanly, float_at_least, task_of,
                               usable_device, verify_checkpoint)
from mux_backbones.datasets import DatasetError, check_image_file
from mux_backbones.utils.drawing import save_segmentation

# Below this the visualizers' label boxes and our legend have no room (mmseg's visualizer
# crashes on a 1x1 image).
MIN_SIDE = 8
# The files of a folder the demo draws (mmengine/mmcv's image extensions).
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.ppm', '.bmp', '.pgm', '.tif', '.tiff', '.webp')


def parse_args():
    parser = argparse.ArgumentParser(description='Draw the predictions of a model on an image')
    parser.add_argument('img', help='image file, or a folder of images')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--out-file', default=None, help='output image (default: <img>_pred.jpg)')
    parser.add_argument('--out-dir', default=None,
                        help='folder for the drawings, named as their images (default for a '
                        'folder FOLDER: FOLDER_pred)')
    parser.add_argument('--device', default='cpu', help='device, e.g. cpu or cuda:0')
    parser.add_argument('--score-thr', type=float_at_least(0, 1), default=0.3,
                        help='detection score threshold, in [0, 1]')
    parser.add_argument('--opacity', type=float_at_least(0, 1), default=0.5,
                        help='segmentation mask opacity, in [0, 1]')
    return parser.parse_args()


def _model_and_visualizer(init_model, visualizers, args):
    """The model of ``args.config`` with ``args.checkpoint`` loaded (by mmdet's or mmseg's
    ``init_model`` function) and checked, and the config's visualizer (from that library's
    ``visualizers`` registry) without its storage backends: the demo writes its drawings
    itself, and a LocalVisBackend without a ``save_dir`` only warns that it cannot store."""
    model = init_model(args.config, args.checkpoint, device=args.device)
    verify_checkpoint(model, args.checkpoint)
    return model, visualizers.build(dict(model.cfg.visualizer, vis_backends=None))


class DetectionDrawer:
    """A detector built once, drawing its boxes on one image at a time."""

    def __init__(self, args):
        from mmdet.apis import init_detector
        from mmdet.registry import VISUALIZERS
        self.model, self.visualizer = _model_and_visualizer(init_detector, VISUALIZERS, args)
        self.visualizer.dataset_meta = self.model.dataset_meta
        self.score_thr = args.score_thr

    def __call__(self, img: str, out_file: str) -> str:
        from mmdet.apis import inference_detector
        result = inference_detector(self.model, img)
        image = mmcv.imconvert(mmcv.imread(img), 'bgr', 'rgb')
        self.visualizer.add_datasample('prediction', image, result, draw_gt=False, show=False,
                                       pred_score_thr=self.score_thr, out_file=out_file)
        kept = result.pred_instances.scores >= self.score_thr
        return f'{int(kept.sum())} objects above score {self.score_thr}'


class SegmentationDrawer:
    """A segmentor built once, drawing its mask and a legend on one image at a time."""

    def __init__(self, args):
        from mmseg.apis import init_model
        from mmseg.registry import VISUALIZERS
        self.model, self.visualizer = _model_and_visualizer(init_model, VISUALIZERS, args)
        self.visualizer.set_dataset_meta(self.model.dataset_meta['classes'],
                                         self.model.dataset_meta['palette'])
        self.visualizer.alpha = args.opacity

    def __call__(self, img: str, out_file: str) -> str:
        from mmseg.apis import inference_model
        result = inference_model(self.model, img)
        image = mmcv.imconvert(mmcv.imread(img), 'bgr', 'rgb')
        names = save_segmentation(self.visualizer, image, result, out_file)
        return f'classes found: {", ".join(names)}'


def check_drawable(img: str) -> None:
    """Refuse an image that does not decode or is too small to draw on."""
    width, height = check_image_file(img)
    if min(width, height) < MIN_SIDE:
        raise ToolError(f'image {img} is {width}x{height}; the demo needs at least '
                        f'{MIN_SIDE} pixels a side')


def check_out_file(out_file: str, img: str) -> None:
    """Refuse, before the model runs, an output the drawing cannot or must not be written to."""
    import cv2
    check_output_file(out_file, '--out-file', [(img, 'the input image')])
    if not cv2.haveImageWriter(out_file):
        raise ToolError(f'--out-file {out_file}: no image format for its extension '
                        '(e.g. .jpg, .png)')


def drawing_name(out_dir: str, img: str) -> str:
    """The drawing of ``img`` in ``out_dir``: its own name, or a PNG where OpenCV cannot write
    its format."""
    import cv2
    out_file = osp.join(out_dir, osp.basename(img))
    return out_file if cv2.haveImageWriter(out_file) else osp.splitext(out_file)[0] + '.png'


def plan_drawings(args):
    """``[(image, drawing)]`` for the image or folder given, checked before the model is built.

    One image is refused when it cannot be drawn; a folder's bad images are skipped with a
    warning, and a folder with nothing to draw is refused.
    """
    if args.out_file and args.out_dir:
        raise ToolError('give --out-file (one image) or --out-dir, not both')
    if osp.isdir(args.img):
        if args.out_file:
            raise ToolError(f'{args.img} is a folder: give --out-dir for its drawings, not '
                            '--out-file')
        images = sorted(osp.join(args.img, name) for name in os.listdir(args.img)
                        if name.lower().endswith(IMAGE_EXTENSIONS)
                        and osp.isfile(osp.join(args.img, name)))
        if not images:
            raise ToolError(f'no image ({", ".join(IMAGE_EXTENSIONS)}) in the folder {args.img}')
        out_dir = args.out_dir or osp.normpath(args.img) + '_pred'
    elif osp.isfile(args.img):
        images, out_dir = [args.img], args.out_dir
    else:
        raise ToolError(f'image file or folder not found: {args.img}')
    if out_dir is not None:
        if osp.isfile(out_dir):
            raise ToolError(f'--out-dir {out_dir} is a file: give a folder')
        source = osp.dirname(osp.abspath(images[0]))
        if osp.isdir(out_dir) and osp.samefile(out_dir, source):
            raise ToolError(f'--out-dir {out_dir} is the images\' folder: they would be '
                            'overwritten')
    plan = []
    for img in images:
        try:
            check_drawable(img)
        except (ToolError, DatasetError) as err:
            if not osp.isdir(args.img):
                raise
            print(f'warning: skipped {err}', file=sys.stderr)
            continue
        plan.append((img, drawing_name(out_dir, img) if out_dir is not None
                     else args.out_file or osp.splitext(img)[0] + '_pred.jpg'))
    if not plan:
        raise ToolError(f'none of the {len(images)} images in {args.img} can be drawn')
    if out_dir is None:
        check_out_file(plan[0][1], plan[0][0])
    return plan


@exits_cleanly
def main():
    args = parse_args()
    for path, what in ((args.config, 'config'), (args.checkpoint, 'checkpoint')):
        if not osp.isfile(path):
            raise ToolError(f'{what} file not found: {path}')
    plan = plan_drawings(args)
    usable_device(args.device)
    task = task_of(Config.fromfile(args.config))
    draw = (DetectionDrawer if task == 'det' else SegmentationDrawer)(args)
    for img, out_file in plan:
        os.makedirs(osp.dirname(osp.abspath(out_file)), exist_ok=True)
        found = draw(img, out_file)
        print(f'{img}: {found}' if len(plan) > 1 else found)
    print(f'saved {plan[0][1]}' if len(plan) == 1
          else f'saved {len(plan)} drawings in {osp.dirname(plan[0][1])}')


if __name__ == '__main__':
    main()
