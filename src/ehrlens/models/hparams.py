"""Checks of model hyperparameters, shared by the model constructors.

A size that is not a positive int, or heads that do not divide the width, would otherwise
surface as a ``ZeroDivisionError`` or an allocation error deep inside PyTorch.

Example:
    >>> check_size("Transformer", "num_layers", 2)
    2
    >>> check_heads("Transformer", embedding_dim=64, heads=3)
    Traceback (most recent call last):
    ValueError: Transformer: embedding_dim 64 must be divisible by heads 3
"""

from __future__ import annotations

import math
import numbers
from typing import Any


def check_size(model: str, name: str, value: Any, minimum: int = 1) -> Any:
    """``value`` when it is an int ``>= minimum`` (bools refused); else a TypeError or
    ValueError naming the model and the hyperparameter."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{model}: {name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{model}: {name} must be >= {minimum}, got {value}")
    return value


def check_dropout(model: str, value: Any) -> Any:
    """``value`` when it is a number in ``[0, 1)``; else a TypeError or ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{model}: dropout must be a number, got {type(value).__name__}")
    if not (math.isfinite(value) and 0 <= value < 1):
        raise ValueError(f"{model}: dropout must be in [0, 1), got {value!r}")
    return value


def check_heads(model: str, embedding_dim: int, heads: int) -> None:
    """Refuse heads that do not divide the width (each head gets ``embedding_dim / heads``)."""
    if embedding_dim % heads != 0:
        raise ValueError(
            f"{model}: embedding_dim {embedding_dim} must be divisible by heads {heads}"
        )


def check_attention_hparams(model: str, sizes: dict[str, Any], dropout: Any) -> None:
    """Check an attention model's sizes, head split and dropout in one call.

    ``sizes`` holds every whole-number hyperparameter (``embedding_dim`` and ``heads`` among
    them); each must be at least 1, ``heads`` must divide ``embedding_dim`` and ``dropout`` lie
    in ``[0, 1)``. Errors name the model and the hyperparameter.

    Example:
        >>> check_attention_hparams("Transformer", {"embedding_dim": 64, "heads": 4}, 0.1)
    """
    for hparam, value in sizes.items():
        check_size(model, hparam, value)
    check_heads(model, sizes["embedding_dim"], sizes["heads"])
    check_dropout(model, dropout)
