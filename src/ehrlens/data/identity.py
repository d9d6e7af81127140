"""Identity of the input, kept next to the tensors so that attribution rows can name it.

A sample may carry, besides ``patient_id``:

- sample identity (:data:`SAMPLE_IDENTITY`): ``subject_id`` and ``prediction_time``, e.g. one
  MEDS sample per (subject, prediction time);
- step identity (:data:`STEP_IDENTITY`) under ``sample["step_identity"]``:
  ``{feature: {"visit_id": [...], "event_time": [...]}}``, one entry per step of the
  feature's value (a code of a ``"sequence"``, a visit, a time step), as the event readers
  build it.

:func:`item_identity` keeps them with a processed item, cut like the feature when
``max_length`` keeps only the last steps; :func:`unit_identity` reads one unit's values back
for its row of the attribution table.

Example:
    >>> from datetime import datetime
    >>> sample = {"patient_id": "7@2010-05-11T18:00:00", "subject_id": 7,
    ...           "prediction_time": datetime(2010, 5, 11, 18), "dx": [["I10"], ["E11"]],
    ...           "step_identity": {"dx": {"visit_id": [None, None],
    ...                            "event_time": [datetime(2010, 5, 1), datetime(2010, 5, 9)]}}}
    >>> item_identity(sample, {"dx": torch.tensor([[2], [3]])}, "sample 0")["identity"]
    {'subject_id': 7, 'prediction_time': datetime.datetime(2010, 5, 11, 18, 0)}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from torch import Tensor

#: Sample-level identity keys a sample may carry, in column order.
SAMPLE_IDENTITY = ("subject_id", "prediction_time")
#: Step-level identity under ``sample["step_identity"][feature]``, in column order.
STEP_IDENTITY = ("visit_id", "event_time")
#: Every identity column an attribution row may carry, in order.
IDENTITY_COLUMNS = SAMPLE_IDENTITY + STEP_IDENTITY
#: The sample key holding step identity.
STEPS_KEY = "step_identity"


def _n_steps(value: Any) -> int | None:
    """Steps of a processed value: the first dim of its tensor (of its times for pairs)."""
    if isinstance(value, Tensor):
        return int(value.shape[0]) if value.dim() else None
    if isinstance(value, (tuple, list)) and value:
        return _n_steps(value[0])
    return None


def item_identity(
    sample: Mapping[str, Any], processed: Mapping[str, Any], where: str
) -> dict[str, Any]:
    """``{"identity": ..., "step_identity": ...}`` to keep with a processed item (keys only for what
    the sample has).

    Step lists are cut to the processed value's steps, keeping the last ones (as
    ``max_length`` does).

    Raises:
        ValueError: a step list is shorter than the feature's steps, or not a list, naming
            ``where`` and the feature.
    """
    out: dict[str, Any] = {}
    identity = {key: sample[key] for key in SAMPLE_IDENTITY if sample.get(key) is not None}
    if identity:
        out["identity"] = identity
    steps = sample.get(STEPS_KEY)
    if not steps:
        return out
    if not isinstance(steps, Mapping):
        raise ValueError(f"{where}: '{STEPS_KEY}' must map features to step identity")
    kept: dict[str, dict[str, list]] = {}
    for feature, columns in steps.items():
        if feature not in processed:
            continue
        n = _n_steps(processed[feature])
        if n is None or not isinstance(columns, Mapping):
            continue
        kept[feature] = {}
        for name in STEP_IDENTITY:
            values = columns.get(name)
            if values is None:
                continue
            if not isinstance(values, (list, tuple)) or len(values) < n:
                raise ValueError(
                    f"{where}, feature '{feature}': '{STEPS_KEY}' lists "
                    f"{len(values) if isinstance(values, (list, tuple)) else 'no'} {name} "
                    f"value(s) for {n} step(s)"
                )
            kept[feature][name] = list(values[len(values) - n :])
    if kept:
        out[STEPS_KEY] = kept
    return out


def identity_columns(items: Iterable[Mapping[str, Any]]) -> list[str]:
    """The identity columns any of ``items`` carries, in :data:`IDENTITY_COLUMNS` order."""
    present: set[str] = set()
    for item in items:
        present.update(item.get("identity", {}))
        for columns in item.get(STEPS_KEY, {}).values():
            present.update(columns)
    return [name for name in IDENTITY_COLUMNS if name in present]


def unit_identity(
    item: Mapping[str, Any], feature: str, visit: int | None, position: int, column: str
) -> Any:
    """One identity value of the unit ``(feature, visit, position)`` of ``item``: a sample
    column as is; a step column at the unit's step (its visit, or its position in a flat
    sequence); None where the item has none."""
    if column in SAMPLE_IDENTITY:
        return item.get("identity", {}).get(column)
    values = item.get(STEPS_KEY, {}).get(feature, {}).get(column)
    step = visit if visit is not None else position
    if values is None or not 0 <= step < len(values):
        return None
    return values[step]


__all__ = [
    "IDENTITY_COLUMNS",
    "SAMPLE_IDENTITY",
    "STEPS_KEY",
    "STEP_IDENTITY",
    "identity_columns",
    "item_identity",
    "unit_identity",
]
