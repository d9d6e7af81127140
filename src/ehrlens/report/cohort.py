"""Cohort-level code importance: each code's score per patient, averaged over the explained
patients, with a bootstrap interval over patients.

Example:
    >>> rows = explain_cohort(code_transformer, test, ["rollout"]).to_frame()   # code scores
    >>> table = code_importance(rows, n_boot=1000, seed=0)
    >>> list(table.columns)
    ['method', 'feature', 'code', 'mean', 'low', 'high', 'patients']
    >>> table["mean"].is_monotonic_decreasing   # one method: its codes by decreasing mean
    True
    >>> bool(table["patients"].between(1, 20).all())   # patients with the code, of 20
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Columns of :func:`code_importance`.
IMPORTANCE_COLUMNS = ("method", "feature", "code", "mean", "low", "high", "patients")


def code_importance(
    frame: Any, *, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0
) -> Any:
    """Per method, feature and code: the code's score summed within each patient, averaged
    over every explained patient (0 for a patient without the code), with a percentile
    bootstrap interval over patients, and the number of patients with the code.

    Rows of visit-level scores (``level == "visit"``: a visit's score repeated on each of its
    codes) are left out: they are not a code's own score.

    Args:
        frame: attribution rows (:data:`~ehrlens.explain.ATTRIBUTION_COLUMNS`).
        n_boot: bootstrap resamples of the patients (0: no interval, ``low``/``high`` NaN).
        confidence: the interval's coverage.
        seed: the resampling's seed.

    Returns:
        pandas DataFrame, columns :data:`IMPORTANCE_COLUMNS`, per method the codes by
        decreasing mean.

    Raises:
        ValueError: ``n_boot`` below 0 or ``confidence`` not in (0, 1).

    Example:
        ``frame`` holds visit-level scores only (its model pools each visit's codes), so
        there is no code to rank; a model with a score per code has some:

        >>> code_importance(frame).empty
        True
        >>> rows = explain_cohort(code_transformer, test, ["rollout", "chefer"]).to_frame()
        >>> top = code_importance(rows).query("method == 'rollout'").head(3)
        >>> len(top), list(top["method"].unique())
        (3, ['rollout'])
    """
    import pandas as pd

    if n_boot < 0 or not 0 < confidence < 1:
        raise ValueError(f"need n_boot >= 0 and 0 < confidence < 1, got {n_boot}, {confidence}")
    rng = np.random.default_rng(seed)
    parts = []
    patients = list(dict.fromkeys(frame["patient_id"]))
    n = len(patients)
    for method in dict.fromkeys(frame["method"]):
        sub = frame[frame["method"] == method]
        if "level" in sub:
            sub = sub[sub["level"] != "visit"]
        if sub.empty:
            continue
        summed = sub.groupby(["patient_id", "feature", "code"], sort=False)["score"].sum()
        matrix = summed.unstack(["feature", "code"], fill_value=0.0).reindex(patients)
        values = matrix.fillna(0.0).to_numpy(dtype=float)  # [patients, codes]
        mean = values.mean(axis=0)
        low = high = np.full_like(mean, np.nan)
        if n_boot:
            counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot)  # [n_boot, patients]
            means = counts @ values / n  # [n_boot, codes]
            tail = (1 - confidence) / 2 * 100
            low, high = np.percentile(means, [tail, 100 - tail], axis=0)
        present = (summed.groupby(level=["feature", "code"], sort=False).size()).reindex(
            matrix.columns
        )
        part = pd.DataFrame(
            {
                "method": method,
                "feature": [f for f, _ in matrix.columns],
                "code": [c for _, c in matrix.columns],
                "mean": mean,
                "low": low,
                "high": high,
                "patients": present.to_numpy(dtype=int),
            }
        )
        parts.append(part.sort_values("mean", ascending=False, kind="stable"))
    if not parts:
        return pd.DataFrame({name: [] for name in IMPORTANCE_COLUMNS})
    return pd.concat(parts, ignore_index=True)


__all__ = ["IMPORTANCE_COLUMNS", "code_importance"]
