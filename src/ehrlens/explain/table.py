"""Attributions as data: one row per (patient, method, input unit), in long format.

Columns (:data:`ATTRIBUTION_COLUMNS`):

=============  =========  ==============================================================
patient_id     string     the sample's ``patient_id``
feature        string     feature key, e.g. ``"diagnoses"``
visit          int32      visit / time-step index; null for flat sequences and vectors
position       int32      position in the sequence, in the visit, or measurement column
code           string     decoded code (``"<unk>"`` for codes unseen in training); for
                          numeric features the measurement's name (a MEDS code such as
                          ``"LOINC//2160-0"``), or its column index as text when unnamed
score          float64    the method's score for that unit
method         string     method name, e.g. ``"rollout"``
model_id       string     the model's fingerprint (:func:`model_fingerprint`)
predicted_*    ...        the patient's predicted class and its probability, and the
explained_*               explained class and its probability
                          (:mod:`~ehrlens.explain.predictions`; null when not computed)
value          float64    the measured value the model was given (numeric features); null
                          for codes
level          string     ``"code"``: the score is this unit's own; ``"visit"``: it is the
                          score of the unit's visit (or step), the same on each of its
                          units (an attention method on a model that pools visits); null
                          when the caller did not say (:func:`~ehrlens.interpret.score_level`)
=============  =========  ==============================================================

When the input carries identity (:mod:`ehrlens.data.identity`), rows carry it too, after
these columns: ``subject_id`` (int64) and ``prediction_time`` (timestamp[us]) of the sample,
e.g. of a MEDS sample; ``visit_id`` (string) and ``event_time`` (timestamp[us] for dates,
float64 for numeric times) of the unit's step, from event tables and MEDS data. A column is
present when any sample of the run has it, null where a unit has none (a static MEDS step
has no time).

Padding has no row. Rows come in batch order, then method, then feature, then position.
Each feature's processor says what its units are and how they read
(:meth:`~ehrlens.data.processors.FeatureProcessor.long_units`).

Example:
    >>> scores = AttentionRollout(model).attribute(**batch)
    >>> columns = attribution_columns(scores, batch, model.schema, "rollout", "3f2a9c01d4e5")
    >>> columns["method"][0], columns["model_id"][0]
    ('rollout', '3f2a9c01d4e5')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import Tensor

from ..data.dataset import FittedSchema
from ..data.identity import IDENTITY_COLUMNS, identity_columns, unit_identity
from ..data.processors import FeatureProcessor
from .predictions import PREDICTION_COLUMNS, PredictionRow

ATTRIBUTION_COLUMNS = (
    "patient_id",
    "feature",
    "visit",
    "position",
    "code",
    "score",
    "method",
    "model_id",
    *PREDICTION_COLUMNS,
    "value",
    "level",
)


def arrow_schema(identity: Sequence[str] = ()):
    """The pyarrow schema of attribution tables (needs ``ehrlens[parquet]``), with the given
    identity columns after the fixed ones (``event_time`` as a timestamp here; a table of
    numeric times has it as float64)."""
    import pyarrow as pa

    fields = [
        ("patient_id", pa.string()),
        ("feature", pa.string()),
        ("visit", pa.int32()),
        ("position", pa.int32()),
        ("code", pa.string()),
        ("score", pa.float64()),
        ("method", pa.string()),
        ("model_id", pa.string()),
        ("predicted_class", pa.string()),
        ("predicted_probability", pa.float64()),
        ("explained_class", pa.string()),
        ("explained_probability", pa.float64()),
        ("value", pa.float64()),
        ("level", pa.string()),
    ]
    types = _identity_types()
    return pa.schema(fields + [(name, types[name]) for name in identity])


def _identity_types() -> dict[str, Any]:
    import pyarrow as pa

    return {
        "subject_id": pa.int64(),
        "prediction_time": pa.timestamp("us"),
        "visit_id": pa.string(),
        "event_time": pa.timestamp("us"),
    }


def _empty_columns(identity: Sequence[str] = ()) -> dict[str, list]:
    return {name: [] for name in (*ATTRIBUTION_COLUMNS, *identity)}


def attribution_columns(
    attributions: Mapping[str, Tensor],
    batch: Mapping[str, Any],
    schema: FittedSchema,
    method: str,
    model_id: str,
    levels: Mapping[str, str] | None = None,
) -> dict[str, list]:
    """Long-format columns for one batch explained by one method (see the module docstring).

    Args:
        attributions: ``{feature: scores shaped like batch[feature]}``.
        batch: the explained batch (needs ``patient_id`` and each feature's values).
        schema: the model's fitted schema, to decode codes and know each feature's layout.
        method: name written in the ``method`` column.
        model_id: written in the ``model_id`` column.
        levels: ``{feature: "code" | "visit"}`` written in the ``level`` column
            (:func:`~ehrlens.interpret.score_levels` of the interpreter); null when absent.

    Returns:
        ``{column: list}`` for :data:`ATTRIBUTION_COLUMNS`; padding has no row.

    Example:
        >>> scores = AttentionRollout(model).attribute(**batch)   # {"diagnoses": [batch, seq]}
        >>> columns = attribution_columns(scores, batch, model.schema, "rollout", "3f2a9c01d4e5")
        >>> frame = pd.DataFrame(columns)                         # one row per real code
        >>> frame[["patient_id", "feature", "visit", "position"]].head(2)
          patient_id    feature  visit  position
        0    P000118  diagnoses      0         0
        1    P000118  diagnoses      0         1
    """
    per_method_levels = None if levels is None else {method: levels}
    return method_columns({method: attributions}, batch, schema, model_id, levels=per_method_levels)


def method_columns(
    per_method: Mapping[str, Mapping[str, Tensor]],
    batch: Mapping[str, Any],
    schema: FittedSchema,
    model_id: str,
    items: Sequence[Mapping[str, Any]] | None = None,
    identity: Sequence[str] | None = None,
    levels: Mapping[str, Mapping[str, Any]] | None = None,
    predictions: Sequence[PredictionRow] | None = None,
) -> dict[str, list]:
    """Long-format columns for one batch explained by several methods: rows in patient order,
    then method, then feature, then position.

    Each feature's units (decoded codes, padding left out) are found once per patient and
    shared by every method; tensors move to the CPU once per batch.

    Args:
        per_method: ``{method: {feature: scores shaped like batch[feature]}}``.
        batch: the explained batch (needs ``patient_id`` and each feature's values).
        schema: the model's fitted schema.
        model_id: written in the ``model_id`` column.
        items: the batch's dataset items, in batch order, for their identity columns.
        identity: the identity columns to write (default: those ``items`` carry); pass the
            whole run's so that every batch has the same columns.
        levels: ``{method: {feature: "code" | "visit"}}`` for the ``level`` column; null
            where absent.
        predictions: one :data:`~ehrlens.explain.predictions.PredictionRow` per patient,
            in batch order, for the prediction columns; null where absent.

    Example:
        >>> per_method = {"rollout": rollout(**batch), "chefer": chefer(**batch)}
        >>> columns = method_columns(per_method, batch, model.schema, model_fingerprint(model))
        >>> sorted(set(columns["method"]))
        ['chefer', 'rollout']
    """
    if items is not None and len(items) != len(batch["patient_id"]):
        raise ValueError(f"{len(items)} items for a batch of {len(batch['patient_id'])}")
    if predictions is not None and len(predictions) != len(batch["patient_id"]):
        raise ValueError(
            f"{len(predictions)} predictions for a batch of {len(batch['patient_id'])}"
        )
    no_prediction: PredictionRow = (None, None, None, None)
    if identity is None:
        identity = identity_columns(items or [])
    identity = [name for name in IDENTITY_COLUMNS if name in identity]
    columns = _empty_columns(identity)
    processors = schema.input_processors
    masks = batch.get("masks") or {}
    scores = {
        method: {k: t.detach().double().cpu().numpy() for k, t in attributions.items()}
        for method, attributions in per_method.items()
    }
    keys = [k for k in schema.feature_keys if any(k in s for s in scores.values())]
    values = {k: batch[k].detach().cpu() for k in keys}
    step_masks = {k: masks[k].detach().cpu() for k in keys if k in masks}
    measured = {k for k in keys if getattr(processors[k], "event_kind", None) == "measurements"}
    for index, pid in enumerate(batch["patient_id"]):
        prediction = no_prediction if predictions is None else predictions[index]
        units = {
            k: list(_units(processors[k], values[k][index], _row(step_masks.get(k), index)))
            for k in keys
        }
        for method, method_scores in scores.items():
            for key in keys:
                if key not in method_scores:
                    continue
                feature_scores = method_scores[key][index]
                level = ((levels or {}).get(method) or {}).get(key)
                given = values[key][index] if key in measured else None
                for visit, position, code, unit in units[key]:
                    for name in identity:
                        value = None if items is None else unit_identity(
                            items[index], key, visit, position, name
                        )  # fmt: skip
                        columns[name].append(value)
                    columns["patient_id"].append(str(pid))
                    columns["feature"].append(key)
                    columns["visit"].append(visit)
                    columns["position"].append(position)
                    columns["code"].append(code)
                    columns["score"].append(float(feature_scores[unit]))
                    columns["method"].append(method)
                    columns["model_id"].append(model_id)
                    for name, value in zip(PREDICTION_COLUMNS, prediction, strict=True):
                        columns[name].append(value)
                    columns["level"].append(level)
                    columns["value"].append(None if given is None else float(given[unit]))
    return columns


def _row(tensor: Tensor | None, index: int) -> Tensor | None:
    return None if tensor is None else tensor[index]


def _units(processor: Any, values: Tensor, step_mask: Tensor | None):
    """Yield ``(visit, position, code, index into the scores)`` for each non-padding unit:
    the processor's :meth:`~ehrlens.data.processors.FeatureProcessor.long_units`."""
    if not isinstance(processor, FeatureProcessor):
        raise TypeError(f"no long-format layout for processor {type(processor).__name__}")
    return processor.long_units(values, step_mask)


def columns_to_arrow(columns: Mapping[str, list]):
    """``{column: list}`` -> a pyarrow Table with :func:`arrow_schema` (and the identity
    columns present; ``event_time`` as float64 when its values are numbers; prediction and
    value columns the rows were built without are null)."""
    import pyarrow as pa

    identity = [name for name in IDENTITY_COLUMNS if name in columns]
    schema = arrow_schema(identity)
    if "event_time" in columns and any(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in columns["event_time"]
    ):
        index = schema.get_field_index("event_time")
        schema = schema.set(index, pa.field("event_time", pa.float64()))
    n = len(columns["patient_id"])
    unknown: list[Any] = [None] * n  # rows built without predictions or values: null
    optional = (*PREDICTION_COLUMNS, "value")
    ordered = {
        name: columns[name] if name in columns or name not in optional else unknown
        for name in schema.names
    }
    return pa.Table.from_pydict(ordered, schema=schema)


def concat_columns(parts: list[dict[str, list]]) -> dict[str, list]:
    """Join several ``{column: list}`` blocks in order (identity columns as in the first)."""
    out = _empty_columns([name for name in IDENTITY_COLUMNS if parts and name in parts[0]])
    for part in parts:
        for name in out:
            out[name].extend(part[name])
    return out
