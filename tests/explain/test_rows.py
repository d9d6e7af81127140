"""Cohort runs take a method's mode from its class: gradient-free classes run under inference
mode, others with autograd, whether given by name or as an instance under any key."""

from __future__ import annotations

from typing import ClassVar

import pandas as pd
import pytest
import torch

from ehrlens.data import create_sample_dataset, generate_cohort
from ehrlens.explain import explain_cohort
from ehrlens.interpret import (
    METHODS,
    AttentionRollout,
    BaseInterpreter,
    register_method,
    unregister_method,
)
from ehrlens.models import Transformer


class LogitPerSample(BaseInterpreter):
    """Every code of a sample scores that sample's logit, taken as the gradient of
    ``sum_i w_i * logit_i`` with respect to ``w`` (so it needs autograd)."""

    name = "logit_gradient"
    gradient_free = False
    needs = ()
    summary = "test: each sample's logit, by autograd"
    modes: ClassVar[list[tuple[bool, bool]]] = []

    def attribute(self, target_class_idx=None, **batch):
        type(self).modes.append((torch.is_inference_mode_enabled(), torch.is_grad_enabled()))
        weights = torch.ones(len(batch["patient_id"]), requires_grad=True)
        logit = self.model(**batch)["logit"][:, 0]
        (gradient,) = torch.autograd.grad((weights * logit).sum(), weights)
        codes = batch["diagnoses"]
        return {"diagnoses": gradient[:, None, None] * (codes != 0)}


class LogitPerSampleForwardOnly(LogitPerSample):
    """The same computation declared gradient-free: inference mode makes autograd fail."""

    name = "logit_forward_only"
    gradient_free = True
    summary = "test: declared gradient-free"
    modes: ClassVar[list[tuple[bool, bool]]] = []


@pytest.fixture(scope="module")
def dataset():
    cohort = generate_cohort(n_patients=20, layout="nested", seed=9)
    return create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)


@pytest.fixture(scope="module")
def model(dataset):
    torch.manual_seed(1)
    return Transformer(dataset, embedding_dim=8, heads=2, num_layers=2, dropout=0.0).eval()


@pytest.fixture
def registered():
    for cls in (LogitPerSample, LogitPerSampleForwardOnly):
        register_method(cls)
        cls.modes.clear()
    yield
    for cls in (LogitPerSample, LogitPerSampleForwardOnly):
        unregister_method(cls.name)
    assert "logit_gradient" not in METHODS


def expected_logit_rows(model, dataset) -> pd.Series:
    """Each real code's expected score: its patient's logit, from a plain forward."""
    batch = dataset.collate([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        logit = model(**batch)["logit"][:, 0]
    codes = batch["diagnoses"]
    per_code = [
        float(logit[b]) for b in range(codes.shape[0]) for _ in range(int((codes[b] != 0).sum()))
    ]
    return pd.Series(per_code, dtype="float64")


def test_a_method_not_gradient_free_runs_with_autograd(registered, model, dataset):
    frame = explain_cohort(model, dataset, ["logit_gradient"], batch_size=8).to_frame()
    assert LogitPerSample.modes == [(False, True)] * 3  # 20 patients: batches of 8, 8, 4
    expected = expected_logit_rows(model, dataset)
    pd.testing.assert_series_equal(
        frame["score"], expected, check_names=False, check_exact=False, atol=1e-6, rtol=0
    )
    instance = explain_cohort(model, dataset, {"any key": LogitPerSample(model)}, batch_size=8)
    assert LogitPerSample.modes[3:] == [(False, True)] * 3
    pd.testing.assert_series_equal(instance.to_frame()["score"], frame["score"], check_exact=True)


def test_gradient_free_comes_from_the_class(registered, model, dataset):
    with pytest.raises(RuntimeError):  # inference mode: autograd cannot run
        explain_cohort(model, dataset, ["logit_forward_only"], batch_size=8)
    assert LogitPerSampleForwardOnly.modes == [(True, False)]
    with pytest.raises(RuntimeError):
        explain_cohort(model, dataset, {"x": LogitPerSampleForwardOnly(model)}, batch_size=8)
    assert LogitPerSampleForwardOnly.modes == [(True, False)] * 2


def test_an_instance_under_any_key_runs_under_inference_mode(model, dataset, monkeypatch):
    modes = []
    original = AttentionRollout.attribute

    def spy(self, target_class_idx=None, **batch):
        modes.append(torch.is_inference_mode_enabled())
        return original(self, target_class_idx, **batch)

    monkeypatch.setattr(AttentionRollout, "attribute", spy)
    explain_cohort(model, dataset, {"r": AttentionRollout(model, head_fusion="max")})
    explain_cohort(model, dataset, {"rollout": {"head_fusion": "max"}})
    assert modes == [True, True]


@pytest.mark.parametrize(
    ("by_name", "make_instance"),
    [
        ({"rollout": {"head_fusion": "max"}}, lambda m: AttentionRollout(m, head_fusion="max")),
        (["rollout"], lambda m: AttentionRollout(m)),
        ({"chefer": {}}, lambda m: METHODS["chefer"].cls(m)),
    ],
)
def test_an_instance_and_its_name_give_identical_rows_and_fingerprints(
    model, dataset, tmp_path, by_name, make_instance
):
    name = next(iter(by_name))
    named = explain_cohort(model, dataset, by_name, batch_size=6, out_dir=tmp_path / "a")
    given = explain_cohort(
        model, dataset, {name: make_instance(model)}, batch_size=6, out_dir=tmp_path / "b"
    )
    assert named.fingerprint == given.fingerprint
    pd.testing.assert_frame_equal(named.to_frame(), given.to_frame(), check_exact=True)
    # and the instance's folder is the same run: resuming it by name reuses every shard
    again = explain_cohort(model, dataset, by_name, batch_size=6, out_dir=tmp_path / "b")
    assert again.computed == [] and again.reused == [0]


def test_different_settings_give_different_fingerprints(model, dataset):
    mean = explain_cohort(model, dataset, {"rollout": AttentionRollout(model)})
    fused = explain_cohort(model, dataset, {"rollout": AttentionRollout(model, head_fusion="max")})
    assert mean.fingerprint != fused.fingerprint
