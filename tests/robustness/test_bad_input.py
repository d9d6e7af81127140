"""Bad input is refused at the boundary with an error naming the feature key (or field) and,
where there is one, the sample, by the model and by every interpreter.

Complements ``test_batch_validation.py`` (missing / unexpected keys, float ids, NaN labs,
batch sizes, lists, devices at the model boundary for two layouts).
"""

from __future__ import annotations

import random

import pytest
import torch
from _robustness_kit import (
    METHODS,
    MODEL_METHODS,
    MODELS,
    make_dataset,
    make_model,
    make_sample,
    make_samples,
)

from ehrlens.data import create_sample_dataset
from ehrlens.models import BaseModel, Transformer


@pytest.fixture(scope="module")
def dataset():
    return make_dataset()


@pytest.fixture(scope="module")
def batch(dataset):
    return dataset.collate(dataset.items[:4])


@pytest.fixture(scope="module", params=MODELS)
def model(request, dataset):
    return make_model(request.param, dataset)


def call(method: str, model, batch: dict, target=None):
    if method == "forward":
        return model(**batch)
    return METHODS[method](model).attribute(target, **batch)


EVERY_CALL = ["forward", *MODEL_METHODS]


# ----------------------------------------------------------------------------- batch contents


@pytest.mark.parametrize("how", EVERY_CALL)
def test_every_method_refuses_a_missing_feature(model, batch, how):
    bad = {k: v for k, v in batch.items() if k != "visits"}
    with pytest.raises(ValueError, match=r"batch is missing feature 'visits'"):
        call(how, model, bad)


@pytest.mark.parametrize("how", EVERY_CALL)
def test_every_method_refuses_an_unexpected_key(model, batch, how):
    with pytest.raises(ValueError, match=r"unexpected key\(s\) \['code'\]"):
        call(how, model, {**batch, "code": batch["codes"]})


@pytest.mark.parametrize("how", EVERY_CALL)
@pytest.mark.parametrize("key", ["codes", "visits", "steps"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bool])
def test_non_integer_code_ids_name_the_feature(model, batch, how, key, dtype):
    bad = {**batch, key: batch[key].to(dtype)}
    with pytest.raises(TypeError, match=rf"feature '{key}': code ids must be an integer tensor"):
        call(how, model, bad)


@pytest.mark.parametrize("how", ["forward", "rollout", "chefer"])
@pytest.mark.parametrize(("key", "value"), [("codes", 99), ("visits", -1), ("steps", 10**6)])
def test_code_ids_outside_the_vocabulary_name_feature_sample_and_fix(model, batch, how, key, value):
    ids = batch[key].clone()
    ids.view(ids.shape[0], -1)[2, 0] = value
    with pytest.raises(ValueError) as info:
        call(how, model, {**batch, key: ids})
    message = str(info.value)
    assert f"feature '{key}': sample 2 has code id {value}" in message
    assert "schema=model.schema" in message


def test_a_batch_converted_with_another_vocabulary_is_refused(model):
    """The classic silent error: patients converted with a refitted schema, not the model's."""
    other = [make_sample(f"o{i}", random.Random(i)) for i in range(3)]
    other[0]["codes"] = [f"X{i}" for i in range(40)]  # a larger vocabulary
    refit = create_sample_dataset(other, model.schema.input_schema, {"y": "binary"})
    bad = refit.collate(refit.items)
    with pytest.raises(ValueError, match=r"feature 'codes': sample 0 has code id \d+, outside"):
        model(**bad)


