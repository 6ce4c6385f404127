"""Type tests for constructor arguments, shared by the layers and the backbone.

A count must be an ``int`` (``True`` is a flag, ``3.0`` a float a slice or ``range`` would reject
later, far from the argument), a rate a real number (not a string of digits).
"""
import numbers
from collections.abc import Sequence


def is_int(value) -> bool:
    """Whether ``value`` is an integer argument (``True``/``False`` are flags, not counts)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value) -> bool:
    """Whether ``value`` is a number argument (not a flag, not a string of digits)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_sequence(value) -> bool:
    """Whether ``value`` is a sequence argument (a string is one value, not its letters)."""
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def check_positive_int(owner: str, name: str, value) -> int:
    """``value`` if it is an integer >= 1, else a ``ValueError`` naming ``owner`` and ``name``."""
    if not (is_int(value) and value >= 1):
        raise ValueError(f'{owner}: {name} must be a positive integer, got {value!r}')
    return int(value)
