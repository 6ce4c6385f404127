"""Drawing a segmentation map with a legend of its classes, for the tools that show maps.

mmseg's visualizer writes class names onto the map itself (``with_labels``), where small regions
overlap their names; the tools (``demo.py``, ``browse_dataset.py``) draw the map without them and
append a legend panel instead: one colour swatch and name per class present.
"""
from typing import List, Sequence

import mmcv
import numpy as np

# Label values that mark pixels no class is scored on (mmseg's ignore index, padding of crops).
IGNORE_INDEX = 255


def with_legend(image: np.ndarray, names: Sequence[str], colours: Sequence) -> np.ndarray:
    """``image`` (H, W, 3 uint8) with a legend panel appended to its right."""
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


def save_segmentation(visualizer, image: np.ndarray, data_sample, out_file: str,
                      ground_truth: bool = False) -> List[str]:
    """Draw one map of ``data_sample`` over ``image`` with a legend, save it, name its classes.

    Args:
        visualizer: mmseg's ``SegLocalVisualizer``, its dataset meta set.
        image (np.ndarray): The image, RGB (H, W, 3).
        data_sample: mmseg's ``SegDataSample``.
        out_file (str): The picture to write.
        ground_truth (bool): Draw ``gt_sem_seg`` instead of ``pred_sem_seg``. Default: False.

    Returns:
        list[str]: The classes present in the map, in label order.
    """
    visualizer.add_datasample('segmentation', image, data_sample, draw_gt=ground_truth,
                              draw_pred=not ground_truth, show=False, with_labels=False)
    seg_map = (data_sample.gt_sem_seg if ground_truth else data_sample.pred_sem_seg).data
    labels = [int(i) for i in np.unique(seg_map.cpu().numpy()) if i != IGNORE_INDEX]
    classes, palette = visualizer.dataset_meta['classes'], visualizer.dataset_meta['palette']
    names = [classes[i] for i in labels]
    drawn = with_legend(visualizer.get_image(), names, [palette[i] for i in labels])
    mmcv.imwrite(mmcv.imconvert(drawn, 'rgb', 'bgr'), out_file)
    return names
