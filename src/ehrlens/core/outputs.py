"""Model outputs from logits, by task mode."""

from __future__ import annotations

import torch
from torch import Tensor


def probabilities(logit: Tensor, mode: str) -> Tensor:
    """sigmoid (binary, multilabel), softmax (multiclass), identity (regression).

    Shapes: ``logit`` ``[batch, outputs]`` -> same.

    Example:
        >>> probabilities(torch.zeros(2, 1), "binary")
        tensor([[0.5000], [0.5000]])
    """
    if mode in ("binary", "multilabel"):
        return torch.sigmoid(logit)
    if mode == "multiclass":
        return torch.softmax(logit, dim=-1)
    return logit
