"""Reports people can look at: a self-contained HTML report, a notebook view and (extra
``plot``) PNG plots."""

from .colours import ColourScale, method_scales
from .header import card_items, class_names, faithfulness_table, read_evaluation
from .html import patient_predictions, read_descriptions, render_report, write_report
from .notebook import Explanation
from .patient import Prediction

__all__ = [
    "ColourScale",
    "Explanation",
    "Prediction",
    "card_items",
    "class_names",
    "faithfulness_table",
    "method_scales",
    "patient_predictions",
    "read_descriptions",
    "read_evaluation",
    "render_report",
    "write_report",
]
