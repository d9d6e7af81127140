"""within_visit_signal_auroc: planted codes against the other codes of their own visit."""

from __future__ import annotations

import math

import pytest
import torch

from ehrlens.data import create_sample_dataset
from ehrlens.metrics import within_visit_signal_auroc

SAMPLES = [
    # p1: visit 0 = planted S + noise a, b; visit 1 = S alone (no co-visit code: skipped)
    {"patient_id": "p1", "dx": [["a", "S", "b"], ["S"]], "y": 1},
    # p2: two planted codes with one noise code in visit 1; visit 0 has no planted code
    {"patient_id": "p2", "dx": [["a"], ["S", "b", "T"]], "y": 1},
    # p3: nothing planted
    {"patient_id": "p3", "dx": [["a", "b"]], "y": 0},
]
TRUTH = {"p1": {"dx": ["S"]}, "p2": {"dx": ["S", "T"]}, "p3": {"dx": []}}


@pytest.fixture(scope="module")
def setup():
    dataset = create_sample_dataset(SAMPLES, {"dx": "nested_sequence"}, {"y": "binary"})
    return dataset, dataset.collate([dataset[i] for i in range(3)])


def test_by_hand(setup):
    dataset, batch = setup
    scores = torch.zeros(batch["dx"].shape)
    # p1 visit 0 (a, S, b): S 0.5 beats a 0.2, ties b 0.5 -> (1 + 0.5) / 2 = 0.75
    scores[0, 0, :3] = torch.tensor([0.2, 0.5, 0.5])
    scores[0, 1, 0] = 9.0  # a lone planted code: no pair, not counted
    # p2 visit 1 (S, b, T): S 0.9 > b 0.3, T 0.1 < b -> (1 + 0) / 2 = 0.5
    scores[1, 1, :3] = torch.tensor([0.9, 0.3, 0.1])
    values = within_visit_signal_auroc({"dx": scores}, batch, dataset.schema, TRUTH)
    assert values[0] == pytest.approx(0.75)
    assert values[1] == pytest.approx(0.5)
    assert math.isnan(values[2])


def test_a_visit_score_repeated_on_its_codes_gives_one_half(setup):
    dataset, batch = setup
    visit_scores = torch.rand(batch["dx"].shape[:2], generator=torch.Generator().manual_seed(0))
    tied = visit_scores[..., None] * (batch["dx"] != 0)
    values = within_visit_signal_auroc({"dx": tied}, batch, dataset.schema, TRUTH)
    assert values[:2].tolist() == [0.5, 0.5]


def test_missing_ground_truth_is_refused(setup):
    dataset, batch = setup
    with pytest.raises(KeyError, match="p1"):
        within_visit_signal_auroc({"dx": torch.zeros(batch["dx"].shape)}, batch, dataset.schema, {})
