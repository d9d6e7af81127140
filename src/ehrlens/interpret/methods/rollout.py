"""Attention rollout (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", 2020)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ..api import capture_attention
from .base import BaseInterpreter, TargetIndex, map_to_input_shapes
from .propagation import check_head_fusion, fuse_heads, readout_relevance


def discard_lowest(attention: Tensor, discard_ratio: float) -> Tensor:
    """Zero the lowest ``discard_ratio`` of each row's off-diagonal weights; renormalise.

    Per row, the candidates are the off-diagonal entries with positive weight (padded keys
    carry exactly 0 and are never counted); ``floor(discard_ratio * n_candidates)`` of the
    smallest are set to 0, ties going to the lower index. The diagonal is never dropped.
    Rows are then rescaled to sum to 1.

    Shapes: ``[batch, seq, seq]`` -> ``[batch, seq, seq]``.
    """
    if discard_ratio == 0:
        return attention
    seq = attention.shape[-1]
    eye = torch.eye(seq, dtype=torch.bool, device=attention.device)
    candidate = (attention > 0) & ~eye
    # float64, so floor(ratio * n) is the same as in Python (float32 gives 29 for 0.29 * 100).
    drop_count = torch.floor(candidate.sum(dim=-1, keepdim=True).double() * discard_ratio)
    sort_key = attention.masked_fill(~candidate, float("inf"))
    order = sort_key.argsort(dim=-1, stable=True)
    rank = torch.empty_like(order).scatter_(
        -1, order, torch.arange(seq, device=attention.device).expand_as(order)
    )
    pruned = attention.masked_fill(candidate & (rank < drop_count), 0.0)
    total = pruned.sum(dim=-1, keepdim=True)
    return pruned / total.clamp(min=torch.finfo(pruned.dtype).tiny)


def rollout_step(rows: Tensor, attention: Tensor) -> Tensor:
    """``rows @ (0.5 * (A + I))`` for rows ``[batch, r, seq]`` and ``A`` ``[batch, seq, seq]``."""
    return 0.5 * (torch.bmm(rows, attention) + rows)


def fused_attention_layers(
    model: Any, batch: Mapping[str, Any], head_fusion: str, discard_ratio: float = 0.0
) -> dict[str, list[Tensor]]:
    """Capture every layer's map in one forward and fuse heads: ``{key: [[b, s, s], ...]}``.

    Forward-only capture (no autograd hook), fused over heads at capture time where the
    model supports it (otherwise here), then :func:`discard_lowest` per layer, input side
    first.
    """
    with capture_attention(model, batch, head_fusion=head_fusion):
        layers = model.get_attention_layers()
    return {
        key: [discard_lowest(fuse_heads(a, head_fusion), discard_ratio) for a, _ in maps]
        for key, maps in layers.items()
    }


class AttentionRollout(BaseInterpreter):
    """Attention rollout: compose residual-augmented attention over layers, read it out.

    Per layer, heads are fused (``head_fusion``), optionally the lowest weights of each row
    are discarded (:func:`discard_lowest`), and the residual connection is modelled as
    ``A_hat = 0.5 * (A + I)``. The composition ``A_hat_L ... A_hat_1`` is read out at the
    model's readout row ([CLS] for :class:`~ehrlens.models.Transformer`, the last valid step
    for :class:`~ehrlens.models.StageAttentionNet`), computed as one row carried down the
    layers. Gradient-free: runs under ``torch.no_grad()`` and ``torch.inference_mode()`` and
    registers no autograd hook. Class-agnostic: ``target_class_idx`` is accepted and ignored.

    Args:
        model: an :class:`~ehrlens.interpret.AttentionInterpretable` model.
        head_fusion: ``"mean"``, ``"max"`` or ``"min"`` over heads.
        discard_ratio: fraction in ``[0, 1)`` of each row's lowest weights to drop.

    Returns of :meth:`attribute`:
        ``{feature_key: scores}`` shaped like ``batch[feature_key]`` (``[batch, seq]`` codes,
        ``[batch, visits, codes]`` nested visits, ...), padding exactly 0, scores >= 0.

    Example:
        >>> rollout = AttentionRollout(model, head_fusion="mean")
        >>> with torch.inference_mode():
        ...     scores = rollout.attribute(**batch)     # {"diagnoses": [batch, seq], ...}
    """

    def __init__(self, model: Any, head_fusion: str = "mean", discard_ratio: float = 0.0) -> None:
        super().__init__(model)
        self.head_fusion = check_head_fusion(head_fusion)
        if not 0.0 <= float(discard_ratio) < 1.0:
            raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
        self.discard_ratio = float(discard_ratio)

    def attribute(self, target_class_idx: TargetIndex = None, **batch: Any) -> dict[str, Tensor]:
        """Rollout scores for each feature (see the class docstring); no gradients needed."""
        layers = fused_attention_layers(self.model, batch, self.head_fusion, self.discard_ratio)
        relevance = readout_relevance(self.model, layers, rollout_step, batch)
        return map_to_input_shapes(relevance, batch)
