"""Sanity checks for explanations (Adebayo et al., "Sanity Checks for Saliency Maps",
NeurIPS 2018): does the explanation change when what it explains is destroyed?

- :class:`ModelParameterRandomisation`: cascading randomisation of the model's weights, from
  the output layer down to the input; after each step, every patient's explanation is compared
  with the explanation of the trained model.
- :class:`DataRandomisation`: the same comparison against a model of the same architecture
  trained on shuffled labels (trained by the caller, e.g. ``ehrlens.app``).

The comparison is Spearman's rank correlation over each patient's real input units (all
features together), averaged over patients with a percentile-bootstrap interval. A method
passes when the correlation falls: an explanation that stays highly correlated with the
trained model's explanation after the model was randomised does not explain the model.

Example:
    >>> check = ModelParameterRandomisation("attnlrp", layers=["head", "encoders.*", "*"])
    >>> result = check(model, batch)
    >>> [row.step for row in result.rows]   # each with the rank correlation's summary
    ['head', 'encoders.*', '*']
"""

from __future__ import annotations

import copy
import fnmatch
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..interpret import BaseInterpreter, make_interpreter
from .evaluator import MetricSummary, bootstrap_interval
from .removal import model_processors, unit_mask

__all__ = [
    "DataRandomisation",
    "ModelParameterRandomisation",
    "SanityResult",
    "SanityRow",
    "explanation_vectors",
    "parameter_layers",
    "randomise_parameters",
    "rank_correlation",
]


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties given the mean of the ranks they span."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=float)
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two vectors of equal length (ties: mean ranks);
    ``nan`` when either is constant or they have fewer than 2 entries.

    Example:
        >>> rank_correlation(np.array([1.0, 2.0, 3.0]), np.array([10.0, 30.0, 20.0]))
        0.5
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"expected two vectors of equal length, got {a.shape} and {b.shape}")
    if a.size < 2:
        return math.nan
    ra, rb = _ranks(a) - (a.size + 1) / 2, _ranks(b) - (b.size + 1) / 2
    scale = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / scale) if scale > 0 else math.nan


def explanation_vectors(
    scores: Mapping[str, Tensor], batch: Mapping[str, Any], model: Any
) -> list[np.ndarray]:
    """Each sample's scores at its real input units, features concatenated in key order:
    one vector per sample (padding left out)."""
    keys = sorted(scores)
    processors = model_processors(model, batch, keys)
    per_sample: list[list[np.ndarray]] = []
    for key in keys:
        values = batch[key]
        real = unit_mask(key, values, batch, processors.get(key))
        flat_scores = scores[key].detach().float().reshape(values.shape[0], -1).cpu().numpy()
        flat_real = real.reshape(values.shape[0], -1).cpu().numpy()
        for i in range(values.shape[0]):
            if len(per_sample) <= i:
                per_sample.append([])
            per_sample[i].append(flat_scores[i][flat_real[i]])
    return [np.concatenate(parts) for parts in per_sample]


def parameter_layers(model: nn.Module) -> list[str]:
    """Names of the modules that own parameters directly, output side first (the reverse of
    registration order), the default steps of the cascading randomisation."""
    names = [
        name or "<model>"
        for name, module in model.named_modules()
        if any(True for _ in module.parameters(recurse=False))
    ]
    return names[::-1]


def _matches(parameter: str, pattern: str) -> bool:
    module = parameter.rpartition(".")[0] or "<model>"
    return (
        fnmatch.fnmatchcase(module, pattern)
        or fnmatch.fnmatchcase(parameter, pattern)
        or fnmatch.fnmatchcase(module, pattern + ".*")  # a module and everything inside it
    )


def randomise_parameters(model: nn.Module, pattern: str, generator: torch.Generator) -> int:
    """Redraw, in place, every parameter whose module (or own) name matches ``pattern``
    (a glob, or a module prefix): ``N(0, rms(p)^2)``, so each tensor keeps its scale. Returns
    the number of tensors redrawn."""
    count = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if _matches(name, pattern):
                rms = float(p.detach().double().pow(2).mean().sqrt()) or 1.0
                noise = torch.randn(p.shape, generator=generator, dtype=torch.float64) * rms
                p.copy_(noise.to(p.dtype))
                count += 1
    return count


@dataclass(frozen=True)
class SanityRow:
    """One step of a sanity check: its name, the mean rank correlation with the trained
    model's explanations over patients (with a bootstrap interval), and the per-patient
    values."""

    step: str
    summary: MetricSummary
    per_sample: np.ndarray = field(repr=False)


@dataclass
class SanityResult:
    """The rows of one check for one method.

    Example:
        >>> result = ModelParameterRandomisation("rollout", layers=["head"])(model, batch)
        >>> list(result.to_frame().columns)
        ['check', 'method', 'step', 'mean', 'low', 'high', 'n']
    """

    check: str
    method: str
    rows: list[SanityRow]

    def to_records(self) -> list[dict[str, Any]]:
        return [
            {
                "check": self.check,
                "method": self.method,
                "step": row.step,
                "mean": row.summary.mean,
                "low": row.summary.low,
                "high": row.summary.high,
                "n": row.summary.n,
            }
            for row in self.rows
        ]

    def to_frame(self) -> Any:
        """A ``pandas.DataFrame`` of :meth:`to_records` (pandas: ``ehrlens[parquet]``)."""
        import pandas as pd

        return pd.DataFrame(self.to_records())


