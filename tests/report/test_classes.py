"""The predicted and the explained class, by name, checked on hand-built probabilities."""

from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from ehrlens.data.processors import (
    BinaryLabelProcessor,
    MulticlassLabelProcessor,
    RegressionLabelProcessor,
)
from ehrlens.explain.predictions import model_class_names
from ehrlens.report.classes import (
    PREDICTION_COLUMNS,
    predicted_and_explained,
    report_predictions,
    stored_predictions,
)
from ehrlens.report.patient import Prediction, prediction_pills


def fake_model(mode, processor):
    schema = SimpleNamespace(output_processors={"y": processor})
    return SimpleNamespace(mode=mode, schema=schema)


@pytest.fixture
def low_high():
    proc = BinaryLabelProcessor(positive_class="high")
    proc.fit(["low", "high", "low"], key="y")
    return fake_model("binary", proc)


def test_binary_predicted_is_the_most_probable_class_explained_the_positive(low_high):
    assert model_class_names(low_high) == ["low", "high"]
    said = predicted_and_explained(low_high, torch.tensor([[0.392], [0.7], [0.5]]))
    assert [(p, e) for p, _, e in said] == [("low", "high"), ("high", "high"), ("high", "high")]
    assert [round(q, 6) for _, q, _ in said] == [0.608, 0.7, 0.5]
    said = predicted_and_explained(low_high, torch.tensor([[0.392]]), target=0)
    assert said[0][0] == "low" and said[0][2] == "low"


def test_multiclass_explains_the_predicted_class_unless_told():
    proc = MulticlassLabelProcessor()
    proc.fit(["a", "b", "c"], key="y")
    model = fake_model("multiclass", proc)
    y_prob = torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    said = predicted_and_explained(model, y_prob)
    assert [(p, e) for p, _, e in said] == [("b", "b"), ("a", "a")]
    assert [round(q, 6) for _, q, _ in said] == [0.5, 0.6]
    assert [e for _, _, e in predicted_and_explained(model, y_prob, target=2)] == ["c", "c"]


def test_regression_has_no_class():
    proc = RegressionLabelProcessor()
    proc.fit([1.0, 2.0], key="y")
    said = predicted_and_explained(fake_model("regression", proc), torch.tensor([[3.0]]))
    assert said == [(None, None, None)]
    pills = prediction_pills(Prediction(3.25, 3.0, mode="regression"))
    assert "predicted value 3.25" in pills and "probability" not in pills


def test_pills_name_the_predicted_and_the_explained_class_apart():
    shown = Prediction(0.392, 1.0, 1, "low", 0.608, "high", "binary")
    pills = prediction_pills(shown, ["low", "high"])
    assert "predicted low, probability 0.608" in pills
    assert "explained high, probability 0.392" in pills
    assert "label high (1)" in pills
    assert "predicted high" not in pills


def test_rows_that_carry_predictions_are_what_the_report_shows():
    frame = pd.DataFrame(
        {
            "patient_id": ["a", "a", "b"],
            "predicted_class": ["low", "low", "high"],
            "predicted_probability": [0.7, 0.7, 0.9],
            "explained_class": ["high", "high", "high"],
            "explained_probability": [0.3, 0.3, 0.9],
        }
    )
    computed = {"a": Prediction(0.5, 1.0, mode="binary"), "b": Prediction(0.5, 0.0)}
    shown = report_predictions(frame, computed, ["low", "high"])
    assert shown["a"] == Prediction(0.3, 1.0, 1, "low", 0.7, "high", "binary")
    assert shown["b"].predicted_class == "high" and shown["b"].label == 0.0
    without = frame.drop(columns=list(PREDICTION_COLUMNS[:1]))
    assert stored_predictions(without) is None
    assert report_predictions(without, computed) == computed
    # no probability at all (a regression model's rows): nothing to show, never "nan"
    assert stored_predictions(frame.assign(explained_probability=float("nan"))) is None
