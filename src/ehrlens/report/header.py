"""What a report says about the model and its evaluation: the model card line and the
faithfulness table written by ``ehrlens evaluate --out``.

Example:
    >>> model, card = load_model_dir("model/")
    >>> items = card_items(card)          # [("model", "Transformer 3f2a9c01d4e5"), ...]
    >>> rows = read_evaluation("faithfulness.json")
    >>> text = faithfulness_table(rows)   # HTML <table>, each metric says which way is better
    >>> items[0][0], text.startswith("<table")
    ('model', True)
"""

from __future__ import annotations

import csv
import html
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: Where a card may keep the label's class names, in the order of the model's outputs.
CLASS_NAME_KEYS = (("task", "classes"), ("classes",))

#: Summary metrics of an evaluation, their heading and whether higher is better.
EVALUATION_METRICS: tuple[tuple[str, str, bool], ...] = (
    ("comprehensiveness", "comprehensiveness", True),
    ("sufficiency", "sufficiency", False),
    ("precision@", "precision@k of planted codes", True),
    ("recall@", "recall@k of planted codes", True),
    ("signal_auroc", "AUROC of planted codes", True),
)


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def class_names(card: Mapping[str, Any] | None) -> list[str] | None:
    """The label's class names in output order, when the card records them; else None.

    Example:
        >>> class_names({"task": {"classes": ["low", "mid", "high"]}})
        ['low', 'mid', 'high']
    """
    if not card:
        return None
    for path in CLASS_NAME_KEYS:
        value: Any = card
        for key in path:
            value = value.get(key) if isinstance(value, Mapping) else None
        if isinstance(value, Mapping):  # {label_key: [names]}
            value = next(iter(value.values()), None) if len(value) == 1 else None
        if isinstance(value, (list, tuple)) and value:
            return [str(v) for v in value]
    return None


def output_mode(card: Mapping[str, Any] | None) -> str | None:
    """The label's output schema (``"binary"``, ``"multiclass"``, ...) from the card."""
    task = (card or {}).get("task")
    if isinstance(task, Mapping) and task.get("mode"):
        return str(task["mode"])
    schema = (card or {}).get("output_schema")
    if isinstance(schema, Mapping) and len(schema) == 1:
        return str(next(iter(schema.values())))
    return None


def explained_class(card: Mapping[str, Any] | None, target: int | None = None) -> str:
    """What the scores explain, in words: the class by name when the card has names.

    ``target`` is the class index the interpreters were given (``None``: their default, the
    positive class for binary labels and each patient's predicted class for multiclass).

    Example:
        >>> explained_class({"task": {"mode": "binary", "classes": ["alive", "died"]}})
        'died (class 1)'
    """
    names = class_names(card)
    mode = output_mode(card)

    def named(index: int) -> str:
        if names is not None and 0 <= index < len(names) and names[index] != str(index):
            return f"{names[index]} (class {index})"
        return f"class {index}"

    if target is not None:
        return named(target)
    if mode == "binary":
        return named(1)
    if mode == "multiclass":
        return "each patient's predicted class"
    if mode == "regression":
        return "the predicted value"
    if mode == "multilabel":
        return "each patient's most probable label"
    return "the model's default output"


def card_items(card: Mapping[str, Any] | None, target: int | None = None) -> list[tuple[str, str]]:
    """``(name, value)`` pairs shown in the report header: model, data, test metrics, the
    class explained. Fields the card lacks are left out.

    Example:
        >>> card_items({"model_class": "Transformer", "model_id": "3f2a9c01d4e5"})
        [('model', 'Transformer 3f2a9c01d4e5'), ('explains', "the model's default output")]
    """
    card = card or {}
    items: list[tuple[str, str]] = []
    model = " ".join(str(card[k]) for k in ("model_class", "model_id") if card.get(k))
    if model:
        items.append(("model", model))
    data = card.get("data")
    data = data if isinstance(data, Mapping) else {}
    if data:
        parts = []
        if data.get("path"):
            parts.append(Path(str(data["path"])).name)
        if data.get("n_patients") is not None:
            parts.append(f"{data['n_patients']} patients")
        sizes = [f"{data[f'n_{p}']} {p}" for p in ("train", "val", "test") if f"n_{p}" in data]
        if sizes:
            parts.append("split " + " / ".join(sizes))
        if parts:
            items.append(("data", ", ".join(parts)))
    metrics = card.get("test_metrics")
    metrics = metrics if isinstance(metrics, Mapping) else {}
    shown = {"roc_auc": "AUROC", "pr_auc": "AUPRC", "accuracy": "accuracy", "mse": "MSE"}
    values = [f"{label} {_number(metrics[key])}" for key, label in shown.items() if key in metrics]
    if values:
        items.append(("test", ", ".join(values)))
    if card or target is not None:
        items.append(("explains", explained_class(card, target)))
    return items


