"""Tri-objective MUXNet architecture search (MUXConv paper, Sec. 4): the space, the objectives,
the algorithms (pymoo's MOEA/D-PBI, NSGA-II/III; regularized evolution) and the search loop."""
from .space import MUXNetSpace

__all__ = ['MUXNetSpace']
