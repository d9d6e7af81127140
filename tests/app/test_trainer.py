"""Trainer on a tiny synthetic cohort, and prediction metrics against scikit-learn."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from ehrlens import Trainer
from ehrlens.data import create_sample_dataset, generate_cohort, get_dataloader, split_by_patient
from ehrlens.metrics.prediction import DEFAULT_METRICS, compute_metrics

BINARY_METRICS = ["roc_auc", "pr_auc", "f1", "accuracy"]


@pytest.fixture(scope="module")
def splits():
    cohort = generate_cohort(300, layout="sequence", seed=0)
    ds = create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)
    return split_by_patient(ds, (0.7, 0.15, 0.15), seed=0)


def _trainer(model, **kwargs):
    return Trainer(model, device="cpu", progress=False, **kwargs)


def _weights_equal(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_train_returns_history(make_tiny_model, splits):
    train, val, _ = splits
    model = make_tiny_model("Transformer", train)
    trainer = _trainer(model)
    assert trainer.metrics == BINARY_METRICS
    before = copy.deepcopy(model.state_dict())
    history = trainer.train(
        get_dataloader(train, 32, shuffle=True, seed=0), get_dataloader(val, 64), epochs=2
    )
    assert history is trainer.history
    assert [h["epoch"] for h in history] == [1, 2]
    for record in history:
        assert set(record) == {"epoch", "train_loss", "val_loss"} | {
            f"val_{m}" for m in BINARY_METRICS
        }
        assert math.isfinite(record["train_loss"])
        assert record["train_loss"] > 0
        assert math.isfinite(record["val_loss"])
        assert 0.0 <= record["val_roc_auc"] <= 1.0
    assert not model.training  # left in eval mode
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_train_without_validation(make_tiny_model, splits):
    train, _, _ = splits
    history = _trainer(make_tiny_model("StageAttentionNet", train)).train(
        get_dataloader(train, 64), epochs=1
    )
    assert len(history) == 1
    assert set(history[0]) == {"epoch", "train_loss"}


def test_same_seed_gives_identical_weights(make_tiny_model, splits):
    train, val, _ = splits
    model = make_tiny_model("Transformer", train, dropout=0.1)
    twin = copy.deepcopy(model)
    loader = get_dataloader(train, 32, shuffle=True, seed=5)
    val_loader = get_dataloader(val, 64)
    h1 = _trainer(model, seed=11).train(loader, val_loader, epochs=2)
    # The same loader object again: the trainer re-seeds its shuffling generator.
    h2 = _trainer(twin, seed=11).train(loader, val_loader, epochs=2)
    assert h1 == h2
    assert _weights_equal(model, twin)


def test_other_seed_gives_other_weights(make_tiny_model, splits):
    train, _, _ = splits
    model = make_tiny_model("Transformer", train, dropout=0.1)
    twin = copy.deepcopy(model)
    loader = get_dataloader(train, 32, shuffle=True)
    _trainer(model, seed=1).train(loader, epochs=1, monitor=None)
    _trainer(twin, seed=2).train(loader, epochs=1, monitor=None)
    assert not _weights_equal(model, twin)


def test_patience_stops_early(make_tiny_model, splits):
    train, val, _ = splits
    trainer = _trainer(make_tiny_model("Transformer", train))
    # lr=0: the validation loss never improves after the first epoch.
    history = trainer.train(
        get_dataloader(train, 64),
        get_dataloader(val, 64),
        epochs=5,
        lr=0.0,
        monitor="loss",
        patience=2,
    )
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[0]["val_loss"] == pytest.approx(history[2]["val_loss"])


def test_evaluate_returns_metrics_and_loss(make_tiny_model, splits):
    train, _, test = splits
    model = make_tiny_model("Transformer", train)
    trainer = _trainer(model)
    loader = get_dataloader(test, 16)
    result = trainer.evaluate(loader)
    assert set(result) == {*BINARY_METRICS, "loss"}
    y_true, y_prob, loss = trainer.inference(loader)
    assert y_true.shape == (len(test), 1)
    assert y_prob.shape == (len(test), 1)
    assert result["loss"] == pytest.approx(loss)
    assert result["roc_auc"] == pytest.approx(skm.roc_auc_score(y_true.ravel(), y_prob.ravel()))
    # The mean loss is weighted by batch size: it equals the loss over the whole set.
    with torch.no_grad():
        whole = model(**test.collate(test.items))["loss"].item()
    assert loss == pytest.approx(whole, rel=1e-5)

    custom = _trainer(model, metrics=["pr_auc"]).evaluate(loader)
    assert set(custom) == {"pr_auc", "loss"}


def test_monitor_must_be_a_metric(make_tiny_model, splits):
    train, val, _ = splits
    trainer = _trainer(make_tiny_model("Transformer", train), metrics=["accuracy"])
    with pytest.raises(ValueError, match="roc_auc"):
        trainer.train(get_dataloader(train, 64), get_dataloader(val, 64), epochs=1)


def test_evaluate_needs_labels(make_tiny_model, splits):
    train, _, _ = splits
    unlabeled_samples = [{"patient_id": "x", "diagnoses": [], "procedures": [], "drugs": []}]
    unlabeled = create_sample_dataset(unlabeled_samples, schema=train.schema)
    trainer = _trainer(make_tiny_model("Transformer", train))
    y_true, y_prob, loss = trainer.inference(get_dataloader(unlabeled, 4))
    assert y_true.size == 0
    assert y_prob.shape == (1, 1)
    assert math.isnan(loss)
    with pytest.raises(ValueError, match="labels"):
        trainer.evaluate(get_dataloader(unlabeled, 4))


@pytest.mark.parametrize("name", ["Transformer", "StageAttentionNet"])
def test_save_load_round_trip(make_tiny_model, splits, tmp_path, name):
    train, val, test = splits
    trainer = _trainer(make_tiny_model(name, train))
    trainer.train(get_dataloader(train, 64), get_dataloader(val, 64), epochs=1)
    path = tmp_path / "trainer" / "model.pt"
    trainer.save(path)
    loaded = Trainer.load(path, device="cpu", progress=False)
    assert type(loaded.model) is type(trainer.model)
    loader = get_dataloader(test, 16)
    y_true_a, y_prob_a, loss_a = trainer.inference(loader)
    y_true_b, y_prob_b, loss_b = loaded.inference(loader)
    np.testing.assert_array_equal(y_prob_a, y_prob_b)
    np.testing.assert_array_equal(y_true_a, y_true_b)
    assert loss_a == loss_b


def test_trainer_needs_a_model():
    with pytest.raises(TypeError, match="BaseModel"):
        Trainer(torch.nn.Linear(2, 1), device="cpu")


# ----------------------------------------------------------------------------- metrics


def test_binary_metrics_match_sklearn():
    y_true = np.array([0, 1, 1, 0, 1, 0, 0, 1])
    y_prob = np.array([0.1, 0.8, 0.4, 0.35, 0.9, 0.6, 0.2, 0.55])
    got = compute_metrics("binary", y_true[:, None].astype(float), y_prob[:, None])
    assert set(got) == set(DEFAULT_METRICS["binary"])
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y_true, y_prob))
    assert got["pr_auc"] == pytest.approx(skm.average_precision_score(y_true, y_prob))
    assert got["f1"] == pytest.approx(skm.f1_score(y_true, y_prob >= 0.5))
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_prob >= 0.5))
    assert got["accuracy"] == pytest.approx(6 / 8)


def test_multiclass_metrics_match_sklearn():
    y_true = np.array([0, 1, 2, 2, 1, 0, 2])
    y_prob = np.array(
        [
            [0.7, 0.2, 0.1],
            [0.2, 0.5, 0.3],
            [0.1, 0.3, 0.6],
            [0.3, 0.4, 0.3],
            [0.6, 0.3, 0.1],
            [0.5, 0.25, 0.25],
            [0.2, 0.2, 0.6],
        ]
    )
    got = compute_metrics("multiclass", y_true, y_prob)
    assert set(got) == set(DEFAULT_METRICS["multiclass"])
    y_pred = y_prob.argmax(-1)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert got["accuracy"] == pytest.approx(5 / 7)
    assert got["f1_macro"] == pytest.approx(skm.f1_score(y_true, y_pred, average="macro"))
    assert got["roc_auc_ovr"] == pytest.approx(skm.roc_auc_score(y_true, y_prob, multi_class="ovr"))


def test_multilabel_and_regression_metrics_match_sklearn():
    y_true = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    y_prob = np.array([[0.9, 0.2, 0.4], [0.3, 0.7, 0.2], [0.6, 0.4, 0.1], [0.2, 0.1, 0.8]])
    got = compute_metrics("multilabel", y_true, y_prob)
    assert got["roc_auc_macro"] == pytest.approx(skm.roc_auc_score(y_true, y_prob))
    assert got["pr_auc_macro"] == pytest.approx(skm.average_precision_score(y_true, y_prob))
    assert got["f1_micro"] == pytest.approx(skm.f1_score(y_true, y_prob >= 0.5, average="micro"))

    target = np.array([1.0, 2.5, -0.5, 3.0])
    pred = np.array([[1.5], [2.0], [0.0], [2.0]])
    got = compute_metrics("regression", target[:, None], pred)
    assert got["mse"] == pytest.approx(skm.mean_squared_error(target, pred.ravel()))
    assert got["mse"] == pytest.approx((0.25 + 0.25 + 0.25 + 1.0) / 4)
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(target, pred.ravel()))
    assert got["r2"] == pytest.approx(skm.r2_score(target, pred.ravel()))


@pytest.mark.filterwarnings("ignore:Only one class:UserWarning")
def test_undefined_metric_is_nan_and_unknown_metric_raises():
    got = compute_metrics("binary", np.array([1, 1, 1]), np.array([0.2, 0.9, 0.6]), ["roc_auc"])
    assert math.isnan(got["roc_auc"])
    with pytest.raises(ValueError, match="auroc"):
        compute_metrics("binary", np.array([0, 1]), np.array([0.2, 0.9]), ["auroc"])
