"""VisitScoreSplit: a visit-level model's visit score divided among its codes, and the level
(code or visit) of every method's scores."""

from __future__ import annotations

import pytest
import torch

from ehrlens.data import create_sample_dataset, generate_cohort
from ehrlens.interpret import (
    AttentionFlow,
    AttentionRollout,
    CheferRelevance,
    InputXGradient,
    IntegratedGradients,
    RandomBaseline,
    VisitScoreSplit,
    make_interpreter,
    score_level,
    score_levels,
)
from ehrlens.interpret.methods.visit_split import split_positions
from ehrlens.models import CodeTransformer, StageAttentionNet, Transformer

BASES = {"rollout": AttentionRollout, "flow": AttentionFlow, "chefer": CheferRelevance}


def cohort_dataset(layout):
    cohort = generate_cohort(n_patients=24, layout=layout, seed=5)
    return create_sample_dataset(cohort.samples, cohort.input_schema, cohort.output_schema)


@pytest.fixture(scope="module")
def nested():
    dataset = cohort_dataset("nested")
    torch.manual_seed(0)
    model = Transformer(dataset, embedding_dim=16, heads=2, num_layers=2, dropout=0.1)
    batch = dataset.collate([dataset[i] for i in range(8)])
    return dataset, model, batch


def test_split_positions_by_hand():
    scores = torch.tensor([[[0.6, 0.6, 0.0], [0.3, 0.0, 0.0], [0.2, 0.2, 0.0]]])
    weight = torch.tensor([[[3.0, 1.0, 5.0], [2.0, 7.0, 7.0], [0.0, 0.0, 4.0]]])
    real = torch.tensor([[[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 0.0]]])
    out = split_positions(scores, weight, real)
    # 0.6 * 3/4, 0.6 * 1/4; a lone code keeps the visit; all-zero weights split equally
    expected = torch.tensor([[[0.45, 0.15, 0.0], [0.3, 0.0, 0.0], [0.1, 0.1, 0.0]]])
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("method", list(BASES))
def test_codes_sum_back_to_the_visit_score(nested, method):
    _, model, batch = nested
    visit = BASES[method](model).attribute(**batch)
    split = VisitScoreSplit(model, method=method).attribute(**batch)
    assert model.training  # the caller's mode is kept
    for key, values in ((k, batch[k]) for k in model.feature_keys):
        real = values != 0
        assert (split[key][~real] == 0).all()
        visit_score = visit[key].amax(dim=-1)  # the same on every code of a visit
        torch.testing.assert_close(split[key].sum(dim=-1), visit_score, atol=1e-6, rtol=1e-5)


def test_gradient_x_input_shares_match_captum(nested):
    """Shares are |gradient x embedding| per code within its visit: Captum's
    LayerGradientXActivation (summed over the embedding) computes the same products."""
    _, model, batch = nested
    visit = CheferRelevance(model).attribute(**batch)
    split = VisitScoreSplit(model, method="chefer").attribute(**batch)
    ixg = InputXGradient(model).attribute(**batch)
    for key in model.feature_keys:
        real = (batch[key] != 0).double()
        weight = ixg[key].double().abs() * real
        total = weight.sum(-1, keepdim=True)
        count = real.sum(-1, keepdim=True).clamp(min=1)
        share = torch.where(total > 0, weight / total.clamp(min=1e-300), real / count)
        expected = visit[key].double().amax(-1, keepdim=True) * share * real
        torch.testing.assert_close(split[key].double(), expected, atol=1e-6, rtol=1e-4)


def test_the_split_separates_codes_the_tie_did_not(nested):
    _, model, batch = nested
    split = VisitScoreSplit(model).attribute(**batch)["diagnoses"]
    values = batch["diagnoses"]
    multi = (values != 0).sum(-1) >= 2
    assert multi.any()
    spreads = [
        float(split[b, v][values[b, v] != 0].max() - split[b, v][values[b, v] != 0].min())
        for b, v in multi.nonzero().tolist()
    ]
    assert max(spreads) > 0


def test_uniform_share_divides_each_visit_equally(nested):
    _, model, batch = nested
    visit = AttentionRollout(model).attribute(**batch)
    split = VisitScoreSplit(model, share="uniform").attribute(**batch)
    for key in model.feature_keys:
        real = (batch[key] != 0).to(torch.float32)
        expected = visit[key] / real.sum(-1, keepdim=True).clamp(min=1)
        torch.testing.assert_close(split[key], expected * real)


def test_code_level_scores_pass_through_unchanged():
    dataset = cohort_dataset("nested")
    torch.manual_seed(0)
    model = CodeTransformer(dataset, embedding_dim=16, heads=2, num_layers=2)
    batch = dataset.collate([dataset[i] for i in range(6)])
    for method, base in BASES.items():
        expected = base(model).attribute(**batch)
        got = VisitScoreSplit(model, method=method).attribute(**batch)
        for key in model.feature_keys:
            torch.testing.assert_close(got[key], expected[key])
    flat = cohort_dataset("sequence")
    model = Transformer(flat, embedding_dim=16, heads=2, num_layers=1)
    batch = flat.collate([flat[i] for i in range(4)])
    expected = AttentionRollout(model).attribute(**batch)
    got = VisitScoreSplit(model).attribute(**batch)
    for key in model.feature_keys:
        torch.testing.assert_close(got[key], expected[key])


def test_named_options_and_errors(nested):
    _, model, _ = nested
    built = make_interpreter("visit_split", model, method="flow", share="uniform")
    assert built.get_params() == {"method": "flow", "share": "uniform"}
    assert type(built)(model, **built.get_params()).get_params() == built.get_params()
    with pytest.raises(ValueError, match=r"method must be one of rollout, flow, chefer"):
        VisitScoreSplit(model, method="integrated_gradients")
    with pytest.raises(ValueError, match=r"share must be one of gradient_x_input, uniform"):
        VisitScoreSplit(model, share="max")
    with torch.inference_mode(), pytest.raises(RuntimeError, match=r"inference_mode"):
        VisitScoreSplit(model).attribute(**nested[2])


def test_score_levels_say_which_scores_are_per_code(nested):
    dataset, model, _ = nested
    assert score_levels(AttentionRollout(model)) == dict.fromkeys(model.feature_keys, "visit")
    assert score_levels(CheferRelevance(model)) == dict.fromkeys(model.feature_keys, "visit")
    assert score_levels(IntegratedGradients(model)) == dict.fromkeys(model.feature_keys, "code")
    assert score_levels(RandomBaseline(model)) == dict.fromkeys(model.feature_keys, "code")
    assert score_levels(VisitScoreSplit(model)) == dict.fromkeys(model.feature_keys, "code")
    code_model = CodeTransformer(dataset, embedding_dim=8, heads=2, num_layers=1)
    assert score_levels(AttentionRollout(code_model)) == dict.fromkeys(model.feature_keys, "code")
    flat = cohort_dataset("sequence")
    flat_model = Transformer(flat, embedding_dim=8, heads=2, num_layers=1)
    assert score_level(AttentionRollout(flat_model), "diagnoses") == "code"
    stagenet = cohort_dataset("stagenet")
    stage_model = StageAttentionNet(stagenet, embedding_dim=8, chunk_size=4, levels=2, heads=2)
    assert score_level(AttentionFlow(stage_model), "drugs") == "visit"
