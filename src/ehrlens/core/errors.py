"""Errors shared by the library and the command line.

Example:
    >>> try:
    ...     raise UsageValueError("--target 2 is out of range; classes in output order: 0: a, 1: b")
    ... except ValueError as error:   # a ValueError for Python callers
    ...     print(error)
    --target 2 is out of range; classes in output order: 0: a, 1: b
"""

from __future__ import annotations


class UsageValueError(ValueError):
    """A value the caller chose that does not fit the model or data it is used with (a class
    the model does not have): a ``ValueError`` in Python, bad usage (exit code 2) on the
    command line."""