def _interpreter(method: str | type[BaseInterpreter], model: Any, params: Mapping[str, Any]):
    if isinstance(method, str):
        return make_interpreter(method, model, **params)
    return method(model, **params)


def _method_name(method: str | type[BaseInterpreter]) -> str:
    return method if isinstance(method, str) else method.name


class _Check:
    def __init__(
        self,
        method: str | type[BaseInterpreter],
        method_params: Mapping[str, Any] | None = None,
        absolute: bool = False,
        n_bootstrap: int = 1000,
        seed: int = 0,
    ) -> None:
        if n_bootstrap < 1:
            raise ValueError(f"n_bootstrap must be >= 1, got {n_bootstrap}")
        self.method = method
        self.method_params = dict(method_params or {})
        self.absolute = absolute
        self.n_bootstrap = n_bootstrap
        self.seed = seed

    def _explain(self, model: Any, batch: Mapping[str, Any], target: Any) -> list[np.ndarray]:
        interpreter = _interpreter(self.method, model, self.method_params)
        scores = interpreter.attribute(target, **batch)
        vectors = explanation_vectors(scores, batch, model)
        return [np.abs(v) for v in vectors] if self.absolute else vectors

    def _row(self, step: str, reference: list[np.ndarray], other: list[np.ndarray]) -> SanityRow:
        values = np.array(
            [rank_correlation(a, b) for a, b in zip(reference, other, strict=True)], dtype=float
        )
        summary = bootstrap_interval(values, self.n_bootstrap, self.seed)
        return SanityRow(step, summary, values)


class ModelParameterRandomisation(_Check):
    """Cascading model-parameter randomisation (Adebayo et al., 2018), output side first.

    Step by step, the parameters of each layer in ``layers`` are redrawn (keeping each
    tensor's scale, :func:`randomise_parameters`) on a copy of the model, earlier steps kept
    (cascading); after each step the method explains ``batch`` again and each patient's
    explanation is rank-correlated with the trained model's.

    Args:
        method: a registered method name (``"attnlrp"``) or an interpreter class.
        method_params: constructor options of the method.
        layers: the steps, in order: glob patterns or module prefixes matched against the
            model's module names (e.g. ``["head", "encoders.*.blocks.1", "*"]``). Default: every
            module that owns parameters, output side first (:func:`parameter_layers`).
        absolute: correlate absolute scores (as Adebayo et al. also report).
        n_bootstrap / seed: the bootstrap interval over patients, and the seed of the
            redrawn weights.

    Returns (from ``__call__(model, batch, target_class_idx=None)``): a
    :class:`SanityResult` with one row per step. The model itself is never changed.

    Example:
        >>> check = ModelParameterRandomisation("chefer", layers=["head", "*"])
        >>> -1.0 <= check(model, batch).rows[-1].summary.mean <= 1.0    # near 0: Chefer passes
        True
    """

    def __init__(
        self,
        method: str | type[BaseInterpreter],
        method_params: Mapping[str, Any] | None = None,
        layers: Sequence[str] | None = None,
        absolute: bool = False,
        n_bootstrap: int = 1000,
        seed: int = 0,
    ) -> None:
        super().__init__(method, method_params, absolute, n_bootstrap, seed)
        self.layers = None if layers is None else list(layers)

    def __call__(
        self, model: nn.Module, batch: Mapping[str, Any], target_class_idx: Any = None
    ) -> SanityResult:
        layers = parameter_layers(model) if self.layers is None else self.layers
        if not layers:
            raise ValueError(f"{type(model).__name__} has no parameters to randomise")
        reference = self._explain(model, batch, target_class_idx)
        randomised = copy.deepcopy(model)
        generator = torch.Generator().manual_seed(self.seed)
        rows = []
        for step in layers:
            if randomise_parameters(randomised, step, generator) == 0:
                raise ValueError(
                    f"layer pattern {step!r} matches no parameter of {type(model).__name__}; "
                    f"its modules with parameters are: {', '.join(parameter_layers(model))}"
                )
            rows.append(
                self._row(step, reference, self._explain(randomised, batch, target_class_idx))
            )
        return SanityResult("model_parameter_randomisation", _method_name(self.method), rows)


class DataRandomisation(_Check):
    """Data (label) randomisation (Adebayo et al., 2018): the method's explanations of the
    trained model against those of the same architecture trained on shuffled labels.

    Training is the caller's (``ehrlens.app`` trains models); this check compares.

    Args: as :class:`ModelParameterRandomisation`, without ``layers``.

    Returns (from ``__call__(model, random_label_model, batch, target_class_idx=None)``): a
    :class:`SanityResult` with one row, step ``"random_labels"``.

    Example:
        >>> shuffled_model = copy.deepcopy(model)   # in practice: trained on shuffled labels
        >>> DataRandomisation("attnlrp")(model, shuffled_model, batch).rows[0].summary.mean
        1.0
    """

    def __call__(
        self,
        model: nn.Module,
        random_label_model: nn.Module,
        batch: Mapping[str, Any],
        target_class_idx: Any = None,
    ) -> SanityResult:
        reference = self._explain(model, batch, target_class_idx)
        other = self._explain(random_label_model, batch, target_class_idx)
        row = self._row("random_labels", reference, other)
        return SanityResult("data_randomisation", _method_name(self.method), [row])
