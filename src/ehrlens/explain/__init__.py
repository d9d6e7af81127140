"""Cohort explanations as data: long-format tables, Parquet shards, resumable runs.

- :mod:`~ehrlens.explain.table`: the long-format attribution columns.
- :mod:`~ehrlens.explain.rows`: batches explained by several methods into rows (both engines).
- :mod:`~ehrlens.explain.shards`: run fingerprints, the manifest, shards verified by content.
- :mod:`~ehrlens.explain.consistency`: attributions and data describe the same patients/codes.
- :mod:`~ehrlens.explain.run`: :class:`ExplainRun`, the declared spec of one run.
- :mod:`~ehrlens.explain.job`: what each executor does with one unit of the source.
- :mod:`~ehrlens.explain.local_engine`: :class:`LocalExecutor` (and :func:`explain_cohort`).
- :mod:`~ehrlens.explain.ray_engine`: :class:`RayExecutor` on Ray Data (extra ``ray``).
"""

from ..models.directory import model_fingerprint
from .local_engine import LocalExecutor, dataset_fingerprint, explain_cohort
from .run import ExplainRun
from .shards import ExplainResult, OutputConflictError, read_attributions
from .table import ATTRIBUTION_COLUMNS, attribution_columns, method_columns

__all__ = [
    "ATTRIBUTION_COLUMNS",
    "ExplainResult",
    "ExplainRun",
    "LocalExecutor",
    "OutputConflictError",
    "attribution_columns",
    "dataset_fingerprint",
    "explain_cohort",
    "method_columns",
    "model_fingerprint",
    "read_attributions",
]
