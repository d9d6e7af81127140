"""The conformance suite: every registered method on every registered model it supports, found
from the registries themselves (no list to keep up to date), through the same checks, as
scikit-learn's ``check_estimator`` does for estimators:

- shapes: one score per raw input unit, shaped like ``batch[feature]``, finite;
- padding: exactly 0 wherever the feature's processor says there is no unit;
- batch = one by one: a patient's scores do not depend on the others in its batch (methods
  that read the model; a baseline that reads nothing of it is exempt by its ``needs``);
- state restored: train/eval mode, hooks, parameters' gradients and ``requires_grad``;
- ``get_params()`` round trip: ``type(i)(model, **i.get_params())`` is the same method;
- NaN refused: a model whose output is NaN is not explained; the ``ValueError`` names the
  patients (methods that read the model);
- Ray = local: each method by the Ray engine gives the local engine's rows
  (``tests/explain/test_ray_conformance.py``, where the session's Ray runtime is).

A method registered with :func:`~ehrlens.interpret.register_method` or a model class with a
``short_name`` is covered on its next run.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import pytest
import torch

from ehrlens.data import create_sample_dataset, generate_cohort
from ehrlens.interpret.registry import METHODS, make_interpreter
from ehrlens.models import model_classes

#: Input layouts tried, in order, until a model class accepts one.
LAYOUTS = ("nested", "sequence", "stagenet")
N_PATIENTS = 5


@cache
def _case(short_name: str) -> tuple[Any, Any, dict[str, Any]]:
    """``(model, dataset, batch)``: a small seeded model of the class on the first layout it
    takes, in eval mode, and a batch of every patient (lengths differ: padding exists)."""
    cls = model_classes()[short_name]
    for layout in LAYOUTS:
        cohort = generate_cohort(N_PATIENTS, layout=layout, seed=7)
        dataset = create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)
        torch.manual_seed(0)
        try:
            model = cls(dataset, embedding_dim=8, heads=2).eval()
        except (TypeError, ValueError):
            continue
        return model, dataset, dataset.collate([dataset[i] for i in range(len(dataset))])
    raise AssertionError(f"model {short_name!r} accepts none of the layouts {LAYOUTS}")


def _supports(method: str, model: Any) -> bool:
    """Whether the method can be built on the model: a method refuses a model that lacks an
    interface level or capability it needs with a ``TypeError`` when it is constructed."""
    try:
        make_interpreter(method, model)
    except TypeError:
        return False
    return True


PAIRS = [
    (method, short)
    for short in model_classes()
    for method in METHODS
    if _supports(method, _case(short)[0])
]
IDS = [f"{method}-{short}" for method, short in PAIRS]


def _reads_the_model(method: str) -> bool:
    return bool(METHODS[method].needs)


def test_every_method_is_checked_on_some_model():
    assert {method for method, _ in PAIRS} == set(METHODS)
    assert {short for _, short in PAIRS} == set(model_classes())


@pytest.mark.parametrize(("method", "short"), PAIRS, ids=IDS)
def test_shapes_and_padding(method, short):
    model, dataset, batch = _case(short)
    scores = make_interpreter(method, model).attribute(**batch)
    assert scores and set(scores) <= set(dataset.feature_keys)
    masks = batch.get("masks") or {}
    for key, tensor in scores.items():
        assert tuple(tensor.shape) == tuple(batch[key].shape), key
        assert torch.isfinite(tensor).all(), key
        real = dataset.input_processors[key].unit_mask(batch[key], masks.get(key))
        assert real.any() and not real.all(), "the batch must hold units and padding"
        assert (tensor[~real] == 0).all(), f"{key}: padding is not exactly 0"


READING = [(pair, i) for pair, i in zip(PAIRS, IDS, strict=True) if _reads_the_model(pair[0])]


@pytest.mark.parametrize(("method", "short"), [p for p, _ in READING], ids=[i for _, i in READING])
def test_a_batch_gives_each_patient_its_own_scores(method, short):
    model, dataset, batch = _case(short)
    together = make_interpreter(method, model).attribute(**batch)
    for index in range(len(dataset)):
        alone = make_interpreter(method, model).attribute(**dataset.collate([dataset[index]]))
        for key, tensor in alone.items():
            own = together[key][index]
            region = tuple(slice(0, n) for n in tensor.shape[1:])
            torch.testing.assert_close(own[region], tensor[0], atol=1e-5, rtol=1e-4)
            rest = own.clone()
            rest[region] = 0
            assert (rest == 0).all(), f"{key}: patient {index} has scores beyond its own units"


@pytest.mark.parametrize(("method", "short"), PAIRS, ids=IDS)
def test_the_model_is_left_as_it_was(method, short):
    model, _, batch = _case(short)
    interpreter = make_interpreter(method, model)

    def hooks() -> int:
        return sum(
            len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
            for m in model.modules()
        )

    before = hooks()
    flags = [p.requires_grad for p in model.parameters()]
    model.train()
    try:
        interpreter.attribute(**batch)
        assert model.training
    finally:
        model.eval()
    interpreter.attribute(**batch)
    assert not model.training
    assert hooks() == before
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(("method", "short"), PAIRS, ids=IDS)
def test_get_params_rebuilds_the_same_method(method, short):
    model, _, batch = _case(short)
    interpreter = make_interpreter(method, model)
    params = interpreter.get_params()
    rebuilt = type(interpreter)(model, **params)
    assert rebuilt.get_params() == params
    first, again = interpreter.attribute(**batch), rebuilt.attribute(**batch)
    assert set(first) == set(again)
    for key in first:
        torch.testing.assert_close(again[key], first[key], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(("method", "short"), [p for p, _ in READING], ids=[i for _, i in READING])
def test_a_nan_output_is_refused_naming_the_patients(method, short):
    """Every patient's logit is NaN (a forward hook): the method refuses, naming all of them.
    A method that never runs the model (``needs`` empty: the random baseline) is exempt."""
    model, _, batch = _case(short)

    def poison(module: Any, args: Any, kwargs: Any, output: dict[str, Any]) -> dict[str, Any]:
        return {**output, "logit": output["logit"] * float("nan")}

    ids = [str(p) for p in batch["patient_id"]]
    handle = model.register_forward_hook(poison, with_kwargs=True)
    try:
        with pytest.raises(
            ValueError,
            match=re.escape(f"output 'logit' is NaN or infinite for {len(ids)} patient(s): {ids}"),
        ):
            make_interpreter(method, model).attribute(**batch)
    finally:
        handle.remove()
    assert len(model._forward_hooks) == 0  # the check leaves no hook behind
