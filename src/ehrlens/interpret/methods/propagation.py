"""Per-layer matrices read out by rows: propagate the rows instead of multiplying matrices.

Rollout and Chefer relevance both have the form ``readout @ M_L @ ... @ M_1`` (``M_1`` the
input-side layer). Carrying the readout row down through the layers costs
``O(layers * seq^2)`` per sample; forming the product first costs ``O(layers * seq^3)``.
A model that states no readout row is served by propagating every row of the identity, which
yields the full matrix for ``get_relevance_tensor``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..api import AttentionInterpretable, readout_weights, select_input_positions
from .base import working_dtype

LayerStep = Callable[[Tensor, Tensor], Tensor]


def propagate_rows(rows: Tensor, layers: Sequence[Tensor], step: LayerStep) -> Tensor:
    """Carry readout rows ``[batch, rows, seq]`` from the top layer down to the inputs.

    Args:
        rows: readout weights over attention positions, ``[batch, rows, seq]``.
        layers: per-layer maps ``[batch, seq, seq]``, input side first.
        step: ``(rows, map) -> rows @ M(map)`` for the method's per-layer matrix ``M``.

    Returns:
        ``rows @ M(layers[-1]) @ ... @ M(layers[0])``: ``[batch, rows, seq]``, in at least
        float32 (:func:`~.base.working_dtype`), also for float16/bfloat16 maps.
    """
    if layers:
        rows = rows.to(working_dtype(layers[0].dtype))
    for layer in reversed(layers):
        rows = step(rows, layer.to(rows.dtype))
    return rows


def readout_relevance(
    model: AttentionInterpretable,
    layers: Mapping[str, Sequence[Tensor]],
    step: LayerStep,
    batch: Mapping[str, Any],
) -> dict[str, Tensor]:
    """Per-feature relevance of the input positions, ``{key: [batch, n_inputs]}``.

    Uses the model's readout weights when it states them (one propagated row), otherwise the
    full matrix read out by ``model.get_relevance_tensor`` (the generic path; same numbers).
    """
    weights = readout_weights(model, batch)
    if weights is not None:
        rows = {
            key: propagate_rows(weights[key][:, None, :], maps, step)[:, 0]
            for key, maps in layers.items()
        }
        return select_input_positions(model, rows, batch)
    matrices = {}
    for key, maps in layers.items():
        batch_size, seq = maps[0].shape[0], maps[0].shape[-1]
        eye = torch.eye(seq, dtype=working_dtype(maps[0].dtype), device=maps[0].device)
        matrices[key] = propagate_rows(eye.expand(batch_size, seq, seq), maps, step)
    return model.get_relevance_tensor(matrices, **batch)
