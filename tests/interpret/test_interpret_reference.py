"""Real models against the independent full-matrix references of conftest (atol 1e-5)."""

from __future__ import annotations

import pytest
import torch

from ehrlens.interpret import AttentionRollout, CheferRelevance


@pytest.mark.parametrize("discard_ratio", [0.0, 0.5], ids=["keep", "discard0.5"])
@pytest.mark.parametrize("head_fusion", ["mean", "max", "min"])
def test_rollout_equals_full_matrix_reference(model_case, ref, close, head_fusion, discard_ratio):
    model, batch = model_case.model, model_case.batch
    scores = AttentionRollout(model, head_fusion, discard_ratio).attribute(**batch)
    expected = ref.rollout(model, batch, head_fusion, discard_ratio)
    close(scores, expected)
    for key in model_case.keys:
        assert scores[key].shape == batch[key].shape
        assert scores[key].abs().sum() > 0  # not trivially zero


@pytest.mark.parametrize("target", [None, 1, 0], ids=["None", "1", "0"])
def test_chefer_equals_full_matrix_reference(model_case, ref, close, target):
    model, batch = model_case.model, model_case.batch
    scores = CheferRelevance(model).attribute(target, **batch)
    sign = -1.0 if target == 0 else 1.0
    expected = ref.chefer(model, batch, lambda logit: sign * logit[:, 0])
    close(scores, expected)
    for key in model_case.keys:
        assert scores[key].shape == batch[key].shape
        assert scores[key].abs().sum() > 0


def test_chefer_per_sample_binary_target_tensor(model_case, ref, close):
    model, batch = model_case.model, model_case.batch
    n = batch[model_case.keys[0]].shape[0]
    target = torch.arange(n) % 2
    scores = CheferRelevance(model).attribute(target, **batch)
    sign = torch.where(target == 1, 1.0, -1.0)
    expected = ref.chefer(model, batch, lambda logit: sign * logit[:, 0])
    close(scores, expected)


def test_positive_and_negative_targets_differ(model_case):
    # Guards the reference test above against a target that is silently ignored.
    chefer = CheferRelevance(model_case.model)
    positive = chefer.attribute(1, **model_case.batch)
    negative = chefer.attribute(0, **model_case.batch)
    assert any(not torch.allclose(positive[k], negative[k]) for k in model_case.keys)


def test_rollout_and_chefer_differ(model_case):
    model, batch = model_case.model, model_case.batch
    rollout = AttentionRollout(model).attribute(**batch)
    chefer = CheferRelevance(model).attribute(**batch)
    assert any(not torch.allclose(rollout[k], chefer[k]) for k in model_case.keys)


def test_float64_model_matches_reference_tightly(model_case, ref, close):
    """Nothing in the pipeline drops to float32: a double model is explained in double."""
    model, batch = model_case.model.double(), model_case.batch
    rollout = AttentionRollout(model, "mean", 0.5).attribute(**batch)
    chefer = CheferRelevance(model).attribute(**batch)
    for scores in (rollout, chefer):
        assert all(v.dtype == torch.float64 for v in scores.values())
    close(rollout, ref.rollout(model, batch, "mean", 0.5), atol=1e-12)
    close(chefer, ref.chefer(model, batch), atol=1e-12)
