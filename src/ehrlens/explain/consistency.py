"""Do attributions and data describe the same patients and codes?

Attributions computed on one file and shown next to predictions from another would put an old
timeline under a new risk. :func:`check_attributions_match` rebuilds, from the data, the input
units of every explained patient (``feature, visit, position, code``: the key columns of the
long-format table, with the same decoding and the same padding rule) and compares them with
the table's rows of each method.

Example:
    >>> frame = read_attributions("attr/")
    >>> check_attributions_match(frame, dataset, model.schema)   # ValueError when they differ
    >>> check_attributions_match(frame[1:], dataset, model.schema)
    Traceback (most recent call last):
    ...
    ValueError: ...
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..data.dataset import SampleDataset
from .table import method_columns

#: The columns that identify an input unit of a patient.
UNIT_COLUMNS = ("patient_id", "feature", "visit", "position", "code")


def data_units(
    dataset: SampleDataset, schema: Any, patient_ids: Sequence[str], batch_size: int = 256
) -> Any:
    """The input units of ``patient_ids`` in ``dataset`` as a pandas DataFrame with
    :data:`UNIT_COLUMNS`, rows in the order of the long-format table.

    Example:
        >>> data_units(dataset, model.schema, ["P000001"]).head(2)
          patient_id    feature  visit  position   code
        0    P000001  diagnoses      0         0  M24.9
        1    P000001  diagnoses      1         0  F63.1
    """
    import pandas as pd

    index = {str(p): i for i, p in enumerate(dataset.patient_ids)}
    rows = [index[str(p)] for p in patient_ids]
    parts = []
    for start in range(0, len(rows), batch_size):
        batch = dataset.collate([dataset[i] for i in rows[start : start + batch_size]])
        zeros = {
            key: torch.zeros(batch[key].shape, dtype=torch.float64)
            for key in schema.feature_keys
            if isinstance(batch.get(key), torch.Tensor)
        }
        columns = method_columns({"": zeros}, batch, schema, "")
        parts.append(pd.DataFrame({name: columns[name] for name in UNIT_COLUMNS}))
    if not parts:
        return pd.DataFrame({name: [] for name in UNIT_COLUMNS})
    return pd.concat(parts, ignore_index=True)


def _keyed(frame: Any) -> Any:
    """Units with a comparable visit (-1 for none) and string codes, sorted."""
    out = frame.loc[:, list(UNIT_COLUMNS)].copy()
    out["visit"] = out["visit"].astype("float64").fillna(-1).astype("int64")
    out["position"] = out["position"].astype("int64")
    out["patient_id"] = out["patient_id"].astype(str)
    out["code"] = out["code"].astype(str)
    return out.sort_values(list(UNIT_COLUMNS[:4]), kind="stable").reset_index(drop=True)


def check_attributions_match(frame: Any, dataset: SampleDataset, schema: Any) -> None:
    """Raise unless every method's rows in ``frame`` list exactly the input units that
    ``dataset`` has for the explained patients.

    Args:
        frame: long-format attributions (:data:`~ehrlens.explain.ATTRIBUTION_COLUMNS`).
        dataset: the data the report or evaluation is about, processed with ``schema``.
        schema: the model's fitted schema (decodes the codes as the table did).

    Raises:
        ValueError: a patient of ``frame`` is not in ``dataset``, or one patient's units
            differ; the message names the patient, method, feature, visit and position, and
            the code on each side.

    Example:
        >>> check_attributions_match(read_attributions("attr/"), dataset, model.schema)
    """
    explained = [str(p) for p in dict.fromkeys(frame["patient_id"])]
    known = {str(p) for p in dataset.patient_ids}
    absent = [p for p in explained if p not in known]
    if absent:
        raise ValueError(
            f"{len(absent)} explained patient(s) are not in the data (first: {absent[:3]}); "
            "the attributions were computed on other data"
        )
    expected = _keyed(data_units(dataset, schema, explained))
    for method in dict.fromkeys(frame["method"]):
        actual = _keyed(frame[frame["method"] == method])
        want = expected[expected["patient_id"].isin(set(actual["patient_id"]))]
        problem = _first_difference(actual, want)
        if problem is not None:
            pid, what = problem
            raise ValueError(
                f"patient {pid!r}, method {method!r}: the attributions and the data differ "
                f"({what}); the attributions were computed on other data. Explain this data "
                "again, or report on the data that was explained."
            )


def _first_difference(have: Any, want: Any) -> tuple[str, str] | None:
    """``(patient, what differs)`` for the first unit on which two keyed tables disagree."""
    keys = ["patient_id", "feature", "visit", "position"]
    merged = have.merge(want, on=keys, how="outer", suffixes=("_attr", "_data"), indicator=True)
    bad = merged[(merged["_merge"] != "both") | (merged["code_attr"] != merged["code_data"])]
    if len(bad) == 0:
        return None
    row = bad.sort_values(keys, kind="stable").iloc[0]
    where = f"feature {row['feature']!r}"
    where += f", visit {row['visit']}" if row["visit"] >= 0 else ""
    where += f", position {row['position']}"
    if row["_merge"] == "left_only":
        return row[
            "patient_id"
        ], f"{where}: code {row['code_attr']!r} in the attributions, none in the data"
    if row["_merge"] == "right_only":
        return row[
            "patient_id"
        ], f"{where}: code {row['code_data']!r} in the data, none in the attributions"
    return row["patient_id"], (
        f"{where}: code {row['code_attr']!r} in the attributions, {row['code_data']!r} in the data"
    )
