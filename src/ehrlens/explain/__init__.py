"""Cohort explanations as data: long-format tables, Parquet shards, resumable runs.

- :mod:`~ehrlens.explain.table`: the long-format attribution columns.
- :mod:`~ehrlens.explain.rows`: batches explained by several methods into rows (both engines).
- :mod:`~ehrlens.explain.shards`: run fingerprints, the manifest, shards verified by content.
- :mod:`~ehrlens.explain.consistency`: attributions and data describe the same patients/codes.
- :mod:`~ehrlens.explain.local_engine`: :func:`explain_cohort`, in this process.
- :mod:`~ehrlens.explain.ray_engine`: :func:`explain_cohort_ray`, on Ray Data (extra ``ray``).
"""

from ..models.directory import model_fingerprint
from .local_engine import dataset_fingerprint, explain_cohort
from .shards import ExplainResult, OutputConflictError, read_attributions
from .table import ATTRIBUTION_COLUMNS, attribution_columns, method_columns

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
