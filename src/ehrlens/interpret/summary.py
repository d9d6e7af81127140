"""Readable summaries of attributions: which codes (or visits) mattered most for one patient.

A visit-level score (an attention method on a model that pools each visit into one token) is
the same on every code of the visit: ranking those codes against each other, or adding a
visit's score up once per code, would present a tie as a finding. Visit-level features are
therefore summarised per visit, ``"visit 2: I21.4, I10"``, with the visit's score once.

Example:
    >>> scores = AttentionRollout(transformer).attribute(**batch)     # nested visits
    >>> top_codes(scores, batch, transformer.schema, 0, k=2, levels=score_levels(rollout))
    [('...', 'visit ...: ...', ...), ('...', 'visit ...: ...', ...)]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ..data.dataset import FittedSchema
from .levels import CODE, LEVELS, VISIT


def visit_label(visit: int, codes: list[str]) -> str:
    """How a visit-level entry is named: ``"visit 2: I21.4, I10"``."""
    return f"visit {visit}: {', '.join(codes)}"


def _inferred_level(scores: Tensor, real: Tensor) -> str:
    """Nested scores ``[visits, codes]`` differing inside some visit are per code; else they
    are treated as one per visit (a tie cannot be told from a visit score)."""
    for v in range(scores.shape[0]):
        inside = scores[v][real[v]]
        if inside.numel() > 1 and bool((inside != inside[0]).any()):
            return CODE
    return VISIT


def code_relevance(
    attributions: Mapping[str, Tensor],
    batch: Mapping[str, Any],
    schema: FittedSchema,
    sample: int,
    levels: Mapping[str, str] | None = None,
) -> dict[tuple[str, str], float]:
    """Total relevance of each ``(feature, code)`` of one patient in a batch.

    A code that occurs several times (e.g. in several visits) sums its scores. For a
    visit-level feature the entries are the visits instead, ``(feature, "visit v: codes")``,
    each with its score once. Padding is skipped; unknown codes are reported as
    ``"<unk>"``. Non-code features are left out.

    Args:
        attributions: an interpreter's output, ``{key: scores shaped like batch[key]}``.
        batch: the batch that was explained.
        schema: the model's fitted schema (``model.schema``), to decode code ids.
        sample: index of the patient in the batch.
        levels: ``{feature: "code" | "visit"}``, e.g. ``score_levels(interpreter)``.
            Features not named: visits of codes (``[batch, visits, codes]``) count as visit-level
            unless their scores differ inside a visit; flat features are per code.

    Raises:
        ValueError: a level that is neither ``"code"`` nor ``"visit"``.

    Example:
        >>> scores = AttentionRollout(model).attribute(**batch)
        >>> ranked = code_relevance(scores, batch, model.schema, sample=0)
        >>> all(isinstance(score, float) for score in ranked.values())
        True
    """
    totals: dict[tuple[str, str], float] = {}
    for key, scores in attributions.items():
        processor = schema.input_processors.get(key)
        if processor is None or not processor.holds_codes:
            continue
        values = batch[key][sample : sample + 1]  # [1, ...]: masks are computed per batch
        step_mask = (batch.get("masks") or {}).get(key)
        rows = None if step_mask is None else step_mask[sample : sample + 1]
        real = processor.unit_mask(values, rows).cpu()
        own = scores[sample : sample + 1].detach().cpu()
        level = (levels or {}).get(key)
        if level is not None and level not in LEVELS:
            raise ValueError(f"feature '{key}': level must be 'code' or 'visit', got {level!r}")
        if values.dim() == 3:
            if level is None:
                level = _inferred_level(own[0], real[0])
            if level == VISIT:
                for v in torch.nonzero(real[0].any(dim=-1)).flatten().tolist():
                    codes = processor.decode(values[0, v][real[0, v]].cpu().tolist())
                    inside = own[0, v][real[0, v]]
                    totals[(key, visit_label(v, codes))] = float(inside.max())
                continue
        flat = real.reshape(-1)
        ids = values.reshape(-1).cpu()[flat].tolist()
        shares = own.reshape(-1)[flat].tolist()
        for code, value in zip(processor.decode(ids), shares, strict=True):
            totals[(key, code)] = totals.get((key, code), 0.0) + float(value)
    return totals


def top_codes(
    attributions: Mapping[str, Tensor],
    batch: Mapping[str, Any],
    schema: FittedSchema,
    sample: int,
    k: int = 5,
    levels: Mapping[str, str] | None = None,
) -> list[tuple[str, str, float]]:
    """The ``k`` most relevant ``(feature, code, score)`` of one patient, highest first.

    Visit-level features (``levels``, see :func:`code_relevance`) contribute their visits,
    ``(feature, "visit v: codes", score)``, not one tied entry per code. Ties are broken by
    feature then code, so the order is deterministic.

    Example:
        >>> scores = CheferRelevance(model).attribute(**batch)
        >>> [feature for feature, code, score in top_codes(scores, batch, model.schema, 0, k=3)]
        [...]
    """
    totals = code_relevance(attributions, batch, schema, sample, levels)
    ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
    return [(feature, code, score) for (feature, code), score in ranked[:k]]
