"""What the model predicted for each patient, as the report and the notebook view show it.

Example:
    >>> predictions = patient_predictions(model, test_dataset)
    >>> predictions["P000123"].probability, predictions["P000123"].label
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..core.modes import eval_mode
from ..data.dataset import SampleDataset, get_dataloader, move_to_device
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
        >>> batch_predictions(model, batch)["P000123"].probability
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
    out = {}
    for i, pid in enumerate(batch["patient_id"]):
        label = None
        if isinstance(labels, torch.Tensor):
            value = labels[i].reshape(-1).tolist()
            label = value[0] if len(value) == 1 else value
        out[str(pid)] = Prediction(float(shown[i]), label, classes[i])
    return out


def patient_predictions(
    model: Any, dataset: SampleDataset, batch_size: int = 256, target: int | None = None
) -> dict[str, Prediction]:
    """``{patient_id: Prediction}`` for every patient of ``dataset`` (see
    :func:`batch_predictions`); labels when the dataset has them.

    Example:
        >>> predictions = patient_predictions(model, test_dataset)
        >>> predictions["P000123"].probability, predictions["P000123"].label
    """
    out: dict[str, Prediction] = {}
    for batch in get_dataloader(dataset, batch_size):
        if not dataset.has_labels:
            batch = {k: v for k, v in batch.items() if k != model.label_key}
        out.update(batch_predictions(model, batch, target))
    return out


def stored_predictions(
    frame: Any, classes: Sequence[str] | None = None
) -> dict[str, Prediction] | None:
    """``{patient_id: Prediction}`` read from the prediction columns an explain run stores
    with its rows (:mod:`~ehrlens.explain.predictions`): the explained class's probability,
    as :func:`batch_predictions` gives it, and its class index among ``classes`` (multiclass);
    no label. ``None`` when the rows hold no predictions (a folder written by an older
    ehrlens, or a regression model).

    Example:
        >>> predictions = stored_predictions(read_attributions("attr/"), ["0", "1"])
        >>> predictions["P000123"].probability
    """
    columns = ("explained_class", "explained_probability")
    if any(name not in frame.columns for name in columns):
        return None
    first = frame.drop_duplicates("patient_id")
    if first["explained_probability"].isna().any():
        return None
    order = {name: i for i, name in enumerate(classes or [])}
    multiclass = len(order) > 2
    out = {}
    for pid, name, probability in zip(
        first["patient_id"], first["explained_class"], first["explained_probability"], strict=True
    ):
        index = order.get(str(name))
        shown_class = index if multiclass or index == 0 else None
        out[str(pid)] = Prediction(float(probability), None, shown_class)
    return out


def with_labels(
    predictions: Mapping[str, Prediction], dataset: SampleDataset
) -> dict[str, Prediction]:
    """``predictions`` with each patient's label from ``dataset`` (when it has labels); the
    model is not run.

    Example:
        >>> with_labels(stored_predictions(frame, classes), test_dataset)["P000123"].label
        1
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
            old = out[pid]
            out[pid] = Prediction(old.probability, label, old.class_index)
    return out
