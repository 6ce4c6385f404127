"""Pre-flight checks of the datasets a config reads, with errors that name the bad file.

mmdet's ``VOCDataset`` silently skips objects whose class it does not know and reports a malformed
XML without its file name; a missing image only surfaces in a data-loader worker mid-epoch. These
checks run before the runner is built (``tools/train.py``/``tools/test.py``) and fail fast with one
line naming the data root, list, image, annotation or class at fault. They read file lists and
XML headers only, so they stay cheap on the full VOC0712 and ADE20K sets; label *contents* are
checked per sample by the :class:`~mux_backbones.datasets.ValidateSegMap` transform.
"""
import os.path as osp
import xml.etree.ElementTree as ET
from typing import Iterator, Optional

from mmengine.config import Config

VOC_CLASSES = ('aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair',
               'cow', 'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant',
               'sheep', 'sofa', 'train', 'tvmonitor')


class DatasetError(ValueError):
    """A dataset file is missing or malformed."""


def _datasets(cfg_node) -> Iterator[dict]:
    """Every leaf dataset config (inside Repeat/Concat/ClassBalanced wrappers)."""
    if isinstance(cfg_node, dict):
        if 'datasets' in cfg_node:
            for d in cfg_node['datasets']:
                yield from _datasets(d)
        elif 'dataset' in cfg_node:
            yield from _datasets(cfg_node['dataset'])
        else:
            yield cfg_node


def check_voc_dataset(data_root: str, ann_file: str, sub_data_root: str = '',
                      classes: Optional[tuple] = None) -> int:
    """Check one VOC split; returns the number of images. Raises :class:`DatasetError`."""
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
    for img_id in ids:
        img_path = osp.join(root, 'JPEGImages', f'{img_id}.jpg')
        xml_path = osp.join(root, 'Annotations', f'{img_id}.xml')
        if not osp.isfile(img_path):
            raise DatasetError(f'image listed in {list_path} not found: {img_path}')
        if not osp.isfile(xml_path):
            raise DatasetError(f'annotation of image {img_id} not found: {xml_path}')
        try:
            tree = ET.parse(xml_path)
        except ET.ParseError as err:
            raise DatasetError(f'malformed VOC annotation {xml_path}: {err}') from None
        for obj in tree.getroot().iter('object'):
            name = obj.findtext('name')
            if name is None or name.strip() not in allowed:
                raise DatasetError(f'{xml_path}: object class {name!r} is not a VOC class')
            box = obj.find('bndbox')
            try:
                x0, y0, x1, y1 = (float(box.findtext(t)) for t in ('xmin', 'ymin', 'xmax', 'ymax'))
            except (AttributeError, TypeError, ValueError):
                raise DatasetError(f'{xml_path}: object {name!r} has no valid bndbox') from None
            if x1 < x0 or y1 < y0:
                raise DatasetError(f'{xml_path}: object {name!r} has an inverted box')
    return len(ids)


def check_ade20k_dataset(data_root: str, img_path: str, seg_map_path: str,
                         img_suffix: str = '.jpg', seg_map_suffix: str = '.png') -> int:
    """Check that every image of an ADE20K-layout split has its label map."""
    img_dir, ann_dir = osp.join(data_root, img_path), osp.join(data_root, seg_map_path)
    for folder, what in ((img_dir, 'image'), (ann_dir, 'annotation')):
        if not osp.isdir(folder):
            raise DatasetError(f'ADE20K {what} folder not found: {folder} (make the embedded set '
                               f'with tools/dataset_converters/make_toy_data.py)')
    import os
    images = sorted(f for f in os.listdir(img_dir) if f.endswith(img_suffix))
    if not images:
        raise DatasetError(f'no *{img_suffix} images in {img_dir}')
    for name in images:
        label = osp.join(ann_dir, name[:-len(img_suffix)] + seg_map_suffix)
        if not osp.isfile(label):
            raise DatasetError(f'annotation of image {osp.join(img_dir, name)} not found: {label}')
    return len(images)


def check_datasets(cfg: Config, splits=('train', 'val', 'test')) -> None:
    """Check every VOC / ADE20K dataset of the given dataloaders of ``cfg``."""
    for split in splits:
        loader = cfg.get(f'{split}_dataloader', None)
        if not loader:
            continue
        for ds in _datasets(loader.get('dataset', {})):
            ds_type = str(ds.get('type', ''))
            if ds_type.endswith('VOCDataset'):
                classes = (ds.get('metainfo') or {}).get('classes')
                check_voc_dataset(ds.get('data_root', ''), ds.get('ann_file', ''),
                                  (ds.get('data_prefix') or {}).get('sub_data_root', ''),
                                  tuple(classes) if classes else None)
            elif ds_type.endswith('ADE20KDataset'):
                prefix = ds.get('data_prefix') or {}
                check_ade20k_dataset(ds.get('data_root', ''), prefix.get('img_path', ''),
                                     prefix.get('seg_map_path', ''))
