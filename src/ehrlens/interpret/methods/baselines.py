"""Reference points for comparing explanations: random scores and one layer's raw attention."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ...core.fusion import check_head_fusion
from ..api import AttentionInterpretable, input_view, mask_unscored_inputs
from .base import BaseInterpreter, TargetIndex, feature_processor, register_method
from .propagation import readout_relevance
from .rollout import fused_attention_layers


@register_method
class RandomBaseline(BaseInterpreter):
    """Uniform random scores in ``[0, 1)`` for every real input unit; padding 0.

    The floor any explanation method should beat. Seeded: the same batch gets the same scores
    on every call.

    Args:
        model: the model being explained (its ``feature_keys`` name the features scored).
        seed: seed of the random generator.

    Example:
        >>> scores = RandomBaseline(model, seed=0).attribute(**batch)
    """

    name = "random"
    gradient_free = True
    needs = ()
    per_unit = True
    summary = "random scores: the floor any method must beat"
    requirement_reason = "it needs no model interface"

    def __init__(self, model: object, seed: int = 0) -> None:
        super().__init__(model)
        keys = self.description.feature_keys
        if not keys:
            raise TypeError(
                f"RandomBaseline needs the model's feature_keys; {type(model).__name__} has none"
            )
        self.feature_keys = list(keys)
        self.seed = int(seed)

    def attribute(self, target_class_idx: TargetIndex = None, **batch: Any) -> dict[str, Tensor]:
        """Random scores shaped like each feature's batch tensor (``target_class_idx`` unused)."""
        self._check_unused_target(target_class_idx, batch)
        generator = torch.Generator().manual_seed(self.seed)
        view = input_view(self.description, batch)
        masks = view["masks"]
        out = {}
        for key in self.feature_keys:
            values = view[key]
            noise = torch.rand(values.shape, generator=generator).to(values.device)
            real = feature_processor(self.model, key, values).unit_mask(values, masks.get(key))
            out[key] = noise * real
        return mask_unscored_inputs(self.model, out, batch)


def _attention_step(rows: Tensor, attention: Tensor) -> Tensor:
    return torch.bmm(rows, attention)


@register_method
class RawAttention(BaseInterpreter):
    """One layer's attention, read out at the model's readout row as it is (no residual).

    The explanation most papers start from and Abnar & Zuidema show to be unreliable beyond
    the first layer: kept as a baseline.

    Args:
        model: an :class:`~ehrlens.interpret.AttentionInterpretable` model.
        layer: which layer (Python index; ``-1`` is the last).
        head_fusion: ``"mean"``, ``"max"`` or ``"min"`` over heads.

    Example:
        >>> with torch.inference_mode():
        ...     scores = RawAttention(model, layer=-1).attribute(**batch)
    """

    name = "raw_attention"
    gradient_free = True
    plain_forward = True
    needs = (AttentionInterpretable,)
    model: AttentionInterpretable
    summary = "last layer's attention from the readout"

    def __init__(
        self, model: AttentionInterpretable, layer: int = -1, head_fusion: str = "mean"
    ) -> None:
        super().__init__(model)
        self.layer = int(layer)
        self.head_fusion = check_head_fusion(head_fusion)

    def attribute(self, target_class_idx: TargetIndex = None, **batch: Any) -> dict[str, Tensor]:
        """The chosen layer's readout row over the inputs (``target_class_idx`` unused)."""
        self._check_unused_target(target_class_idx, batch)
        layers = fused_attention_layers(self.model, batch, self.head_fusion)
        chosen = {}
        for key, maps in layers.items():
            if not -len(maps) <= self.layer < len(maps):
                raise ValueError(
                    f"feature '{key}': layer {self.layer} does not exist; the model has "
                    f"{len(maps)} attention layer(s)"
                )
            chosen[key] = [maps[self.layer]]
        relevance = readout_relevance(self.model, chosen, _attention_step, batch)
        return self._input_scores(relevance, batch)
