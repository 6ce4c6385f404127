"""Data-pipeline checks for segmentation labels (registered in mmseg's TRANSFORMS).

``ValidateSegMap`` goes right after ``LoadAnnotations``: a label map whose size differs from its
image, or whose values exceed the dataset's classes, otherwise either trains silently on garbage or
fails later as an out-of-bounds index with no file name. Here it fails at once, naming the file.
"""
import numpy as np
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS


@TRANSFORMS.register_module()
class ValidateSegMap(BaseTransform):
    """Check a loaded label map against its image and the number of classes.

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
            raise ValueError(f'ValidateSegMap must follow LoadAnnotations (no label for '
                             f'{results.get("img_path")})')
        # ori_shape: the image as read, before any resize of the pipeline.
        img_hw = results.get('ori_shape') or (results['img'].shape[:2] if 'img' in results else None)
        img_hw = tuple(img_hw) if img_hw is not None else None
        if seg.ndim != 2:
            raise ValueError(f'label map {path} must be single-channel, got shape {seg.shape}')
        if img_hw is not None and tuple(seg.shape) != img_hw:
            raise ValueError(f'label map {path} is {seg.shape[1]}x{seg.shape[0]} but its image '
                             f'{results.get("img_path")} is {img_hw[1]}x{img_hw[0]}')
        bad = (seg >= self.num_classes) & (seg != self.ignore_index)
        if bad.any():
            offset = 1 if results.get('reduce_zero_label') else 0
            top = int(seg[bad].max()) + offset
            raise ValueError(f'label map {path} has value {top}, above the '
                             f'{self.num_classes + offset - 1} allowed '
                             f'({self.num_classes} classes{" + 0 = ignore" if offset else ""})')
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num_classes={self.num_classes}, '
                f'ignore_index={self.ignore_index})')