@pytest.mark.parametrize("how", ["forward", "rollout", "integrated_gradients"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_vectors_and_times_name_feature_and_sample(model, batch, how, value):
    demo = batch["demo"].clone()
    demo[3, 1] = value
    with pytest.raises(ValueError, match=r"feature 'demo': sample 3 \(patient_id='p3'\)"):
        call(how, model, {**batch, "demo": demo})
    times = {**batch["times"], "steps": batch["times"]["steps"].clone()}
    times["steps"][1, 0] = value
    with pytest.raises(ValueError, match=r"feature 'steps'.*sample 1 has NaN or infinite times"):
        call(how, model, {**batch, "times": times})


# ----------------------------------------------------------------------------- masks and times


def test_masks_and_times_must_match_their_feature(model, batch):
    masks, times = batch["masks"], batch["times"]
    cases = [
        ({**batch, "masks": {"labs": masks["labs"][:, :1]}}, ValueError, r"feature 'labs'.*shape"),
        ({**batch, "times": {**times, "steps": times["steps"][:2]}}, ValueError, r"'steps'.*shape"),
        ({**batch, "masks": {**masks, "lab": masks["labs"]}}, ValueError, r"has key 'lab'"),
        ({**batch, "masks": {"labs": masks["labs"].float() * 2}}, ValueError, r"'labs'.*True"),
        ({**batch, "masks": {"labs": masks["labs"].tolist()}}, TypeError, r"'labs'.*tensor"),
        ({**batch, "masks": [masks["labs"]]}, TypeError, r"batch\['masks'\] must be a dict"),
        ({**batch, "masks": {}}, ValueError, r"feature 'labs': batch\['masks'\] has no step mask"),
    ]
    for bad, error, pattern in cases:
        with pytest.raises(error, match=pattern):
            model(**bad)


def test_a_batch_without_masks_is_refused_rather_than_reading_padding_as_data(model, batch):
    bad = {k: v for k, v in batch.items() if k != "masks"}
    with pytest.raises(ValueError, match=r"feature 'labs'.*padded steps would count"):
        METHODS["rollout"](model).attribute(**bad)


# ----------------------------------------------------------------------------- labels


def test_labels_are_checked_against_the_batch(model, batch):
    with pytest.raises(ValueError, match=r"label 'y': shape \(2, 1\) does not match .* 4"):
        model(**{**batch, "y": batch["y"][:2]})
    with pytest.raises(ValueError, match=r"label 'y': sample 0 has a NaN"):
        model(**{**batch, "y": batch["y"] * float("nan")})
    with pytest.raises(TypeError, match=r"label 'y': expected a tensor, got list"):
        model(**{**batch, "y": batch["y"].tolist()})


# ----------------------------------------------------------------------------- targets


BAD_TARGETS = [
    (2, ValueError, r"target_class_idx 2 is out of range for a binary model"),
    (-1, ValueError, r"target_class_idx -1 is out of range"),
    (torch.tensor([1, 0]), ValueError, r"target_class_idx has 2 entries for a batch of 4"),
    (torch.ones(4, 1, dtype=torch.long), TypeError, r"target_class_idx tensor must be integer"),
    (torch.ones(4), TypeError, r"target_class_idx tensor must be integer and \[batch\]"),
    (1.0, TypeError, r"target_class_idx must be None, an int or a LongTensor"),
    (True, TypeError, r"target_class_idx must be None, an int or a LongTensor"),
    ("1", TypeError, r"target_class_idx must be None, an int or a LongTensor"),
]


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize(
    ("target", "error", "pattern"), BAD_TARGETS, ids=[repr(t[0])[:20] for t in BAD_TARGETS]
)
def test_every_method_refuses_a_bad_target(model, batch, method, target, error, pattern):
    """Class-agnostic methods ignore the target but still refuse an invalid one."""
    with pytest.raises(error, match=pattern):
        METHODS[method](model).attribute(target, **batch)


@pytest.mark.parametrize("method", list(METHODS))
def test_targets_are_checked_against_the_number_of_classes(method):
    samples = make_samples(6)
    for i, s in enumerate(samples):
        s["y"] = ["a", "b", "c"][i % 3]
    ds = create_sample_dataset(samples, make_dataset().input_schema, {"y": "multiclass"})
    model = make_model("Transformer", ds)
    batch = ds.collate(ds.items)
    METHODS[method](model).attribute(2, **batch)  # the last class is fine
    with pytest.raises(ValueError, match=r"target_class_idx 3 is out of range for a multiclass"):
        METHODS[method](model).attribute(3, **batch)


# ----------------------------------------------------------------------------- not a model


NOT_MODELS = {
    "class": Transformer,
    "None": None,
    "path": "model.pt",
    "state_dict": {"head.weight": torch.zeros(1, 2)},
    "linear": torch.nn.Linear(2, 2),
}


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("thing", list(NOT_MODELS))
def test_interpreters_refuse_what_is_not_a_model(method, thing):
    obj = NOT_MODELS[thing]
    with pytest.raises(TypeError) as info:
        METHODS[method](obj)
    message = str(info.value)
    if thing == "class":
        assert "got the class Transformer itself, not a model" in message
    elif method == "random":
        assert "feature_keys" in message
    elif method in ("input_x_gradient", "integrated_gradients"):
        assert "Module" in message or "get_embedding_layers" in message
    else:
        assert "Interpretable" in message


@pytest.mark.parametrize("method", MODEL_METHODS)
def test_a_model_with_nan_weights_is_an_error_not_nan_scores(dataset, batch, method):
    """A diverged (or corrupted) model gives NaN outputs: explaining it is refused."""
    model = make_model("Transformer", dataset)
    with torch.no_grad():
        model.encoders["steps"].blocks[0].attention.qkv.weight[0, 0] = float("nan")
    # NaN spreads through the logit: the model's outputs are refused, naming the patients.
    with pytest.raises(
        ValueError, match=r"output 'logit' is NaN or infinite for \d+ patient\(s\): \['p0'"
    ):
        METHODS[method](model).attribute(**batch)


def test_base_model_is_abstract_enough_to_refuse_explanations(dataset):
    """A BaseModel that is not attention-interpretable is refused by attention methods."""

    class _NotInterpretableModel(BaseModel):
        def forward(self, **batch):
            return {}

    plain = _NotInterpretableModel(dataset)
    for method in ("rollout", "flow", "chefer", "raw", "rollout_low_memory"):
        with pytest.raises(TypeError, match=r"needs a model implementing \w*Interpretable"):
            METHODS[method](plain)
