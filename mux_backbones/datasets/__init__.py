"""Embedded toy datasets and data checks.

The generators write the stock VOC/ADE20K layouts: mmdet's ``VOCDataset`` and mmseg's
``ADE20KDataset`` read them unchanged.
"""
import importlib.util

from .toy_data import make_toy_ade20k, make_toy_voc

__all__ = ['make_toy_ade20k', 'make_toy_voc']
if importlib.util.find_spec('mmseg') is not None:
    from .transforms import ValidateSegMap  # noqa: F401  (registers the transform)
    __all__.append('ValidateSegMap')
