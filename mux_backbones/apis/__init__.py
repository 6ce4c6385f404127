"""Helpers shared by the command-line tools."""
from .config_utils import (add_runner_args, build_model_from_config,
                           check_segmentation_config, enable_visualization, ensure_custom_imports, insert_seg_map_validation, load_config,
                           set_work_dir, task_of)
from .data_checks import DatasetError, check_datasets

__all__ = ['DatasetError', 'add_runner_args', 'build_model_from_config', 'check_datasets', 'check_segmentation_config',
           'enable_visualization', 'ensure_custom_imports', 'insert_seg_map_validation',
           'load_config', 'set_work_dir', 'task_of']
