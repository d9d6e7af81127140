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


def input_unit_mask(values: Tensor, step_mask: Tensor | None = None) -> Tensor:
    """``bool`` shaped like ``values``: True at real input units (not padding).

    Codes are real where the id is not the pad id; time-series values where their step is in
    ``step_mask`` ``[batch, steps]``; vector elements always.
    """
    if not values.is_floating_point():
        return values != PAD_ID
    if values.dim() == 3 and step_mask is not None:
        return step_mask.to(torch.bool)[..., None].expand(values.shape)
    return torch.ones(values.shape, dtype=torch.bool, device=values.device)


def plain_tensors(batch: Mapping[str, Any]) -> dict[str, Any]:
    """Copies of inference-mode tensors, which autograd may not save for backward."""

    def plain(value: Any) -> Any:
        if isinstance(value, Tensor) and value.is_inference():
            return value.clone()
        if isinstance(value, Mapping):
            return {k: plain(v) for k, v in value.items()}
        return value

    return {k: plain(v) for k, v in batch.items()}


def require_autograd(method: str) -> None:
    """Raise a clear error under ``torch.inference_mode()``, where autograd cannot run."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            f"{method} needs gradients, which torch.inference_mode() disables; call it "
            "outside inference mode (torch.no_grad() is fine), or use AttentionRollout, "
            "which needs only the forward pass"
        )


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


def explained_logits(logit: Tensor, mode: str | None) -> Tensor:
    """Logits indexed by explainable class: ``[batch, classes]``.

    A binary model's single logit becomes two columns ``(-logit, logit)``, so class 0 is
    explained by the negated logit and class 1 by the logit.
    """
    if logit.dim() != 2:
        raise ValueError(f"expected logits [batch, outputs], got shape {tuple(logit.shape)}")
    if mode == "binary" or (mode is None and logit.shape[1] == 1):
        return torch.cat([-logit[:, :1], logit[:, :1]], dim=1)
    return logit


def target_index(logit: Tensor, mode: str | None, target_class_idx: TargetIndex) -> Tensor:
    """The explained class of every sample, ``LongTensor [batch]``, into
    :func:`explained_logits`.

    ``None`` picks the single logit (binary: class 1; regression: output 0), the predicted
    class (multiclass) or the most probable label (multilabel); an ``int`` or a
    ``LongTensor [batch]`` is checked against the number of classes.
    """
    if logit.dim() != 2:
        raise ValueError(f"expected logits [batch, outputs], got shape {tuple(logit.shape)}")
    batch, outputs = logit.shape
    binary = mode == "binary" or (mode is None and outputs == 1)
    if target_class_idx is None:
        if binary:
            return torch.ones(batch, dtype=torch.long, device=logit.device)
        if mode == "regression":
            return torch.zeros(batch, dtype=torch.long, device=logit.device)
        return logit.argmax(dim=1)
    if binary:
        return _as_index(target_class_idx, batch, 2, "binary").to(logit.device)
    if mode == "regression":
        return _as_index(target_class_idx, batch, 1, "regression").to(logit.device)
    return _as_index(target_class_idx, batch, outputs, mode or "multi-output").to(logit.device)


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
    index = target_index(logit, mode, target_class_idx)
    return explained_logits(logit, mode).gather(1, index[:, None])[:, 0]


def _as_index(target: int | Tensor, batch: int, classes: int, mode: str) -> Tensor:
    if isinstance(target, bool) or not isinstance(target, (int, Tensor)):
        raise TypeError(
            f"target_class_idx must be None, an int or a LongTensor [batch], "
            f"got {type(target).__name__}"
        )
    if isinstance(target, Tensor):
        if target.is_inference() and not torch.is_inference_mode_enabled():
            target = target.clone()  # autograd may not save inference tensors
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
