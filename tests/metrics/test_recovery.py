"""Planted-signal recovery against hand-computed precision, recall and AUROC."""

import math

import pytest
import torch

from ehrlens.data import create_sample_dataset
from ehrlens.metrics import signal_recovery


@pytest.fixture
def setup():
    samples = [
        {"patient_id": "a", "dx": ["S1", "N1", "N2", "S2", "N3"], "y": 1},
        {"patient_id": "b", "dx": ["N1", "N2"], "y": 0},
    ]
    dataset = create_sample_dataset(samples, {"dx": "sequence"}, {"y": "binary"})
    batch = dataset.collate([dataset[0], dataset[1]])
    truth = {"a": {"dx": ["S1", "S2"]}, "b": {"dx": []}}
    return dataset, batch, truth


def test_precision_recall_and_auroc_by_hand(setup):
    dataset, batch, truth = setup
    # Patient a ranks S1 > N1 > S2 > N2 > N3: top-2 holds one planted code of two.
    scores = torch.tensor([[5.0, 4.0, 2.0, 3.0, 1.0], [1.0, 2.0, 0.0, 0.0, 0.0]])
    a, b = signal_recovery({"dx": scores}, batch, dataset.schema, truth, k=2)
    assert (a.precision_at_k, a.recall_at_k, a.n_planted) == (0.5, 0.5, 2)
    # Planted {5, 3} vs others {4, 2, 1}: pairs won 3 + 2 of 6.
    assert a.auroc == pytest.approx(5 / 6)
    assert b.precision_at_k == 0.0 and math.isnan(b.recall_at_k) and math.isnan(b.auroc)


def test_repeated_codes_sum_their_scores(setup):
    dataset, _, _ = setup
    samples = [{"patient_id": "a", "dx": ["N1", "S1", "N1"], "y": 1}]
    ds = create_sample_dataset(samples, schema=dataset.schema)
    batch = ds.collate([ds[0]])
    scores = {"dx": torch.tensor([[0.3, 0.5, 0.3]])}  # N1 totals 0.6 > S1's 0.5
    (only,) = signal_recovery(scores, batch, dataset.schema, {"a": {"dx": ["S1"]}}, k=1)
    assert only.precision_at_k == 0.0 and only.auroc == 0.0


def test_missing_ground_truth_and_bad_k_are_refused(setup):
    dataset, batch, _ = setup
    scores = {"dx": torch.ones(batch["dx"].shape)}
    with pytest.raises(KeyError, match="'a'"):
        signal_recovery(scores, batch, dataset.schema, {}, k=1)
    with pytest.raises(ValueError, match="k must be"):
        signal_recovery(scores, batch, dataset.schema, {"a": {}, "b": {}}, k=0)
