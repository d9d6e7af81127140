"""What the model predicted for each explained patient, stored with its rows.

Every attribution row carries its patient's prediction (the columns of
:data:`PREDICTION_COLUMNS`), so that a report or a notebook shows an attribution folder
without the data and without running the model again:

=======================  =======  ======================================================
predicted_class          string   the class the model predicts (its name)
predicted_probability    float64  the probability the model gives that class
explained_class          string   the class the scores explain (its name)
explained_probability    float64  the probability the model gives the explained class
=======================  =======  ======================================================

Binary models predict the positive class at a probability of 0.5 or more; multiclass and
multilabel models their most probable class. The explained class is the run's target, else
the methods' default: the positive class (binary), the predicted class (otherwise).
Regression models have no classes: the four columns are null.

Example:
    >>> rows = batch_prediction_rows(model, batch, target=None)   # one row per patient
    >>> predicted, p, explained, q = rows[0]
    >>> predicted in ("0", "1"), p >= 0.5, explained   # binary: the positive class by default
    (True, True, '1')
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch

from ..core.modes import eval_mode
from ..data.dataset import move_to_device
from ..metrics.faithfulness import model_device

#: The prediction columns of every attribution row, in order.
PREDICTION_COLUMNS = (
    "predicted_class",
    "predicted_probability",
    "explained_class",
    "explained_probability",
)

#: One patient's ``(predicted class, its probability, explained class, its probability)``.
PredictionRow = tuple[str | None, float | None, str | None, float | None]


def model_class_names(model: Any) -> list[str] | None:
    """The class names of ``model``'s (first) label in output order, from its fitted label
    processor (binary: ``[negative, positive]``, as the model card records them); ``None``
    for a regression model or a model without a fitted schema.

    Example:
        >>> model_class_names(model)
        ['0', '1']
    """
    processors = getattr(getattr(model, "schema", None), "output_processors", None)
    if not processors:
        return None
    names = getattr(next(iter(processors.values())), "class_names", None)
    return [str(n) for n in names] if isinstance(names, list) else None


def prediction_rows(
    model: Any, y_prob: torch.Tensor, target: int | None = None
) -> list[PredictionRow]:
    """One :data:`PredictionRow` per patient from the model's probabilities ``y_prob``
    ``[batch, outputs]`` (binary: ``[batch, 1]``, the positive class's); the one definition
    of the predicted and the explained class.

    Raises:
        ValueError: ``target`` is not a class of the model.

    Example:
        >>> prediction_rows(model, torch.tensor([[0.25]]), target=None)
        [('0', 0.75, '1', 0.25)]
    """
    classes = model_class_names(model)
    n = y_prob.shape[0]
    if classes is None:
        return [(None, None, None, None)] * n
    y_prob = y_prob.double().cpu()
    if y_prob.shape[1] == 1:  # binary: P(positive)
        y_prob = torch.cat([1.0 - y_prob, y_prob], dim=1)  # [batch, 2]
    if target is not None and not 0 <= target < y_prob.shape[1]:
        raise ValueError(
            f"target class {target} is out of range for the model's {len(classes)} classes "
            f"{classes}"
        )
    binary = len(classes) == 2 and y_prob.shape[1] == 2 and _is_binary(model)
    if binary:
        predicted = (y_prob[:, 1] >= 0.5).long()
        default = torch.ones(n, dtype=torch.long)
    else:
        predicted = y_prob.argmax(dim=1)
        default = predicted
    explained = default if target is None else torch.full((n,), target, dtype=torch.long)
    rows: list[PredictionRow] = []
    for i in range(n):
        p, e = int(predicted[i]), int(explained[i])
        rows.append((classes[p], float(y_prob[i, p]), classes[e], float(y_prob[i, e])))
    return rows


def batch_prediction_rows(
    model: Any,
    batch: Mapping[str, Any],
    target: int | None = None,
    y_prob: torch.Tensor | None = None,
) -> list[PredictionRow]:
    """One :data:`PredictionRow` per patient of ``batch``, in batch order:
    :func:`prediction_rows` reads the probabilities ``y_prob`` ``[batch, outputs]`` of a
    forward already run on ``batch`` (:class:`ProbabilityRecorder`), else the model is run.

    Raises:
        ValueError: ``target`` is not a class of the model.

    Example:
        >>> rows = batch_prediction_rows(model, batch, target=0)     # explain class "0"
        >>> len(rows), {explained for _, _, explained, _ in rows}
        (8, {'0'})
        >>> predicted, p, explained, q = rows[0]
        >>> round(q, 6) == round(p if predicted == explained else 1 - p, 6)
        True
    """
    if model_class_names(model) is None:
        return [(None, None, None, None)] * len(batch["patient_id"])
    if y_prob is None:
        with eval_mode(model), torch.inference_mode():
            moved = move_to_device(dict(batch), model_device(model) or "cpu")
            y_prob = model(**moved)["y_prob"]  # [batch, outputs]
    return prediction_rows(model, y_prob, target)


class ProbabilityRecorder:
    """Keeps ``y_prob`` ``[batch, outputs]`` of the first forward of ``model`` that runs on
    ``batch`` itself (the very tensors of ``batch``, not copies or perturbed inputs), while
    :meth:`watching`; detached. A cohort run reads its predictions from the forward of a
    method that runs the model plainly (``BaseInterpreter.plain_forward``) instead of running
    one more forward per batch.

    Example:
        >>> recorder = ProbabilityRecorder(model, batch)
        >>> with recorder.watching():
        ...     _ = rollout.attribute(**batch)
        >>> recorder.y_prob.shape                       # [batch, outputs]
        torch.Size([8, 1])
    """

    def __init__(self, model: Any, batch: Mapping[str, Any]) -> None:
        self.model = model
        self.inputs = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
        self.y_prob: torch.Tensor | None = None

    def _on_forward(self, module: Any, args: Any, kwargs: Any, output: Any) -> None:
        if self.y_prob is not None or args or not isinstance(output, Mapping):
            return
        given = {k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)}
        if not self.inputs or given.keys() != self.inputs.keys():
            return
        if any(given[k] is not v for k, v in self.inputs.items()):
            return
        y_prob = output.get("y_prob")
        if isinstance(y_prob, torch.Tensor):
            self.y_prob = y_prob.detach()

    @contextmanager
    def watching(self) -> Iterator[ProbabilityRecorder]:
        """Record during the block (a forward hook on the model, always removed)."""
        if not isinstance(self.model, torch.nn.Module):
            yield self
            return
        handle = self.model.register_forward_hook(self._on_forward, with_kwargs=True)
        try:
            yield self
        finally:
            handle.remove()


def _is_binary(model: Any) -> bool:
    return getattr(model, "mode", None) == "binary"


__all__ = [
    "PREDICTION_COLUMNS",
    "PredictionRow",
    "ProbabilityRecorder",
    "batch_prediction_rows",
    "model_class_names",
    "prediction_rows",
]
