"""Every attribution row carries its patient's prediction: the predicted class and its
probability, the explained class and its probability, checked against the model's own
probabilities computed here."""

from __future__ import annotations

import pytest
import torch

from ehrlens.data import create_sample_dataset, get_dataloader
from ehrlens.explain import explain_cohort
from ehrlens.explain.predictions import PREDICTION_COLUMNS, batch_prediction_rows, model_class_names
from ehrlens.models import Transformer


def _samples(labels):
    codes = [["a", "b"], ["b", "c", "d"], ["a"], ["d", "e"], ["c", "a", "e"], ["b"]]
    return [
        {"patient_id": f"p{i}", "dx": codes[i % len(codes)], "y": label}
        for i, label in enumerate(labels)
    ]


def _model(samples, mode):
    dataset = create_sample_dataset(samples, {"dx": "sequence"}, {"y": mode})
    torch.manual_seed(1)
    model = Transformer(dataset, embedding_dim=8, heads=2, num_layers=1, dropout=0.0).eval()
    return model, dataset


def _probabilities(model, dataset):
    """``{patient_id: [p(class 0), p(class 1), ...]}`` straight from the model."""
    batch = next(iter(get_dataloader(dataset, batch_size=len(dataset))))
    with torch.no_grad():
        y_prob = model(**batch)["y_prob"].double()
    if y_prob.shape[1] == 1:
        y_prob = torch.cat([1 - y_prob, y_prob], dim=1)
    return {pid: y_prob[i].tolist() for i, pid in enumerate(batch["patient_id"])}


def _per_patient(frame):
    per = frame.groupby("patient_id")[list(PREDICTION_COLUMNS)].nunique(dropna=False)
    assert (per == 1).all().all()  # one prediction per patient, on every one of its rows
    return frame.drop_duplicates("patient_id").set_index("patient_id")[list(PREDICTION_COLUMNS)]


@pytest.mark.parametrize("target", [None, 0])
def test_binary_rows_name_the_predicted_and_the_explained_class(target):
    model, dataset = _model(_samples(["no", "yes", "no", "yes", "yes", "no"]), "binary")
    assert model_class_names(model) == ["no", "yes"]
    frame = explain_cohort(model, dataset, ["rollout"], target_class_idx=target).to_frame()
    rows = _per_patient(frame)
    for pid, (p_no, p_yes) in _probabilities(model, dataset).items():
        predicted = "yes" if p_yes >= 0.5 else "no"
        row = rows.loc[pid]
        assert row["predicted_class"] == predicted
        assert row["predicted_probability"] == pytest.approx(max(p_no, p_yes), abs=1e-6)
        explained = "yes" if target is None else "no"  # default: the positive class
        assert row["explained_class"] == explained
        expected = p_yes if explained == "yes" else p_no
        assert row["explained_probability"] == pytest.approx(expected, abs=1e-6)


def test_multiclass_default_explains_the_predicted_class_and_a_target_its_own():
    labels = ["low", "mid", "high", "mid", "low", "high"]
    model, dataset = _model(_samples(labels), "multiclass")
    classes = model_class_names(model)
    assert sorted(classes) == ["high", "low", "mid"]
    probabilities = _probabilities(model, dataset)
    default = _per_patient(explain_cohort(model, dataset, ["rollout"]).to_frame())
    targeted = _per_patient(
        explain_cohort(model, dataset, ["rollout"], target_class_idx=2).to_frame()
    )
    for pid, p in probabilities.items():
        best = max(range(3), key=lambda c: p[c])
        assert default.loc[pid, "predicted_class"] == classes[best]
        assert default.loc[pid, "explained_class"] == classes[best]
        assert default.loc[pid, "explained_probability"] == pytest.approx(p[best], abs=1e-6)
        assert targeted.loc[pid, "predicted_class"] == classes[best]
        assert targeted.loc[pid, "explained_class"] == classes[2]
        assert targeted.loc[pid, "explained_probability"] == pytest.approx(p[2], abs=1e-6)


def test_regression_rows_have_no_classes():
    model, dataset = _model(_samples([0.5, 1.0, 2.0, 0.1, 0.3, 0.9]), "regression")
    frame = explain_cohort(model, dataset, ["rollout"]).to_frame()
    assert frame[list(PREDICTION_COLUMNS)].isna().all().all()


def test_a_target_out_of_range_is_refused_naming_the_classes():
    model, dataset = _model(_samples(["no", "yes", "no", "yes", "yes", "no"]), "binary")
    batch = next(iter(get_dataloader(dataset, batch_size=2)))
    with pytest.raises(ValueError, match=r"target class 2 is out of range .* \['no', 'yes'\]"):
        batch_prediction_rows(model, batch, target=2)


def _count_forwards(model):
    calls = []
    handle = model.register_forward_hook(lambda *_: calls.append(1))
    return calls, handle


@pytest.mark.parametrize("method", ["rollout", "flow", "raw_attention", "chefer"])
def test_a_plain_forward_method_gives_the_predictions_without_another_forward(method):
    # The method's own forward on the batch gives the probabilities: one forward per batch in
    # all, and the stored probabilities are the model's (within float32 rounding: the capture
    # forward may compute attention by another kernel than the plain forward).
    model, dataset = _model(_samples(["no", "yes", "no", "yes", "yes", "no"]), "binary")
    calls, handle = _count_forwards(model)
    try:
        frame = explain_cohort(model, dataset, [method], batch_size=3).to_frame()
    finally:
        handle.remove()
    assert len(calls) == 2  # two batches of three, one forward each
    rows = _per_patient(frame)
    for pid, (p_no, p_yes) in _probabilities(model, dataset).items():
        assert rows.loc[pid, "predicted_probability"] == pytest.approx(max(p_no, p_yes), abs=1e-6)


def test_methods_without_a_plain_forward_get_one_more_forward_per_batch():
    # Integrated gradients runs the model on interpolated inputs only: its forwards are not
    # the model's predictions, so the rows' predictions come from one more forward per batch.
    pytest.importorskip("captum")
    model, dataset = _model(_samples(["no", "yes", "no", "yes", "yes", "no"]), "binary")
    frame = explain_cohort(model, dataset, ["integrated_gradients"], batch_size=3).to_frame()
    rows = _per_patient(frame)
    for pid, (p_no, p_yes) in _probabilities(model, dataset).items():
        assert rows.loc[pid, "predicted_probability"] == pytest.approx(max(p_no, p_yes), abs=1e-6)
        assert rows.loc[pid, "predicted_class"] == ("yes" if p_yes >= 0.5 else "no")


def test_the_recorder_ignores_forwards_on_other_tensors():
    from ehrlens.explain.predictions import ProbabilityRecorder

    model, dataset = _model(_samples(["no", "yes", "no", "yes"]), "binary")
    batch = next(iter(get_dataloader(dataset, batch_size=4)))
    recorder = ProbabilityRecorder(model, batch)
    copies = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    with torch.no_grad(), recorder.watching():
        model(**copies)  # equal values, other tensors: not the batch itself
        assert recorder.y_prob is None
        expected = model(**batch)["y_prob"]
        model(**batch)  # only the first forward on the batch is kept
    assert recorder.y_prob is not None
    torch.testing.assert_close(recorder.y_prob, expected, rtol=0, atol=0)  # same forward
    assert not model._forward_hooks  # the recorder's hook is gone after the block
