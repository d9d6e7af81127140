"""Rank a patient's inputs by attribution and remove them the way each input type allows.

An *input unit* is one element of a feature's raw batch tensor that holds real data: a code
(``[batch, seq]``), a code of a visit (``[batch, visits, codes]``), a value of a time step
(``[batch, steps, features]``, real steps only) or an element of a vector
(``[batch, features]``). Padding is never a unit: it is never ranked, counted or changed.

Each feature's processor decides (``processor.unit_mask`` and ``processor.remove_units``):
codes are set to the pad id (integer tensors stay integer); numeric values are set to zero
or to the batch mean of their channel. Features without a processor (a model not built from
a schema) are read by dtype and rank
(:func:`~ehrlens.data.processors.processor_for_tensor`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ..data.processors import Ablation, FeatureProcessor, processor_for_tensor

Processors = Mapping[str, FeatureProcessor] | None


def model_processors(
    model: Any, batch: Mapping[str, Any], keys: Any
) -> dict[str, FeatureProcessor]:
    """``{key: processor}`` that ranks and removes each feature's units for ``model``: its
    fitted processor, or one read off ``batch[key]`` with the model's pad id for ``key``
    (``pad_ids``; a Hugging Face encoder's vocabulary pad id), so padding is recognised and
    removed codes become padding whatever the model's pad id.

    Example:
        >>> processors = model_processors(encoder, encoding, ["input_ids"])
        >>> processors["input_ids"].unit_mask(encoding["input_ids"])   # not the pad id 0
        tensor([[ True,  True,  True,  True,  True],
                [ True,  True,  True, False, False]])
    """
    from ..interpret.methods.base import feature_processor

    return {key: feature_processor(model, key, batch[key]) for key in keys}


def _processor(processors: Processors, key: str, values: Tensor) -> FeatureProcessor:
    processor = (processors or {}).get(key)
    return processor_for_tensor(values) if processor is None else processor


def unit_mask(
    key: str, values: Tensor, batch: Mapping[str, Any], processor: FeatureProcessor | None = None
) -> Tensor:
    """``bool`` tensor shaped like ``values``: True where ``values`` holds real data.

    Example:
        >>> unit_mask("diagnoses", batch["diagnoses"], batch).shape   # [batch, visits, codes]
        torch.Size([8, 7, 5])
    """
    processor = processor_for_tensor(values) if processor is None else processor
    return processor.unit_mask(values, (batch.get("masks") or {}).get(key))


def rank_units(
    attributions: Mapping[str, Tensor], batch: Mapping[str, Any], processors: Processors = None
) -> tuple[list[str], Tensor, Tensor]:
    """Rank every sample's real input units across features, most relevant first.

    ``processors`` (``{key: fitted processor}``, e.g. ``model.schema.input_processors``) say
    which units are real; features without one are read by dtype and rank.

    Returns:
        ``(keys, rank, real)``: feature order; ``rank`` ``[batch, units]`` (0 = most
        relevant; padding ranks after every real unit); ``real`` ``[batch, units]``. Units
        are the features' elements flattened in ``keys`` order; ties keep that order.
    """
    keys = list(attributions)
    scores, real = [], []
    for key in keys:
        values = batch[key]
        attribution = attributions[key]
        if attribution.shape != values.shape:
            raise ValueError(
                f"feature '{key}': attribution shape {tuple(attribution.shape)} does not match "
                f"the batch tensor {tuple(values.shape)}"
            )
        mask = unit_mask(key, values, batch, _processor(processors, key, values))
        real.append(mask.reshape(mask.shape[0], -1))
        scores.append(attribution.detach().reshape(mask.shape[0], -1).to(torch.float64))
    real_all = torch.cat(real, dim=1)
    score_all = torch.cat(scores, dim=1).masked_fill(~real_all, -math.inf)
    if torch.isnan(score_all).any():
        raise ValueError("attributions contain NaN; cannot rank inputs")
    order = torch.argsort(-score_all, dim=1, stable=True)
    rank = torch.empty_like(order).scatter_(
        1, order, torch.arange(order.shape[1], device=order.device).expand_as(order)
    )
    return keys, rank, real_all


def top_fraction_mask(rank: Tensor, real: Tensor, percent: float) -> Tensor:
    """``[batch, units]`` True for each sample's top ``ceil(percent/100 * n_real)`` units."""
    if not 0 < percent <= 100:
        raise ValueError(f"percentages must be in (0, 100], got {percent}")
    count = torch.ceil(real.sum(dim=1, keepdim=True) * (percent / 100.0))
    return (rank < count) & real


def remove_units(
    batch: Mapping[str, Any],
    keys: list[str],
    remove: Tensor,
    ablation: Ablation = "zero",
    processors: Processors = None,
) -> dict[str, Any]:
    """A copy of ``batch`` with the flagged units of each feature removed.

    Args:
        batch: the batch dict.
        keys: feature order of ``remove`` (from :func:`rank_units`).
        remove: ``[batch, units]`` True for units to remove.
        ablation: numeric values become ``"zero"`` or the ``"mean"`` of their channel over
            the batch's real values.
        processors: ``{key: fitted processor}`` that remove each feature's units; features
            without one are read by dtype and rank.
    """
    if ablation not in ("zero", "mean"):
        raise ValueError(f"ablation must be 'zero' or 'mean', got {ablation!r}")
    masks = batch.get("masks") or {}
    out = dict(batch)
    start = 0
    for key in keys:
        values = batch[key]
        width = values[0].numel() if values.shape[0] else 0
        flags = remove[:, start : start + width].reshape(values.shape)
        start += width
        processor = _processor(processors, key, values)
        out[key] = processor.remove_units(values, flags, ablation, masks.get(key))
    return out
