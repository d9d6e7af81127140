"""Recovery of planted signal: do the top-scored codes include the codes that drive the label?

Scores are aggregated per ``(feature, code)`` of a patient (a code in several visits sums its
scores, see :func:`ehrlens.interpret.code_relevance`) and compared with the planted codes the
patient has, from :class:`ehrlens.data.SyntheticCohort` ground truth. A visit-level score
counts on each code of its visit: the codes of a visit tie (half a pair each in the AUROC).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from ..data.dataset import FittedSchema
from ..interpret.summary import code_relevance


@dataclass
class RecoveryScores:
    """Signal recovery of one patient (``nan`` where undefined).

    Attributes:
        precision_at_k: planted codes among the top ``k`` / ``k``.
        recall_at_k: planted codes among the top ``k`` / planted codes present.
        auroc: AUROC of the code scores separating planted from other codes (needs both).
        n_planted: planted codes the patient has.
    """

    precision_at_k: float
    recall_at_k: float
    auroc: float
    n_planted: int


def _auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUROC with ties counted half; ``nan`` without both classes."""
    positives, negatives = scores[labels], scores[~labels]
    if len(positives) == 0 or len(negatives) == 0:
        return float("nan")
    greater = (positives[:, None] > negatives[None, :]).sum()
    ties = (positives[:, None] == negatives[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(positives) * len(negatives)))


def signal_recovery(
    attributions: Mapping[str, Tensor],
    batch: Mapping[str, Any],
    schema: FittedSchema,
    ground_truth: Mapping[str, Mapping[str, list[str]]],
    k: int = 5,
) -> list[RecoveryScores]:
    """Precision@k, recall@k and AUROC of every patient's code scores vs planted codes.

    Args:
        attributions: ``{key: scores shaped like batch[key]}``.
        batch: the explained batch (its ``patient_id`` list keys the ground truth).
        schema: the model's fitted schema, to decode code ids.
        ground_truth: ``{patient_id: {feature: [planted codes]}}``.
        k: cut-off of precision and recall.

    Returns:
        One :class:`RecoveryScores` per patient in the batch. Ties in the ranking are broken
        by feature then code, so results are deterministic.

    Example:
        >>> scores = CheferRelevance(model).attribute(**batch)
        >>> per_patient = signal_recovery(scores, batch, model.schema, cohort.ground_truth)
        >>> len(per_patient), type(per_patient[0]).__name__   # one per patient
        (8, 'RecoveryScores')
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    out = []
    for i, patient in enumerate(batch["patient_id"]):
        if patient not in ground_truth:
            raise KeyError(f"patient {patient!r} has no ground truth")
        planted = {(f, c) for f, codes in ground_truth[patient].items() for c in codes}
        per_code = dict.fromkeys(attributions, "code")  # planted codes are ranked as codes
        totals = code_relevance(attributions, batch, schema, i, levels=per_code)
        ranked = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
        codes = [code for code, _ in ranked]
        hits = sum(code in planted for code in codes[:k])
        present = planted & set(codes)
        scores = np.array([score for _, score in ranked])
        labels = np.array([code in planted for code in codes], dtype=bool)
        out.append(
            RecoveryScores(
                precision_at_k=hits / k,
                recall_at_k=hits / len(present) if present else float("nan"),
                auroc=_auroc(scores, labels),
                n_planted=len(present),
            )
        )
    return out


def read_ground_truth(
    path: str | os.PathLike, patient_ids: Sequence[Any] | None = None
) -> dict[str, dict[str, list[str]]]:
    """Planted codes from a JSON file ``{patient_id: {feature: [codes]}}`` (the
    ``ground_truth.json`` of a synthetic cohort).

    Args:
        path: the file.
        patient_ids: the patients to be scored; each must have an entry.

    Raises:
        ValueError: not such a JSON object (the message names the file and the first bad
            entry), or a patient of ``patient_ids`` without an entry (the first few named).

    Example:
        >>> truth = read_ground_truth("data/ground_truth.json", test.patient_ids)
        >>> result = Evaluator(model, ground_truth=truth).evaluate(loader, AttentionRollout(model))
        >>> "precision@5" in result.summaries, "signal_auroc" in result.summaries
        (True, True)
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not JSON ({error})") from error
    if not isinstance(document, dict):
        raise ValueError(f"{path}: expected an object {{patient_id: {{feature: [codes]}}}}")
    out: dict[str, dict[str, list[str]]] = {}
    for patient, entry in document.items():
        good = isinstance(entry, dict) and all(
            isinstance(codes, list) and all(isinstance(c, str) for c in codes)
            for codes in entry.values()
        )
        if not good:
            raise ValueError(
                f"{path}: patient {patient!r}: expected {{feature: [codes]}}, got {entry!r:.80}"
            )
        out[str(patient)] = {str(f): list(codes) for f, codes in entry.items()}
    if patient_ids is not None:
        missing = [str(p) for p in patient_ids if str(p) not in out]
        if missing:
            raise ValueError(
                f"{path}: no ground truth for {len(missing)} of the {len(patient_ids)} "
                f"patient(s) scored, e.g. {missing[:3]}; is it the file of this cohort?"
            )
    return out


def within_visit_signal_auroc(
    attributions: Mapping[str, Tensor],
    batch: Mapping[str, Any],
    schema: FittedSchema,
    ground_truth: Mapping[str, Mapping[str, list[str]]],
) -> np.ndarray:
    """Per patient: how well scores tell planted codes from the other codes of their visit.

    For every visit of a code feature laid out as visits (``[batch, visits, codes]``) that
    holds at least one planted code and one other code, the AUROC (ties count half) of the
    scores separating the planted codes from the co-visit ones; a patient's value is the
    mean over such visits (``nan`` when the patient has none). A visit-level score, the same
    on every code of a visit, gives exactly 0.5.

    Args:
        attributions: ``{key: scores shaped like batch[key]}``.
        batch: the explained batch (``patient_id`` keys the ground truth).
        schema: the model's fitted schema, to decode code ids.
        ground_truth: ``{patient_id: {feature: [planted codes]}}``.

    Returns:
        ``float64 [batch]``.

    Example:
        >>> scores = AttentionRollout(code_transformer).attribute(**batch)
        >>> auroc = within_visit_signal_auroc(scores, batch, code_transformer.schema,
        ...                                   cohort.ground_truth)
        >>> auroc.shape      # one per patient, NaN where no visit mixes planted and other codes
        (8,)
    """
    out = np.full(len(batch["patient_id"]), np.nan)
    for i, patient in enumerate(batch["patient_id"]):
        if patient not in ground_truth:
            raise KeyError(f"patient {patient!r} has no ground truth")
        per_visit = []
        for key, scores in attributions.items():
            processor = schema.input_processors.get(key)
            values = batch[key]
            if processor is None or not processor.holds_codes or values.dim() != 3:
                continue
            planted = set(ground_truth[patient].get(key, ()))
            ids, own = values[i].cpu(), scores[i].detach().double().cpu()
            real = processor.unit_mask(ids)
            for v in range(ids.shape[0]):
                codes = processor.decode(ids[v][real[v]].tolist())
                labels = np.array([code in planted for code in codes], dtype=bool)
                value = _auroc(own[v][real[v]].numpy(), labels)
                if np.isfinite(value):
                    per_visit.append(value)
        if per_visit:
            out[i] = float(np.mean(per_visit))
    return out
