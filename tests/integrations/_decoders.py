"""Tiny decoder models built from configs (offline, seeded) and references that use no
``ehrlens`` code: maps from an unwrapped eager copy's ``output_attentions``, gradients from
``torch.autograd.grad``, in float64 from the model's float32 maps.

Models are float32 by default: in float64, ``transformers``' eager attention turns the fully
masked rows of left padding into NaN (its mask is float64's minimum, its softmax runs in
float32), so float64 is only used with right padding."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

VOCAB = 48
PAD = 0

#: One tiny config per decoder family; the GQA and sliding-window options are switched on.
FAMILIES: dict[str, dict[str, Any]] = {
    "gpt2": {"n_embd": 16, "n_layer": 2, "n_head": 2, "n_positions": 32},
    "llama": {  # grouped-query attention: 4 query heads share 2 key/value heads
        "hidden_size": 16,
        "intermediate_size": 24,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 32,
    },
    "qwen2": {  # query/key/value biases; layer 1 attends within a sliding window of 3
        "hidden_size": 16,
        "intermediate_size": 24,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 32,
        "use_sliding_window": True,
        "sliding_window": 3,
        "max_window_layers": 1,
    },
    "mistral": {  # every layer windowed (3 tokens)
        "hidden_size": 16,
        "intermediate_size": 24,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "max_position_embeddings": 32,
        "sliding_window": 3,
    },
}
HEADS = ("classifier", "lm")


def build(
    family: str, head: str = "classifier", seed: int = 0, dtype: torch.dtype = torch.float32
) -> Any:
    """A seeded decoder of ``family`` with a classification (3 labels) or LM head;
    biases nonzero, so their shares count in conservation checks."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    config = AutoConfig.for_model(
        family,
        vocab_size=VOCAB,
        num_labels=3,
        pad_token_id=PAD,
        bos_token_id=1,
        eos_token_id=2,
        **FAMILIES[family],
    )
    torch.manual_seed(seed)
    auto = AutoModelForSequenceClassification if head == "classifier" else AutoModelForCausalLM
    model = auto.from_config(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.normal_(std=0.2)
            elif name.endswith("norm.weight") or ".ln_" in name or "_layernorm" in name:
                parameter.uniform_(0.5, 1.5)
    return model.to(dtype)


def token_batch(
    padding: str = "right", seed: int = 0, lengths: tuple[int, int, int] = (7, 4, 5)
) -> dict[str, Tensor]:
    """Three sequences of ``lengths`` real tokens (ids 3..47, at most 7), padded with
    :data:`PAD` on the ``padding`` side."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.full((3, 7), PAD)
    mask = torch.zeros(3, 7, dtype=torch.long)
    for row, length in enumerate(lengths):
        tokens = torch.randint(3, VOCAB, (length,), generator=generator)
        where = slice(0, length) if padding == "right" else slice(7 - length, 7)
        ids[row, where], mask[row, where] = tokens, 1
    return {"input_ids": ids, "attention_mask": mask}


def alone(batch: dict[str, Tensor], row: int) -> dict[str, Tensor]:
    """Sample ``row`` without its padding, and where its real tokens are in ``batch``."""
    real = batch["attention_mask"][row].bool()
    return {key: value[row : row + 1, real] for key, value in batch.items()}


def eager_copy(model: Any) -> Any:
    model = copy.deepcopy(model)
    model.set_attn_implementation("eager")
    return model.eval()


def positions(mask: Tensor) -> Tensor:
    return (mask.cumsum(dim=1) - 1).clamp(min=0)


def last_real(mask: Tensor) -> Tensor:
    return torch.tensor([int(torch.nonzero(row).max()) for row in mask])


def ref_forward(model: Any, batch: dict[str, Tensor], **extra: Any) -> tuple[Tensor, list[Tensor]]:
    """(explained logits ``[batch, outputs]``, maps ``[batch, heads, tokens, tokens]``): the
    classification logits, or the next-token logits at the last real token."""
    mask = batch["attention_mask"]
    outputs = model(
        **batch, **extra, position_ids=positions(mask), output_attentions=True, use_cache=False
    )
    logits = outputs.logits
    if logits.dim() == 3:
        logits = logits[torch.arange(logits.shape[0]), last_real(mask)]
    return logits, list(outputs.attentions)


def ref_rollout(maps: Sequence[Tensor], mask: Tensor) -> Tensor:
    """Abnar & Zuidema: ``Â = (mean_h A + I) / rowsum``, ``R = Â_L ... Â_1``, the last real
    token's row, padding 0 (full matrix products)."""
    tokens = mask.shape[1]
    eye = torch.eye(tokens, dtype=torch.float64)
    product = eye.expand(mask.shape[0], tokens, tokens)
    for a in maps:
        a_hat = a.detach().double().mean(dim=1) + eye
        product = (a_hat / a_hat.sum(dim=-1, keepdim=True)) @ product
    return read_last(product, mask)


def ref_chefer(maps: Sequence[Tensor], grads: Sequence[Tensor], mask: Tensor) -> Tensor:
    """Chefer et al.: ``R = I``; ``R += mean_h(clamp(grad * A, min=0)) @ R`` per layer."""
    tokens = mask.shape[1]
    relevance = torch.eye(tokens, dtype=torch.float64).expand(mask.shape[0], tokens, tokens)
    for a, g in zip(maps, grads, strict=True):
        cam = (g.double() * a.detach().double()).clamp(min=0).mean(dim=1)
        relevance = relevance + cam @ relevance
    return read_last(relevance, mask)


def read_last(matrix: Tensor, mask: Tensor) -> Tensor:
    row = matrix[torch.arange(matrix.shape[0]), last_real(mask)]
    return row * mask.double()
