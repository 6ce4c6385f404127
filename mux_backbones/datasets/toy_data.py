"""Deterministic toy datasets in the PASCAL VOC and ADE20K layouts, on real photographs.

The suite's default (embedded) data: small enough to train on a CPU in minutes, real enough that
learning is visible. Backgrounds are the sample photographs scikit-image ships inside its wheel
(no download). Detection objects and segmentation regions are drawn with a class-specific shape,
colour and texture at random (seeded) places, so the boxes and masks are known exactly. The files
are written in the stock layouts, so mmdet's ``VOCDataset`` and mmseg's ``ADE20KDataset`` read
them unchanged.
"""
import os
import os.path as osp
import xml.etree.ElementTree as ET
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

# scikit-image sample photographs that ship inside the wheel (colour or grey, any size).
BACKGROUNDS = ('astronaut.png', 'brick.png', 'camera.png', 'chelsea.png', 'coffee.png',
               'coins.png', 'grass.png', 'gravel.png', 'hubble_deep_field.jpg', 'ihc.png',
               'moon.png', 'motorcycle_left.png', 'retina.jpg', 'rocket.jpg', 'page.png',
               'clock_motion.png')
# Detection: VOC class -> (shape, base RGB colour).
DET_CLASSES: Dict[str, Tuple[str, Tuple[int, int, int]]] = {
    'car': ('car', (220, 40, 40)),
    'bottle': ('bottle', (40, 200, 60)),
    'tvmonitor': ('monitor', (40, 40, 60)),
    'boat': ('boat', (250, 210, 40)),
}
# Segmentation: ADE20K label id (1-based, 0 = ignore) -> (name, shape, base RGB colour).
SEG_CLASSES: Dict[int, Tuple[str, str, Tuple[int, int, int]]] = {
    5: ('tree', 'ellipse', (30, 160, 40)),
    7: ('road', 'band', (120, 120, 120)),
    13: ('person', 'capsule', (230, 170, 140)),
    21: ('car', 'rectangle', (210, 30, 30)),
    3: ('sky', 'top', (110, 170, 240)),
}


def _load_backgrounds() -> List[np.ndarray]:
    import skimage.data
    images = []
    for name in BACKGROUNDS:
        path = osp.join(skimage.data.data_dir, name)
        if not osp.exists(path):
            continue
        img = np.asarray(Image.open(path).convert('RGB'))
        images.append(img)
    if not images:
        raise RuntimeError(f'no scikit-image sample photographs found in {skimage.data.data_dir}')
    return images


def _background(rng: np.random.RandomState, images: List[np.ndarray],
                size: Tuple[int, int]) -> Image.Image:
    """A random crop of a random photograph, resized to ``size`` (w, h), jittered in brightness."""
    img = images[rng.randint(len(images))]
    h, w = img.shape[:2]
    scale = rng.uniform(0.5, 1.0)
    ch, cw = max(16, int(h * scale)), max(16, int(w * scale))
    y, x = rng.randint(0, h - ch + 1), rng.randint(0, w - cw + 1)
    crop = Image.fromarray(img[y:y + ch, x:x + cw]).resize(size, Image.BILINEAR)
    arr = np.asarray(crop).astype(np.float32) * rng.uniform(0.7, 1.2)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _jitter(rng, colour, amount=35) -> Tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.randint(-amount, amount + 1), 0, 255)) for c in colour)


