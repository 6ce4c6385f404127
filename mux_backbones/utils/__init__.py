"""Utilities: complexity counting and the paper's reference figures."""
from .complexity import count_macs, count_params
from .paper import PAPER_RESULTS

__all__ = ['PAPER_RESULTS', 'count_macs', 'count_params']
