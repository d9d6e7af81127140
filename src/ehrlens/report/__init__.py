"""Reports people can look at: a self-contained HTML report and (extra ``plot``) PNG plots."""

from .html import Prediction, patient_predictions, read_descriptions, render_report, write_report

__all__ = [
    "Prediction",
    "patient_predictions",
    "read_descriptions",
    "render_report",
    "write_report",
]
