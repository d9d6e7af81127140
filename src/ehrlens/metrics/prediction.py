"""Prediction metrics by task mode, computed with scikit-learn (extra ``ehrlens[train]``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_METRICS = {
    "binary": ["roc_auc", "pr_auc", "f1", "accuracy"],
    "multiclass": ["accuracy", "f1_macro", "roc_auc_ovr"],
    "multilabel": ["roc_auc_macro", "pr_auc_macro", "f1_micro"],
    "regression": ["mse", "mae", "r2"],
}
#: Metrics where lower is better; every other one is maximised.
LOWER_IS_BETTER = {"loss", "mse", "mae"}


def _sklearn():
    try:
        from sklearn import metrics
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "prediction metrics need scikit-learn: pip install 'ehrlens[train]'"
        ) from error
    return metrics


def compute_metrics(
    mode: str, y_true: np.ndarray, y_prob: np.ndarray, names: Sequence[str] | None = None
) -> dict[str, float]:
    """Compute named metrics for one task mode.

    Args:
        mode: ``"binary"``, ``"multiclass"``, ``"multilabel"`` or ``"regression"``.
        y_true: binary ``[n]`` or ``[n, 1]``; multiclass ``[n]`` class ids; multilabel
            ``[n, labels]``; regression ``[n]`` or ``[n, 1]``.
        y_prob: probabilities (binary ``[n, 1]``, multiclass ``[n, classes]``, multilabel
            ``[n, labels]``) or predictions (regression).
        names: metric names (default: :data:`DEFAULT_METRICS` for the mode).

    A metric that is undefined on the data (AUROC with one class present) is ``nan``.

    Example:
        >>> compute_metrics("binary", np.array([0, 1, 1]), np.array([0.2, 0.9, 0.6]))["roc_auc"]
        1.0
    """
    m = _sklearn()
    names = list(names) if names is not None else DEFAULT_METRICS[mode]
    y_true = np.asarray(y_true)
    y_prob = np.asarray(y_prob)
    if mode in ("binary", "regression"):
        y_true, y_prob = y_true.reshape(-1), y_prob.reshape(-1)

    def safe(fn) -> float:
        try:
            return float(fn())
        except ValueError:
            return float("nan")

    table = {
        "roc_auc": lambda: m.roc_auc_score(y_true, y_prob),
        "pr_auc": lambda: m.average_precision_score(y_true, y_prob),
        "f1": lambda: m.f1_score(y_true, y_prob >= 0.5),
        "accuracy": lambda: (
            m.accuracy_score(y_true, y_prob.argmax(-1))
            if mode == "multiclass"
            else m.accuracy_score(y_true, y_prob >= 0.5)
        ),
        "f1_macro": lambda: m.f1_score(y_true, y_prob.argmax(-1), average="macro"),
        "roc_auc_ovr": lambda: m.roc_auc_score(
            y_true, y_prob, multi_class="ovr", labels=np.arange(y_prob.shape[1])
        ),
        "roc_auc_macro": lambda: m.roc_auc_score(y_true, y_prob, average="macro"),
        "pr_auc_macro": lambda: m.average_precision_score(y_true, y_prob, average="macro"),
        "f1_micro": lambda: m.f1_score(y_true, y_prob >= 0.5, average="micro"),
        "mse": lambda: m.mean_squared_error(y_true, y_prob),
        "mae": lambda: m.mean_absolute_error(y_true, y_prob),
        "r2": lambda: m.r2_score(y_true, y_prob),
    }
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {sorted(table)}")
    return {name: safe(table[name]) for name in names}
