"""Engine pieces: hooks."""
from .hooks import EvaluateBeforeTrainHook

__all__ = ['EvaluateBeforeTrainHook']
