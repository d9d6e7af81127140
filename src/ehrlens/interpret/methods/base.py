"""BaseInterpreter and what every method shares: target selection and input-shape mapping."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor

from ...data.processors import PAD_ID
from ..api import AttentionInterpretable

TargetIndex = int | Tensor | None


class BaseInterpreter(ABC):
    """Base of every interpreter: checks the interface level and maps scores to inputs.

    Subclasses set ``required_interface`` (checked with ``isinstance`` at construction) and
    implement :meth:`attribute`. Calling the interpreter is the same as calling
    :meth:`attribute`.
    """

    required_interface: ClassVar[type] = AttentionInterpretable
    #: Why the interface is needed, used in the TypeError of the constructor.
    requirement_reason: ClassVar[str] = "it reads attention maps captured in the forward pass"

    def __init__(self, model: Any) -> None:
        if not isinstance(model, self.required_interface):
            raise TypeError(
                f"{type(self).__name__} needs a model implementing "
                f"{self.required_interface.__name__} ({self.requirement_reason}); "
                f"{type(model).__name__} does not. Subclass it, or declare a class that has "
                f"the methods with {self.required_interface.__name__}.register(cls)."
            )
        self.model = model

    @abstractmethod
    def attribute(self, target_class_idx: TargetIndex = None, **batch: Any) -> dict[str, Tensor]:
        """Scores shaped like each raw input feature: ``{feature_key: Tensor}``."""

    def __call__(self, target_class_idx: TargetIndex = None, **batch: Any) -> dict[str, Tensor]:
        return self.attribute(target_class_idx, **batch)


def scores_to_inputs(
    key: str, scores: Tensor, values: Tensor, step_mask: Tensor | None = None
) -> Tensor:
    """Spread per-position scores ``[batch, n_inputs]`` over the raw input ``values``.

    - codes ``[batch, seq]``: one score per code;
    - nested codes ``[batch, visits, codes]``: each visit's score on each of its codes;
    - time series ``[batch, steps, features]``: each step's score on each of its values;
    - vectors ``[batch, features]``: one score per element.

    Padding (code id 0, or steps outside ``step_mask``) gets exactly 0.
    """
    if tuple(scores.shape) != tuple(values.shape[:2]):
        raise ValueError(
            f"feature '{key}': relevance shape {tuple(scores.shape)} does not match the input "
            f"positions {tuple(values.shape[:2])} of the batch tensor {tuple(values.shape)}"
        )
    if not values.is_floating_point():
        real = values != PAD_ID
        if values.dim() == 3:
            return scores[..., None] * real
        return scores * real
    if values.dim() == 3:
        if step_mask is not None:
            scores = scores * step_mask.to(scores.dtype)
        return scores[..., None].expand(values.shape).clone()
    return scores


def map_to_input_shapes(
    token_scores: Mapping[str, Tensor], batch: Mapping[str, Any]
) -> dict[str, Tensor]:
    """Apply :func:`scores_to_inputs` to every feature key of ``token_scores``."""
    masks = batch.get("masks") or {}
    return {
        key: scores_to_inputs(key, scores, batch[key], masks.get(key))
        for key, scores in token_scores.items()
    }


def select_target(logit: Tensor, mode: str | None, target_class_idx: TargetIndex) -> Tensor:
    """The logit to explain for every sample: ``[batch]``.

    Args:
        logit: ``[batch, outputs]``.
        mode: ``"binary"``, ``"multiclass"``, ``"multilabel"``, ``"regression"`` or ``None``.
        target_class_idx: ``None`` (binary/regression: the single logit; multiclass: the
            predicted class; multilabel: the most probable label), an ``int``, or a
            ``LongTensor [batch]`` with one target per sample. For binary models, ``1`` (or
            ``None``) explains the positive class and ``0`` the negative class (the negated
            logit).
    """
    if logit.dim() != 2:
        raise ValueError(f"expected logits [batch, outputs], got shape {tuple(logit.shape)}")
    batch, outputs = logit.shape
    if mode == "binary" or (mode is None and outputs == 1):
        if target_class_idx is None:
            return logit[:, 0]
        index = _as_index(target_class_idx, batch, 2, "binary")
        return torch.where(index == 1, logit[:, 0], -logit[:, 0])
    if mode == "regression":
        if target_class_idx is not None:
            _as_index(target_class_idx, batch, 1, "regression")
        return logit[:, 0]
    if target_class_idx is None:
        index = logit.argmax(dim=1)
    else:
        index = _as_index(target_class_idx, batch, outputs, mode or "multi-output")
    return logit.gather(1, index.to(logit.device)[:, None])[:, 0]


def _as_index(target: int | Tensor, batch: int, classes: int, mode: str) -> Tensor:
    if isinstance(target, bool) or not isinstance(target, (int, Tensor)):
        raise TypeError(
            f"target_class_idx must be None, an int or a LongTensor [batch], "
            f"got {type(target).__name__}"
        )
    if isinstance(target, Tensor):
        if target.is_floating_point() or target.dim() > 1:
            raise TypeError(
                f"target_class_idx tensor must be integer and [batch], got {target.dtype} "
                f"with shape {tuple(target.shape)}"
            )
        index = target.reshape(-1) if target.dim() == 1 else target.expand(batch)
        if index.numel() != batch:
            raise ValueError(f"target_class_idx has {index.numel()} entries for a batch of {batch}")
    else:
        index = torch.full((batch,), target, dtype=torch.long)
    bad = (index < 0) | (index >= classes)
    if bool(bad.any()):
        raise ValueError(
            f"target_class_idx {index[bad][0].item()} is out of range for a {mode} model "
            f"with {classes} class(es): expected 0..{classes - 1}"
        )
    return index.long()
