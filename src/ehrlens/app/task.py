"""What a model predicts, as the model card records it: the label, its type, and the class
names in the order of the model's outputs; and when a split is too small for its metrics.

Example:
    >>> task_record(model)   # a binary model; a multiclass one lists its class names
    {'label': 'label', 'mode': 'binary', 'classes': ['0', '1'], 'positive_class': '1'}
    >>> resolve_target("low", ["high", "low", "medium"])
    1
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from ..core.errors import UsageValueError

#: Fewest patients of a split, and of each class in it, whose metrics are reported without a
#: warning: with fewer, AUROC and F1 swing by a tenth or more between draws.
MIN_SPLIT_PATIENTS = 30
MIN_CLASS_PATIENTS = 10


def class_names(processor: Any) -> list[str] | None:
    """Class names in output order for a fitted label processor: binary ``[negative,
    positive]`` (``["0", "1"]`` for 0/1 labels), multiclass and multilabel its classes;
    ``None`` for regression."""
    label_map = getattr(processor, "label_map", None)
    if isinstance(label_map, Mapping):
        return [name for name, _ in sorted(label_map.items(), key=lambda item: item[1])]
    classes = getattr(processor, "classes", None)
    return [str(c) for c in classes] if classes is not None else None


def task_record(model: Any) -> dict[str, Any]:
    """``{"label", "mode", "classes", "positive_class"}`` of a model's (first) label, for its
    card; ``positive_class`` (the class the binary probability is about) is ``None`` unless
    the label is binary."""
    label, processor = next(iter(model.schema.output_processors.items()))
    classes = class_names(processor)
    positive = classes[1] if processor.schema == "binary" and classes else None
    return {
        "label": label, "mode": processor.schema, "classes": classes, "positive_class": positive
    }  # fmt: skip


def class_order_text(task: Mapping[str, Any]) -> str | None:
    """One line naming the classes in output order and, for a binary label, the positive
    class; ``None`` for a task without classes.

    Example:
        >>> class_order_text({"mode": "binary", "classes": ["low", "high"]})
        'classes (output order): 0: low, 1: high; positive class: high'
    """
    classes = task.get("classes")
    if not classes:
        return None
    text = "classes (output order): " + ", ".join(f"{i}: {c}" for i, c in enumerate(classes))
    if task.get("mode") == "binary" and len(classes) == 2:
        text += f"; positive class: {classes[1]}"
    return text


def card_classes(card: Mapping[str, Any], model: Any | None = None) -> list[str] | None:
    """The class order of a model: from its card, or (cards written before it was recorded)
    from the model's label processor."""
    task = card.get("task")
    if isinstance(task, Mapping) and "classes" in task:
        return task["classes"]
    return task_record(model)["classes"] if model is not None else None


def resolve_target(value: str | int | None, classes: Sequence[str] | None) -> int | None:
    """The class index that ``value`` names: an index, or a class name of ``classes``
    (exact match first, then ignoring case).

    Raises:
        UsageValueError: (a ``ValueError``) no such class, or an index out of range; the
            message lists the classes in order with their indices.

    Example:
        >>> classes = ["low", "medium", "high"]
        >>> resolve_target("2", classes), resolve_target("High", classes)
        (2, 2)
    """
    if value is None:
        return None
    text = str(value).strip()
    listed = ", ".join(f"{i}: {name}" for i, name in enumerate(classes)) if classes else "unknown"
    if classes:
        if text in classes:
            return list(classes).index(text)
        folded = [name.lower() for name in classes]
        if folded.count(text.lower()) == 1:
            return folded.index(text.lower())
    try:
        index = int(text)
    except ValueError:
        raise UsageValueError(
            f"--target {text!r} is not a class of this model; classes in output order: {listed}"
        ) from None
    if classes and not 0 <= index < len(classes):
        raise UsageValueError(
            f"--target {index} is out of range; classes in output order: {listed}"
        )
    return index


def small_split_warning(
    name: str, labels: Sequence[Any], metrics: Sequence[str], classes: Sequence[str] | None = None
) -> str | None:
    """A warning when the ``name`` split (its patients' processed ``labels``: class indices,
    binary ``[0.]`` / ``[1.]``) is too small for the
    ``metrics`` it reports: fewer than :data:`MIN_SPLIT_PATIENTS` patients, or (class labels)
    fewer than :data:`MIN_CLASS_PATIENTS` of some class; ``None`` when it is large enough.

    Example:
        >>> small_split_warning("test", [0, 1], ["roc_auc"], classes=["0", "1"])
        'the test split holds 2 patient(s) (1 of class 0, 1 of class 1): its roc_auc ...'
    """
    n = len(labels)
    counts: Counter[str] = Counter()
    if classes is not None:
        counts = Counter(_class_of(label, classes) for label in labels)
        for name_ in classes:
            counts.setdefault(name_, 0)
    few = [c for c, k in counts.items() if k < MIN_CLASS_PATIENTS]
    if n >= MIN_SPLIT_PATIENTS and not few:
        return None
    detail = ", ".join(f"{k} of class {c}" for c, k in counts.items()) if counts else ""
    shown = ", ".join(metrics) or "metrics"
    return (
        f"the {name} split holds {n} patient(s)"
        + (f" ({detail})" if detail else "")
        + f": its {shown} are unreliable (wanted at least {MIN_SPLIT_PATIENTS} patients and "
        f"{MIN_CLASS_PATIENTS} of each class); train on more patients"
    )


def _class_of(label: Any, classes: Sequence[str]) -> str:
    """The class name of a processed label (a class index, or binary ``[0.]`` / ``[1.]``)."""
    if hasattr(label, "tolist"):
        label = label.tolist()
    if isinstance(label, list) and len(label) == 1:
        label = label[0]
    index = int(label)
    return classes[index] if 0 <= index < len(classes) else str(label)
