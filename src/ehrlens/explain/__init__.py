"""Cohort explanations as data: long-format tables, Parquet shards, resumable runs."""

from .runner import (
    ExplainResult,
    OutputConflictError,
    dataset_fingerprint,
    explain_cohort,
    read_attributions,
)
from .table import ATTRIBUTION_COLUMNS, attribution_columns, method_columns, model_fingerprint

__all__ = [
    "ATTRIBUTION_COLUMNS",
    "ExplainResult",
    "OutputConflictError",
    "attribution_columns",
    "dataset_fingerprint",
    "explain_cohort",
    "method_columns",
    "model_fingerprint",
    "read_attributions",
]
