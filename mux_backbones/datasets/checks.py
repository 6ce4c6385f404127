"""Every check of the data a config reads, with errors that name the file at fault.

Pre-flight (before the runner is built, by ``tools/train.py`` and ``tools/test.py``):

* VOC splits (:func:`check_voc_dataset`): every listed image exists and *decodes*, every
  annotation parses, names a known class and has a box inside its image. mmdet's ``VOCDataset``
  silently skips unknown classes, reports malformed XML without its file name, and an undecodable
  image only fails in a data-loader worker mid-epoch (a 0-byte JPEG crashes cv2 with no file name
  at all); a box far outside its image is silently clipped by the pipeline.
* ADE20K splits (:func:`check_ade20k_dataset`): every image has a label map, and both decode.
* Segmentation configs (:func:`check_segmentation_config`): the crop is large enough for the
  backbone's output stride (read off the MUXNet stage plan) and the decode head's pooling.

Per sample (a pipeline transform): :class:`ValidateSegMap` checks a loaded label map against its
image and the number of classes; :func:`insert_seg_map_validation` puts it into every loader.

Decoding is cheap: JPEGs are decoded at 1/8 scale (the entropy-coded stream is still read to
its end, so truncation shows), PNGs have their chunk checksums verified without inflating.
"""
import os
import os.path as osp
import xml.etree.ElementTree as ET
from typing import Iterator, Optional, Tuple

import numpy as np
from mmcv.transforms import BaseTransform
from mmengine.config import Config
from mmseg.registry import TRANSFORMS

VOC_CLASSES = ('aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair',
               'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant',
               'sheep', 'sofa', 'train', 'tvmonitor')


class DatasetError(ValueError):
    """A dataset file is missing, undecodable or malformed, or a config cannot read its data."""


