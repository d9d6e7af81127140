"""Attention rollout (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", 2020)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor

from ...core.fusion import check_head_fusion, fuse_heads
from ..api import (
    AttentionHeads,
    AttentionInterpretable,
    KeyCapture,
    attention_layers,
    capabilities,
    capture_attention,
    readout_weights,
    select_input_positions,
)
from .base import BaseInterpreter, TargetIndex, register_method, working_dtype
from .propagation import readout_relevance

if TYPE_CHECKING:  # only for annotations: interpreters do not depend on concrete models
    from ...models.capture import CapturedKeys


def discard_lowest(attention: Tensor, discard_ratio: float, row_offset: int = 0) -> Tensor:
    """Zero the lowest ``discard_ratio`` of each row's off-diagonal weights; renormalise.

    Per row, the candidates are the off-diagonal entries with positive weight (padded keys
    carry exactly 0 and are never counted); ``floor(discard_ratio * n_candidates)`` of the
    smallest are set to 0, ties going to the lower index. The diagonal is never dropped.
    Rows are then rescaled to sum to 1.

    Shapes: ``[batch, rows, seq]`` -> same; ``rows`` may be a block of the map whose first
    row is row ``row_offset`` (the diagonal is where column == row index).
    """
    if discard_ratio == 0:
        return attention
    rows, seq = attention.shape[-2:]
    device = attention.device
    row_index = torch.arange(row_offset, row_offset + rows, device=device)[:, None]
    eye = row_index == torch.arange(seq, device=device)[None, :]
    candidate = (attention > 0) & ~eye
    # float64, so floor(ratio * n) is the same as in Python (float32 gives 29 for 0.29 * 100).
    drop_count = torch.floor(candidate.sum(dim=-1, keepdim=True).double() * discard_ratio)
    sort_key = attention.masked_fill(~candidate, float("inf"))
    order = sort_key.argsort(dim=-1, stable=True)
    rank = torch.empty_like(order).scatter_(
        -1, order, torch.arange(seq, device=device).expand_as(order)
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
    first. With a discard, maps are computed whole (``whole_maps``), so weights the plain
    forward ties exactly stay tied and are dropped in the documented order.
    """
    whole_maps = discard_ratio > 0
    with capture_attention(model, batch, head_fusion=head_fusion, whole_maps=whole_maps):
        layers = attention_layers(model, detach=True)
    return {
        key: [discard_lowest(fuse_heads(a, head_fusion), discard_ratio) for a, _ in maps]
        for key, maps in layers.items()
    }


def low_memory_rollout_rows(
    readout: Tensor,
    layers: list[CapturedKeys],
    head_fusion: str,
    discard_ratio: float = 0.0,
    block_rows: int | None = None,
) -> Tensor:
    """Rollout readout rows from captured queries/keys, without keeping any layer's map.

    Same result as carrying ``readout`` down the stored fused maps. With ``head_fusion="mean"``
    and no discard, a layer that offers ``weighted_rows(rows)`` (ehrlens's models:
    ``sum_i rows_i A_h[i, :]`` by one fused-kernel call, no map formed;
    :func:`~ehrlens.models.fused_attention.weighted_rows_of_map`) carries the rows through in
    one call; a layer whose rows carry relevance in one block only (the top layer: the
    readout row) is recomputed for that block. Otherwise maps are recomputed in blocks of
    ``block_rows`` query rows (``[batch, heads, block_rows, seq]`` at a time); each layer
    decides with ``layer.block_rows(block_rows)`` (ehrlens's models: ``block_rows``, or
    ``None`` for :meth:`~ehrlens.models.MultiHeadAttention.attention_block_rows`; a Hugging
    Face layer is recomputed whole, once), and blocks whose rows carry no relevance are
    skipped. ``layers`` are any objects with ``weights(rows)``, ``seq_len``, ``dtype`` and
    ``block_rows(requested)``, optionally ``weighted_rows(rows)``.

    Shapes: ``readout`` ``[batch, seq]`` -> ``[batch, seq]``.

    Example:
        >>> model.set_attention_hooks(True, capture_gradients=False, keys_only=True)
        >>> _ = model(**batch)
        >>> layers = model.get_attention_keys()["diagnoses"]
        >>> readout = model.get_readout_weights(**batch)["diagnoses"]   # one-hot at [CLS]
        >>> rows = low_memory_rollout_rows(readout, layers, "mean")     # [batch, 1 + seq]
    """
    rows = readout.to(working_dtype(layers[0].dtype)) if layers else readout
    fused_product = head_fusion == "mean" and discard_ratio == 0
    for layer in reversed(layers):
        step = layer.block_rows(block_rows)
        starts = [s for s in range(0, layer.seq_len, step) if bool(rows[:, s : s + step].any())]
        weighted_rows = getattr(layer, "weighted_rows", None)
        if fused_product and weighted_rows is not None and len(starts) > 1:
            mixed = weighted_rows(rows).mean(dim=1).to(rows.dtype)
            rows = 0.5 * (mixed + rows)
            continue
        mixed = torch.zeros_like(rows)
        for start in starts:
            # Only the rows that carry relevance (the top layer: the readout row alone).
            carried = rows[:, start : start + step].any(dim=0).nonzero()[:, 0]
            block = slice(start + int(carried[0]), start + int(carried[-1]) + 1)
            part = rows[:, block]
            attention = fuse_heads(layer.weights(block), head_fusion)
            attention = discard_lowest(attention, discard_ratio, row_offset=block.start).to(
                rows.dtype
            )
            mixed += torch.bmm(part[:, None, :], attention)[:, 0]
        rows = 0.5 * (mixed + rows)
    return rows


