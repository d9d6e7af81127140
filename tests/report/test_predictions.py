"""Predictions shown next to explanations (ehrlens.report.predictions)."""

from __future__ import annotations

import pytest
import torch

from _tolerance import FLOAT32_ACROSS
from ehrlens.data import create_sample_dataset
from ehrlens.models import Transformer
from ehrlens.report import patient_predictions
from ehrlens.report.predictions import batch_predictions

SAMPLES = [
    {"patient_id": f"p{i}", "dx": [f"c{i % 4}", f"c{(i + 1) % 5}"], "y": i % 3} for i in range(9)
]


def model_and_batch(mode: str):
    samples = [dict(s, y=s["y"] % 2) if mode == "binary" else s for s in SAMPLES]
    dataset = create_sample_dataset(samples, {"dx": "sequence"}, {"y": mode})
    torch.manual_seed(0)
    model = Transformer(dataset, embedding_dim=8, heads=2, num_layers=1, dropout=0.0).eval()
    batch = dataset.collate([dataset[i] for i in range(len(dataset))])
    with torch.inference_mode():
        y_prob = model(**batch)["y_prob"]
    return model, dataset, batch, y_prob


def assert_same_predictions(got: dict, expected: dict) -> None:
    """Same patients, classes and labels; probabilities within float32 rounding, since
    another batch size sums in another order (``FLOAT32_ACROSS``)."""
    assert list(got) == list(expected)
    for pid, prediction in expected.items():
        assert (got[pid].class_index, got[pid].label) == (prediction.class_index, prediction.label)
        assert got[pid].probability == pytest.approx(
            prediction.probability, rel=FLOAT32_ACROSS["rtol"], abs=FLOAT32_ACROSS["atol"]
        ), pid


def test_multiclass_shows_the_top_class_and_its_probability():
    model, dataset, batch, y_prob = model_and_batch("multiclass")
    predictions = batch_predictions(model, batch)
    for i, sample in enumerate(SAMPLES):
        got = predictions[sample["patient_id"]]
        top = int(y_prob[i].argmax())
        assert got.class_index == top
        assert got.probability == pytest.approx(float(y_prob[i, top]), abs=1e-6)
        assert got.label == sample["y"]
    chosen = batch_predictions(model, batch, target=2)
    assert [p.class_index for p in chosen.values()] == [2] * len(SAMPLES)
    assert [p.probability for p in chosen.values()] == pytest.approx(y_prob[:, 2].tolist())
    assert_same_predictions(patient_predictions(model, dataset, batch_size=4, target=2), chosen)
    with pytest.raises(ValueError, match="target class 3 is out of range for 3 classes"):
        batch_predictions(model, batch, target=3)


def test_binary_shows_the_explained_class():
    model, _, batch, y_prob = model_and_batch("binary")
    positive = batch_predictions(model, batch)
    assert [p.class_index for p in positive.values()] == [None] * len(SAMPLES)
    assert [p.probability for p in positive.values()] == pytest.approx(y_prob[:, 0].tolist())
    assert batch_predictions(model, batch, target=1) == positive
    negative = batch_predictions(model, batch, target=0)
    assert [p.class_index for p in negative.values()] == [0] * len(SAMPLES)
    assert [p.probability for p in negative.values()] == pytest.approx((1 - y_prob[:, 0]).tolist())
    with pytest.raises(ValueError, match="target class 2 is out of range for 2 classes"):
        batch_predictions(model, batch, target=2)
