"""Scalars to explain for Hugging Face encoders that have no classification head.

An output function is any callable ``output_fn(model_outputs, batch) -> Tensor`` returning
``[batch]`` (one scalar per sample) or ``[batch, outputs]``; it receives the encoder's own
output object (``last_hidden_state`` ``[batch, tokens, hidden]``, ...) and the batch passed to
:class:`~ehrlens.integrations.huggingface.HuggingFaceEncoder` (``input_ids``,
``attention_mask``, ...). The helpers here build the usual ones. They need torch only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch.nn.functional as F
from torch import Tensor

#: ``output_fn(model_outputs, batch) -> Tensor [batch] or [batch, outputs]``.
OutputFn = Callable[[Any, Mapping[str, Any]], Tensor]

POOLINGS = ("mean", "cls")


def last_hidden_state(outputs: Any) -> Tensor:
    """The final hidden states ``[batch, tokens, hidden]`` of an encoder's outputs.

    Reads ``outputs.last_hidden_state`` (base encoders such as ``AutoModel``), or the last
    entry of ``outputs.hidden_states`` when the model was run with ``output_hidden_states``.
    """
    hidden = getattr(outputs, "last_hidden_state", None)
    if hidden is None:
        states = getattr(outputs, "hidden_states", None)
        hidden = states[-1] if states else None
    if not isinstance(hidden, Tensor) or hidden.dim() != 3:
        raise TypeError(
            "expected encoder outputs with last_hidden_state [batch, tokens, hidden] (a base "
            f"encoder such as AutoModel); got {type(outputs).__name__} without it"
        )
    return hidden


def pool(hidden: Tensor, attention_mask: Tensor | None = None, pooling: str = "mean") -> Tensor:
    """Pool token states ``[batch, tokens, hidden]`` into ``[batch, hidden]``.

    Args:
        hidden: ``[batch, tokens, hidden]``.
        attention_mask: ``[batch, tokens]``, 1 at real tokens, 0 at padding (``None``: all
            real).
        pooling: ``"mean"``: average over real tokens (special tokens included, as
            sentence-transformers' mean pooling); ``"cls"``: the state at position 0.

    Example:
        >>> pool(torch.ones(2, 4, 8), torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])).shape
        torch.Size([2, 8])
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if pooling == "cls":
        return hidden[:, 0]
    if attention_mask is None:
        return hidden.mean(dim=1)
    if tuple(attention_mask.shape) != tuple(hidden.shape[:2]):
        raise ValueError(
            f"attention_mask of shape {tuple(attention_mask.shape)} does not match the hidden "
            f"states [batch, tokens] = {tuple(hidden.shape[:2])}"
        )
    weights = attention_mask.to(hidden.dtype)[..., None]
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


def cls_projection(weight: Tensor, bias: Tensor | float | None = None) -> OutputFn:
    """Explain a linear readout of the [CLS] state: ``h_cls @ weight.T + bias``.

    Args:
        weight: ``[hidden]`` (one scalar per sample, output ``[batch]``) or
            ``[outputs, hidden]`` (output ``[batch, outputs]``; give the encoder a ``mode``).
        bias: optional ``[outputs]`` or a number.

    Example:
        >>> from ehrlens.integrations.huggingface import HuggingFaceEncoder
        >>> direction = torch.randn(bert.config.hidden_size)
        >>> encoder = HuggingFaceEncoder(bert, output_fn=cls_projection(direction))
        >>> batch = tokenizer(["chest pain"], return_tensors="pt")
        >>> encoder(**batch)["logit"].shape         # one output per sentence
        torch.Size([1, 1])
    """
    if not isinstance(weight, Tensor) or weight.dim() not in (1, 2):
        got = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ValueError(f"weight must be a tensor [hidden] or [outputs, hidden], got {got}")

    def output_fn(outputs: Any, batch: Mapping[str, Any]) -> Tensor:
        cls = last_hidden_state(outputs)[:, 0]
        w = weight.to(cls.device, cls.dtype)
        if w.shape[-1] != cls.shape[-1]:
            raise ValueError(
                f"cls_projection weight has {w.shape[-1]} input features, the encoder's hidden "
                f"size is {cls.shape[-1]}"
            )
        value = cls @ (w if w.dim() == 1 else w.T)
        return value if bias is None else value + bias

    return output_fn


def similarity_to(reference: Tensor, pooling: str = "mean") -> OutputFn:
    """Explain the cosine similarity of each sample's pooled embedding to ``reference``.

    The output is ``cos(pool(last_hidden_state, attention_mask), reference)``, ``[batch]``,
    with :func:`pool` (``"mean"`` is how sentence-transformers embeds sentences, ``"cls"``
    the [CLS] state). Attention methods read the explanation out at [CLS] by default; give the
    encoder ``readout="mean"`` to read out where mean pooling reads instead.

    Args:
        reference: ``[hidden]``, e.g. ``sentence_embedding(model, **tokenizer(["query"],
            return_tensors="pt"))[0]``.
        pooling: ``"mean"`` or ``"cls"``.

    Example:
        >>> from ehrlens.integrations.huggingface import HuggingFaceEncoder, sentence_embedding
        >>> with torch.no_grad():
        ...     reference = sentence_embedding(bert, **tokenizer(["chest pain"],
        ...                                    return_tensors="pt"))[0]          # [hidden]
        >>> encoder = HuggingFaceEncoder(bert, output_fn=similarity_to(reference))
        >>> batch = tokenizer(["pain in the chest", "no complaints"], padding=True,
        ...                   return_tensors="pt")
        >>> scores = CheferRelevance(encoder).attribute(**batch)   # {"input_ids": [b, t]}
        >>> scores["input_ids"].shape == batch["input_ids"].shape
        True
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if not isinstance(reference, Tensor) or reference.dim() != 1:
        got = tuple(reference.shape) if isinstance(reference, Tensor) else type(reference).__name__
        raise ValueError(f"reference must be one embedding [hidden], got {got}")
    reference = reference.detach()

    def output_fn(outputs: Any, batch: Mapping[str, Any]) -> Tensor:
        pooled = pool(last_hidden_state(outputs), batch.get("attention_mask"), pooling)
        if pooled.shape[-1] != reference.shape[0]:
            raise ValueError(
                f"reference embedding has {reference.shape[0]} dimensions, the encoder's "
                f"hidden size is {pooled.shape[-1]}"
            )
        ref = reference.to(pooled.device, pooled.dtype)
        return F.cosine_similarity(pooled, ref[None, :], dim=-1)

    return output_fn
