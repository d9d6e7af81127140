"""The class a model predicted and the class its scores explain, each by name: one definition
for the report, the notebook view and the stored rows.

The *predicted* class is the model's most probable class (binary: the positive class when its
probability is at least 0.5). The *explained* class is the one the scores are about: the
``target`` given, else the interpreters' default (binary: the positive class; multiclass and
multilabel: the predicted class). They differ whenever a user explains a class the model did
not predict, so every surface shows both, each under its own name.

Example:
    >>> rows = [{"patient_id": "A", "codes": ["I10"], "risk": "low"},
    ...         {"patient_id": "B", "codes": ["I21.4"], "risk": "high"}]
    >>> risk = create_sample_dataset(rows, {"codes": "sequence"}, {"risk": "binary"},
    ...                              positive_class="high")
    >>> risk_model = Transformer(risk, embedding_dim=8, heads=2, num_layers=1)
    >>> model_class_names(risk_model)
    ['low', 'high']
    >>> y_prob = torch.tensor([[0.25], [0.75]])     # binary: P(positive) [batch, 1]
    >>> predicted_and_explained(risk_model, y_prob)
    [('low', 0.75, 'high'), ('high', 0.75, 'high')]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from ..explain.predictions import PREDICTION_COLUMNS, prediction_rows
from .patient import Prediction


def predicted_and_explained(
    model: Any, y_prob: Tensor, target: int | None = None
) -> list[tuple[str | None, float | None, str | None]]:
    """Per patient ``(predicted class, its probability, explained class)``, classes by name;
    ``(None, None, None)`` for regression. The definition is
    :func:`~ehrlens.explain.predictions.prediction_rows`, the one the stored rows use.

    Args:
        model: the model (its ``mode`` and label processor's class names are read).
        y_prob: the model's probabilities ``[batch, outputs]`` (binary: ``[batch, 1]``, the
            positive class's).
        target: the explained class index; ``None``: the interpreters' default.

    Example:
        >>> model_class_names(model)
        ['0', '1']
        >>> predicted_and_explained(model, torch.tensor([[0.25]]), target=None)
        [('0', 0.75, '1')]
        >>> predicted_and_explained(model, torch.tensor([[0.25]]), target=0)
        [('0', 0.75, '0')]
    """
    return [(p, q, e) for p, q, e, _ in prediction_rows(model, y_prob, target)]


def stored_predictions(
    frame: Any,
    computed: Mapping[str, Prediction] | None = None,
    class_names: list[str] | None = None,
    mode: str | None = None,
) -> dict[str, Prediction] | None:
    """``{patient_id: Prediction}`` from the prediction columns of attribution rows
    (:data:`PREDICTION_COLUMNS`, the same on every row of a patient), or ``None`` when the
    rows lack them or hold none (a folder written by an older ehrlens, a regression model).
    Labels (and the mode) come from ``computed`` when given, else the mode is ``mode``.

    Example:
        >>> rows = pd.DataFrame({"patient_id": ["P1", "P1"], "code": ["I10", "I21.4"],
        ...                      "predicted_class": "low", "predicted_probability": 0.61,
        ...                      "explained_class": "high", "explained_probability": 0.39})
        >>> p = stored_predictions(rows, class_names=["low", "high"])["P1"]
        >>> p.predicted_class, p.predicted_probability, p.explained_class, p.class_index
        ('low', 0.61, 'high', 1)
        >>> stored_predictions(rows.drop(columns="predicted_class")) is None  # older rows
        True
    """
    if frame is None or not all(c in frame.columns for c in PREDICTION_COLUMNS):
        return None
    first = frame.drop_duplicates("patient_id")
    if first["explained_probability"].isna().all():
        return None
    out: dict[str, Prediction] = {}
    for row in first.itertuples(index=False):
        pid = str(row.patient_id)
        known = (computed or {}).get(pid)
        explained = None if _missing(row.explained_class) else str(row.explained_class)
        index = None
        if explained is not None and class_names is not None and explained in class_names:
            index = class_names.index(explained)
        probability = row.explained_probability
        out[pid] = Prediction(
            float(probability) if not _missing(probability) else float("nan"),
            None if known is None else known.label,
            index,
            None if _missing(row.predicted_class) else str(row.predicted_class),
            None if _missing(row.predicted_probability) else float(row.predicted_probability),
            explained,
            mode if known is None else known.mode,
        )
    return out


def report_predictions(
    frame: Any,
    computed: Mapping[str, Prediction],
    class_names: list[str] | None = None,
) -> dict[str, Prediction]:
    """The predictions a report shows: those stored in the attribution rows when they carry
    them (:func:`stored_predictions`), else ``computed`` (the model run on the data).

    Example:
        >>> shown = report_predictions(frame, patient_predictions(model, dataset))
    """
    stored = stored_predictions(frame, computed, class_names)
    if stored is None:
        return dict(computed)
    return {pid: stored.get(pid, p) for pid, p in computed.items()} | stored


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)
