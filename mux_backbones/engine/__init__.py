"""Engine pieces: training hooks, the atomic checkpoint backend, checkpoint reading and checks."""
from .atomic_backend import AtomicLocalBackend
from .checkpoint import (CheckpointError, CheckpointRefusedError, check_state_dict, load_weights,
                         read_checkpoint, state_dict_of)
from .hooks import ChannelsLastHook, ChooseTrainingKernelsHook, EvaluateBeforeTrainHook

__all__ = ['AtomicLocalBackend', 'ChannelsLastHook', 'CheckpointError', 'CheckpointRefusedError',
           'ChooseTrainingKernelsHook', 'EvaluateBeforeTrainHook', 'check_state_dict',
           'load_weights', 'read_checkpoint', 'state_dict_of']
