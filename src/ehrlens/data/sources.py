"""Patients from files: JSON Lines samples or long-format event tables, by file extension.

Example:
    >>> samples = load_samples("patients.jsonl")
    >>> schema = {"diagnoses": "sequence", "procedures": "sequence", "drugs": "sequence"}
    >>> events = load_samples("events.parquet", input_schema=schema, labels="labels.csv",
    ...                       label_key="label")
    >>> samples[0]["diagnoses"][0], events[0]["diagnoses"][:2]   # visits, or codes in order
    (['D17.4', 'L61.6'], ['D17.4', 'L61.6'])
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..core.jsonl import read_jsonl
from .events import from_events

JSONL_SUFFIXES = (".jsonl", ".ndjson")
TABLE_SUFFIXES = (".parquet", ".pq", ".csv", ".tsv", ".gz")


def load_samples(
    path: str | os.PathLike,
    input_schema: Mapping[str, str] | None = None,
    *,
    labels: str | os.PathLike | None = None,
    label_key: str = "label",
    columns: Mapping[str, Sequence[str]] | None = None,
    on_bad_rows: str = "error",
    identity: bool = False,
) -> list[dict[str, Any]]:
    """Read samples from ``path``: ``.jsonl`` / ``.ndjson`` as they are, ``.parquet`` /
    ``.csv`` / ``.tsv`` as an event table (:func:`~ehrlens.data.events.from_events`).

    For event tables, ``input_schema`` says which features to build; labels come from the
    ``labels`` table, or from a ``label_key`` column of the events when it has one;
    ``identity`` keeps each step's ``visit_id`` and event time for the attribution rows.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unknown extension, unreadable file, or bad rows (with their numbers).

    Example:
        >>> schema = {"diagnoses": "nested_sequence", "procedures": "nested_sequence",
        ...           "drugs": "nested_sequence"}
        >>> samples = load_samples("events.parquet", schema, labels="labels.csv")
        >>> len(samples)
        130
    """
    path = Path(path)
    name = path.name.lower()
    if name.endswith(JSONL_SUFFIXES):
        if labels is not None:
            raise ValueError(f"{path}: JSON Lines samples carry their labels; drop --labels")
        return read_jsonl(path)
    if name.endswith(TABLE_SUFFIXES):
        if input_schema is None:
            raise ValueError(f"{path}: an event table needs an input_schema to build samples")
        label_column = None
        if labels is None:
            label_column = label_key if _has_column(path, label_key) else None
        return from_events(
            path,
            input_schema,
            labels=labels,
            label_key=label_key,
            label_column=label_column,
            columns=columns,
            on_bad_rows=on_bad_rows,
            identity=identity,
        )
    raise ValueError(
        f"{path}: unknown file type; expected JSON Lines ({', '.join(JSONL_SUFFIXES)}) or an "
        "event table (.parquet, .csv, .tsv)"
    )


def _has_column(path: Path, column: str) -> bool:
    from .events import read_table

    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        try:
            return column in pq.read_schema(path).names
        except Exception:
            return False
    try:
        return column in read_table(path).columns
    except (ValueError, OSError):
        return False
