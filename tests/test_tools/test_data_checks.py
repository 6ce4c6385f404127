"""Bad data fails fast with one line naming the file or setting at fault."""
import os
import os.path as osp
import re
import shutil

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image

from mux_backbones.cli import use_test_time_augmentation
from mux_backbones.datasets import (DatasetError, check_ade20k_dataset, check_datasets,
                                    check_segmentation_config, check_voc_dataset,
                                    insert_seg_map_validation)
from .helpers import run_tool, write_det_config, write_seg_config


@pytest.fixture
def voc_copy(tmp_path, toy_voc):
    dst = tmp_path / 'VOCdevkit'
    shutil.copytree(toy_voc, dst)
    return str(dst)


@pytest.fixture
def ade_copy(tmp_path, toy_ade):
    dst = tmp_path / 'ADEChallengeData2016'
    shutil.copytree(toy_ade, dst)
    return str(dst)


def _first_id(voc):
    with open(osp.join(voc, 'VOC2007/ImageSets/Main/trainval.txt')) as f:
        return f.readline().strip()


def _check(voc):
    return check_voc_dataset(voc, 'VOC2007/ImageSets/Main/trainval.txt', 'VOC2007/')


def test_toy_voc_passes(toy_voc):
    assert _check(toy_voc) == (24, 0)


def test_missing_data_root(tmp_path):
    with pytest.raises(DatasetError, match='data root not found: .*nowhere'):
        _check(str(tmp_path / 'nowhere'))


def test_listed_image_absent(voc_copy):
    img = osp.join(voc_copy, 'VOC2007/JPEGImages', _first_id(voc_copy) + '.jpg')
    os.remove(img)
    with pytest.raises(DatasetError, match=f'not found: {img}'):
        _check(voc_copy)


def test_malformed_xml(voc_copy):
    xml = osp.join(voc_copy, 'VOC2007/Annotations', _first_id(voc_copy) + '.xml')
    with open(xml, 'w') as f:
        f.write('<annotation><object><name>car</name>')
    with pytest.raises(DatasetError, match=f'malformed VOC annotation {xml}'):
        _check(voc_copy)


def test_class_not_in_voc(voc_copy):
    xml = osp.join(voc_copy, 'VOC2007/Annotations', _first_id(voc_copy) + '.xml')
    with open(xml) as f:
        text = f.read()
    for name in ('car', 'bottle', 'tvmonitor', 'boat'):
        text = text.replace(f'<name>{name}</name>', '<name>unicorn</name>')
    with open(xml, 'w') as f:
        f.write(text)
    with pytest.raises(DatasetError, match=f"{xml}: object 0 class 'unicorn' is not a VOC class"):
        _check(voc_copy)


def test_train_tool_reports_bad_data_in_one_line(tmp_path, voc_copy):
    xml = osp.join(voc_copy, 'VOC2007/Annotations', _first_id(voc_copy) + '.xml')
    with open(xml, 'w') as f:
        f.write('<annotation>')
    cfg = write_det_config(tmp_path, voc_copy, max_iters=1)
    proc = run_tool('tools/train.py', cfg, '--work-dir', str(tmp_path / 'w'), check=False)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('error: malformed VOC annotation') and xml in last
    assert 'Traceback' not in proc.stderr


def test_missing_annotation_png(ade_copy):
    label = osp.join(ade_copy, 'annotations/training/ADE_train_00000002.png')
    os.remove(label)
    with pytest.raises(DatasetError, match=f'not found: {label}'):
        check_ade20k_dataset(ade_copy, 'images/training', 'annotations/training')


def _load_sample(ade_root, name):
    from mmengine.registry import DefaultScope
    from mmseg.registry import TRANSFORMS

    import mux_backbones  # noqa: F401
    with DefaultScope.overwrite_default_scope('mmseg'):
        pipeline = [TRANSFORMS.build(t) for t in (
            dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', reduce_zero_label=True),
            dict(type='ValidateSegMap', num_classes=150))]
    results = dict(img_path=osp.join(ade_root, 'images/training', name + '.jpg'),
                   seg_map_path=osp.join(ade_root, 'annotations/training', name + '.png'),
                   reduce_zero_label=True, seg_fields=[])
    for t in pipeline:
        results = t(results)
    return results


def test_label_png_wrong_size(ade_copy):
    label = osp.join(ade_copy, 'annotations/training/ADE_train_00000001.png')
    Image.fromarray(np.ones((10, 12), np.uint8)).save(label)
    with pytest.raises(ValueError, match=f'label map {label} is 12x10 but its image'):
        _load_sample(ade_copy, 'ADE_train_00000001')


def test_label_png_values_above_150(ade_copy):
    label = osp.join(ade_copy, 'annotations/training/ADE_train_00000001.png')
    arr = np.array(Image.open(label))
    arr[0, 0] = 200
    Image.fromarray(arr).save(label)
    with pytest.raises(ValueError, match=f'label map {label} has value 200, above the 150'):
        _load_sample(ade_copy, 'ADE_train_00000001')


def test_good_label_passes(toy_ade):
    seg = _load_sample(toy_ade, 'ADE_train_00000001')['gt_seg_map']
    assert ((seg < 150) | (seg == 255)).all()


