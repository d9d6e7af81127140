"""Sanity checks by randomisation: rank correlation against scipy, checks with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from ehrlens.data.dataset import create_sample_dataset
from ehrlens.data.synthetic import generate_cohort
from ehrlens.interpret import InputXGradient, RandomBaseline
from ehrlens.metrics import DataRandomisation, ModelParameterRandomisation, rank_correlation
from ehrlens.metrics.sanity import explanation_vectors, parameter_layers
from ehrlens.models import Transformer


@pytest.fixture(scope="module")
def case():
    cohort = generate_cohort(n_patients=30, layout="sequence", seed=2)
    dataset = create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)
    torch.manual_seed(0)
    model = Transformer(dataset, embedding_dim=8, heads=2, num_layers=2).eval()
    batch = dataset.collate([dataset[i] for i in range(12)])
    return dataset, model, batch


@pytest.mark.parametrize("seed", range(5))
def test_rank_correlation_matches_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 4, size=15).astype(float)  # many ties
    b = a + rng.normal(size=15)
    assert rank_correlation(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)


def test_rank_correlation_hand_numbers_and_degenerate_input():
    assert rank_correlation(np.array([1.0, 2.0, 3.0]), np.array([10.0, 30.0, 20.0])) == 0.5
    assert rank_correlation(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])) == -1.0
    assert np.isnan(rank_correlation(np.array([1.0, 1.0]), np.array([1.0, 2.0])))
    assert np.isnan(rank_correlation(np.array([1.0]), np.array([2.0])))
    with pytest.raises(ValueError, match="equal length"):
        rank_correlation(np.zeros(2), np.zeros(3))


def test_explanation_vectors_keep_real_units_only(case):
    dataset, model, batch = case
    scores = {k: torch.ones(batch[k].shape) for k in dataset.feature_keys}
    vectors = explanation_vectors(scores, batch, model)
    for i, vector in enumerate(vectors):
        real = sum(int((batch[k][i] != 0).sum()) for k in dataset.feature_keys)
        assert vector.shape == (real,)


def test_a_method_that_ignores_the_model_fails_the_check(case):
    """RandomBaseline's scores do not depend on the weights: correlation 1 at every step."""
    _, model, batch = case
    result = ModelParameterRandomisation(RandomBaseline, {"seed": 3}, layers=["head", "*"])(
        model, batch
    )
    assert [row.step for row in result.rows] == ["head", "*"]
    for row in result.rows:
        assert row.summary.mean == pytest.approx(1.0)


def test_cascading_randomisation_destroys_a_gradient_explanation(case):
    _, model, batch = case
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    check = ModelParameterRandomisation("attnlrp", n_bootstrap=200, seed=1)
    result = check(model, batch)
    assert [row.step for row in result.rows] == parameter_layers(model)
    assert result.rows[0].step == "head"  # output side first
    last = result.rows[-1].summary
    assert last.low <= last.mean <= last.high
    assert abs(last.mean) < 0.5  # nothing of the trained explanation is left
    for name, p in model.named_parameters():  # the model itself is untouched
        assert torch.equal(p, before[name])
    records = result.to_records()
    assert records[0]["check"] == "model_parameter_randomisation"
    assert records[0]["method"] == "attnlrp"


def test_unknown_layer_pattern_is_refused_naming_the_layers(case):
    _, model, batch = case
    with pytest.raises(ValueError, match=r"matches no parameter.*head"):
        ModelParameterRandomisation(RandomBaseline, layers=["nope"])(model, batch)


def test_data_randomisation_against_itself_and_another_model(case):
    dataset, model, batch = case
    same = DataRandomisation(InputXGradient)(model, model, batch)
    assert same.rows[0].summary.mean == pytest.approx(1.0)
    torch.manual_seed(5)
    other = Transformer(dataset, embedding_dim=8, heads=2, num_layers=2).eval()
    different = DataRandomisation(InputXGradient, n_bootstrap=200)(model, other, batch)
    assert different.rows[0].step == "random_labels"
    assert different.rows[0].summary.mean < 0.9
    # the per-patient values are the correlations of each patient's vectors
    a = explanation_vectors(InputXGradient(model).attribute(**batch), batch, model)
    b = explanation_vectors(InputXGradient(other).attribute(**batch), batch, model)
    expected = [spearmanr(x, y).statistic for x, y in zip(a, b, strict=True)]
    assert np.allclose(different.rows[0].per_sample, expected, atol=1e-6, equal_nan=True)


def test_layer_patterns_match_modules_and_everything_inside_them(case):
    import copy

    from ehrlens.metrics.sanity import randomise_parameters

    _, model, _ = case
    generator = torch.Generator().manual_seed(0)
    copied = copy.deepcopy(model)
    n_block = sum(1 for n, _ in model.named_parameters() if ".blocks.1." in n)
    assert randomise_parameters(copied, "encoders.*.blocks.1", generator) == n_block
    assert randomise_parameters(copied, "head", generator) == 2  # weight and bias
    changed = {
        n
        for n, p in copied.named_parameters()
        if not torch.equal(p, dict(model.named_parameters())[n])
    }
    assert changed == {
        n for n, _ in model.named_parameters() if ".blocks.1." in n or n.startswith("head.")
    }
