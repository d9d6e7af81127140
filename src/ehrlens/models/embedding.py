"""Turn one feature's batch tensor into a sequence of tokens for an attention encoder.

One token per *input position*: a code (``"sequence"``, flat ``"stagenet"``), a visit pooled
over its codes (``"nested_sequence"``, nested ``"stagenet"``), a time step (``"timeseries"``) or
a vector element (``"tensor"``). Interpreters score these positions; the raw input's extra
dimension (codes of a visit, values of a step) receives its position's score.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..data.processors import (
    PAD_ID,
    FeatureProcessor,
    StageNetProcessor,
    TensorProcessor,
    TimeseriesProcessor,
    _CodeProcessor,
)


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


class ElementwiseEmbedding(nn.Module):
    """One token per vector element: ``x[..., f] * W[f] + b[f]``.

    Shapes: ``[batch, features]`` -> ``[batch, features, dim]``.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(size, dim) / dim**0.5)
        self.bias = nn.Parameter(torch.zeros(size, dim))

    def forward(self, values: Tensor) -> Tensor:
        return values.to(self.weight.dtype)[..., None] * self.weight + self.bias


class FeatureEmbedding(nn.Module):
    """Embed one feature according to its processor.

    ``self.unit`` is the module that embeds each input unit on its own (a code, a time step, a
    vector element): its output is ``[batch, *input_positions, dim]`` (``[batch, visits,
    codes, dim]`` for nested codes, before visits are pooled). Gradient methods attribute to
    this output.

    Args:
        key: the feature key (named in errors).
        processor: the fitted processor of that feature.
        dim: embedding width ``D``.

    Example:
        >>> emb = FeatureEmbedding("conditions", dataset.input_processors["conditions"], 32)
        >>> tokens = emb(batch["conditions"])   # tokens.embeddings: [batch, seq, 32]
    """

    def __init__(self, key: str, processor: FeatureProcessor, dim: int) -> None:
        super().__init__()
        self.key = key
        self.schema = processor.schema
        self.dim = dim
        self.is_token_feature = processor.is_token_feature
        self.unit: nn.Module
        if isinstance(processor, _CodeProcessor):
            self.unit = nn.Embedding(processor.vocab_size, dim, padding_idx=PAD_ID)
            self.nested = processor.schema == "nested_sequence" or (
                isinstance(processor, StageNetProcessor) and bool(processor.nested)
            )
        elif isinstance(processor, TimeseriesProcessor):
            self.unit = nn.Linear(int(processor.num_features), dim)
        elif isinstance(processor, TensorProcessor):
            self.unit = ElementwiseEmbedding(int(processor.size), dim)
        else:  # pragma: no cover - every schema string has a branch above
            raise TypeError(f"feature '{key}': no embedding for schema {processor.schema!r}")

    @property
    def input_rank(self) -> int:
        """Rank of the batch tensor: 3 for nested codes and time series, else 2."""
        return 3 if self.schema == "timeseries" or getattr(self, "nested", False) else 2

    def _check(self, values: Tensor) -> None:
        if not isinstance(values, Tensor):
            raise TypeError(f"feature '{self.key}': expected a tensor, got {type(values).__name__}")
        if values.dim() != self.input_rank:
            raise ValueError(
                f"feature '{self.key}': expected a tensor of rank {self.input_rank} "
                f"([batch, ...]) for schema '{self.schema}', got shape {tuple(values.shape)}"
            )
        if self.is_token_feature and (
            values.is_floating_point() or values.is_complex() or values.dtype == torch.bool
        ):
            raise TypeError(
                f"feature '{self.key}': code ids must be an integer tensor, got {values.dtype}"
            )

    def _check_ids(self, values: Tensor) -> None:
        """Code ids must index this feature's vocabulary (e.g. not ids of another schema)."""
        size = self.unit.num_embeddings
        if values.numel() == 0 or values.device.type == "meta":
            return
        bad = ((values < 0) | (values >= size)).reshape(values.shape[0], -1).any(dim=1)
        if bool(bad.any()):
            index = int(bad.nonzero()[0, 0])
            row = values[index]
            wrong = int(row[(row < 0) | (row >= size)][0])
            raise ValueError(
                f"feature '{self.key}': sample {index} has code id {wrong}, outside this "
                f"model's vocabulary of {size} ids (0..{size - 1}); convert new patients with "
                "the model's own vocabulary: create_sample_dataset(samples, schema=model.schema)"
            )

    def position_mask(self, values: Tensor, step_mask: Tensor | None = None) -> Tensor:
        """``[batch, seq]`` True at real input positions (codes, non-empty visits, steps)."""
        self._check(values)
        if self.is_token_feature:
            real = values != PAD_ID
            return real.any(dim=-1) if self.nested else real
        if self.schema == "timeseries":
            if step_mask is None:
                return torch.ones(values.shape[:2], dtype=torch.bool, device=values.device)
            return step_mask.to(torch.bool)
        return torch.ones(values.shape, dtype=torch.bool, device=values.device)

    def forward(
        self, values: Tensor, step_mask: Tensor | None = None, times: Tensor | None = None
    ) -> Tokens:
        mask = self.position_mask(values, step_mask)
        if self.is_token_feature:
            self._check_ids(values)
            embedded = self.unit(values)  # [batch, seq(, codes), D]; pad embeds to 0
            if self.nested:
                counts = (values != PAD_ID).sum(-1, keepdim=True).clamp(min=1)
                embedded = embedded.sum(dim=-2) / counts.to(embedded.dtype)
        elif self.schema == "timeseries":
            embedded = self.unit(values.to(self.unit.weight.dtype))
        else:
            embedded = self.unit(values)
        return Tokens(embedded, mask, times)


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
