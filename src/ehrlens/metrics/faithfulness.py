"""Removal-based faithfulness (DeYoung et al., "ERASER", ACL 2020).

- **Comprehensiveness** at ``q``: the drop in the explained class's probability when the
  top-``q``% most relevant inputs are removed (higher is better).
- **Sufficiency** at ``q``: the drop when *only* the top-``q``% are kept (lower is better).

Both are reported per percentage and averaged over the percentages (AOPC-style). The class
measured is, by default, the one predicted on the unmodified input (``target="predicted"``),
or a fixed class; it stays fixed across the ablated runs. Attributions should explain that same
class: :meth:`RemovalFaithfulness.targets` gives it, and :class:`~ehrlens.metrics.Evaluator`
passes it to the method as ``target_class_idx``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..core.modes import eval_mode
from ..data.dataset import move_to_device
from ..interpret.api import describe
from .removal import Ablation, model_processors, rank_units, remove_units, top_fraction_mask

DEFAULT_PERCENTAGES = (1, 5, 10, 20, 50)
SampleFilter = str | Callable[[Tensor, Tensor], Tensor]
Target = str | int


@dataclass
class FaithfulnessResult:
    """Per-sample drops for every percentage.

    Attributes:
        percentages: the ``q`` values, in percent.
        comprehensiveness: ``[n_scored, len(percentages)]``.
        sufficiency: ``[n_scored, len(percentages)]``.
        base_probability: ``[n_scored]`` probability of the explained class, unmodified.
        target: ``[n_scored]`` the explained (predicted) class.
        scored: ``[batch]`` which samples of the batch were scored (``sample_filter``).
    """

    percentages: tuple[float, ...]
    comprehensiveness: Tensor
    sufficiency: Tensor
    base_probability: Tensor
    target: Tensor
    scored: Tensor

    @property
    def n_scored(self) -> int:
        return int(self.scored.sum())

    def summary(self) -> dict[str, float]:
        """Means over scored samples: AOPC-style averages and one value per percentage."""
        out = {
            "comprehensiveness": float(self.comprehensiveness.mean()) if self.n_scored else 0.0,
            "sufficiency": float(self.sufficiency.mean()) if self.n_scored else 0.0,
            "n_scored": float(self.n_scored),
        }
        for i, q in enumerate(self.percentages):
            out[f"comprehensiveness@{q:g}"] = (
                float(self.comprehensiveness[:, i].mean()) if self.n_scored else 0.0
            )
            out[f"sufficiency@{q:g}"] = (
                float(self.sufficiency[:, i].mean()) if self.n_scored else 0.0
            )
        return out

    def curve(self) -> dict[str, list[float]]:
        """Plot data: mean probability drop per percentage removed / kept."""
        n = max(self.n_scored, 1)
        return {
            "percent": list(self.percentages),
            "comprehensiveness": (self.comprehensiveness.sum(0) / n).tolist(),
            "sufficiency": (self.sufficiency.sum(0) / n).tolist(),
        }


def model_device(model: Any) -> torch.device | None:
    """Where ``model`` computes: ``model.device``, else its first parameter's device;
    ``None`` for a model with neither."""
    device = getattr(model, "device", None)
    if device is None and isinstance(model, nn.Module):
        parameter = next(model.parameters(), None)
        device = None if parameter is None else parameter.device
    return device


def on_model_device(model: Any, batch: Mapping[str, Any]) -> dict[str, Any]:
    """``batch`` with its tensors on the model's device (:func:`model_device`), so a model
    trained on a GPU is scored on CPU batches as loaders give them.

    Example:
        >>> batch = on_model_device(model, next(iter(loader)))   # model on "cuda": moved
        >>> batch["diagnoses"].device == next(model.parameters()).device
        True
    """
    device = model_device(model)
    return dict(batch) if device is None else move_to_device(batch, device)


def _class_probability(model: Any, batch: Mapping[str, Any], target: Tensor) -> Tensor:
    """Probability ``[batch]`` of ``target`` under the model (binary: 1 - p for class 0)."""
    probabilities = model(**batch)["y_prob"]
    if describe(model).mode == "binary" or probabilities.shape[1] == 1:
        p = probabilities[:, 0]
        return torch.where(target == 1, p, 1 - p)
    return probabilities.gather(1, target[:, None])[:, 0]


def _predicted_class(model: Any, probabilities: Tensor) -> Tensor:
    if describe(model).mode == "regression":
        raise ValueError("faithfulness metrics need a classification model, not regression")
    if probabilities.shape[1] == 1:
        return (probabilities[:, 0] >= 0.5).long()
    return probabilities.argmax(dim=1)


def _filter(sample_filter: SampleFilter, probabilities: Tensor, target: Tensor) -> Tensor:
    if callable(sample_filter):
        chosen = torch.as_tensor(sample_filter(probabilities, target), dtype=torch.bool)
        if chosen.shape != target.shape:
            raise ValueError(
                f"sample_filter must return a bool tensor [batch], got shape {tuple(chosen.shape)}"
            )
        return chosen
    if sample_filter == "all":
        return torch.ones_like(target, dtype=torch.bool)
    if sample_filter == "predicted_positive":
        return target == 1
    if sample_filter == "predicted_negative":
        return target == 0
    raise ValueError(
        f"sample_filter must be 'all', 'predicted_positive', 'predicted_negative' or a "
        f"callable, got {sample_filter!r}"
    )


class RemovalFaithfulness:
    """Comprehensiveness and sufficiency of attributions, measured by removing inputs.

    Args:
        model: a model whose ``forward(**batch)`` returns ``{"y_prob": [batch, classes]}``.
        percentages: ``q`` values (percent of each sample's real inputs).
        ablation: numeric inputs are removed by ``"zero"`` or the batch ``"mean"``; codes are
            always set to the pad id (each feature's processor removes its units).
        sample_filter: which samples are scored: ``"all"``, ``"predicted_positive"``,
            ``"predicted_negative"``, or ``fn(y_prob, predicted_class) -> bool [batch]``.
        target: the class whose probability is measured: ``"predicted"`` (each sample's
            predicted class) or a class index for every sample (binary: 1 positive, 0
            negative).

    Example:
        >>> scores = AttentionRollout(model).attribute(**batch)
        >>> result = RemovalFaithfulness(model)(scores, batch)
        >>> result.comprehensiveness.shape, result.n_scored   # [patients, removal fractions]
        (torch.Size([8, ...]), 8)
    """

    def __init__(
        self,
        model: Any,
        percentages: Sequence[float] = DEFAULT_PERCENTAGES,
        ablation: Ablation = "zero",
        sample_filter: SampleFilter = "all",
        target: Target = "predicted",
    ) -> None:
        self.model = model
        self.percentages = tuple(float(q) for q in percentages)
        for q in self.percentages:
            if not 0 < q <= 100:
                raise ValueError(f"percentages must be in (0, 100], got {q}")
        if ablation not in ("zero", "mean"):
            raise ValueError(f"ablation must be 'zero' or 'mean', got {ablation!r}")
        self.ablation = ablation
        self.sample_filter = sample_filter
        if target != "predicted" and (isinstance(target, bool) or not isinstance(target, int)):
            raise ValueError(f"target must be 'predicted' or a class index, got {target!r}")
        self.target = target

    @torch.no_grad()  # not inference mode: the class goes on to methods that use autograd
    def targets(self, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
        """``(y_prob [batch, classes], measured class [batch])`` on the unmodified batch.

        Pass the class to the explanation method as ``target_class_idx`` so that it explains
        what is measured.
        """
        batch = on_model_device(self.model, batch)
        with eval_mode(self.model):
            probabilities = self.model(**batch)["y_prob"]
        predicted = _predicted_class(self.model, probabilities)
        if self.target == "predicted":
            return probabilities, predicted
        target = int(self.target)
        classes = max(probabilities.shape[1], 2)
        if not 0 <= target < classes:
            raise ValueError(f"target {target} is out of range for {classes} classes")
        return probabilities, torch.full_like(predicted, target)

    @torch.inference_mode()
    def __call__(
        self,
        attributions: Mapping[str, Tensor],
        batch: Mapping[str, Any],
        targets: tuple[Tensor, Tensor] | None = None,
    ) -> FaithfulnessResult:
        """Score one batch of attributions (``{key: scores shaped like batch[key]}``).

        ``targets`` is :meth:`targets` of the same batch when the caller already has it
        (saves one forward).
        """
        device = model_device(self.model)
        if device is not None:
            batch = move_to_device(batch, device)
            attributions = {k: v.to(device) for k, v in attributions.items()}
        probabilities, target = self.targets(batch) if targets is None else targets
        with eval_mode(self.model):
            base = _class_probability(self.model, batch, target)
            scored = _filter(self.sample_filter, probabilities, target).to(target.device)
            processors = model_processors(self.model, batch, attributions)
            keys, rank, real = rank_units(attributions, batch, processors)
            comprehensive, sufficient = [], []
            for q in self.percentages:
                top = top_fraction_mask(rank, real, q)
                without_top = remove_units(batch, keys, top, self.ablation, processors)
                only_top = remove_units(batch, keys, real & ~top, self.ablation, processors)
                comprehensive.append(base - _class_probability(self.model, without_top, target))
                sufficient.append(base - _class_probability(self.model, only_top, target))
        return FaithfulnessResult(
            percentages=self.percentages,
            comprehensiveness=torch.stack(comprehensive, 1)[scored].float().cpu(),
            sufficiency=torch.stack(sufficient, 1)[scored].float().cpu(),
            base_probability=base[scored].float().cpu(),
            target=target[scored].cpu(),
            scored=scored.cpu(),
        )