@register_method
class AttentionRollout(BaseInterpreter):
    """Attention rollout: compose residual-augmented attention over layers, read it out.

    Per layer, heads are fused (``head_fusion``), optionally the lowest weights of each row
    are discarded (:func:`discard_lowest`), and the residual connection is modelled as
    ``A_hat = 0.5 * (A + I)``. The composition ``A_hat_L ... A_hat_1`` is read out at the
    model's readout row ([CLS] for :class:`~ehrlens.models.Transformer`, the last valid step
    for :class:`~ehrlens.models.StageAttentionNet`), computed as one row carried down the
    layers. Gradient-free: runs under ``torch.no_grad()`` and ``torch.inference_mode()`` and
    registers no autograd hook. Class-agnostic: ``target_class_idx`` is accepted and ignored.

    Memory and time: with ``head_fusion="mean"`` and inputs on CPU (the default), ehrlens's
    models form no map at all: the capture forward runs the fused attention kernel and keeps
    each layer's queries, keys and row log-sum-exp, and the top-down pass carries the readout
    row through each layer by one more fused-kernel call
    (:func:`~ehrlens.models.fused_attention.weighted_rows_of_map`); peak memory stays near
    plain inference whatever the depth. Otherwise, with ``low_memory=False`` every layer's
    fused map ``[batch, seq, seq]`` is kept until the top-down pass, computed in blocks of
    query rows during the forward so no per-head map ``[batch, heads, seq, seq]`` exists
    whole; ``low_memory=True`` keeps each layer's queries and keys instead and recomputes the
    maps in blocks of rows during that pass (models with ``Capabilities.key_capture`` that
    state their readout). ``"auto"`` (the default) takes the fused-kernel path where it
    applies, else recomputes only when the kept maps, ``sum over features of layers * seq^2``
    values, would outgrow the largest layer's ``2 * heads * seq^2``; models without key
    capture, and rollout with a discard, keep maps.

    Args:
        model: an :class:`~ehrlens.interpret.AttentionInterpretable` model.
        head_fusion: ``"mean"``, ``"max"`` or ``"min"`` over heads.
        discard_ratio: fraction in ``[0, 1)`` of each row's lowest weights to drop.
        low_memory: ``"auto"``, ``True`` (recompute maps from captured queries and keys) or
            ``False`` (keep fused maps); see above. Scores are the same either way.
        block_rows: query rows recomputed at a time with ``low_memory``; ``None``: the
            attention module's block size (at most 4 Mi per-head values a block).

    Returns of :meth:`attribute`:
        ``{feature_key: scores}`` shaped like ``batch[feature_key]`` (``[batch, seq]`` codes,
        ``[batch, visits, codes]`` nested visits, ...), padding exactly 0, scores >= 0.

    Example:
        >>> rollout = AttentionRollout(model, head_fusion="mean")
        >>> with torch.inference_mode():
        ...     scores = rollout.attribute(**batch)     # {"diagnoses": [batch, seq], ...}
    """

    name = "rollout"
    gradient_free = True
    plain_forward = True
    needs = (AttentionInterpretable,)
    model: AttentionInterpretable
    summary = "attention rollout (Abnar & Zuidema 2020)"

    def __init__(
        self,
        model: AttentionInterpretable,
        head_fusion: str = "mean",
        discard_ratio: float = 0.0,
        low_memory: bool | str = "auto",
        block_rows: int | None = None,
    ) -> None:
        super().__init__(model)
        self.head_fusion = check_head_fusion(head_fusion)
        if not 0.0 <= float(discard_ratio) < 1.0:
            raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
        self.discard_ratio = float(discard_ratio)
        if low_memory != "auto" and not isinstance(low_memory, bool):
            raise ValueError(f"low_memory must be 'auto', True or False, got {low_memory!r}")
        if low_memory is True and not capabilities(model).key_capture:
            raise TypeError(
                f"low_memory rollout recomputes maps from captured queries and keys, which "
                f"{type(model).__name__} does not offer (Capabilities.key_capture)"
            )
        if block_rows is not None and block_rows < 1:
            raise ValueError(f"block_rows must be >= 1, got {block_rows}")
        self.low_memory = low_memory
        self.block_rows = None if block_rows is None else int(block_rows)

    def attribute(self, target_class_idx: TargetIndex = None, **batch: Any) -> dict[str, Tensor]:
        """Rollout scores for each feature (see the class docstring); no gradients needed.

        ``target_class_idx`` is ignored (rollout is class-agnostic) but must be valid for the
        model, as for every method.
        """
        self._check_unused_target(target_class_idx, batch)
        if self.recomputes_maps(batch):
            return self._input_scores(self._low_memory_relevance(batch), batch)
        layers = fused_attention_layers(self.model, batch, self.head_fusion, self.discard_ratio)
        relevance = readout_relevance(self.model, layers, rollout_step, batch)
        return self._input_scores(relevance, batch)

    def recomputes_maps(self, batch: Mapping[str, Any]) -> bool:
        """Whether :meth:`attribute` recomputes maps from queries and keys for ``batch``.

        ``low_memory=True``/``False`` decide; ``"auto"`` recomputes when the model captures
        keys, states its readout and lists its heads (``attention_heads()``), and either
        carries rows through a layer by PyTorch's fused kernel (the model sets
        ``fused_weighted_rows``, the inputs are on CPU, ``head_fusion="mean"``: no map is
        formed at all, the fastest path) or keeping every layer's fused map would take more
        values than the largest layer's per-head attention formed explicitly
        (``2 * heads * seq^2``: its scores and its softmax). With a ``discard_ratio``,
        ``"auto"`` keeps maps computed whole, so weights the explicit formula ties exactly are
        dropped in the documented order.
        """
        if self.low_memory != "auto":
            return bool(self.low_memory)
        if self.discard_ratio > 0 or not capabilities(self.model).key_capture:
            return False
        weights = readout_weights(self.model, batch)
        if weights is None:
            return False
        on_cpu = all(w.device.type == "cpu" for w in weights.values())
        if (
            self.head_fusion == "mean"
            and on_cpu
            and getattr(self.model, "fused_weighted_rows", False)
        ):
            return True
        if not hasattr(self.model, "attention_heads"):
            return False
        heads = cast(AttentionHeads, self.model).attention_heads()
        sizes = {key: weights[key].shape[-1] ** 2 for key in heads if key in weights}
        kept = sum(len(heads[key]) * size for key, size in sizes.items())
        transient = max(
            (2 * max(heads[key], default=1) * size for key, size in sizes.items()), default=0
        )
        return kept > transient

    def _low_memory_relevance(self, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        weights = readout_weights(self.model, batch)
        if weights is None:
            raise TypeError(
                "low_memory rollout needs the model's readout weights (get_readout_weights)"
            )
        # Maps are recomputed inside the block: in eval mode, under the model's lock.
        with capture_attention(self.model, batch, keys_only=True):
            captured = cast(KeyCapture, self.model).get_attention_keys()
            rows = {
                key: low_memory_rollout_rows(
                    weights[key], layers, self.head_fusion, self.discard_ratio, self.block_rows
                )
                for key, layers in captured.items()
            }
        return select_input_positions(self.model, rows, batch)
