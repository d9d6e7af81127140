"""Plots of explanations and their evaluation (extra ``ehrlens[plot]``: matplotlib).

Each function draws one figure, writes a PNG atomically and returns its path; nothing is shown
on screen (the Agg backend is used), so they work on servers.

Example:
    >>> plot_patient_heatmap(frame, "P000123", "p123.png")
    PosixPath('p123.png')
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.files import atomic_write


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:  # pragma: no cover - exercised only without the extra
        raise ImportError("plots need matplotlib: pip install 'ehrlens[plot]'") from error
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Any, path: str | os.PathLike) -> Path:
    plt = _pyplot()
    path = Path(path)
    with atomic_write(path, "wb") as f:
        figure.savefig(f, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    return path


def patient_grid(frame: Any, patient_id: str, method: str) -> tuple[np.ndarray, list, list]:
    """Scores of one patient and method summed per ``(feature, visit)``:
    ``([features, visits] array, feature names, visit labels)``. Flat features (no visits)
    fill one column labelled ``"all"``.

    Example:
        >>> grid, features, visits = patient_grid(frame, "P000123", "rollout")
        >>> grid.shape, features   # [features, visits]
        ((3, ...), ['diagnoses', 'procedures', 'drugs'])
    """
    rows = frame[(frame["patient_id"] == patient_id) & (frame["method"] == method)]
    if len(rows) == 0:
        raise ValueError(f"no attributions for patient {patient_id!r} and method {method!r}")
    features = list(dict.fromkeys(rows["feature"]))
    visits = sorted({int(v) for v in rows["visit"].dropna()})
    labels: list = [f"v{v}" for v in visits]
    flat = rows["visit"].isna()
    if flat.any():
        labels.append("all")
    grid = np.zeros((len(features), len(labels)))
    column = {v: i for i, v in enumerate(visits)}
    for f, null, v, s in zip(rows["feature"], flat, rows["visit"], rows["score"], strict=True):
        j = len(labels) - 1 if null else column[int(v)]  # null: NaN, None or pd.NA
        grid[features.index(f), j] += s
    return grid, features, labels


def plot_patient_heatmap(
    frame: Any, patient_id: str, path: str | os.PathLike, methods: list[str] | None = None
) -> Path:
    """Heatmap of one patient's scores, features × visits, one panel per method.

    Example:
        >>> plot_patient_heatmap(frame, "P000123", "P000123.png")
        PosixPath('P000123.png')
    """
    plt = _pyplot()
    methods = methods or list(dict.fromkeys(frame["method"]))
    figure, axes = plt.subplots(
        len(methods), 1, figsize=(10, 1.2 + 1.1 * len(methods) * 2), squeeze=False
    )
    for ax, method in zip(axes[:, 0], methods, strict=True):
        grid, features, labels = patient_grid(frame, patient_id, method)
        image = ax.imshow(grid, aspect="auto", cmap="Reds")
        ax.set_yticks(range(len(features)), features)
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        shown = patient_id if str(patient_id).isprintable() else repr(patient_id)  # no glyph
        ax.set_title(f"{method}: patient {shown}", fontsize=10)
        figure.colorbar(image, ax=ax, label="score")
    figure.tight_layout()
    return _save(figure, path)


def plot_faithfulness_curves(results: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Probability drop against percent removed, per method: comprehensiveness (top codes
    removed) and sufficiency (only top codes kept), from ``EvaluationResult.curve``.

    Example:
        >>> evaluator = Evaluator(model)
        >>> results = {"rollout": evaluator.evaluate(loader, rollout, "rollout")}
        >>> plot_faithfulness_curves(results, "faithfulness.png")
        PosixPath('faithfulness.png')
    """
    plt = _pyplot()
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for name, result in results.items():
        curve = result.curve
        if not curve or "percent" not in curve:
            raise ValueError(f"method {name!r}: the evaluation result has no curve")
        x = curve["percent"]
        left.plot(x, curve["comprehensiveness"], marker="o", label=name)
        right.plot(x, curve["sufficiency"], marker="o", label=name)
    left.set_title("comprehensiveness (top codes removed)")
    right.set_title("sufficiency (only top codes kept)")
    for ax in (left, right):
        ax.set_xlabel("percent of codes")
        ax.grid(alpha=0.3)
    left.set_ylabel("drop in predicted probability")
    right.legend()
    figure.tight_layout()
    return _save(figure, path)


def plot_layer_correlations(correlations: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """The paper table as lines: mean Spearman correlation per layer, per method, one panel per
    reference (``benchmarks/paper_table.py``'s ``correlations``:
    ``{reference: {method: [{"layer", "mean", "std"}, ...]}}``).

    Example:
        >>> correlations = {"chefer": {"rollout": [{"layer": 0, "mean": 0.4, "std": 0.1},
        ...                                        {"layer": 1, "mean": 0.6, "std": 0.1}]}}
        >>> plot_layer_correlations(correlations, "layers.png")
        PosixPath('layers.png')
    """
    plt = _pyplot()
    references = list(correlations)
    figure, axes = plt.subplots(1, len(references), figsize=(5 * len(references), 4), squeeze=False)
    for ax, reference in zip(axes[0], references, strict=True):
        for method, rows in correlations[reference].items():
            layers = [r["layer"] for r in rows]
            means = np.array([r["mean"] for r in rows], dtype=float)
            stds = np.array([r.get("std", 0.0) for r in rows], dtype=float)
            ax.plot(layers, means, marker="o", label=method)
            ax.fill_between(layers, means - stds, means + stds, alpha=0.12)
        ax.set_title(f"correlation with {reference}")
        ax.set_xlabel("layer")
        ax.set_ylabel("mean Spearman correlation")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.tight_layout()
    return _save(figure, path)


def plot_sanity_checks(results: Sequence[Any], path: str | os.PathLike) -> Path:
    """Sanity checks as lines: the mean rank correlation with the trained model's explanation
    after each randomisation step, with its bootstrap interval, one line per method
    (:class:`~ehrlens.metrics.SanityResult` objects, steps in the order they were run).

    Example:
        >>> results = [ModelParameterRandomisation(m)(model, batch) for m in ("attnlrp", "rollout")]
        >>> plot_sanity_checks(results, "sanity.png")
        PosixPath('sanity.png')
    """
    plt = _pyplot()
    if not results:
        raise ValueError("plot_sanity_checks needs at least one SanityResult")
    steps = [row.step for row in results[0].rows]
    figure, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(steps) + 3), 4))
    x = np.arange(len(steps))
    for result in results:
        if [row.step for row in result.rows] != steps:
            raise ValueError(f"method {result.method!r}: its steps differ from the first result's")
        means = np.array([row.summary.mean for row in result.rows], dtype=float)
        low = np.array([row.summary.low for row in result.rows], dtype=float)
        high = np.array([row.summary.high for row in result.rows], dtype=float)
        ax.plot(x, means, marker="o", label=result.method)
        ax.fill_between(x, low, high, alpha=0.15)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels(steps, rotation=60, ha="right", fontsize=7)
    ax.set_xlabel("randomised down to (cascading, output side first)")
    ax.set_ylabel("rank correlation with the trained model")
    ax.set_title(results[0].check.replace("_", " "))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    figure.tight_layout()
    return _save(figure, path)
