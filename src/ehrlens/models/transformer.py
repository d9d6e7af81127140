"""Transformer: one pre-norm encoder per feature key with a learned [CLS] token."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, cast

import torch
from torch import Tensor, nn

from ..core.interpretable import GradientInterpretable
from ..data.dataset import FittedSchema, SampleDataset
from .attention import EncoderBlock, MultiHeadAttention
from .base import BaseModel, feature_values
from .capture import ENCODER_MODEL_CAPABILITIES, AttentionCaptureMixin
from .embedding import FeatureEmbedding, Tokens, sinusoidal_positions
from .hparams import check_attention_hparams
from .lrp import LRPRulesMixin


class TransformerEncoder(nn.Module):
    """[CLS] + sinusoidal positions + pre-norm blocks over one feature's tokens.

    Shapes: tokens ``[batch, seq, D]`` -> final states ``[batch, 1 + seq, D]`` (CLS first).
    """

    def __init__(self, dim: int, heads: int, num_layers: int, dropout: float) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.empty(dim).normal_(std=0.02))
        self.blocks = nn.ModuleList(EncoderBlock(dim, heads, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: Tokens) -> Tensor:
        emb = tokens.embeddings
        batch, seq, dim = emb.shape
        x = emb + sinusoidal_positions(seq, dim, device=emb.device, dtype=emb.dtype)
        x = torch.cat([self.cls.to(emb.dtype).expand(batch, 1, dim), x], dim=1)
        mask = torch.cat([tokens.mask.new_ones(batch, 1), tokens.mask], dim=1)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)


class Transformer(AttentionCaptureMixin, LRPRulesMixin, BaseModel, GradientInterpretable):
    """Per-feature transformer encoders; the readout concatenates every key's [CLS] state.

    Each feature key gets its own embedding (nested visits are mean-pooled over their codes
    into one token per visit), a learned [CLS] token at position 0, sinusoidal positions, and
    ``num_layers`` pre-norm encoder blocks with key-padding masks. Attention maps are
    ``[batch, heads, 1 + n_inputs, 1 + n_inputs]``; the readout row is the [CLS] row.

    Args:
        dataset: a :class:`~ehrlens.data.SampleDataset` (or its fitted schema).
        embedding_dim: width ``D`` of tokens and hidden states.
        heads: attention heads (must divide ``embedding_dim``).
        num_layers: encoder blocks per feature key.
        dropout: dropout in blocks and on attention weights, in ``[0, 1)``.

    Raises:
        TypeError / ValueError: a size that is not an int >= 1, heads that do not divide
            ``embedding_dim``, or a dropout outside ``[0, 1)``, naming the hyperparameter.

    Example:
        >>> model = Transformer(dataset, embedding_dim=64, heads=4, num_layers=2)
        >>> out = model(**batch)          # {"logit": [batch, 1], "y_prob": ..., "loss": ...}
    """

    short_name = "transformer"
    #: The encoder models' capabilities plus the AttnLRP rules (``set_lrp_rules``).
    interpret_capabilities = replace(ENCODER_MODEL_CAPABILITIES, lrp_rules=True)
    #: Hyperparameters counting repeated layers (see ``BaseModel.layer_count_hparams``).
    layer_count_hparams = frozenset({"num_layers"})

    def __init__(
        self,
        dataset: SampleDataset | FittedSchema,
        embedding_dim: int = 128,
        heads: int = 4,
        num_layers: int = 2,
        dropout: float = 0.1,
    ) -> None:
        sizes = {"embedding_dim": embedding_dim, "heads": heads, "num_layers": num_layers}
        check_attention_hparams(type(self).__name__, sizes, dropout)
        super().__init__(dataset)
        self.hparams = {**sizes, "dropout": dropout}
        processors = self.schema.input_processors
        self.embeddings = nn.ModuleDict(
            {k: FeatureEmbedding(k, processors[k], embedding_dim) for k in self.feature_keys}
        )
        self.encoders = nn.ModuleDict(
            {
                k: TransformerEncoder(embedding_dim, heads, num_layers, dropout)
                for k in self.feature_keys
            }
        )
        self.head = nn.Linear(len(self.feature_keys) * embedding_dim, self.output_size)

    def forward(self, **batch: Any) -> dict[str, Tensor]:
        self.check_batch(batch)
        masks = batch.get("masks") or {}
        times = batch.get("times") or {}
        pooled = []
        for key in self.feature_keys:
            tokens = self.embeddings[key](
                feature_values(batch, key), masks.get(key), times.get(key)
            )
            pooled.append(self.encoders[key](tokens)[:, 0])
        return self.prepare_outputs(self.head(torch.cat(pooled, dim=-1)), batch)

    # ------------------------------------------------------------ interpretability
    def attention_modules(self) -> dict[str, list[MultiHeadAttention]]:
        encoders = {k: cast(TransformerEncoder, self.encoders[k]) for k in self.feature_keys}
        return {
            k: [cast(EncoderBlock, block).attention for block in e.blocks]
            for k, e in encoders.items()
        }

    def lrp_linear_modules(self) -> tuple[type[nn.Module], ...]:
        """Modules whose own code is linear: pooling of unit embeddings (a mean), [CLS]
        concatenation and position sums, residual sums (AttnLRP, :mod:`.lrp`)."""
        return (FeatureEmbedding, TransformerEncoder, EncoderBlock)

    def get_readout_weights(self, **data: Any) -> dict[str, Tensor]:
        """One-hot ``[batch, 1 + n_inputs]`` at the [CLS] position (0) for every key."""
        weights = {}
        for key in self.feature_keys:
            values = feature_values(data, key)
            w = torch.zeros(values.shape[0], values.shape[1] + 1, device=values.device)
            w[:, 0] = 1.0
            weights[key] = w
        return weights

    def get_relevance_tensor(self, R: Mapping[str, Tensor], **data: Any) -> dict[str, Tensor]:
        """The [CLS] row without the [CLS] column: ``[batch, n_inputs]`` per key."""
        return {key: r[:, 0, 1:] for key, r in R.items()}

    def select_input_positions(
        self, relevance: Mapping[str, Tensor], **data: Any
    ) -> dict[str, Tensor]:
        """Drop the [CLS] position: ``[batch, 1 + n_inputs]`` -> ``[batch, n_inputs]``."""
        return {key: row[:, 1:] for key, row in relevance.items()}
