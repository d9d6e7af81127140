"""top_codes / code_relevance: visit-level scores are summarised per visit, never as tied or
added-up codes."""

from __future__ import annotations

import pytest
import torch

from ehrlens.data import create_sample_dataset
from ehrlens.interpret import (
    AttentionRollout,
    VisitScoreSplit,
    code_relevance,
    score_levels,
    top_codes,
)
from ehrlens.models import CodeTransformer, Transformer

SAMPLES = [
    {"patient_id": "p01", "dx": [["I21.4", "I10"], ["E11.9", "I10"], ["I10"]], "y": 1},
    {"patient_id": "p02", "dx": [["I10", "E11.9"]], "y": 0},
]


@pytest.fixture(scope="module")
def dataset():
    return create_sample_dataset(SAMPLES, {"dx": "nested_sequence"}, {"y": "binary"})


def batch_of(dataset):
    return dataset.collate([dataset[0], dataset[1]])


def test_visit_level_scores_are_one_entry_per_visit(dataset):
    torch.manual_seed(0)
    model = Transformer(dataset, embedding_dim=8, heads=2, num_layers=1)
    batch = batch_of(dataset)
    rollout = AttentionRollout(model)
    scores = rollout.attribute(**batch)
    visit = scores["dx"][0].amax(dim=-1)  # [visits]: the score every code of a visit has
    for levels in (score_levels(rollout), None):  # stated, or inferred from the ties
        totals = code_relevance(scores, batch, model.schema, 0, levels=levels)
        assert totals == {
            ("dx", "visit 0: I21.4, I10"): pytest.approx(float(visit[0])),
            ("dx", "visit 1: E11.9, I10"): pytest.approx(float(visit[1])),
            ("dx", "visit 2: I10"): pytest.approx(float(visit[2])),
        }
    top = top_codes(scores, batch, model.schema, 0, k=2, levels=score_levels(rollout))
    names = ["visit 0: I21.4, I10", "visit 1: E11.9, I10", "visit 2: I10"]
    order = sorted(range(3), key=lambda v: -float(visit[v]))[:2]
    assert top == [("dx", names[v], pytest.approx(float(visit[v]))) for v in order]


def test_code_level_scores_rank_codes_and_sum_repeats(dataset):
    torch.manual_seed(0)
    model = CodeTransformer(dataset, embedding_dim=8, heads=2, num_layers=1)
    batch = batch_of(dataset)
    rollout = AttentionRollout(model)
    attributions = rollout.attribute(**batch)
    scores = attributions["dx"][0]
    totals = code_relevance(attributions, batch, model.schema, 0, levels=score_levels(rollout))
    assert totals == {
        ("dx", "I21.4"): pytest.approx(float(scores[0, 0])),
        ("dx", "I10"): pytest.approx(float(scores[0, 1] + scores[1, 1] + scores[2, 0])),
        ("dx", "E11.9"): pytest.approx(float(scores[1, 0])),
    }
    # the same scores, not stated: they differ inside a visit, so they are per code
    assert code_relevance(attributions, batch, model.schema, 0) == totals


def test_split_scores_are_code_level_and_a_bad_level_is_refused(dataset):
    torch.manual_seed(0)
    model = Transformer(dataset, embedding_dim=8, heads=2, num_layers=1)
    batch = batch_of(dataset)
    split = VisitScoreSplit(model)
    scores = split.attribute(**batch)
    totals = code_relevance(scores, batch, model.schema, 0, levels=score_levels(split))
    assert set(totals) == {("dx", "I21.4"), ("dx", "I10"), ("dx", "E11.9")}
    with pytest.raises(ValueError, match=r"feature 'dx': level must be 'code' or 'visit'"):
        code_relevance(scores, batch, model.schema, 0, levels={"dx": "patient"})
