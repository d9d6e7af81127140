"""Attention through PyTorch's fused kernels, also where an explanation needs more than the output.

Two computations that would otherwise need the whole map ``softmax(q k^T * scale)``:

- :func:`attention_with_logsumexp`: the output and each query row's log-sum-exp of its scores
  (what the flash kernel keeps anyway);
- :func:`weighted_rows_of_map`: ``sum_i rows[i] * A[i, :]`` per head, a weighted sum of the
  map's rows, from one more fused-kernel call with the roles of queries and keys exchanged:
  ``sum_i r_i exp(s_ij - L_i) = exp(logsumexp_i(s_ij + log r_i - L_i))``, the log-sum-exp of
  "attention" of key ``j`` over the queries ``i`` with the additive bias ``log r_i - L_i``.

Rollout needs exactly the second (its readout row carried through a layer), so it runs at the
cost of one fused attention call per layer, and no map or block of one is formed. On CPU both
use ``aten::_scaled_dot_product_flash_attention_for_cpu`` (float32 / float64); elsewhere, and
for other dtypes, they fall back to the explicit formula in blocks of query rows.

Example:
    >>> q, k, v = (torch.randn(2, 4, 16, 8) for _ in range(3))
    >>> mask = torch.ones(2, 16, dtype=torch.bool)
    >>> out, lse = attention_with_logsumexp(q, k, v, mask)     # [2, 4, 16, 8], [2, 4, 16]
    >>> rows = torch.rand(2, 16)
    >>> weighted_rows_of_map(q, k, mask, lse, rows).shape        # [batch, heads, seq]
    torch.Size([2, 4, 16])
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["attention_with_logsumexp", "uses_fused_kernel", "weighted_rows_of_map"]

#: Most per-head scores the explicit fallback forms at a time (``batch * heads * rows * seq``).
FALLBACK_BLOCK_VALUES = 1 << 22


def uses_fused_kernel(q: Tensor) -> bool:
    """Whether :func:`attention_with_logsumexp` and :func:`weighted_rows_of_map` run the fused
    CPU kernel for queries like ``q`` (CPU, float32 or float64)."""
    return q.device.type == "cpu" and q.dtype in (torch.float32, torch.float64)


def _flash_cpu(
    q: Tensor, k: Tensor, v: Tensor, bias: Tensor, scale: float, dropout: float = 0.0
) -> tuple[Tensor, Tensor]:
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q, k, v, dropout, False, attn_mask=bias, scale=scale
    )
    return out, lse


def _key_bias(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """``[batch, 1, 1, seq]``: 0 at real keys, the dtype's most negative value at padding."""
    bias = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return bias.masked_fill(~mask, torch.finfo(dtype).min)[:, None, None, :]


def _scale(q: Tensor, scale: float | None) -> float:
    return 1 / math.sqrt(q.shape[-1]) if scale is None else float(scale)


def _scores(q: Tensor, k: Tensor, mask: Tensor, scale: float | None = None) -> Tensor:
    scores = (q @ k.transpose(-2, -1)) * _scale(q, scale)
    return scores.masked_fill(~mask[:, None, None, :], torch.finfo(scores.dtype).min)


def _block_rows(q: Tensor) -> int:
    batch, heads, seq, _ = q.shape
    return max(1, FALLBACK_BLOCK_VALUES // max(1, batch * heads * seq))


def attention_with_logsumexp(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor, dropout: float = 0.0, scale: float | None = None
) -> tuple[Tensor, Tensor]:
    """``softmax(q k^T * scale) v`` and each query row's ``logsumexp`` of its scores.

    Args:
        q, k, v: ``[batch, heads, seq, head_dim]``.
        mask: ``[batch, seq]`` bool, True at real keys.
        dropout: dropout probability on the weights (training only).
        scale: the scores' factor; ``None``: ``1 / sqrt(head_dim)``.

    Returns:
        ``(out [batch, heads, seq, head_dim], logsumexp [batch, heads, seq])``; a sample
        without any real key gets output 0 (its log-sum-exp is not used).
    """
    has_key = mask.any(dim=-1)[:, None, None, None]
    if uses_fused_kernel(q):
        out, lse = _flash_cpu(q, k, v, _key_bias(mask, q.dtype), _scale(q, scale), dropout)
        if bool(has_key.all()):  # no copy of the output where every sample has a key
            return out, lse
        return out * has_key.to(out.dtype), lse
    out = torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=mask[:, None, None, :], dropout_p=dropout, scale=scale
    )
    step = _block_rows(q)
    lse = torch.cat(
        [
            _scores(q[:, :, i : i + step], k, mask, scale).logsumexp(-1)
            for i in range(0, q.shape[2], step)
        ],
        dim=2,
    )
    return out, lse


def weighted_rows_of_map(
    q: Tensor, k: Tensor, mask: Tensor, logsumexp: Tensor, rows: Tensor, scale: float | None = None
) -> Tensor:
    """``sum_i rows[b, i] * A[b, h, i, :]`` for ``A = softmax(q k^T * scale)`` per head.

    Args:
        q, k: ``[batch, heads, seq, head_dim]`` (queries and keys of one layer).
        mask: ``[batch, seq]`` bool key mask.
        logsumexp: ``[batch, heads, seq]``, from :func:`attention_with_logsumexp` (with the
            same ``scale``).
        rows: weights of the query rows ``[batch, seq]``; any sign.
        scale: the scores' factor; ``None``: ``1 / sqrt(head_dim)``.

    Returns:
        ``[batch, heads, seq]`` in ``rows``'s dtype; exactly 0 at padded keys. With the fused
        kernel, relative error about the dtype's epsilon times the scores' magnitude.
    """
    if bool((rows < 0).any()):  # the log trick needs weights >= 0: split by sign
        positive, negative = rows.clamp(min=0), (-rows).clamp(min=0)
        return weighted_rows_of_map(q, k, mask, logsumexp, positive, scale) - weighted_rows_of_map(
            q, k, mask, logsumexp, negative, scale
        )
    if uses_fused_kernel(q):
        dtype = q.dtype
        # A sample without real keys has no map (its log-sum-exp is meaningless): weight 0.
        weights = rows.to(dtype) * mask.any(dim=-1, keepdim=True).to(dtype)
        tiny = torch.finfo(dtype).min
        log_rows = torch.where(weights > 0, weights.clamp(min=torch.finfo(dtype).tiny).log(), tiny)
        # Contiguous: the kernel is ~3x slower on a bias whose last dimension is strided
        # (the log-sum-exp comes back [batch, seq, heads]-major).
        bias = torch.where(
            weights[:, None, :] > 0, log_rows[:, None, :] - logsumexp, tiny
        ).contiguous()
        _, lse = _flash_cpu(k, q, torch.zeros_like(q), bias[:, :, None, :], _scale(q, scale))
        return (lse.exp() * mask[:, None, :].to(lse.dtype)).to(rows.dtype)
    out = rows.new_zeros(q.shape[0], q.shape[1], q.shape[2])
    step = _block_rows(q)
    for start in range(0, q.shape[2], step):
        part = rows[:, start : start + step]
        if not bool(part.any()):
            continue
        weights = (
            _scores(q[:, :, start : start + step], k, mask, scale)
            - logsumexp[..., start : start + step, None]
        ).exp()
        out += torch.einsum("bi,bhij->bhj", part, weights.to(rows.dtype))
    return out * mask[:, None, :].to(out.dtype)
