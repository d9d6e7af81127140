"""The per-patient colour scale: each method scaled to the patient's own largest score."""

from __future__ import annotations

import re

import pandas as pd

from ehrlens.report.colours import method_scales
from ehrlens.report.patient import patient_scales, patient_section

FRAME = pd.DataFrame(
    {
        "patient_id": ["big", "big", "small", "small"],
        "feature": ["dx"] * 4,
        "visit": [0, 0, 0, 0],
        "position": [0, 1, 0, 1],
        "code": ["A", "B", "A", "B"],
        "score": [1.0, 0.5, 0.01, 0.005],
        "method": ["rollout"] * 4,
        "model_id": ["m"] * 4,
        "level": ["code"] * 4,
    }
)


def test_a_patient_with_small_scores_is_near_white_shared_but_full_on_its_own_scale():
    shared = method_scales(FRAME, ["rollout"])
    small = FRAME[FRAME["patient_id"] == "small"]
    own = patient_scales(small, shared)
    assert shared["rollout"].scale == 1.0 and own["rollout"].scale == 0.01
    text = patient_section("small", small, shared)
    chips = re.findall(r"data-code='(\w)' data-score='[^']+' data-own-style='([^']+)'", text)
    styles = dict(re.findall(r"data-code='(\w)'[^>]*? style='([^']+)'", text))
    # on the shared scale A (0.01 of 1.0) is almost white; on its own scale full red
    assert styles["A"] == shared["rollout"].style(0.01) == "background:#fefdfd;color:#1d2330"
    assert dict(chips)["A"] == own["rollout"].style(0.01) == shared["rollout"].style(1.0)
    assert dict(chips)["B"] == shared["rollout"].style(0.5)
