"""Validation of raw sample values, shared by the processors: errors name the sample and key.

Example:
    >>> code_list(["I10", 7], key="conditions", index=0)
    ['I10', 7]
    >>> code_list("I10", key="conditions", index=3)
    Traceback (most recent call last):
    TypeError: sample 3, feature 'conditions': expected a list of codes, got str
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

from .base import PAD_ID, RESERVED_CODES, SPECIAL_TOKENS, UNK_ID


def where(key: str, index: int | None, kind: str = "feature") -> str:
    """``"feature 'k'"`` or ``"sample 3, feature 'k'"``: the start of every value error."""
    return f"{kind} '{key}'" if index is None else f"sample {index}, {kind} '{key}'"


def type_name(value: Any) -> str:
    return type(value).__name__


def is_number(value: Any) -> bool:
    """True for ints and floats, not for bools."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def finite_float(number: int | float, key: str, index: int | None, what: str) -> float:
    """``float(number)``, or a ValueError naming the sample and key when it is NaN, infinite
    or an integer too large for a float (which would otherwise raise ``OverflowError``)."""
    try:
        value = float(number)
    except OverflowError:
        raise ValueError(
            f"{where(key, index)}: {what} must be finite, got an integer too large for a float"
        ) from None
    if not math.isfinite(value):
        raise ValueError(f"{where(key, index)}: {what} must be finite, got {value!r}")
    return value


def code_list(
    value: Any,
    key: str,
    index: int | None,
    what: str = "a list of codes",
    kind: str = "feature",
    step: str = "",
) -> list:
    """Validate a flat list of codes (str or int) and return it as a list.

    Feature codes must not be empty or blank, nor one of the reserved ``<pad>`` / ``<unk>``
    (they would become padding or the unknown code); ``step`` (e.g. ``"visit 2, "``) says
    where such a code is.
    """
    at = where(key, index, kind)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{at}: expected {what}, got {type_name(value)}")
    for position, code in enumerate(value):
        if not isinstance(code, (str, int)) or isinstance(code, bool):
            raise TypeError(
                f"{at}: expected {what} (str or int codes), "
                f"got {type_name(code)} at position {position}"
            )
        if kind == "feature" and isinstance(code, str):
            if not code.strip():
                raise ValueError(f"{at}: {step}position {position}: empty code {code!r}")
            if code in RESERVED_CODES:
                raise ValueError(
                    f"{at}: {step}position {position}: code {code!r} is reserved "
                    f"(ids {PAD_ID} and {UNK_ID} are {', '.join(SPECIAL_TOKENS)}); rename it"
                )
    return list(value)


def visit_list(value: Any, key: str, index: int | None) -> list[list]:
    """Validate a list of visits, each a list of codes."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(
            f"{where(key, index)}: expected a list of visits (each a list of codes), "
            f"got {type_name(value)}"
        )
    return [
        code_list(visit, key, index, f"visit {v} to be a list of codes", step=f"visit {v}, ")
        for v, visit in enumerate(value)
    ]


def time_list(value: Any, length: int, key: str, index: int | None) -> list[float]:
    """Validate ``length`` finite, non-decreasing step times."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{where(key, index)}: expected a list of times, got {type_name(value)}")
    if len(value) != length:
        raise ValueError(
            f"{where(key, index)}: expected {length} times (one per step), got {len(value)}"
        )
    times = []
    for position, t in enumerate(value):
        if not is_number(t):
            raise TypeError(
                f"{where(key, index)}: time at position {position} must be a number, "
                f"got {type_name(t)}"
            )
        times.append(finite_float(t, key, index, f"time at position {position}"))
    if any(b < a for a, b in itertools.pairwise(times)):
        raise ValueError(
            f"{where(key, index)}: times must be non-decreasing (time of each step, "
            f"not gaps between steps), got {times}"
        )
    return times


def pair(value: Any, key: str, index: int | None, what: str) -> tuple[Any, Any]:
    """The two halves of a ``(times, values)``-style pair."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{where(key, index)}: expected a pair {what}, got {type_name(value)}")
    return value[0], value[1]
