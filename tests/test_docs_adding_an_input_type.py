"""The example of "Adding an input type" in docs/ARCHITECTURE.md runs as written and gives the
scores, rows and removals it describes."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
import torch

from ehrlens.data.processors import FEATURE_PROCESSORS, unregister_processor

DOC = Path(__file__).resolve().parents[1] / "docs" / "ARCHITECTURE.md"
BAGS = [["a", "a", "c"], ["b"], ["c", "b", "a", "a"], ["c"]]


def section(title: str) -> str:
    """The text of the ``## title`` section, up to the next ``## `` heading."""
    text = DOC.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


@pytest.fixture
def namespace():
    samples = [{"patient_id": f"p{i}", "dx": bag, "y": i % 2} for i, bag in enumerate(BAGS)]
    torch.manual_seed(0)
    yield {"samples": samples}
    if "bag_of_codes" in FEATURE_PROCESSORS:
        unregister_processor("bag_of_codes")


def test_the_example_adds_a_type_that_runs_end_to_end(namespace):
    blocks = re.findall(r"```python\n(.*?)```", section("Adding an input type"), flags=re.DOTALL)
    assert len(blocks) == 2
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
    assert FEATURE_PROCESSORS["bag_of_codes"] is namespace["BagOfCodesProcessor"]

    counts = [[Counter(bag)[code] for code in "abc"] for bag in BAGS]
    batch = namespace["batch"]
    assert batch["dx"].tolist() == counts
    scores = namespace["scores"]["dx"]
    assert scores.shape == (len(BAGS), 3)
    assert ((scores > 0) == (batch["dx"] > 0)).all()  # absent codes exactly 0, others > 0

    frame = namespace["frame"]
    rows = list(zip(frame["patient_id"], frame["code"], strict=True))
    assert rows == [(f"p{i}", code) for i, bag in enumerate(BAGS) for code in sorted(set(bag))]
    for row in frame.itertuples(index=False):
        assert row.score == pytest.approx(float(scores[int(row.patient_id[1:]), row.position]))

    # at 100% every present code is removed: the model sees empty bags
    result = namespace["faithfulness"]
    model = namespace["model"]
    with torch.no_grad():
        p_full = model(**batch)["y_prob"][:, 0]
        p_empty = model(**{**batch, "dx": torch.zeros_like(batch["dx"])})["y_prob"][:, 0]
    target = result.target
    drop = torch.where(target == 1, p_full - p_empty, p_empty - p_full)
    torch.testing.assert_close(result.comprehensiveness[:, -1], drop, atol=1e-6, rtol=0)
