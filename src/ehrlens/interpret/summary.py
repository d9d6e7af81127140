"""Readable summaries of attributions: which codes mattered most for one patient."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from ..data.dataset import FittedSchema


def code_relevance(
    attributions: Mapping[str, Tensor],
    batch: Mapping[str, Any],
    schema: FittedSchema,
    sample: int,
) -> dict[tuple[str, str], float]:
    """Total relevance of each ``(feature, code)`` of one patient in a batch.

    A code that occurs several times (e.g. in several visits) sums its scores. Padding is
    skipped; unknown codes are reported as ``"<unk>"``. Non-code features are left out.

    Args:
        attributions: an interpreter's output, ``{key: scores shaped like batch[key]}``.
        batch: the batch that was explained.
        schema: the model's fitted schema (``model.schema``), to decode code ids.
        sample: index of the patient in the batch.

    Example:
        >>> scores = AttentionRollout(model).attribute(**batch)
        >>> ranked = code_relevance(scores, batch, model.schema, sample=0)
    """
    totals: dict[tuple[str, str], float] = {}
    for key, scores in attributions.items():
        processor = schema.input_processors.get(key)
        if processor is None or not processor.holds_codes:
            continue
        values = batch[key][sample : sample + 1]  # [1, ...]: masks are computed per batch
        step_mask = (batch.get("masks") or {}).get(key)
        rows = None if step_mask is None else step_mask[sample : sample + 1]
        real = processor.unit_mask(values, rows).reshape(-1).cpu()
        ids = values.reshape(-1).cpu()[real].tolist()
        shares = scores[sample].reshape(-1).cpu()[real].tolist()
        for code, value in zip(processor.decode(ids), shares, strict=True):
            totals[(key, code)] = totals.get((key, code), 0.0) + float(value)
    return totals


def top_codes(
    attributions: Mapping[str, Tensor],
    batch: Mapping[str, Any],
    schema: FittedSchema,
    sample: int,
    k: int = 5,
) -> list[tuple[str, str, float]]:
    """The ``k`` most relevant ``(feature, code, score)`` of one patient, highest first.

    Ties are broken by feature then code, so the order is deterministic.

    Example:
        >>> scores = CheferRelevance(model).attribute(**batch)
        >>> top_codes(scores, batch, model.schema, sample=0, k=3)
        [('diagnoses', 'I83.8', 0.061), ('diagnoses', 'O20.9', 0.034), ...]
    """
    totals = code_relevance(attributions, batch, schema, sample)
    ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
    return [(feature, code, score) for (feature, code), score in ranked[:k]]
