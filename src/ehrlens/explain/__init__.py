"""Cohort explanations as data: long-format tables, Parquet shards, resumable runs."""

from .runner import ExplainResult, OutputConflictError, dataset_fingerprint, explain_cohort
from .table import ATTRIBUTION_COLUMNS, attribution_columns, model_fingerprint

__all__ = [
    "ATTRIBUTION_COLUMNS",
    "ExplainResult",
    "OutputConflictError",
    "attribution_columns",
    "dataset_fingerprint",
    "explain_cohort",
    "model_fingerprint",
]
