"""What the command-line tools under ``tools/`` share: argument handling and config plumbing."""
from .args import (PRECISIONS, ToolError, add_runner_args, cfg_options_action, check_output_file,
                   exits_cleanly, float_at_least, int_at_least, positive_int, usable_device)
from .config import (build_model_from_config, check_amp_device, check_folder_can_be_made,
                     check_schedule_length, enable_visualization, ensure_custom_imports,
                     finished_schedule_note, load_config, read_config, set_work_dir, task_of,
                     use_atomic_checkpoints, use_test_time_augmentation, verify_checkpoint)

__all__ = ['PRECISIONS', 'ToolError', 'add_runner_args', 'build_model_from_config',
           'cfg_options_action', 'check_amp_device', 'check_folder_can_be_made',
           'check_output_file', 'check_schedule_length', 'enable_visualization',
           'ensure_custom_imports', 'exits_cleanly', 'finished_schedule_note', 'float_at_least',
           'int_at_least', 'load_config', 'positive_int', 'read_config', 'set_work_dir', 'task_of',
           'usable_device', 'use_atomic_checkpoints', 'use_test_time_augmentation',
           'verify_checkpoint']
