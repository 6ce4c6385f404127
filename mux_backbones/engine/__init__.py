"""Engine pieces: hooks."""
from .hooks import ChannelsLastHook, EvaluateBeforeTrainHook

__all__ = ['ChannelsLastHook', 'EvaluateBeforeTrainHook']
