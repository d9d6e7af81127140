"""What the model predicted for each patient, as the report and the notebook view show it.

Example:
    >>> predictions = patient_predictions(model, test_dataset)
    >>> 0.0 < predictions["P000123"].probability < 1.0, predictions["P000123"].label
    (True, 1...)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch

from ..core.modes import eval_mode
from ..data.dataset import SampleDataset, get_dataloader, move_to_device
from .classes import predicted_and_explained
from .patient import Prediction


def batch_predictions(
    model: Any, batch: Mapping[str, Any], target: int | None = None
) -> dict[str, Prediction]:
    """``{patient_id: Prediction}`` for one collated batch.

    The probability is that of the positive class (binary), of each patient's top class
    (multiclass, with ``class_index``), the largest label probability (multilabel) or the
    value (regression). ``target`` shows the probability of that class instead (binary
    ``target=0``: one minus the positive probability). The label comes from the batch when it
    has one.

    Raises:
        ValueError: ``target`` is not a class of the model.

    Example:
        >>> 0.0 < batch_predictions(model, batch)["P000123"].probability < 1.0
        True
    """
    with eval_mode(model), torch.inference_mode():
        moved = move_to_device(dict(batch), model.device)
        y_prob = model(**moved)["y_prob"].float().cpu()  # [batch, outputs]
    n, outputs = y_prob.shape
    n_classes = 2 if outputs == 1 and model.mode == "binary" else outputs
    if target is not None and model.mode != "regression" and not 0 <= target < n_classes:
        raise ValueError(f"target class {target} is out of range for {n_classes} classes")
    classes: list[int | None] = [None] * n
    if outputs == 1:
        shown = y_prob[:, 0]
        if target == 0 and model.mode == "binary":
            shown, classes = 1.0 - shown, [0] * n
    elif target is not None:
        shown, classes = y_prob[:, target], [target] * n
    else:
        shown, best = y_prob.max(dim=1)
        if model.mode == "multiclass":
            classes = [int(c) for c in best]
    label_key = getattr(model, "label_key", None)
    labels = batch.get(label_key) if label_key is not None else None
    said = predicted_and_explained(model, y_prob, target)
    out = {}
    for i, pid in enumerate(batch["patient_id"]):
        label = None
        if isinstance(labels, torch.Tensor):
            value = labels[i].reshape(-1).tolist()
            label = value[0] if len(value) == 1 else value
        out[str(pid)] = Prediction(float(shown[i]), label, classes[i], *said[i], model.mode)
    return out


def patient_predictions(
    model: Any, dataset: SampleDataset, batch_size: int = 256, target: int | None = None
) -> dict[str, Prediction]:
    """``{patient_id: Prediction}`` for every patient of ``dataset`` (see
    :func:`batch_predictions`); labels when the dataset has them.

    Example:
        >>> predictions = patient_predictions(model, test_dataset)
        >>> 0.0 < predictions["P000123"].probability < 1.0, predictions["P000123"].label
        (True, 1...)
    """
    out: dict[str, Prediction] = {}
    for batch in get_dataloader(dataset, batch_size):
        if not dataset.has_labels:
            batch = {k: v for k, v in batch.items() if k != model.label_key}
        out.update(batch_predictions(model, batch, target))
    return out


def with_labels(
    predictions: Mapping[str, Prediction], dataset: SampleDataset
) -> dict[str, Prediction]:
    """``predictions`` with each patient's label from ``dataset`` (when it has labels); the
    model is not run.

    Example:
        >>> from ehrlens.report.classes import stored_predictions
        >>> stored = stored_predictions(frame, None, ["0", "1"])
        >>> stored["P000123"].label, with_labels(stored, test_dataset)["P000123"].label
        (None, 1.0)
    """
    out = dict(predictions)
    if not dataset.has_labels or not dataset.label_keys:
        return out
    key = dataset.label_keys[0]
    for item in dataset.items:
        pid = str(item["patient_id"])
        if pid in out and isinstance(item.get(key), torch.Tensor):
            value = item[key].reshape(-1).tolist()
            label = value[0] if len(value) == 1 else value
            out[pid] = replace(out[pid], label=label)
    return out
