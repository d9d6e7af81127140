"""Visit-level scores in the report: shown once on the visit, not shaded on each code."""

from __future__ import annotations

import re

import pandas as pd

from ehrlens.report import render_report

COLUMNS = ["patient_id", "feature", "visit", "position", "code", "score", "method", "model_id"]
ROWS = [
    # rollout on a visit-level model: visit 0's score 0.6 on both its codes
    ("a", "dx", 0, 0, "I21.4", 0.6, "rollout", "m", "visit"),
    ("a", "dx", 0, 1, "I10", 0.6, "rollout", "m", "visit"),
    ("a", "dx", 1, 0, "I10", 0.3, "rollout", "m", "visit"),
    # integrated gradients: each code its own score
    ("a", "dx", 0, 0, "I21.4", 0.5, "integrated_gradients", "m", "code"),
    ("a", "dx", 0, 1, "I10", 0.1, "integrated_gradients", "m", "code"),
    ("a", "dx", 1, 0, "I10", 0.2, "integrated_gradients", "m", "code"),
]


def _method_html(page: str, method: str) -> str:
    """The method's column of the (one) patient's section."""
    section = page.index("class='patient'")
    start = page.index(f"<div class='method' data-method='{method}'>", section)
    end = page.find("<div class='method' data-method=", start + 1)
    return page[start : end if end > 0 else len(page)]


def test_visit_scores_sit_on_the_visit_and_code_scores_on_the_codes():
    frame = pd.DataFrame(ROWS, columns=[*COLUMNS, "level"])
    page = render_report(frame)
    rollout = _method_html(page, "rollout")
    assert rollout.count("data-level='visit'") == 2
    assert re.findall(r"class='vscore' data-score='([^']+)'", rollout) == ["0.6", "0.3"]
    assert "class='code' data-code='I21.4' data-score" not in rollout  # codes unshaded
    assert "scored with its visit" in rollout
    # the top table: each visit once with its score, codes neither tied nor added up
    assert "visit 0: I21.4, I10</td><td class='num'>0.6000" in rollout
    assert "visit 1: I10</td><td class='num'>0.3000" in rollout
    assert "<td>I10</td>" not in rollout
    ig = _method_html(page, "integrated_gradients")
    assert "data-level='visit'" not in ig and "vscore" not in ig
    assert re.findall(r"data-code='([^']+)' data-score='([^']+)'", ig) == [
        ("I21.4", "0.5"),
        ("I10", "0.1"),
        ("I10", "0.2"),
    ]
    assert "<td>I10 ×2</td><td class='num'>0.3000" in ig  # a code in two visits sums, visibly
    cohort = page[
        page.index("<section id='cohort'>") : page.index(
            "<section", page.index("<section id='cohort'>") + 1
        )
    ]
    assert "Scored per visit (one score for all codes of a visit): no ranking of codes" in cohort


def test_a_table_without_the_level_column_shades_every_code():
    frame = pd.DataFrame([r[:8] for r in ROWS], columns=COLUMNS)
    rollout = _method_html(render_report(frame), "rollout")
    assert "vscore" not in rollout
    assert len(re.findall(r"data-code='[^']+' data-score=", rollout)) == 3
