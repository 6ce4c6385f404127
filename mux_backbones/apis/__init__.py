"""Helpers shared by the command-line tools."""
from .config_utils import (check_segmentation_config, enable_visualization,
                           ensure_custom_imports, insert_seg_map_validation, set_work_dir,
                           task_of)
from .data_checks import DatasetError, check_datasets

__all__ = ['DatasetError', 'check_datasets', 'check_segmentation_config',
           'enable_visualization', 'ensure_custom_imports', 'insert_seg_map_validation',
           'set_work_dir', 'task_of']
