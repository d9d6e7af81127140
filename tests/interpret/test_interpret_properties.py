"""Properties: random maps (hypothesis) and invariances of the real models' explanations."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from _tolerance import FLOAT32_ACROSS
from ehrlens.interpret import AttentionRollout, CheferRelevance

FAST = settings(max_examples=25, deadline=None)


def random_stochastic_maps(seed: int, batch: int, heads: int, seq: int, layers: int, sparse: bool):
    """Row-stochastic maps [batch, heads, seq, seq]; ``sparse`` zeroes random keys exactly
    (as padding does), keeping the diagonal."""
    gen = torch.Generator().manual_seed(seed)
    maps = []
    for _ in range(layers):
        scores = torch.randn(batch, heads, seq, seq, generator=gen) * 2
        if sparse:
            keep = torch.rand(batch, heads, seq, seq, generator=gen) < 0.6
            keep |= torch.eye(seq, dtype=torch.bool)
            scores = scores.masked_fill(~keep, float("-inf"))
        maps.append(scores.softmax(dim=-1))
    return maps


map_shapes = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**31 - 1),
        "batch": st.integers(1, 3),
        "heads": st.integers(1, 3),
        "seq": st.integers(1, 7),
        "layers": st.integers(1, 4),
        "sparse": st.booleans(),
    }
)


@FAST
@given(shape=map_shapes, ratio=st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9]))
def test_composed_rollout_of_stochastic_maps_is_row_stochastic(fakes, shape, ratio):
    maps = random_stochastic_maps(**shape)
    model = fakes.Gradient(maps)
    scores = AttentionRollout(model, "mean", ratio).attribute(**model.inputs())["codes"]
    matrix = model.received["codes"]
    assert (matrix >= 0).all()
    torch.testing.assert_close(
        matrix.sum(dim=-1), torch.ones(shape["batch"], shape["seq"]), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(scores, matrix[:, 0], atol=0, rtol=0)


@FAST
@given(
    shape=map_shapes,
    head_fusion=st.sampled_from(["mean", "max", "min"]),
    ratio=st.sampled_from([0.0, 0.2, 0.5, 0.75]),
)
def test_rollout_of_random_maps_equals_reference(fakes, ref, shape, head_fusion, ratio):
    maps = random_stochastic_maps(**shape)
    expected = ref.rollout_matrix(maps, head_fusion, ratio)
    full = fakes.Gradient(maps)
    AttentionRollout(full, head_fusion, ratio).attribute(**full.inputs())
    torch.testing.assert_close(full.received["codes"].double(), expected, atol=1e-5, rtol=0)
    row = fakes.GradientWithReadout(maps)
    scores = AttentionRollout(row, head_fusion, ratio).attribute(**row.inputs())["codes"]
    torch.testing.assert_close(scores.double(), expected[:, 0], atol=1e-5, rtol=0)
    if ratio > 0:  # discarding renormalises: row-stochastic whatever the fusion
        sums = full.received["codes"].sum(-1)
        torch.testing.assert_close(sums, torch.ones_like(sums), atol=1e-5, rtol=0)


@FAST
@given(shape=map_shapes, target=st.sampled_from([None, 0, 1]))
def test_chefer_of_random_maps_and_gradients_equals_reference(fakes, ref, shape, target):
    maps = random_stochastic_maps(**shape)
    gen = torch.Generator().manual_seed(shape["seed"] + 1)
    weights = [torch.randn(m.shape, generator=gen) for m in maps]
    sign = -1.0 if target == 0 else 1.0
    expected = ref.chefer_matrix(maps, [sign * w for w in weights])
    full = fakes.Gradient(maps, weights)
    CheferRelevance(full).attribute(target, **full.inputs())
    torch.testing.assert_close(full.received["codes"].double(), expected, atol=1e-5, rtol=1e-5)
    row = fakes.GradientWithReadout(maps, weights)
    scores = CheferRelevance(row).attribute(target, **row.inputs())["codes"]
    torch.testing.assert_close(scores.double(), expected[:, 0], atol=1e-5, rtol=1e-5)
    assert (scores >= 0).all()


# ----------------------------------------------------------------------------- real models


def explain(method: str, model, batch, **kwargs):
    if method == "rollout":
        return AttentionRollout(model, **kwargs).attribute(**batch)
    return CheferRelevance(model).attribute(**batch)


@pytest.mark.parametrize("discard_ratio", [0.0, 0.5])
@pytest.mark.parametrize("name_layout", [("Transformer", "sequence"), ("Transformer", "nested")])
def test_transformer_cls_row_sums_to_one(cases, monkeypatch, name_layout, discard_ratio):
    case = cases.make(*name_layout)
    model, batch = case.model, case.batch
    rows = {}
    original = model.select_input_positions

    def spy(relevance, **data):
        rows.update({k: v.detach().clone() for k, v in relevance.items()})
        return original(relevance, **data)

    monkeypatch.setattr(model, "select_input_positions", spy)
    scores = AttentionRollout(model, "mean", discard_ratio).attribute(**batch)
    for key in case.keys:
        row = rows[key]  # [batch, 1 + n_inputs], the [CLS] row including [CLS]
        assert row.shape == (batch[key].shape[0], batch[key].shape[1] + 1)
        torch.testing.assert_close(row.sum(-1), torch.ones(row.shape[0]), atol=1e-5, rtol=0)
        assert (row >= 0).all()
        per_position = scores[key] if scores[key].dim() == 2 else scores[key].amax(-1)
        assert (per_position.sum(-1) <= 1 + 1e-5).all()
        torch.testing.assert_close(per_position, row[:, 1:], atol=1e-6, rtol=0)


@pytest.mark.parametrize("method", ["rollout", "chefer"])
def test_scores_nonnegative_and_padding_exactly_zero(model_case, method):
    kwargs = {"head_fusion": "min", "discard_ratio": 0.5} if method == "rollout" else {}
    scores = explain(method, model_case.model, model_case.batch, **kwargs)
    saw_padding = False
    for key in model_case.keys:
        values = model_case.batch[key]
        assert scores[key].shape == values.shape
        assert torch.isfinite(scores[key]).all()
        assert (scores[key] >= 0).all()
        pad = values == 0
        saw_padding |= bool(pad.any())
        assert (scores[key][pad] == 0).all()
        assert (scores[key][~pad] > 0).any()
    assert saw_padding  # the batch really has padding


@pytest.mark.parametrize("method", ["rollout", "chefer"])
def test_batch_equals_each_sample_alone(model_case, method):
    model, batch = model_case.model, model_case.batch
    together = explain(method, model, batch)
    for row, index in enumerate(model_case.indices):
        alone = explain(method, model, model_case.collate([index]))
        for key in model_case.keys:
            single = alone[key][0]
            crop = together[key][row][tuple(slice(0, s) for s in single.shape)]
            torch.testing.assert_close(crop, single, atol=1e-5, rtol=0)
            rest = together[key][row].clone()
            rest[tuple(slice(0, s) for s in single.shape)] = 0
            assert (rest == 0).all()  # beyond the sample's own extent: padding only


def _sizes(dataset, index: int) -> list[int]:
    item = dataset[index]
    return [
        (item[k][1] if isinstance(item[k], tuple) else item[k]).numel()
        for k in dataset.feature_keys
    ]


@pytest.mark.parametrize("method", ["rollout", "chefer"])
def test_extra_padding_changes_no_score(model_case, method):
    model, dataset = model_case.model, model_case.dataset
    sizes = {i: _sizes(dataset, i) for i in range(len(dataset))}
    # the shortest patient with every feature present, collated with the longest one
    short = min((i for i in sizes if min(sizes[i]) > 0), key=lambda i: sum(sizes[i]))
    long = max(sizes, key=lambda i: sum(sizes[i]))
    alone = explain(method, model, model_case.collate([short]))
    padded = explain(method, model, model_case.collate([short, long]))
    grew = False
    for key in model_case.keys:
        single = alone[key][0]
        grew |= padded[key].shape[1:] != single.shape
        region = tuple(slice(0, s) for s in single.shape)
        torch.testing.assert_close(padded[key][0][region], single, atol=1e-5, rtol=0)
        rest = padded[key][0].clone()
        rest[region] = 0
        assert (rest == 0).all()
    assert grew


@pytest.mark.parametrize("method", ["rollout", "chefer"])
def test_explaining_a_patient_with_an_empty_feature(model_case, method):
    """Patient 10 of the cohort has no procedure at all: alone, its batch has no procedure
    position (flat layouts: ``[1, 0]``). Its other features are explained as in a batch."""
    model, dataset = model_case.model, model_case.dataset
    empty = 10
    assert sorted(_sizes(dataset, empty))[0] == 0
    alone = explain(method, model, model_case.collate([empty]))
    together = explain(method, model, model_case.collate([empty, 0]))
    for key in model_case.keys:
        single = alone[key][0]
        assert alone[key].shape == model_case.collate([empty])[key].shape
        region = tuple(slice(0, s) for s in single.shape)
        torch.testing.assert_close(together[key][0][region], single, atol=1e-5, rtol=0)
        assert torch.isfinite(single).all()
        if single.numel() == 0:  # the empty feature: only padding in the batch, all 0
            assert (together[key][0] == 0).all()


def test_rollout_the_same_under_no_grad_inference_mode_and_grad(model_case):
    """Within float32 rounding: an autograd mode may pick other kernels for the forward."""
    model, batch = model_case.model, model_case.batch
    rollout = AttentionRollout(model, "max", 0.25)
    plain = rollout.attribute(**batch)
    with torch.no_grad():
        no_grad = rollout.attribute(**batch)
    with torch.inference_mode():
        inference = rollout.attribute(**batch)
    for key in model_case.keys:
        torch.testing.assert_close(plain[key], no_grad[key], **FLOAT32_ACROSS)
        torch.testing.assert_close(plain[key], inference[key], **FLOAT32_ACROSS)
        assert not plain[key].requires_grad


def test_rollout_accepts_inference_mode_batches(model_case, close):
    model = model_case.model
    with torch.inference_mode():
        batch = model_case.collate(model_case.indices)
        scores = AttentionRollout(model).attribute(**batch)
    # another autograd mode may pick other kernels: float32 rounding
    close(scores, AttentionRollout(model).attribute(**model_case.batch), atol=1e-6)


def test_chefer_under_no_grad_equals_grad_mode(model_case):
    model, batch = model_case.model, model_case.batch
    chefer = CheferRelevance(model)
    plain = chefer.attribute(**batch)
    with torch.no_grad():
        no_grad = chefer.attribute(**batch)
        assert not torch.is_grad_enabled()  # the caller's grad mode is back
    for key in model_case.keys:
        torch.testing.assert_close(plain[key], no_grad[key], atol=1e-6, rtol=0)
        assert plain[key].abs().sum() > 0


def test_chefer_accepts_a_batch_made_under_inference_mode(model_case, close):
    with torch.inference_mode():
        batch = model_case.collate(model_case.indices)
    scores = CheferRelevance(model_case.model).attribute(**batch)
    close(scores, CheferRelevance(model_case.model).attribute(**model_case.batch), atol=1e-6)
