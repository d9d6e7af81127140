"""Evaluator: every metric of one explanation method over a dataloader, with intervals."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..core.memory import check_fits
from ..core.progress import progress_bar
from ..data.dataset import LengthBucketSampler
from .faithfulness import (
    DEFAULT_PERCENTAGES,
    RemovalFaithfulness,
    SampleFilter,
    Target,
    on_model_device,
)
from .recovery import signal_recovery
from .removal import Ablation

logger = logging.getLogger(__name__)


@dataclass
class MetricSummary:
    """Mean over patients with a 95% percentile-bootstrap interval (``nan``-aware)."""

    mean: float
    low: float
    high: float
    n: int


def bootstrap_interval(
    values: np.ndarray, n_bootstrap: int = 1000, seed: int = 0, level: float = 0.95
) -> MetricSummary:
    """Mean of the finite ``values`` and a percentile bootstrap interval of that mean.

    Example:
        >>> bootstrap_interval(np.array([0.1, 0.4, 0.3]), n_bootstrap=200).mean
        0.2666...
    """
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return MetricSummary(math.nan, math.nan, math.nan, 0)
    rng = np.random.default_rng(seed)
    check_fits(
        16 * n_bootstrap * finite.size,  # the draws (int64) and the values they pick (float64)
        f"a bootstrap of {n_bootstrap:,} draws over {finite.size:,} patients",
    )
    draws = rng.integers(0, finite.size, size=(n_bootstrap, finite.size))
    means = finite[draws].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return MetricSummary(float(finite.mean()), float(low), float(high), int(finite.size))


@dataclass
class EvaluationResult:
    """Per-patient values and summaries of every metric for one method.

    Attributes:
        method: the method's name.
        per_sample: ``{metric: [n_scored]}`` (``nan`` where a metric is undefined).
        summaries: ``{metric: MetricSummary}``.
        n_patients: patients explained; ``n_scored``: patients the metrics scored.
        seconds_per_1000: attribution time per 1000 patients (metrics not included).
        curve: mean probability drop per percentage (comprehensiveness, sufficiency).
    """

    method: str
    per_sample: dict[str, np.ndarray]
    summaries: dict[str, MetricSummary]
    n_patients: int
    n_scored: int
    seconds_per_1000: float
    curve: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Flat dict: ``metric``, ``metric_low``, ``metric_high`` per metric, and counts."""
        out: dict[str, Any] = {
            "method": self.method,
            "n_patients": self.n_patients,
            "n_scored": self.n_scored,
            "seconds_per_1000": self.seconds_per_1000,
        }
        for name, summary in self.summaries.items():
            out[name] = summary.mean
            out[f"{name}_low"] = summary.low
            out[f"{name}_high"] = summary.high
        return out

    def to_frame(self):
        """One-row ``pandas.DataFrame`` of :meth:`to_dict` (needs pandas)."""
        try:
            import pandas as pd
        except ImportError as error:  # pragma: no cover - depends on the environment
            raise ImportError("to_frame needs pandas: pip install pandas") from error
        return pd.DataFrame([self.to_dict()])