def _draw_object(draw: ImageDraw.ImageDraw, shape: str, box, colour, rng) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    dark = tuple(c // 4 for c in colour)
    if shape == 'car':
        draw.rectangle([x0, y0 + h * 0.3, x1, y1 - h * 0.2], fill=colour)
        draw.rectangle([x0 + w * 0.2, y0, x1 - w * 0.25, y0 + h * 0.35], fill=colour)
        r = h * 0.2
        for cx in (x0 + w * 0.25, x1 - w * 0.25):
            draw.ellipse([cx - r, y1 - 2 * r, cx + r, y1], fill=(20, 20, 20))
    elif shape == 'bottle':
        draw.rectangle([x0 + w * 0.35, y0, x1 - w * 0.35, y0 + h * 0.3], fill=colour)
        draw.rounded_rectangle([x0, y0 + h * 0.25, x1, y1], radius=max(1, w * 0.2), fill=colour)
        draw.rectangle([x0, y0 + h * 0.5, x1, y0 + h * 0.7], fill=(240, 240, 240))
    elif shape == 'monitor':
        draw.rectangle([x0, y0, x1, y1 - h * 0.15], fill=colour)
        draw.rectangle([x0 + w * 0.08, y0 + h * 0.08, x1 - w * 0.08, y1 - h * 0.25],
                       fill=_jitter(rng, (90, 160, 230), 40))
        draw.rectangle([x0 + w * 0.4, y1 - h * 0.15, x1 - w * 0.4, y1], fill=dark)
    elif shape == 'boat':
        draw.polygon([(x0, y0 + h * 0.65), (x1, y0 + h * 0.65), (x1 - w * 0.15, y1),
                      (x0 + w * 0.15, y1)], fill=(120, 70, 30))
        draw.polygon([(x0 + w * 0.5, y0), (x0 + w * 0.5, y0 + h * 0.6),
                      (x0 + w * 0.1, y0 + h * 0.6)],
                     fill=colour)
    else:
        raise ValueError(f'unknown shape {shape}')


def _voc_xml(filename: str, size: Tuple[int, int], objects) -> ET.ElementTree:
    root = ET.Element('annotation')
    ET.SubElement(root, 'folder').text = 'VOC2007'
    ET.SubElement(root, 'filename').text = filename
    size_el = ET.SubElement(root, 'size')
    for tag, value in zip(('width', 'height', 'depth'), (*size, 3)):
        ET.SubElement(size_el, tag).text = str(value)
    for name, (x0, y0, x1, y1), difficult in objects:
        obj = ET.SubElement(root, 'object')
        ET.SubElement(obj, 'name').text = name
        ET.SubElement(obj, 'pose').text = 'Unspecified'
        ET.SubElement(obj, 'truncated').text = '0'
        ET.SubElement(obj, 'difficult').text = str(int(difficult))
        bnd = ET.SubElement(obj, 'bndbox')
        # VOC boxes are 1-based and inclusive.
        for tag, value in zip(('xmin', 'ymin', 'xmax', 'ymax'), (x0 + 1, y0 + 1, x1, y1)):
            ET.SubElement(bnd, tag).text = str(int(value))
    return ET.ElementTree(root)


def _place_boxes(rng, size, count, min_side, max_side,
                 max_overlap: float = 0.1) -> List[Tuple[int, int, int, int]]:
    w, h = size
    boxes = []
    for _ in range(count * 20):
        if len(boxes) == count:
            break
        bw = rng.randint(min_side, max_side + 1)
        bh = int(np.clip(bw * rng.uniform(0.6, 1.6), min_side, min(max_side * 1.5, h - 2)))
        x0, y0 = rng.randint(0, w - bw), rng.randint(0, h - bh)
        box = (x0, y0, x0 + bw, y0 + bh)
        if all(_iou(box, b) < max_overlap for b in boxes):
            boxes.append(box)
    return boxes


def _iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def _draw_distractor(draw: ImageDraw.ImageDraw, box, rng) -> None:
    """An unlabelled shape in a random colour: a near-miss that punishes false positives."""
    x0, y0, x1, y1 = box
    colour = tuple(int(c) for c in rng.randint(0, 256, size=3))
    kind = rng.randint(3)
    if kind == 0:
        draw.ellipse([x0, y0, x1, y1], fill=colour)
    elif kind == 1:
        draw.rectangle([x0, y0, x1, y0 + (y1 - y0) * rng.uniform(0.3, 1.0)], fill=colour)
    else:
        points = [(x0 + rng.uniform(0, 1) * (x1 - x0), y0 + rng.uniform(0, 1) * (y1 - y0))
                  for _ in range(rng.randint(3, 6))]
        draw.polygon(points, fill=colour)


def _paste(img: Image.Image, box, paint, opacity: float) -> None:
    """Draw an object on its own layer and blend it in at ``opacity`` (translucent objects)."""
    layer = Image.new('RGBA', img.size, (0, 0, 0, 0))
    paint(ImageDraw.Draw(layer))
    alpha = np.asarray(layer)[..., 3].astype(np.float32) * opacity
    layer.putalpha(Image.fromarray(alpha.astype(np.uint8)))
    img.paste(layer, (0, 0), layer)


def make_toy_voc(root: str, num_trainval: int = 200, num_test: int = 150,
                 image_size: Tuple[int, int] = (320, 256), seed: int = 0,
                 classes: Sequence[str] = tuple(DET_CLASSES)) -> str:
    """Write a VOC2007-layout detection set under ``root`` (``root/VOC2007/...``).

    Each image holds 1-6 objects of 16-100 pixels (small ones are hard at 320 input), which
    may overlap and hide each other (later objects are drawn on top), are partly translucent
    and vary widely in colour, among 0-3 unlabelled distractor shapes. Sized so that a
    from-scratch SSDLite learns visibly in a few hundred CPU iterations without reaching the
    metric's ceiling. Returns the path of the ``VOC2007`` folder.
    """
    rng = np.random.RandomState(seed)
    backgrounds = _load_backgrounds()
    voc = osp.join(root, 'VOC2007')
    for sub in ('JPEGImages', 'Annotations', 'ImageSets/Main'):
        os.makedirs(osp.join(voc, sub), exist_ok=True)
    splits = {'trainval': [], 'test': []}
    for idx in range(num_trainval + num_test):
        split = 'trainval' if idx < num_trainval else 'test'
        image_id = f'{idx:06d}'
        img = _background(rng, backgrounds, image_size)
        for box in _place_boxes(rng, image_size, rng.randint(0, 4), 12, 60, max_overlap=1.0):
            _draw_distractor(ImageDraw.Draw(img), box, rng)
        objects = []
        for box in _place_boxes(rng, image_size, rng.randint(1, 7), 16, 100, max_overlap=0.3):
            name = classes[rng.randint(len(classes))]
            shape, colour = DET_CLASSES[name]
            colour = _jitter(rng, colour, 70)
            _paste(img, box, lambda d: _draw_object(d, shape, box, colour, rng),
                   rng.uniform(0.65, 1.0))
            objects.append((name, box, False))
        arr = np.asarray(img).astype(np.float32) + rng.normal(0, rng.uniform(0, 12), (
            image_size[1], image_size[0], 1))
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(
            osp.join(voc, 'JPEGImages', f'{image_id}.jpg'), quality=92)
        _voc_xml(f'{image_id}.jpg', image_size, objects).write(
            osp.join(voc, 'Annotations', f'{image_id}.xml'))
        splits[split].append(image_id)
    for split, ids in splits.items():
        with open(osp.join(voc, 'ImageSets', 'Main', f'{split}.txt'), 'w') as f:
            f.write('\n'.join(ids) + '\n')
    return voc


def _region_mask(shape: str, size: Tuple[int, int], rng) -> np.ndarray:
    w, h = size
    yy, xx = np.mgrid[:h, :w]
    if shape == 'top':
        return yy < h * rng.uniform(0.15, 0.35)
    if shape == 'band':
        y0 = h * rng.uniform(0.65, 0.8)
        slope = rng.uniform(-0.2, 0.2)
        return yy > y0 + slope * (xx - w / 2)
    cx, cy = rng.uniform(0.15, 0.85) * w, rng.uniform(0.3, 0.75) * h
    rx, ry = rng.uniform(0.08, 0.2) * w, rng.uniform(0.1, 0.25) * h
    if shape == 'ellipse':
        return ((xx - cx) / rx)**2 + ((yy - cy) / ry)**2 < 1
    if shape == 'capsule':
        rx *= 0.5
        return (np.abs(xx - cx) < rx) & (np.abs(yy - cy) < ry * 1.3)
    if shape == 'rectangle':
        return (np.abs(xx - cx) < rx * 1.3) & (np.abs(yy - cy) < ry * 0.6)
    raise ValueError(f'unknown region shape {shape}')


def make_toy_ade20k(root: str, num_train: int = 120, num_val: int = 30,
                    image_size: Tuple[int, int] = (256, 192), seed: int = 0) -> str:
    """Write an ADEChallengeData2016-layout segmentation set under ``root``.

    Labels are uint8 PNGs with ADE20K ids (1..150, 0 = ignore/other). Returns ``root``.
    """
    rng = np.random.RandomState(seed)
    backgrounds = _load_backgrounds()
    for split, count in (('training', num_train), ('validation', num_val)):
        os.makedirs(osp.join(root, 'images', split), exist_ok=True)
        os.makedirs(osp.join(root, 'annotations', split), exist_ok=True)
        for idx in range(count):
            name = f'ADE_{split[:5]}_{idx:08d}'
            img = np.asarray(_background(rng, backgrounds, image_size)).astype(np.float32)
            label = np.zeros(image_size[::-1], dtype=np.uint8)
            ids = list(SEG_CLASSES)
            chosen = [ids[i] for i in rng.permutation(len(ids))[:rng.randint(2, 5)]]
            # Large "stuff" regions first so "things" are drawn over them.
            chosen.sort(key=lambda c: SEG_CLASSES[c][1] not in ('top', 'band'))
            for class_id in chosen:
                _, shape, colour = SEG_CLASSES[class_id]
                mask = _region_mask(shape, image_size, rng)
                tone = np.array(_jitter(rng, colour, 25), dtype=np.float32)
                texture = rng.normal(0, 12, size=mask.shape + (1, ))
                img[mask] = np.clip(0.25 * img[mask] + 0.75 * tone + texture[mask], 0, 255)
                label[mask] = class_id
            Image.fromarray(img.astype(np.uint8)).save(
                osp.join(root, 'images', split, f'{name}.jpg'), quality=92)
            Image.fromarray(label).save(osp.join(root, 'annotations', split, f'{name}.png'))
    return root
