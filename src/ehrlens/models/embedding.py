"""Turn one feature's batch tensor into a sequence of tokens for an attention encoder.

One token per *input position*: a code (``"sequence"``, flat ``"stagenet"``), a visit pooled
over its codes (``"nested_sequence"``, nested ``"stagenet"``), a time step (``"timeseries"``) or
a vector element (``"tensor"``). What a unit is, how it is embedded and how units pool into
positions is the feature's processor's to say (:class:`~ehrlens.data.processors.
FeatureProcessor`); interpreters score the positions, and the processor spreads each score
over the units it holds.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..data.processors import ElementwiseEmbedding, FeatureProcessor

__all__ = [
    "ElementwiseEmbedding",
    "FeatureEmbedding",
    "Tokens",
    "sinusoidal_encoding",
    "sinusoidal_positions",
]


@dataclass
class Tokens:
    """Token embeddings of one feature.

    Attributes:
        embeddings: ``[batch, seq, dim]``.
        mask: ``[batch, seq]`` bool, True at real positions.
        times: ``[batch, seq]`` time of each position, or ``None``.
    """

    embeddings: Tensor
    mask: Tensor
    times: Tensor | None = None


class FeatureEmbedding(nn.Module):
    """Embed one feature as its processor says.

    ``self.unit`` is the module that embeds each input unit on its own (a code, a time step, a
    vector element; ``processor.unit_embedding(dim)``): its output is ``[batch,
    *input_positions, dim]`` (``[batch, visits, codes, dim]`` for nested codes, before visits
    are pooled). Gradient methods attribute to this output.

    Args:
        key: the feature key (named in errors).
        processor: the fitted processor of that feature.
        dim: embedding width ``D``.

    Example:
        >>> emb = FeatureEmbedding("diagnoses", dataset.input_processors["diagnoses"], 32)
        >>> tokens = emb(batch["diagnoses"])
        >>> tokens.embeddings.shape             # [batch, visits, 32]
        torch.Size([8, 7, 32])
    """

    def __init__(self, key: str, processor: FeatureProcessor, dim: int) -> None:
        super().__init__()
        self.key = key
        self.processor = processor
        self.schema = processor.schema
        self.dim = dim
        self.unit: nn.Module = processor.unit_embedding(dim)

    @property
    def input_rank(self) -> int:
        """Rank of the batch tensor (``processor.input_rank``)."""
        return self.processor.input_rank

    @property
    def is_token_feature(self) -> bool:
        """True when the feature's values are code ids."""
        return self.processor.holds_codes

    def position_mask(self, values: Tensor, step_mask: Tensor | None = None) -> Tensor:
        """``[batch, seq]`` True at real input positions (codes, non-empty visits, steps)."""
        self.processor.check_input(self.key, values)
        return self.processor.position_mask(values, step_mask)

    def forward(
        self, values: Tensor, step_mask: Tensor | None = None, times: Tensor | None = None
    ) -> Tokens:
        mask = self.position_mask(values, step_mask)
        embedded = self.processor.embed_units(self.key, self.unit, values)
        return Tokens(self.processor.pool_units(embedded, values), mask, times)


def sinusoidal_encoding(positions: Tensor, dim: int) -> Tensor:
    """Sine/cosine encodings of (possibly fractional) positions: ``[...]`` -> ``[..., dim]``.

    The table of Vaswani et al. (2017) evaluated at ``positions`` (visit indices, times).

    Example:
        >>> sinusoidal_encoding(torch.tensor([[0.0, 2.5]]), 4).shape
        torch.Size([1, 2, 4])
    """
    freq = torch.exp(
        torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32)
        * (-9.210340371976184 / dim)
    )  # 10000 ** (-2i / dim); log(10000) = 9.2103...
    angle = positions.to(torch.float32)[..., None]
    table = torch.zeros(*positions.shape, dim, device=positions.device)
    table[..., 0::2] = torch.sin(angle * freq)
    table[..., 1::2] = torch.cos(angle * freq[: dim // 2])
    return table.to(positions.dtype) if positions.is_floating_point() else table


def sinusoidal_positions(length: int, dim: int, device=None, dtype=None) -> Tensor:
    """Fixed sine/cosine position encodings ``[length, dim]`` (Vaswani et al., 2017)."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(
        torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-9.210340371976184 / dim)
    )  # 10000 ** (-2i / dim); log(10000) = 9.2103...
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table.to(dtype) if dtype is not None else table
