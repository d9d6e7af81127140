"""CodeTransformer: a BEHRT-style encoder whose attention runs over codes, not visits.

BEHRT (Li et al., "BEHRT: Transformer for Electronic Health Records", Scientific Reports
2020) makes every diagnosis of a patient's history a token and carries the visit structure in
added embeddings. Here, per code feature, each real code of each visit is one token:

    token = code embedding + segment embedding (visit index mod 2, BEHRT's A/B segments)
            + sinusoidal encoding of the visit index + sinusoidal encoding of the visit time
            (when the batch has times, e.g. ``"stagenet"``: the role of BEHRT's age)

and a learned ``[CLS]`` token is read out. Attention maps are therefore ``[batch, heads,
1 + n_codes, 1 + n_codes]`` and rollout, flow and Chefer relevance give one score per code,
also for ``"nested_sequence"`` visits, where :class:`~ehrlens.models.Transformer` pools a visit
into one token and can only give each of its codes the visit's score.

Padding never becomes a token: each patient's real codes are packed to the front (in visit,
then code order) and the rest is masked, so the attention sequence is as long as the patient
in the batch with the most codes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, cast

import torch
from torch import Tensor, nn

from ..core.interpretable import GradientInterpretable
from ..data.dataset import FittedSchema, SampleDataset
from .attention import EncoderBlock, MultiHeadAttention
from .base import BaseModel, feature_values
from .capture import ENCODER_MODEL_CAPABILITIES, AttentionCaptureMixin
from .embedding import FeatureEmbedding, sinusoidal_encoding
from .hparams import check_attention_hparams
from .lrp import LRPRulesMixin


@dataclass
class TokenLayout:
    """Where one feature's tokens come from.

    Attributes:
        index: ``[batch, n_tokens]`` flat index into the feature's input positions
            (``values.reshape(batch, -1)`` for codes, the steps otherwise) of each token.
        mask: ``[batch, n_tokens]`` True at real tokens (the rest is padding).
        visit: ``[batch, n_tokens]`` visit (step) index of each token.
        positions: shape of the input positions, ``values.shape`` for code features
            (``[batch, visits, codes]`` or ``[batch, seq]``), ``values.shape[:2]`` otherwise.
    """

    index: Tensor
    mask: Tensor
    visit: Tensor
    positions: tuple[int, ...]


def token_layout(real: Tensor, visit_of_position: Tensor, shape: tuple[int, ...]) -> TokenLayout:
    """Pack the real positions of ``real`` (``[batch, n]`` bool) to the front, in order.

    ``visit_of_position`` is ``[n]``: the visit index of each flat position.

    Example:
        >>> real = torch.tensor([[False, True, True], [True, False, False]])
        >>> layout = token_layout(real, torch.tensor([0, 0, 1]), (2, 3))
        >>> layout.index, layout.mask
        (tensor([[1, 2], [0, 1]]), tensor([[ True,  True], [ True, False]]))
    """
    order = torch.argsort((~real).to(torch.int8), dim=1, stable=True)
    counts = real.sum(dim=1)
    length = int(counts.max()) if counts.numel() else 0
    index = order[:, :length]
    mask = torch.arange(length, device=real.device)[None, :] < counts[:, None]
    return TokenLayout(index, mask, visit_of_position[index], shape)


class CodeTransformer(AttentionCaptureMixin, LRPRulesMixin, BaseModel, GradientInterpretable):
    """BEHRT-style transformer: every code is a token; visits enter as embeddings.

    One encoder per feature key (as :class:`~ehrlens.models.Transformer`): a learned [CLS]
    token, ``num_layers`` pre-norm blocks with key-padding masks, the [CLS] state of every key
    concatenated into a linear head. Code features (``"sequence"``, ``"nested_sequence"``,
    ``"stagenet"``) give one token per real code, with segment, visit-index and (when the batch
    has times) visit-time embeddings added; a flat sequence's codes are each their own visit.
    Numeric features (``"timeseries"``, ``"tensor"``) give one token per step or element as in
    ``Transformer``. Attention maps are ``[batch, heads, 1 + n_tokens, 1 + n_tokens]``; the
    readout row is the [CLS] row, and scores come back per code (``[batch, visits, codes]``
    for nested visits).

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
        >>> model = CodeTransformer(dataset, embedding_dim=64, heads=4, num_layers=2)
        >>> out = model(**batch)          # {"logit": [batch, 1], "y_prob": ..., "loss": ...}
        >>> scores = AttentionRollout(model).attribute(**batch)
        >>> scores["diagnoses"].shape     # [batch, visits, codes]: one score per code
        torch.Size([8, 7, 5])
    """

    short_name = "code_transformer"
    #: The encoder models' capabilities plus the AttnLRP rules (``set_lrp_rules``).
    interpret_capabilities = replace(ENCODER_MODEL_CAPABILITIES, lrp_rules=True)
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
        keys = self.feature_keys
        self.embeddings = nn.ModuleDict(
            {k: FeatureEmbedding(k, processors[k], embedding_dim) for k in keys}
        )
        self.segments = nn.ModuleDict({k: nn.Embedding(2, embedding_dim) for k in keys})
        self.cls = nn.ParameterDict(
            {k: nn.Parameter(torch.empty(embedding_dim).normal_(std=0.02)) for k in keys}
        )
        self.blocks = nn.ModuleDict(
            {
                k: nn.ModuleList(
                    EncoderBlock(embedding_dim, heads, dropout) for _ in range(num_layers)
                )
                for k in keys
            }
        )
        self.norms = nn.ModuleDict({k: nn.LayerNorm(embedding_dim) for k in keys})
        self.head = nn.Linear(len(keys) * embedding_dim, self.output_size)

    # ------------------------------------------------------------------ tokens
    @property
    def unit_position_keys(self) -> frozenset[str]:
        """Features whose every input unit (code) is its own attention position."""
        processors = self.schema.input_processors
        return frozenset(k for k in self.feature_keys if processors[k].holds_codes)

    def _embedding(self, key: str) -> FeatureEmbedding:
        return cast(FeatureEmbedding, self.embeddings[key])

    def layout(self, key: str, data: Mapping[str, Any]) -> TokenLayout:
        """The token layout of feature ``key`` in batch ``data`` (see :class:`TokenLayout`)."""
        values = feature_values(data, key)
        embedding = self._embedding(key)
        step_mask = (data.get("masks") or {}).get(key)
        if embedding.processor.holds_codes:
            embedding.processor.check_input(key, values)
            real = embedding.processor.unit_mask(values, step_mask)
            shape = tuple(values.shape)
        else:
            real = embedding.position_mask(values, step_mask)
            shape = tuple(values.shape[:2])
        batch = shape[0]
        per_visit = 1 if len(shape) == 2 else shape[2]
        visit = torch.arange(real[0].numel() if batch else 0, device=values.device) // per_visit
        return token_layout(real.reshape(batch, -1), visit, shape)

    def _tokens(self, key: str, data: Mapping[str, Any]) -> tuple[Tensor, TokenLayout]:
        values = feature_values(data, key)
        embedding = self._embedding(key)
        layout = self.layout(key, data)
        processor = embedding.processor
        if processor.holds_codes:
            units = processor.embed_units(key, embedding.unit, values)  # [b, *positions, D]
        else:
            step_mask = (data.get("masks") or {}).get(key)
            units = embedding(values, step_mask).embeddings  # [b, steps, D]
        flat = units.reshape(units.shape[0], -1, units.shape[-1])
        tokens = flat.gather(1, layout.index[:, :, None].expand(-1, -1, flat.shape[-1]))
        dim = tokens.shape[-1]
        visit = layout.visit
        segment = cast(nn.Embedding, self.segments[key])(visit % 2)
        x = tokens + segment + sinusoidal_encoding(visit.to(tokens.dtype), dim)
        times = (data.get("times") or {}).get(key)
        if times is not None:
            step_times = times.to(tokens.dtype).gather(1, visit.clamp(max=times.shape[1] - 1))
            x = x + sinusoidal_encoding(step_times, dim)
        return x * layout.mask[:, :, None].to(x.dtype), layout

    def forward(self, **batch: Any) -> dict[str, Tensor]:
        self.check_batch(batch)
        pooled = []
        for key in self.feature_keys:
            x, layout = self._tokens(key, batch)
            size, _, dim = x.shape
            cls = self.cls[key].to(x.dtype).expand(size, 1, dim)
            x = torch.cat([cls, x], dim=1)
            mask = torch.cat([layout.mask.new_ones(size, 1), layout.mask], dim=1)
            for block in cast(nn.ModuleList, self.blocks[key]):
                x = block(x, mask)
            pooled.append(self.norms[key](x)[:, 0])
        return self.prepare_outputs(self.head(torch.cat(pooled, dim=-1)), batch)

    # ------------------------------------------------------------ interpretability
    def attention_modules(self) -> dict[str, list[MultiHeadAttention]]:
        blocks = {k: cast(nn.ModuleList, self.blocks[k]) for k in self.feature_keys}
        return {k: [cast(EncoderBlock, b).attention for b in v] for k, v in blocks.items()}

    def lrp_linear_modules(self) -> tuple[type[nn.Module], ...]:
        """Modules whose own code is linear (AttnLRP, :mod:`.lrp`): the unit embeddings'
        wrapper, residual sums of the blocks, the [CLS] tokens, and the segment embeddings,
        constants added to the tokens (their share of the logit stays, like a position's)."""
        return (FeatureEmbedding, EncoderBlock, nn.ParameterDict, nn.Embedding)

    def get_readout_weights(self, **data: Any) -> dict[str, Tensor]:
        """One-hot ``[batch, 1 + n_tokens]`` at the [CLS] position (0) for every key."""
        weights = {}
        for key in self.feature_keys:
            layout = self.layout(key, data)
            size, tokens = layout.mask.shape
            w = torch.zeros(size, tokens + 1, device=layout.mask.device)
            w[:, 0] = 1.0
            weights[key] = w
        return weights

    def _to_inputs(self, key: str, row: Tensor, data: Mapping[str, Any]) -> Tensor:
        """Token scores ``[batch, n_tokens]`` -> scores at the input positions (0 at padding)."""
        layout = self.layout(key, data)
        batch = layout.positions[0]
        flat = row.new_zeros(batch, int(torch.Size(layout.positions[1:]).numel()))
        flat.scatter_(1, layout.index, row * layout.mask.to(row.dtype))
        return flat.reshape(layout.positions)

    def get_relevance_tensor(self, R: Mapping[str, Tensor], **data: Any) -> dict[str, Tensor]:
        """The [CLS] row without the [CLS] column, at each token's code: ``[batch, visits,
        codes]`` for nested codes, ``[batch, seq]`` for flat ones, ``[batch, steps]`` else."""
        return {key: self._to_inputs(key, r[:, 0, 1:], data) for key, r in R.items()}

    def select_input_positions(
        self, relevance: Mapping[str, Tensor], **data: Any
    ) -> dict[str, Tensor]:
        """Drop the [CLS] position and put each token's score on its code."""
        return {key: self._to_inputs(key, row[:, 1:], data) for key, row in relevance.items()}
