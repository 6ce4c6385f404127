"""Embedded toy datasets and the checks of every dataset a config reads.

The generators write the stock VOC/ADE20K layouts: mmdet's ``VOCDataset`` and mmseg's
``ADE20KDataset`` read them unchanged. Importing registers the ``ValidateSegMap`` transform.
"""
from .checks import (DatasetError, ValidateSegMap, check_ade20k_dataset, check_datasets,
                     check_image_file, check_segmentation_config, check_voc_dataset,
                     insert_seg_map_validation, leaf_datasets)
from .toy_data import make_toy_ade20k, make_toy_voc

__all__ = ['DatasetError', 'ValidateSegMap', 'check_ade20k_dataset', 'check_datasets',
           'check_image_file', 'check_segmentation_config', 'check_voc_dataset',
           'insert_seg_map_validation', 'leaf_datasets', 'make_toy_ade20k', 'make_toy_voc']
