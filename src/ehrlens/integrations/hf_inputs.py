"""Checks of a Hugging Face model's inputs before its forward, naming the input at fault.

Out-of-range token ids, sequences longer than the model's learned positions and masks of
another shape than ``input_ids`` otherwise surface as PyTorch's "index out of range in self",
an "expanded size" RuntimeError or a raw size mismatch. :func:`check_hf_inputs` turns each
into a ``ValueError`` that names the input, the sample and what was expected.

Example:
    >>> batch = tokenizer(["chest pain"], return_tensors="pt")
    >>> check_hf_inputs(bert, batch["input_ids"], {"attention_mask": batch["attention_mask"]})
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

#: Inputs that must be shaped like ``input_ids``.
SAME_SHAPE = ("attention_mask", "special_tokens_mask", "token_type_ids", "position_ids")


def _embedding_size(model: nn.Module, suffix: str) -> int | None:
    """Rows of the first ``nn.Embedding`` whose qualified name ends with ``suffix``."""
    for name, module in model.named_modules():
        if name.endswith(suffix) and isinstance(module, nn.Embedding):
            return int(module.num_embeddings)
    return None


def input_limits(model: nn.Module) -> dict[str, int | None]:
    """``{"vocab": V, "positions": P, "token_types": T}`` (None where the model has no such
    table): the word embedding's rows, the learned position embedding's rows (absolute
    positions; models with rotary or relative positions have none) and the token types.

    Example:
        >>> input_limits(bert)
        {'vocab': 30522, 'positions': 512, 'token_types': 2}
    """
    vocab = None
    get = getattr(model, "get_input_embeddings", None)
    embedding = get() if callable(get) else None
    if isinstance(embedding, nn.Embedding):
        vocab = int(embedding.num_embeddings)
    return {
        "vocab": vocab,
        "positions": _embedding_size(model, "position_embeddings"),
        "token_types": _embedding_size(model, "token_type_embeddings"),
    }


def _first_outside(values: Tensor, high: int) -> tuple[int, int, int] | None:
    """``(sample, position, value)`` of the first entry outside ``[0, high)``, or None."""
    outside = (values < 0) | (values >= high)
    if not bool(outside.any()):
        return None
    sample, position = (int(i) for i in outside.nonzero()[0])
    return sample, position, int(values[sample, position])


def check_hf_inputs(
    model: nn.Module, input_ids: Tensor, inputs: Mapping[str, Any], limits: Mapping | None = None
) -> None:
    """Refuse inputs the model cannot read, naming the input, sample and position.

    Args:
        model: the wrapped Hugging Face model.
        input_ids: ``[batch, tokens]`` token ids.
        inputs: the other inputs (``attention_mask``, ``special_tokens_mask``, ...).
        limits: :func:`input_limits` of ``model`` (computed when not given).

    Raises:
        ValueError: an id outside the vocabulary, more tokens than learned positions, a
            token type outside the model's, or a mask not shaped like ``input_ids``.

    Example:
        >>> check_hf_inputs(bert, torch.tensor([[101, 99999, 102]]), {})
        Traceback (most recent call last):
        ...
        ValueError: input 'input_ids': sample 0, position 1 holds token id 99999, outside ...
    """
    limits = input_limits(model) if limits is None else limits
    shape = tuple(input_ids.shape)
    for name in SAME_SHAPE:
        value = inputs.get(name)
        if isinstance(value, Tensor) and tuple(value.shape) != shape:
            raise ValueError(
                f"input '{name}': shape {tuple(value.shape)}, expected that of 'input_ids' "
                f"{shape} (one entry per token)"
            )
    if input_ids.is_floating_point() or input_ids.dtype == torch.bool:
        raise ValueError(f"input 'input_ids': token ids must be integers, got {input_ids.dtype}")
    vocab = limits.get("vocab")
    if vocab is not None and input_ids.numel():
        bad = _first_outside(input_ids, vocab)
        if bad is not None:
            raise ValueError(
                f"input 'input_ids': sample {bad[0]}, position {bad[1]} holds token id {bad[2]}, "
                f"outside the model's vocabulary of {vocab} (ids 0-{vocab - 1}); was the batch "
                "made with this model's tokenizer?"
            )
    positions = limits.get("positions")
    if positions is not None and shape[1] > positions:
        raise ValueError(
            f"input 'input_ids': {shape[1]} tokens, more than the model's {positions} learned "
            f"positions; cut the text (tokenizer(..., truncation=True, max_length={positions}))"
        )
    types = limits.get("token_types")
    token_type_ids = inputs.get("token_type_ids")
    if types is not None and isinstance(token_type_ids, Tensor) and token_type_ids.numel():
        bad = _first_outside(token_type_ids, types)
        if bad is not None:
            raise ValueError(
                f"input 'token_type_ids': sample {bad[0]}, position {bad[1]} holds {bad[2]}, "
                f"outside the model's {types} token type(s)"
            )


__all__ = ["SAME_SHAPE", "check_hf_inputs", "input_limits"]
