"""Untrained models on random code sequences of any length, for speed and memory benchmarks.

Example:
    >>> model = random_code_transformer(num_layers=2, embedding_dim=16, heads=2)
    >>> batch = random_code_batch(model, batch_size=4, seq=64)
    >>> batch["codes"].shape
    torch.Size([4, 64])
"""

from __future__ import annotations

from typing import cast

import torch

from ..data import create_sample_dataset
from ..data.processors import CodeProcessor
from ..models import Transformer


def random_code_transformer(
    num_layers: int, embedding_dim: int, heads: int, vocab_size: int = 500, seed: int = 0
) -> Transformer:
    """An untrained Transformer on one ``"codes"`` sequence feature of ``vocab_size`` codes.

    Pair it with :func:`random_code_batch` to measure any sequence length or batch size.

    Example:
        >>> model = random_code_transformer(num_layers=2, embedding_dim=16, heads=2)
        >>> batch = random_code_batch(model, batch_size=4, seq=64)
        >>> AttentionRollout(model).attribute(**batch)["codes"].shape
        torch.Size([4, 64])
    """
    codes = [f"C{i:04d}" for i in range(vocab_size)]
    samples = [
        {"patient_id": "a", "codes": codes, "y": 0},
        {"patient_id": "b", "codes": codes[:10], "y": 1},
    ]
    dataset = create_sample_dataset(samples, {"codes": "sequence"}, {"y": "binary"})
    torch.manual_seed(seed)
    model = Transformer(dataset, embedding_dim=embedding_dim, heads=heads, num_layers=num_layers)
    return model.eval()


def random_code_batch(model: Transformer, batch_size: int, seq: int, seed: int = 0) -> dict:
    """A batch of random known code ids ``[batch_size, seq]`` for ``model``'s ``"codes"``.

    Ids are drawn from the real codes (never padding or unknown) with a seeded generator.
    See :func:`random_code_transformer` for an example.
    """
    vocab = cast(CodeProcessor, model.schema.input_processors["codes"]).vocab_size
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, vocab, (batch_size, seq), generator=generator)
    return {"codes": ids, "masks": {}, "times": {}}
