"""One definition of a patient's "top codes", used by the report, the notebook view and the
demo's terminal output.

A code's score is its own score summed over its occurrences in the patient's record (a code
in three visits counts three times), and the entry says how many were summed: ``0YB4KZZ ×2``.
A visit-level score (the same on every code of a visit) is one entry per visit,
``visit 2: I21.4, I10``, its score counted once.

Example:
    >>> rows = frame[(frame["patient_id"] == "P000123") & (frame["method"] == "rollout")]
    >>> top = top_codes_of(rows, 3)
    >>> len(top), type(top[0]).__name__, top[0].score >= top[1].score >= top[2].score
    (3, 'TopCode', True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: How the report and the terminal say that repeated codes were summed.
SUMMED_NOTE = "a code's scores summed over its occurrences (×n: n occurrences)"


@dataclass(frozen=True)
class TopCode:
    """One ranked entry: a code (or a visit, for visit-level scores), its summed score and how
    many occurrences were summed.

    Example:
        >>> TopCode("diagnoses", "0YB4KZZ", 0.2952, 2).label
        '0YB4KZZ ×2'
    """

    feature: str
    code: str
    score: float
    count: int = 1

    @property
    def label(self) -> str:
        """The code with ``×n`` when ``n > 1`` occurrences were summed."""
        return f"{self.code} ×{self.count}" if self.count > 1 else self.code


def top_codes_of(rows: Any, k: int) -> list[TopCode]:
    """The ``k`` highest entries of one patient's rows of one method, highest first (ties
    keep the order in which the entries first appear in the rows).

    Args:
        rows: attribution rows (pandas DataFrame with ``feature``, ``code``, ``score``,
            ``visit``, ``position`` and optionally ``level``) of one patient and one method.
        k: how many entries.

    Example:
        >>> rows = pd.DataFrame({
        ...     "feature": ["procedures", "procedures", "diagnoses", "diagnoses", "procedures"],
        ...     "code": ["0YB4KZZ", "0YB4KZZ", "I10", "I21.4", "3E0G76Z"],
        ...     "score": [0.15, 0.14, 0.2, 0.2, 0.1],
        ...     "visit": [0, 1, 1, 1, 1],
        ...     "position": [0, 0, 1, 0, 1],
        ...     "level": ["code", "code", "visit", "visit", "code"],
        ... })
        >>> [t.label for t in top_codes_of(rows, 2)]   # 0.15 + 0.14, then visit 1's 0.2
        ['0YB4KZZ ×2', 'visit 1: I21.4, I10']
    """
    per_visit = (rows["level"] == "visit").to_numpy() if "level" in rows else None
    code_rows = rows if per_visit is None else rows[~per_visit]
    grouped = code_rows.groupby(["feature", "code"], sort=False)["score"].agg(["sum", "count"])
    entries = [
        TopCode(str(f), str(c), float(row["sum"]), int(row["count"]))
        for (f, c), row in grouped.iterrows()
    ]
    if per_visit is not None and per_visit.any():
        for (feature, visit), group in rows[per_visit].groupby(["feature", "visit"], sort=False):
            codes = ", ".join(group.sort_values("position", kind="stable")["code"])
            entries.append(
                TopCode(str(feature), f"visit {int(visit)}: {codes}", float(group["score"].iloc[0]))
            )
    return sorted(entries, key=lambda e: -e.score)[:k]  # stable: ties keep their order
