"""Fused-kernel attention: output with row log-sum-exp, weighted rows of the map without it;
the CPU kernel and the explicit fallback, each against the explicit formula in float64."""

from __future__ import annotations

import pytest
import torch

from ehrlens.models import fused_attention
from ehrlens.models.fused_attention import attention_with_logsumexp, weighted_rows_of_map


def _inputs(seed: int = 0, batch: int = 4, heads: int = 3, seq: int = 9, dim: int = 4):
    torch.manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, seq, dim, dtype=torch.float64) for _ in range(3))
    lengths = torch.tensor([9, 5, 1, 0])[:batch]  # the last sample has no real key
    mask = torch.arange(seq)[None, :] < lengths[:, None]
    return q, k, v, mask


def _explicit(q, k, mask):
    """Scores and weights written out: padded keys get weight 0; no real key: all 0."""
    scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
    scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    weights = torch.nan_to_num(scores.softmax(-1), nan=0.0)
    return scores, weights


@pytest.fixture(params=["fused kernel", "explicit fallback"])
def path(request, monkeypatch):
    if request.param == "explicit fallback":
        monkeypatch.setattr(fused_attention, "uses_fused_kernel", lambda q: False)
        monkeypatch.setattr(fused_attention, "FALLBACK_BLOCK_VALUES", 3 * 4 * 9 * 2)  # 2 rows
    return request.param


def test_fused_kernel_is_used_on_cpu_for_float32_and_float64():
    assert fused_attention.uses_fused_kernel(torch.zeros(1, dtype=torch.float32))
    assert fused_attention.uses_fused_kernel(torch.zeros(1, dtype=torch.float64))
    assert not fused_attention.uses_fused_kernel(torch.zeros(1, dtype=torch.bfloat16))


def test_output_and_logsumexp_equal_the_explicit_formula(path):
    q, k, v, mask = _inputs()
    out, lse = attention_with_logsumexp(q, k, v, mask)
    scores, weights = _explicit(q, k, mask)
    torch.testing.assert_close(out, weights @ v, rtol=0, atol=1e-12)
    real = mask.any(-1)  # the log-sum-exp of a sample without keys is not defined
    torch.testing.assert_close(lse[real], scores.logsumexp(-1)[real], rtol=0, atol=1e-12)
    assert torch.all(out[~real] == 0)


@pytest.mark.parametrize("signed", [False, True])
def test_weighted_rows_equal_rows_times_the_map(path, signed):
    q, k, v, mask = _inputs(seed=1)
    _, lse = attention_with_logsumexp(q, k, v, mask)
    _, weights = _explicit(q, k, mask)
    torch.manual_seed(2)
    rows = torch.rand(4, 9, dtype=torch.float64) * mask
    rows[0, 3] = 0.0  # a zero weight inside the real rows
    if signed:
        rows = rows - 0.3 * mask
    got = weighted_rows_of_map(q, k, mask, lse, rows)
    want = torch.einsum("bi,bhij->bhj", rows, weights)
    assert got.shape == (4, 3, 9)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert torch.all(got[~mask[:, None, :].expand_as(got)] == 0)  # padded keys: exactly 0


def test_weighted_rows_of_a_one_hot_row_is_that_row_of_the_map(path):
    q, k, v, mask = _inputs(seed=3)
    _, lse = attention_with_logsumexp(q, k, v, mask)
    _, weights = _explicit(q, k, mask)
    rows = torch.zeros(4, 9, dtype=torch.float64)
    rows[:, 0] = 1.0
    got = weighted_rows_of_map(q, k, mask, lse, rows)
    torch.testing.assert_close(got, weights[:, :, 0], rtol=1e-12, atol=1e-12)


def test_float32_weighted_rows_stay_within_float32_rounding():
    q, k, v, mask = (t.float() if t.is_floating_point() else t for t in _inputs(seed=4))
    q, k = 3 * q, 3 * k  # peaked maps: scores of magnitude ~10
    _, lse = attention_with_logsumexp(q, k, v, mask)
    rows = torch.rand(4, 9) * mask
    got = weighted_rows_of_map(q, k, mask, lse, rows)
    _, weights = _explicit(q.double(), k.double(), mask)
    want = torch.einsum("bi,bhij->bhj", rows.double(), weights)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)


def test_a_given_scale_replaces_one_over_sqrt_head_dim(path):
    q, k, v, mask = _inputs(seed=5)
    scale = 0.7  # not 1 / sqrt(4): e.g. a model whose scores are scaled otherwise
    out, lse = attention_with_logsumexp(q, k, v, mask, scale=scale)
    # The explicit formula with 1 / sqrt(d) on queries rescaled to give `scale`.
    scores, weights = _explicit(q * scale * q.shape[-1] ** 0.5, k, mask)
    real = mask.any(-1)
    torch.testing.assert_close(out, weights @ v, rtol=0, atol=1e-12)
    torch.testing.assert_close(lse[real], scores.logsumexp(-1)[real], rtol=0, atol=1e-12)
    rows = torch.rand(4, 9, dtype=torch.float64) * mask
    got = weighted_rows_of_map(q, k, mask, lse, rows, scale=scale)
    torch.testing.assert_close(
        got, torch.einsum("bi,bhij->bhj", rows, weights), rtol=1e-12, atol=1e-12
    )