def test_crop_size_too_small_for_output_stride(tmp_path, toy_ade):
    cfg = Config.fromfile(write_seg_config(tmp_path, toy_ade))
    check_segmentation_config(cfg)  # 192 is fine at output stride 8
    cfg.crop_size = (32, 32)
    with pytest.raises(ValueError, match=r'crop_size=\(32, 32\) is too small for output stride 8'):
        check_segmentation_config(cfg)


def test_seg_map_validation_is_inserted(tmp_path, toy_ade):
    cfg = Config.fromfile(write_seg_config(tmp_path, toy_ade))
    insert_seg_map_validation(cfg)
    types = [t['type'] for t in cfg.train_dataloader.dataset.pipeline]
    assert types[types.index('LoadAnnotations') + 1] == 'ValidateSegMap'
    check_datasets(cfg)


def test_seg_map_validation_is_inserted_into_test_time_augmentation(tmp_path, toy_ade):
    cfg = Config.fromfile(write_seg_config(tmp_path, toy_ade))
    cfg.model.decode_head.num_classes = 7
    use_test_time_augmentation(cfg)  # (the model wrapped: its classes still found)
    insert_seg_map_validation(cfg)
    insert_seg_map_validation(cfg)  # (once only)
    tta = cfg.test_dataloader.dataset.pipeline[-1]
    steps = [[view['type'] for view in step] for step in tta['transforms']]
    assert steps[steps.index(['LoadAnnotations']) + 1] == ['ValidateSegMap']
    assert steps.count(['ValidateSegMap']) == 1
    assert tta['transforms'][steps.index(['ValidateSegMap'])][0]['num_classes'] == 7


def _xml_of(voc):
    return osp.join(voc, 'VOC2007/Annotations', _first_id(voc) + '.xml')


def _set_first_box(xml, xmin, ymin, xmax, ymax):
    import xml.etree.ElementTree as ET
    tree = ET.parse(xml)
    box = tree.getroot().find('object').find('bndbox')
    for tag, value in zip(('xmin', 'ymin', 'xmax', 'ymax'), (xmin, ymin, xmax, ymax)):
        box.find(tag).text = str(value)
    tree.write(xml)


def test_box_outside_image_is_an_error_naming_file_and_object(voc_copy):
    xml = _xml_of(voc_copy)
    _set_first_box(xml, -300, 10, 5000, 4000)
    with pytest.raises(DatasetError, match=rf'{xml}: object 0 \(\w+\) box \(-300, 10, 5000, '
                       r'4000\) lies outside its 320x256 image \(train with --clip-boxes'):
        _check(voc_copy)
    # The explicit option lets such boxes through, counted.
    assert check_voc_dataset(voc_copy, 'VOC2007/ImageSets/Main/trainval.txt', 'VOC2007/',
                             clip_boxes=True) == (24, 1)


def test_annotated_size_must_match_the_image(voc_copy):
    xml = _xml_of(voc_copy)
    with open(xml) as f:
        text = f.read()
    with open(xml, 'w') as f:
        f.write(text.replace('<width>320</width>', '<width>640</width>'))
    with pytest.raises(DatasetError, match=f'{xml}: <size> says 640x256 but .* is 320x256'):
        _check(voc_copy)


@pytest.mark.parametrize('damage, message', [
    (lambda data: b'', 'is empty (0 bytes)'),
    (lambda data: data[:len(data) // 2], 'does not decode'),
    (lambda data: bytes(np.random.default_rng(0).integers(0, 256, 2000, np.uint8)),
     'is not an image file'),
])
def test_undecodable_images_are_found_before_training(voc_copy, damage, message):
    img = osp.join(voc_copy, 'VOC2007/JPEGImages', _first_id(voc_copy) + '.jpg')
    with open(img, 'rb') as f:
        data = f.read()
    with open(img, 'wb') as f:
        f.write(damage(data))
    with pytest.raises(DatasetError, match=re.escape(f'image {img} {message}')):
        _check(voc_copy)


def test_undecodable_label_map(ade_copy):
    label = osp.join(ade_copy, 'annotations/training/ADE_train_00000003.png')
    with open(label, 'rb') as f:
        data = f.read()
    with open(label, 'wb') as f:
        f.write(data[:len(data) // 2])
    with pytest.raises(DatasetError, match=re.escape(f'image {label} does not decode')):
        check_ade20k_dataset(ade_copy, 'images/training', 'annotations/training')


def test_train_tool_refuses_a_box_outside_and_clips_on_request(tmp_path, voc_copy):
    xml = _xml_of(voc_copy)
    _set_first_box(xml, -300, 10, 5000, 4000)
    cfg = write_det_config(tmp_path, voc_copy, max_iters=1, ckpt_interval=1)
    work = str(tmp_path / 'w')
    proc = run_tool('tools/train.py', cfg, '--work-dir', work, check=False)
    assert proc.returncode == 1 and 'Traceback' not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f'error: {xml}: object 0') and 'outside' in last
    assert not osp.exists(work), 'nothing may be written before the data is known good'
    proc = run_tool('tools/train.py', cfg, '--work-dir', work, '--clip-boxes')
    assert '--clip-boxes: 1 boxes extend outside their images' in proc.stdout
