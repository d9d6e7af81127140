"""One definition of top codes: summed repeats with their count, visits once."""

from __future__ import annotations

import pandas as pd

from ehrlens.report.top import TopCode, top_codes_of


def rows(entries, level="code"):
    return pd.DataFrame(
        [
            {"feature": f, "visit": v, "position": p, "code": c, "score": s, "level": level}
            for f, v, p, c, s in entries
        ]
    )


def test_a_repeated_code_is_summed_and_counted():
    frame = rows(
        [
            ("px", 0, 0, "0YB4KZZ", 0.152),
            ("px", 1, 0, "0YB4KZZ", 0.143),
            ("dx", 0, 0, "I10", 0.2),
            ("dx", 1, 1, "E11", 0.2),
        ]
    )
    top = top_codes_of(frame, 3)
    assert [(t.feature, t.code, t.count) for t in top] == [
        ("px", "0YB4KZZ", 2),
        ("dx", "I10", 1),  # a tie keeps the order of first appearance
        ("dx", "E11", 1),
    ]
    assert abs(top[0].score - 0.295) < 1e-12
    assert [t.label for t in top] == ["0YB4KZZ ×2", "I10", "E11"]


def test_visit_level_rows_are_one_entry_per_visit():
    visits = [("dx", 0, 1, "I10", 0.6), ("dx", 0, 0, "I21.4", 0.6), ("dx", 1, 0, "I10", 0.3)]
    frame = rows(visits, level="visit")
    assert top_codes_of(frame, 5) == [
        TopCode("dx", "visit 0: I21.4, I10", 0.6),
        TopCode("dx", "visit 1: I10", 0.3),
    ]
