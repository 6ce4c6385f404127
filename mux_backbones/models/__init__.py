"""Whole models built around the backbone."""
from .classifier import LinearClsHead, MUXNetClassifier

__all__ = ['LinearClsHead', 'MUXNetClassifier']
