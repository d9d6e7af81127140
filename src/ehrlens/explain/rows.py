"""Explain batches of patients with several methods into long-format columns.

The one code path both executors run (:meth:`~ehrlens.explain.job.ShardJob.explain`), in this
process and on each Ray worker.

Example:
    >>> interpreters = {"rollout": AttentionRollout(model), "chefer": CheferRelevance(model)}
    >>> columns = explain_rows(model, dataset, interpreters, range(8), 8, None, "m1", model.schema)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import torch

from ..core.modes import eval_mode
from ..data.dataset import SampleDataset, length_buckets, move_to_device
from ..data.identity import identity_columns
from ..interpret.levels import score_level
from ..interpret.methods import BaseInterpreter
from ..metrics.faithfulness import model_device
from .predictions import ProbabilityRecorder, batch_prediction_rows
from .table import concat_columns, method_columns


def explain_rows(
    model: Any,
    dataset: SampleDataset,
    interpreters: Mapping[str, BaseInterpreter],
    indices: Sequence[int],
    batch_size: int,
    target: int | None,
    model_id: str,
    schema: Any,
    bar_iter: Any = None,
    bucket_by_length: bool = False,
    identity: Sequence[str] | None = None,
) -> dict[str, list]:
    """Long-format columns for ``dataset[indices]``, explained ``batch_size`` at a time; rows
    in patient order, then method. ``bar_iter`` is advanced once per batch.

    Each interpreter whose class declares ``gradient_free`` runs under
    ``torch.inference_mode()``, whether it was given by name or as an instance.

    ``bucket_by_length`` batches patients of similar size together
    (:func:`~ehrlens.data.dataset.length_buckets`) and puts the rows back in patient order:
    the same rows, with less padding when lengths vary. Patient ids must then be unique.

    Rows carry the identity columns of ``identity`` (default: those any item of ``dataset``
    has; see :mod:`ehrlens.data.identity`).

    Each row carries its patient's prediction (:mod:`~ehrlens.explain.predictions`): read
    from the forward of the first method that runs the model plainly on the batch
    (``plain_forward``: rollout, flow, raw attention, Chefer), else from one more forward
    pass per batch under ``torch.inference_mode()``.

    The ``level`` column says, per method and feature, whether a score is the unit's own or
    its visit's (:func:`~ehrlens.interpret.score_level`).
    """
    indices = list(indices)
    if identity is None:
        identity = identity_columns(dataset.items)
    if bucket_by_length:
        _require_unique_ids(dataset, indices)
        chunks = length_buckets(dataset, batch_size, indices)
    else:
        chunks = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    blocks = []
    with eval_mode(model):
        for chunk in chunks:
            items = [dataset[i] for i in chunk]
            batch = dataset.collate(items)
            batch = move_to_device(batch, model_device(model) or "cpu")
            per_method = {}
            levels = method_levels(interpreters, batch, schema)
            recorder = ProbabilityRecorder(model, batch)
            for name, interpreter in interpreters.items():
                # The first method that runs the model plainly gives the predictions.
                records = recorder.y_prob is None and type(interpreter).plain_forward
                with recorder.watching() if records else nullcontext():
                    if type(interpreter).gradient_free:
                        with torch.inference_mode():
                            per_method[name] = interpreter.attribute(target, **batch)
                    else:
                        per_method[name] = interpreter.attribute(target, **batch)
            predictions = batch_prediction_rows(model, batch, target, recorder.y_prob)
            blocks.append(
                method_columns(
                    per_method, batch, schema, model_id, items, identity, levels, predictions
                )
            )
            if bar_iter is not None:
                next(bar_iter, None)
    if not bucket_by_length:
        return concat_columns(blocks)
    return _in_input_order(blocks, chunks, dataset, indices)


def method_levels(
    interpreters: Mapping[str, BaseInterpreter], batch: Mapping[str, Any], schema: Any
) -> dict[str, dict[str, Any]]:
    """``{method: {feature: "code" | "visit"}}`` of the ``level`` column for one batch
    (:func:`~ehrlens.interpret.score_level`).

    Example:
        >>> method_levels({"rollout": AttentionRollout(model)}, batch, model.schema)
        {'rollout': {'diagnoses': 'visit', 'procedures': 'visit', 'drugs': 'visit'}}
    """
    return {
        name: {k: score_level(i, k, batch.get(k)) for k in schema.feature_keys}
        for name, i in interpreters.items()
    }


def _require_unique_ids(dataset: SampleDataset, indices: Sequence[int]) -> None:
    seen: dict[str, int] = {}
    for i in indices:
        pid = str(dataset[i]["patient_id"])
        first = seen.setdefault(pid, i)
        if first != i:
            raise ValueError(
                f"samples {first} and {i} have the same patient_id {pid!r}; attribution rows "
                "are keyed by patient_id, so each patient must have one sample"
            )


def _in_input_order(
    blocks: list[dict[str, list]],
    chunks: list[list[int]],
    dataset: SampleDataset,
    indices: Sequence[int],
) -> dict[str, list]:
    """Rows of bucketed batches, regrouped per patient in the order of ``indices``.

    Each batch's rows are contiguous per patient, in batch order (see ``method_columns``), and
    patient ids are unique, so each patient's rows are the run with its id.
    """
    spans: dict[int, tuple[int, int, int]] = {}  # dataset index -> (block, start, stop)
    for number, (block, chunk) in enumerate(zip(blocks, chunks, strict=True)):
        ids = block["patient_id"]
        position = 0
        for i in chunk:
            pid = str(dataset[i]["patient_id"])
            start = position
            while position < len(ids) and ids[position] == pid:
                position += 1
            spans[i] = (number, start, position)
        if position != len(ids):  # pragma: no cover - guarded by the unique-id check
            raise RuntimeError("rows of a batch are not grouped by patient")
    out: dict[str, list] = {name: [] for name in blocks[0]} if blocks else concat_columns([])
    for i in indices:
        number, start, stop = spans[i]
        for name, column in blocks[number].items():
            out[name].extend(column[start:stop])
    return out