def check_image_file(path: str) -> Tuple[int, int]:
    """Decode an image cheaply; returns ``(width, height)``. Raises :class:`DatasetError`."""
    from PIL import Image, UnidentifiedImageError
    if not osp.isfile(path):
        raise DatasetError(f'image not found: {path}')
    if osp.getsize(path) == 0:
        raise DatasetError(f'image {path} is empty (0 bytes)')
    try:
        with Image.open(path) as img:
            size = img.size
            if img.format == 'JPEG':
                img.draft(img.mode, (max(1, size[0] // 8), max(1, size[1] // 8)))
                img.load()
            elif img.format == 'PNG':
                img.verify()
            else:
                img.load()
    except UnidentifiedImageError:
        raise DatasetError(f'image {path} is not an image file PIL can identify') from None
    except (OSError, SyntaxError, ValueError) as err:  # truncated / corrupt data
        raise DatasetError(f'image {path} does not decode: {err}') from None
    return size


def leaf_datasets(cfg_node) -> Iterator[dict]:
    """Every leaf dataset config (inside Repeat/Concat/ClassBalanced wrappers): the ones that
    read samples through a pipeline."""
    if isinstance(cfg_node, dict):
        if 'datasets' in cfg_node:
            for d in cfg_node['datasets']:
                yield from leaf_datasets(d)
        elif 'dataset' in cfg_node:
            yield from leaf_datasets(cfg_node['dataset'])
        else:
            yield cfg_node


def _box_of(obj, xml_path: str, name: str):
    box = obj.find('bndbox')
    try:
        return tuple(float(box.findtext(t)) for t in ('xmin', 'ymin', 'xmax', 'ymax'))
    except (AttributeError, TypeError, ValueError):
        raise DatasetError(f'{xml_path}: object {name!r} has no valid bndbox') from None


def _annotated_size(root: ET.Element, xml_path: str) -> Optional[Tuple[int, int]]:
    size = root.find('size')
    if size is None:
        return None
    try:
        width, height = int(float(size.findtext('width'))), int(float(size.findtext('height')))
    except (TypeError, ValueError):
        raise DatasetError(f'{xml_path}: <size> has no valid width/height') from None
    return (width, height) if width > 0 and height > 0 else None


def check_voc_dataset(data_root: str, ann_file: str, sub_data_root: str = '',
                      classes: Optional[tuple] = None, clip_boxes: bool = False) -> Tuple[int, int]:
    """Check one VOC split. Raises :class:`DatasetError` naming the file and object at fault.

    Args:
        data_root (str): The ``VOCdevkit`` folder.
        ann_file (str): Image list, relative to ``data_root``.
        sub_data_root (str): The ``VOC2007/``-like folder holding images and annotations.
        classes (tuple, optional): Class names besides the 20 VOC ones.
        clip_boxes (bool): Accept boxes that extend outside their image (the pipeline's resize
            clips them) and count them, instead of refusing the first one.

    Returns:
        tuple: ``(images, boxes outside their image)``.
    """
    if not osp.isdir(data_root):
        raise DatasetError(f'VOC data root not found: {data_root} (make the embedded set with '
                           f'tools/dataset_converters/make_toy_data.py or link VOCdevkit there)')
    list_path = osp.join(data_root, ann_file)
    if not osp.isfile(list_path):
        raise DatasetError(f'VOC image list not found: {list_path}')
    root = osp.join(data_root, sub_data_root)
    with open(list_path) as f:
        ids = [line.strip() for line in f if line.strip()]
    if not ids:
        raise DatasetError(f'VOC image list is empty: {list_path}')
    allowed = set(VOC_CLASSES) | set(classes or ())
    outside = 0
    for img_id in ids:
        img_path = osp.join(root, 'JPEGImages', f'{img_id}.jpg')
        xml_path = osp.join(root, 'Annotations', f'{img_id}.xml')
        if not osp.isfile(img_path):
            raise DatasetError(f'image listed in {list_path} not found: {img_path}')
        if not osp.isfile(xml_path):
            raise DatasetError(f'annotation of image {img_id} not found: {xml_path}')
        width, height = check_image_file(img_path)
        try:
            tree = ET.parse(xml_path)
        except ET.ParseError as err:
            raise DatasetError(f'malformed VOC annotation {xml_path}: {err}') from None
        annotated = _annotated_size(tree.getroot(), xml_path)
        if annotated is not None and annotated != (width, height):
            raise DatasetError(f'{xml_path}: <size> says {annotated[0]}x{annotated[1]} but '
                               f'{img_path} is {width}x{height}')
        for index, obj in enumerate(tree.getroot().iter('object')):
            name = obj.findtext('name')
            if name is None or name.strip() not in allowed:
                raise DatasetError(f'{xml_path}: object {index} class {name!r} is not a VOC '
                                   f'class')
            x0, y0, x1, y1 = _box_of(obj, xml_path, name)
            if x1 < x0 or y1 < y0:
                raise DatasetError(f'{xml_path}: object {index} ({name}) has an inverted box')
            if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
                if not clip_boxes:
                    raise DatasetError(
                        f'{xml_path}: object {index} ({name}) box ({x0:g}, {y0:g}, {x1:g}, '
                        f'{y1:g}) lies outside its {width}x{height} image (train with '
                        f'--clip-boxes to clip such boxes instead)')
                outside += 1
    return len(ids), outside


def check_ade20k_dataset(data_root: str, img_path: str, seg_map_path: str,
                         img_suffix: str = '.jpg', seg_map_suffix: str = '.png') -> int:
    """Check that every image of an ADE20K-layout split decodes and has a decodable label map."""
    img_dir, ann_dir = osp.join(data_root, img_path), osp.join(data_root, seg_map_path)
    for folder, what in ((img_dir, 'image'), (ann_dir, 'annotation')):
        if not osp.isdir(folder):
            raise DatasetError(f'ADE20K {what} folder not found: {folder} (make the embedded set '
                               f'with tools/dataset_converters/make_toy_data.py)')
    images = sorted(f for f in os.listdir(img_dir) if f.endswith(img_suffix))
    if not images:
        raise DatasetError(f'no *{img_suffix} images in {img_dir}')
    for name in images:
        label = osp.join(ann_dir, name[:-len(img_suffix)] + seg_map_suffix)
        if not osp.isfile(label):
            raise DatasetError(f'annotation of image {osp.join(img_dir, name)} not found: {label}')
        check_image_file(osp.join(img_dir, name))
        check_image_file(label)
    return len(images)


def check_datasets(cfg: Config, splits=('train', 'val', 'test'), clip_boxes: bool = False) -> int:
    """Check every VOC / ADE20K dataset of the given dataloaders of ``cfg``.

    Returns:
        int: Boxes outside their images that ``clip_boxes`` let through (0 otherwise).
    """
    outside = 0
    for split in splits:
        loader = cfg.get(f'{split}_dataloader', None)
        if not loader:
            continue
        for ds in leaf_datasets(loader.get('dataset', {})):
            ds_type = str(ds.get('type', ''))
            if ds_type.endswith('VOCDataset'):
                classes = (ds.get('metainfo') or {}).get('classes')
                outside += check_voc_dataset(
                    ds.get('data_root', ''), ds.get('ann_file', ''),
                    (ds.get('data_prefix') or {}).get('sub_data_root', ''),
                    tuple(classes) if classes else None, clip_boxes)[1]
            elif ds_type.endswith('ADE20KDataset'):
                prefix = ds.get('data_prefix') or {}
                check_ade20k_dataset(ds.get('data_root', ''), prefix.get('img_path', ''),
                                     prefix.get('seg_map_path', ''))
    return outside


def _iter_dicts(obj):
    if isinstance(obj, dict):
        yield obj
        for v in obj.values():
            yield from _iter_dicts(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _iter_dicts(v)


def _pair(size) -> tuple:
    return (size, size) if isinstance(size, int) else tuple(size)


def check_segmentation_config(cfg: Config) -> None:
    """Reject crop sizes a MUXNet segmentor's output stride cannot handle, naming the setting.

    A crop must give the deepest feature map at least one pixel per bin of the coarsest pooling
    (PPM) level and at least 2x2 pixels otherwise.
    """
    from ..backbones import plan_stages
    crop = cfg.get('crop_size', None)
    model = cfg.get('model', {})
    backbone = model.get('backbone', {})
    if crop is None or backbone.get('type') != 'MUXNet':
        return
    geometry = {k: backbone[k] for k in ('widen_factor', 'strides', 'dilations', 'output_stride')
                if backbone.get(k) is not None}
    plan = plan_stages(backbone.get('arch', 'm'), **geometry)
    output_stride = plan.reduction(max(backbone.get('out_indices', (7, ))))
    pool_scales = model.get('decode_head', {}).get('pool_scales', (2, ))
    need = output_stride * max(max(pool_scales), 2)
    crop = _pair(crop)
    if len(crop) != 2 or min(crop) < need:
        raise DatasetError(f'crop_size={crop} is too small for output stride {output_stride} '
                           f'(decode head pool scales {tuple(pool_scales)}): each side must be at '
                           f'least {need} pixels')
    for d in _iter_dicts(cfg.get('train_dataloader', {})):
        if d.get('type') == 'RandomCrop' and 'crop_size' in d and min(_pair(d['crop_size'])) < need:
            raise DatasetError(f'train pipeline RandomCrop crop_size={_pair(d["crop_size"])} is '
                               f'too small for output stride {output_stride}: each side must be '
                               f'>= {need}')


@TRANSFORMS.register_module()
class ValidateSegMap(BaseTransform):
    """Check a loaded label map against its image and the number of classes.

    Goes right after ``LoadAnnotations``: a label map whose size differs from its image, or whose
    values exceed the dataset's classes, otherwise either trains silently on garbage or fails later
    as an out-of-bounds index with no file name. Here it fails at once, naming the file.

    Args:
        num_classes (int): Classes after label reduction (150 for ADE20K).
        ignore_index (int): Label value that is ignored. Default: 255.
    """

    def __init__(self, num_classes: int = 150, ignore_index: int = 255):
        self.num_classes = num_classes
        self.ignore_index = ignore_index

    def transform(self, results: dict) -> dict:
        seg = results.get('gt_seg_map')
        path = results.get('seg_map_path', '<unknown label file>')
        if seg is None:
            raise DatasetError(f'ValidateSegMap must follow LoadAnnotations (no label for '
                               f'{results.get("img_path")})')
        # ori_shape: the image as read, before any resize of the pipeline.
        img_hw = results.get('ori_shape') or (results['img'].shape[:2] if 'img' in results
                                              else None)
        img_hw = tuple(img_hw) if img_hw is not None else None
        if seg.ndim != 2:
            raise DatasetError(f'label map {path} must be single-channel, got shape {seg.shape}')
        if img_hw is not None and tuple(seg.shape) != img_hw:
            raise DatasetError(f'label map {path} is {seg.shape[1]}x{seg.shape[0]} but its image '
                               f'{results.get("img_path")} is {img_hw[1]}x{img_hw[0]}')
        bad = (seg >= self.num_classes) & (seg != self.ignore_index)
        if np.any(bad):
            offset = 1 if results.get('reduce_zero_label') else 0
            top = int(seg[bad].max()) + offset
            raise DatasetError(f'label map {path} has value {top}, above the '
                               f'{self.num_classes + offset - 1} allowed '
                               f'({self.num_classes} classes{" + 0 = ignore" if offset else ""})')
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_classes={self.num_classes}, '
                f'ignore_index={self.ignore_index})')


def insert_seg_map_validation(cfg: Config) -> None:
    """Insert ``ValidateSegMap`` after every ``LoadAnnotations`` of the segmentation loaders."""
    model = cfg.get('model', {})
    if 'decode_head' not in model and isinstance(model.get('module', None), dict):
        model = model['module']  # (wrapped for test-time augmentation)
    num_classes = model.get('decode_head', {}).get('num_classes', 150)
    for split in ('train', 'val', 'test'):
        loader = cfg.get(f'{split}_dataloader', None)
        if not loader:
            continue
        for ds in _iter_dicts(loader.get('dataset', {})):
            pipeline = ds.get('pipeline')
            if not isinstance(pipeline, list):
                continue
            validate = dict(type='ValidateSegMap', num_classes=num_classes)
            _insert_after_annotations(pipeline, validate)
            for t in pipeline:  # test-time augmentation: one step of views per list
                if isinstance(t, dict) and t.get('type') == 'TestTimeAug':
                    steps = t.get('transforms')
                    if isinstance(steps, list) and all(isinstance(s, list) for s in steps):
                        _insert_after_annotations(steps, [validate])


def _insert_after_annotations(steps: list, validate) -> None:
    """``validate`` after the first ``LoadAnnotations`` of ``steps`` (transforms, or a
    ``TestTimeAug``'s lists of views: a one-view list is one transform), unless it is there."""
    def types(step):
        views = step if isinstance(step, list) else [step]
        return {t.get('type') for t in views if isinstance(t, dict)}
    if any('ValidateSegMap' in types(s) for s in steps):
        return
    for i, step in enumerate(steps):
        if 'LoadAnnotations' in types(step):
            steps.insert(i + 1, validate)
            return
