"""Sample identity: patient ids are compared as text, and must not repeat or collide.

Readers turn every ``patient_id`` into a string (``7`` and ``"7"`` both become ``"7"``), so two
different values with the same text would silently become one patient. :func:`find_id_clash`
finds the first such pair, or the first repeated identity: a sample is identified by its
patient id, plus its ``visit_id`` where a patient has several samples (``strict=False``), or by
its patient id alone (``strict=True``, one sample per patient, as attribution tables need).

Example:
    >>> clash = find_id_clash([{"patient_id": "7"}, {"patient_id": 8}, {"patient_id": 7}])
    >>> clash.first, clash.second, clash.reason
    (0, 2, 'collision')
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


def id_text(value: Any) -> str:
    """The text form of a patient or visit id, as it appears in batches and tables.

    Example:
        >>> id_text(7), id_text("7")
        ('7', '7')
    """
    return value if isinstance(value, str) else str(value)


def _kind(value: Any) -> str:
    """``"number"`` for ints and floats of any library (numpy scalars too), ``"text"`` for
    strings, else the type's name: two ids clash when their texts agree but their kinds differ."""
    if isinstance(value, str):
        return "text"
    if isinstance(value, bool):
        return "bool"
    if hasattr(value, "dtype") and getattr(value, "ndim", None) == 0:  # numpy scalars
        value = value.item()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "number"
    return type(value).__name__


@dataclass(frozen=True)
class IdClash:
    """Two samples that would be taken for the same one.

    Attributes:
        first / second: positions of the two samples (``first < second``).
        first_value / second_value: their raw ``patient_id`` values.
        text: the id both become as text.
        reason: ``"collision"`` (different values, same text: ``7`` and ``"7"``) or
            ``"duplicate"`` (the same id, and the same ``visit_id`` unless ``strict``).
    """

    first: int
    second: int
    first_value: Any
    second_value: Any
    text: str
    reason: str
    strict: bool = False

    def describe(self, first: str, second: str) -> str:
        """A sentence naming both occurrences, given how to name each (``"sample 3"``)."""
        if self.reason == "collision":
            return (
                f"{second} has patient_id {self.second_value!r} and {first} has "
                f"{self.first_value!r}: both are patient {self.text!r} as text; write every "
                "patient_id the same way (all strings, or all numbers)"
            )
        if self.strict:
            rule = "patient ids must be unique (one sample per patient)"
        else:
            rule = "samples of one patient must have distinct visit_id values"
        return f"{second} repeats patient_id {self.second_value!r} of {first}; {rule}"


def find_id_clash(
    samples: Iterable[Mapping[str, Any] | Any], *, strict: bool = False
) -> IdClash | None:
    """The first pair of samples whose identities clash, or ``None``.

    Samples without a ``patient_id`` (or that are not dicts) are skipped: the dataset step
    reports those.

    Args:
        samples: sample dicts with ``patient_id`` and optionally ``visit_id``.
        strict: one sample per patient (``visit_id`` ignored); otherwise a patient's samples
            are told apart by ``visit_id``.

    Example:
        >>> rows = [{"patient_id": "p1", "visit_id": "v1"}, {"patient_id": "p1", "visit_id": "v2"}]
        >>> find_id_clash(rows) is None, find_id_clash(rows, strict=True).reason
        (True, 'duplicate')
    """
    kinds: dict[str, tuple[int, Any, str]] = {}
    seen: dict[tuple[str, str | None], int] = {}
    values: dict[int, Any] = {}
    for index, sample in enumerate(samples):
        if not isinstance(sample, Mapping) or "patient_id" not in sample:
            continue
        value = sample["patient_id"]
        text = id_text(value)
        kind = _kind(value)
        earlier = kinds.setdefault(text, (index, value, kind))
        if earlier[2] != kind:
            return IdClash(earlier[0], index, earlier[1], value, text, "collision", strict)
        visit = None if strict or sample.get("visit_id") is None else id_text(sample["visit_id"])
        first = seen.setdefault((text, visit), index)
        if first != index:
            return IdClash(first, index, values[first], value, text, "duplicate", strict)
        values[index] = value
    return None


def find_id_collision(values: Iterable[Any]) -> IdClash | None:
    """The first two positions of ``values`` that differ but are the same id as text
    (``7`` and ``"7"``), or ``None``. ``None`` entries (missing ids) are skipped; repeats of
    one value are not collisions (a patient's many rows in an event table).

    Example:
        >>> find_id_collision(["a", 7, "a", "7"]).second
        3
    """
    kinds: dict[str, tuple[int, Any, str]] = {}
    for index, value in enumerate(values):
        if value is None:
            continue
        text = id_text(value)
        kind = _kind(value)
        earlier = kinds.setdefault(text, (index, value, kind))
        if earlier[2] != kind:
            return IdClash(earlier[0], index, earlier[1], value, text, "collision")
    return None


__all__ = ["IdClash", "find_id_clash", "find_id_collision", "id_text"]
