"""Evaluator: per-patient metrics over a loader, bootstrap intervals, filters, recovery."""

import math

import numpy as np
import pytest
import torch

from ehrlens.data import create_sample_dataset, get_dataloader
from ehrlens.metrics import Evaluator, bootstrap_interval


def test_bootstrap_interval_of_constant_values_is_a_point():
    summary = bootstrap_interval(np.full(20, 0.25), n_bootstrap=100)
    assert (summary.mean, summary.low, summary.high, summary.n) == (0.25, 0.25, 0.25, 20)


def test_bootstrap_interval_brackets_the_mean_and_ignores_nan():
    values = np.array([0.0, 1.0, 0.5, math.nan, 0.25, 0.75])
    summary = bootstrap_interval(values, n_bootstrap=500, seed=1)
    assert summary.n == 5 and summary.mean == pytest.approx(0.5)
    assert summary.low < summary.mean < summary.high
    assert math.isnan(bootstrap_interval(np.array([math.nan])).mean)


class CodeCounter:
    """Scores each code by whether it is the signal code 'S' (ideal) - a fake method."""

    def __init__(self, dataset, ideal=True):
        self.signal_id = dataset.input_processors["dx"].vocabulary.code_to_id["S"]
        self.ideal = ideal

    def attribute(self, target_class_idx=None, **batch):
        is_signal = (batch["dx"] == self.signal_id).float()
        return {"dx": is_signal if self.ideal else (batch["dx"] != 0).float() - is_signal}


class SignalModel(torch.nn.Module):
    """Binary model with logit 4 * [S present] - 2: patients with S are predicted positive."""

    mode = "binary"

    def __init__(self, dataset):
        super().__init__()
        self.schema = dataset.schema
        self.signal_id = dataset.input_processors["dx"].vocabulary.code_to_id["S"]

    def forward(self, dx, **_):
        logit = 4.0 * (dx == self.signal_id).any(1).float() - 2.0
        return {"logit": logit[:, None], "y_prob": torch.sigmoid(logit)[:, None]}


@pytest.fixture
def setup():
    samples = [
        {"patient_id": f"p{i}", "dx": (["S"] if i % 2 else []) + ["A", "B", "C"], "y": i % 2}
        for i in range(12)
    ]
    dataset = create_sample_dataset(samples, {"dx": "sequence"}, {"y": "binary"})
    truth = {s["patient_id"]: {"dx": ["S"] if "S" in s["dx"] else []} for s in samples}
    return dataset, SignalModel(dataset).eval(), truth


def test_evaluate_reports_every_metric_with_intervals_and_counts(setup):
    dataset, model, truth = setup
    evaluator = Evaluator(model, percentages=(25, 50), ground_truth=truth, k=1, n_bootstrap=50)
    result = evaluator.evaluate(get_dataloader(dataset, 5), CodeCounter(dataset), name="ideal")
    assert result.n_patients == 12 and result.n_scored == 12 and result.method == "ideal"
    expected = {
        "comprehensiveness",
        "sufficiency",
        "comprehensiveness@25",
        "sufficiency@50",
        "precision@1",
        "recall@1",
        "signal_auroc",
    }
    assert expected <= set(result.summaries)
    # Patients with the signal code: the ideal method ranks it first.
    assert result.summaries["precision@1"].mean == pytest.approx(0.5)  # 6 of 12 have it
    assert result.summaries["recall@1"].mean == 1.0 and result.summaries["recall@1"].n == 6
    for summary in result.summaries.values():
        assert summary.low <= summary.mean <= summary.high
    row = result.to_dict()
    assert row["method"] == "ideal" and "comprehensiveness_low" in row
    assert result.seconds_per_1000 > 0
    assert result.curve["percent"] == [25.0, 50.0]


def test_ideal_scores_beat_inverted_scores_and_filter_counts(setup):
    dataset, model, _ = setup
    evaluator = Evaluator(model, percentages=(25,), sample_filter="predicted_positive")
    loader = get_dataloader(dataset, 4)
    ideal = evaluator.evaluate(loader, CodeCounter(dataset, ideal=True))
    worst = evaluator.evaluate(loader, CodeCounter(dataset, ideal=False))
    assert ideal.n_patients == 12 and ideal.n_scored == worst.n_scored == 6  # those with S
    drop = 1 / (1 + math.exp(-2)) - 1 / (1 + math.exp(2))  # removing S: logit 2 -> -2
    assert ideal.summaries["comprehensiveness"].mean == pytest.approx(drop)
    assert worst.summaries["comprehensiveness"].mean == 0.0


class RecordingMethod:
    """Records the target each call asks for; scores the signal code."""

    def __init__(self, dataset):
        self.inner = CodeCounter(dataset)
        self.targets = []

    def attribute(self, target_class_idx=None, **batch):
        self.targets.append(target_class_idx)
        return self.inner.attribute(**batch)


def test_the_method_explains_the_class_the_metrics_measure(setup):
    dataset, model, _ = setup
    loader = get_dataloader(dataset, 12)
    method = RecordingMethod(dataset)
    Evaluator(model, percentages=(50,)).evaluate(loader, method)
    has_signal = torch.tensor(["S" in s for s in ["S" if i % 2 else "" for i in range(12)]])
    assert method.targets[0].tolist() == has_signal.long().tolist()  # predicted class
    fixed = RecordingMethod(dataset)
    result = Evaluator(model, percentages=(50,), target=1).evaluate(loader, fixed)
    assert fixed.targets[0].tolist() == [1] * 12
    # Measuring class 1 everywhere: removing S drops p(1) from sigmoid(2) to sigmoid(-2) for
    # the six patients with S; the other six have nothing to lose.
    drop = 1 / (1 + math.exp(-2)) - 1 / (1 + math.exp(2))
    assert result.summaries["comprehensiveness"].mean == pytest.approx(drop / 2)
    with pytest.raises(ValueError, match="target"):
        Evaluator(model, target="positive")