def _number(value: Any) -> str:
    if value is None:
        return "n/a"
    value = float(value)
    return "n/a" if not math.isfinite(value) else f"{value:.3f}"


def card_html(card: Mapping[str, Any] | None, target: int | None = None) -> str:
    """The header's model card line as HTML (empty without a card or target)."""
    items = card_items(card, target)
    if not items:
        return ""
    cells = "".join(
        f"<div data-item='{_esc(name)}'><b>{_esc(name)}</b>{_esc(value)}</div>"
        for name, value in items
    )
    return f"<div class='card'>{cells}</div>"


def read_evaluation(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows ``ehrlens evaluate --out`` wrote (JSON ``{"results": [...]}`` or CSV), one
    per method, numbers as floats.

    Raises:
        ValueError: the file is not such a table (it names the file and what is missing).

    Example:
        >>> rows = read_evaluation("faithfulness.json")
        >>> rows[0]["method"], rows[0]["comprehensiveness"]
        ('rollout', 0.2)
    """
    path = Path(path)
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            rows: Any = list(csv.DictReader(f))
    else:
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{path}: not JSON written by `ehrlens evaluate --out` ({error})"
            ) from error
        rows = document.get("results") if isinstance(document, Mapping) else None
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{path}: expected evaluation rows (`ehrlens evaluate --out`), found none")
    out = []
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, Mapping) or "method" not in row or "comprehensiveness" not in row:
            raise ValueError(
                f"{path}: row {number} lacks 'method' or 'comprehensiveness' "
                "(expected the output of `ehrlens evaluate --out`)"
            )
        out.append({k: v if k == "method" else _as_float(v) for k, v in row.items()})
    return out


def _as_float(value: Any) -> Any:
    if value is None or value == "":
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def faithfulness_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The evaluation as an HTML table: mean and 95% interval per metric, each heading saying
    whether higher or lower is better.

    Example:
        >>> faithfulness_table([{"method": "rollout", "comprehensiveness": 0.2}])
        "<table class='faithfulness'>...rollout...</table>"
    """
    present = [
        (key, title, higher)
        for key, title, higher in EVALUATION_METRICS
        if any(_metric_key(row, key) for row in rows)
    ]
    head = "".join(
        f"<th data-metric='{_esc(key)}'>{_esc(title)} "
        f"<span class='better'>{'higher' if higher else 'lower'} is better</span></th>"
        for key, title, higher in present
    )
    body = []
    for row in rows:
        cells = []
        for key, _, _ in present:
            name = _metric_key(row, key)
            if name is None:
                cells.append("<td class='num'>n/a</td>")
                continue
            low, high = row.get(f"{name}_low"), row.get(f"{name}_high")
            interval = ""
            if low is not None and high is not None:
                interval = f" [{_number(low)}, {_number(high)}]"
            cells.append(f"<td class='num'>{_number(row[name])}{interval}</td>")
        scored = row.get("n_scored")
        scored_text = "n/a" if scored is None or not math.isfinite(float(scored)) else int(scored)
        body.append(
            f"<tr data-method='{_esc(row['method'])}'><td>{_esc(row['method'])}</td>"
            f"{''.join(cells)}<td class='num'>{scored_text}</td></tr>"
        )
    return (
        f"<table class='faithfulness'><tr><th>method</th>{head}<th>patients scored</th></tr>"
        f"{''.join(body)}</table>"
    )


def _metric_key(row: Mapping[str, Any], key: str) -> str | None:
    """The row's column for a metric; ``precision@`` / ``recall@`` match any ``k``."""
    if key.endswith("@"):
        for name in row:
            if name.startswith(key) and not name.endswith(("_low", "_high")):
                return name
        return None
    return key if key in row else None