class Evaluator:
    """Faithfulness (and, with ground truth, signal recovery) of a method over a dataloader.

    Args:
        model: the explained model.
        percentages / ablation / sample_filter / target: as :class:`RemovalFaithfulness`;
            the method is asked to explain the same class (``target_class_idx``), so that
            class-dependent methods (Chefer, gradients) explain what the metrics measure.
        ground_truth: ``{patient_id: {feature: [planted codes]}}`` to add ``precision@k``,
            ``recall@k`` and ``signal_auroc`` of planted codes (e.g. ``cohort.ground_truth``).
        k: cut-off of precision and recall.
        n_bootstrap / seed: bootstrap draws and their seed.
        progress: show a progress bar over batches (needs ``tqdm``).

    Example:
        >>> evaluator = Evaluator(model, ground_truth=cohort.ground_truth)
        >>> result = evaluator.evaluate(test_loader, AttentionRollout(model))
        >>> "comprehensiveness" in result.summaries, result.to_dict()["n_patients"]
        (True, 20)
    """

    def __init__(
        self,
        model: Any,
        percentages: Sequence[float] = DEFAULT_PERCENTAGES,
        ablation: Ablation = "zero",
        sample_filter: SampleFilter = "all",
        target: Target = "predicted",
        ground_truth: Mapping[str, Mapping[str, list[str]]] | None = None,
        k: int = 5,
        n_bootstrap: int = 1000,
        seed: int = 0,
        progress: bool = False,
    ) -> None:
        self.model = model
        self.faithfulness = RemovalFaithfulness(model, percentages, ablation, sample_filter, target)
        self.ground_truth = ground_truth
        self.k = int(k)
        self.n_bootstrap = int(n_bootstrap)
        self.seed = int(seed)
        self.progress = bool(progress)

    def evaluate(
        self, dataloader: Iterable[Mapping[str, Any]], method: Any, name: str | None = None
    ) -> EvaluationResult:
        """Explain every batch with ``method.attribute(target_class_idx=..., **batch)``, score it.

        The class explained is the class measured (see ``target``); class-agnostic methods
        ignore it. With a length-bucketed loader (``get_dataloader(...,
        bucket_by_length=True)``) the per-sample values are put back in dataset order, so
        the result equals that of an unbucketed loader (within float rounding).
        """
        name = name or type(method).__name__
        values: dict[str, list[np.ndarray]] = {}
        n_patients, seconds = 0, 0.0
        curves = []
        sampler = getattr(dataloader, "batch_sampler", None)
        buckets = sampler.batches if isinstance(sampler, LengthBucketSampler) else None
        positions: list[np.ndarray] = []
        bar = progress_bar(dataloader, self.progress, desc=f"evaluate {name}")
        for number, batch in enumerate(bar):
            batch = on_model_device(self.model, batch)  # a model trained on a GPU stays there
            targets = self.faithfulness.targets(batch)
            start = time.perf_counter()
            attributions = method.attribute(target_class_idx=targets[1], **batch)
            seconds += time.perf_counter() - start
            n_patients += len(batch["patient_id"])
            result = self.faithfulness(attributions, batch, targets)
            if buckets is not None:
                positions.append(np.asarray(buckets[number])[result.scored.cpu().numpy()])
            curves.append((result.curve(), result.n_scored))
            per_q = {
                "comprehensiveness": result.comprehensiveness.mean(1),
                "sufficiency": result.sufficiency.mean(1),
            }
            for i, q in enumerate(result.percentages):
                per_q[f"comprehensiveness@{q:g}"] = result.comprehensiveness[:, i]
                per_q[f"sufficiency@{q:g}"] = result.sufficiency[:, i]
            for metric, tensor in per_q.items():
                values.setdefault(metric, []).append(tensor.detach().cpu().numpy())
            if self.ground_truth is not None:
                scored = result.scored.tolist()
                schema = self.model.schema
                recovered = [
                    r
                    for r, keep in zip(
                        signal_recovery(attributions, batch, schema, self.ground_truth, self.k),
                        scored,
                        strict=True,
                    )
                    if keep
                ]
                names = {
                    "precision_at_k": f"precision@{self.k}",
                    "recall_at_k": f"recall@{self.k}",
                    "auroc": "signal_auroc",
                }
                for attribute, metric in names.items():
                    column = np.array([getattr(r, attribute) for r in recovered], dtype=float)
                    values.setdefault(metric, []).append(column)
        joined = {m: np.concatenate(v) if v else np.empty(0) for m, v in values.items()}
        if positions:  # bucketed batches: back to dataset order
            order = np.argsort(np.concatenate(positions), kind="stable")
            joined = {m: v[order] for m, v in joined.items()}
        n_scored = len(joined.get("comprehensiveness", []))
        summaries = {
            m: bootstrap_interval(v, self.n_bootstrap, self.seed) for m, v in joined.items()
        }
        logger.info("%s: %d patients, %d scored", name, n_patients, n_scored)
        return EvaluationResult(
            method=name,
            per_sample=joined,
            summaries=summaries,
            n_patients=n_patients,
            n_scored=n_scored,
            seconds_per_1000=1000 * seconds / max(n_patients, 1),
            curve=_merge_curves(curves),
        )


def _merge_curves(curves: list[tuple[dict[str, list[float]], int]]) -> dict[str, list[float]]:
    """Scored-weighted mean of per-batch curves."""
    total = sum(n for _, n in curves)
    if not curves or total == 0:
        return {}
    percent = curves[0][0]["percent"]
    merged = {"percent": percent}
    for metric in ("comprehensiveness", "sufficiency"):
        stacked = torch.tensor([[v * n for v in c[metric]] for c, n in curves])
        merged[metric] = (stacked.sum(0) / total).tolist()
    return merged
