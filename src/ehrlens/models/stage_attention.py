"""StageAttentionNet: StageNet's stage-aware LSTM, then self-attention over time steps.

StageNet (Gao et al., "StageNet: Stage-Aware Neural Networks for Health Risk Prediction",
WWW 2020) extends the LSTM with *master* gates computed by a cumulative softmax (``cumax``)
over ``levels`` chunks of the cell state, conditioned on the time interval since the previous
step. The mean of the master forget gate measures how far the patient's disease stage moved;
a stage-adaptive convolution re-weights the last ``conv_size`` hidden states by the
cumulative stage variation before a convolution and a squeeze-and-excitation recalibration.
Here its outputs feed pre-norm self-attention blocks over the time steps, and the model reads
out at each patient's last valid step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import Tensor, nn

from ..core.interpretable import GradientInterpretable
from ..data.dataset import FittedSchema, SampleDataset
from .attention import EncoderBlock, MultiHeadAttention
from .base import BaseModel, feature_values
from .capture import ENCODER_MODEL_CAPABILITIES, AttentionCaptureMixin
from .embedding import FeatureEmbedding
from .hparams import check_attention_hparams


def cumax(x: Tensor, reverse: bool = False) -> Tensor:
    """Cumulative softmax over the last dim; ``reverse`` accumulates right to left."""
    if reverse:
        return torch.flip(torch.cumsum(torch.flip(x.softmax(dim=-1), [-1]), dim=-1), [-1])
    return torch.cumsum(x.softmax(dim=-1), dim=-1)


class StageNetLayer(nn.Module):
    """Stage-aware LSTM with stage-adaptive convolution.

    Args:
        input_dim: width of each step's input.
        chunk_size: units per level; the hidden size is ``chunk_size * levels``.
        levels: number of master-gate levels (stages).
        conv_size: window of past hidden states the convolution sees.

    Shapes: ``x`` ``[batch, T, input_dim]``, ``intervals`` ``[batch, T]`` ->
    ``[batch, T, chunk_size * levels]``. Step ``t`` depends on steps ``<= t`` only, so padding
    at the end never changes earlier outputs.
    """

    def __init__(self, input_dim: int, chunk_size: int, levels: int, conv_size: int) -> None:
        super().__init__()
        self.chunk_size = chunk_size
        self.levels = levels
        self.hidden_dim = chunk_size * levels
        self.conv_size = conv_size
        gates = 4 * self.hidden_dim + 2 * levels
        self.kernel = nn.Linear(input_dim + 1, gates)
        self.recurrent_kernel = nn.Linear(self.hidden_dim + 1, gates)
        squeeze = max(self.hidden_dim // 6, 1)
        self.scale = nn.Linear(self.hidden_dim, squeeze)
        self.rescale = nn.Linear(squeeze, self.hidden_dim)
        self.conv = nn.Conv1d(self.hidden_dim, self.hidden_dim, conv_size)

    def _step(
        self, x: Tensor, interval: Tensor, c: Tensor, h: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        L, C = self.levels, self.chunk_size
        interval = interval[:, None]
        z = self.kernel(torch.cat([x, interval], -1)) + self.recurrent_kernel(
            torch.cat([h, interval], -1)
        )
        master_forget = cumax(z[:, :L])[:, :, None]  # [batch, L, 1]
        master_input = cumax(z[:, L : 2 * L], reverse=True)[:, :, None]
        gates = z[:, 2 * L :].view(-1, 4 * L, C)
        forget = torch.sigmoid(gates[:, :L])
        inp = torch.sigmoid(gates[:, L : 2 * L])
        out = torch.sigmoid(gates[:, 2 * L : 3 * L])
        candidate = torch.tanh(gates[:, 3 * L :])
        c_prev = c.view(-1, L, C)
        overlap = master_forget * master_input
        c_new = (
            overlap * (forget * c_prev + inp * candidate)
            + (master_forget - overlap) * c_prev
            + (master_input - overlap) * candidate
        )
        h_new = out * torch.tanh(c_new)
        stage_shift = 1.0 - master_forget.mean(dim=(1, 2))  # [batch]
        return c_new.reshape(-1, self.hidden_dim), h_new.reshape(-1, self.hidden_dim), stage_shift

    def forward(self, x: Tensor, intervals: Tensor) -> Tensor:
        batch, steps, _ = x.shape
        c = x.new_zeros(batch, self.hidden_dim)
        h = x.new_zeros(batch, self.hidden_dim)
        window_h = [x.new_zeros(batch, self.hidden_dim)] * self.conv_size
        window_shift = [x.new_zeros(batch)] * self.conv_size
        outputs = []
        for t in range(steps):
            c, h, shift = self._step(x[:, t], intervals[:, t], c, h)
            window_h = [*window_h[1:], h]
            window_shift = [*window_shift[1:], shift]
            weights = torch.cumsum(torch.stack(window_shift, 1), 1).softmax(dim=1)  # [b, K]
            local = torch.stack(window_h, 2) * weights[:, None, :]  # [batch, H, K]
            theme = torch.sigmoid(self.rescale(torch.relu(self.scale(local.mean(-1)))))
            outputs.append(theme * self.conv(local).squeeze(-1) + h)
        if not outputs:
            return x.new_zeros(batch, 0, self.hidden_dim)
        return torch.stack(outputs, dim=1)


def last_valid_index(mask: Tensor) -> Tensor:
    """Index ``[batch]`` of the last True of each ``[batch, T]`` row (0 for an empty row)."""
    positions = torch.arange(1, mask.shape[1] + 1, device=mask.device)
    return ((positions * mask).argmax(dim=1)).long()


#: How :class:`StageAttentionNet` reads a feature's steps out: the last valid step, or the
#: mean over valid steps.
READOUTS = ("last", "mean")


class StageAttentionNet(AttentionCaptureMixin, BaseModel, GradientInterpretable):
    """StageNet per feature key, then multi-head self-attention over its time steps.

    Per key: embedding (one token per step; nested codes are mean-pooled per step), the
    stage-aware LSTM over steps using ``log1p`` of the time gaps (1 when the feature has no
    times), a projection to ``embedding_dim``, ``attention_layers`` pre-norm attention blocks,
    and the state at the patient's last valid step (or, with ``readout="mean"``, the mean of
    its valid steps' states). The key states are concatenated into a linear head. Attention
    maps are ``[batch, heads, T, T]``; the readout row is the last valid step (or the uniform
    row over valid steps).

    Args:
        dataset: a :class:`~ehrlens.data.SampleDataset` (or its fitted schema).
        embedding_dim: width of step embeddings and attention blocks.
        chunk_size: StageNet units per level.
        levels: StageNet master-gate levels.
        heads: attention heads (must divide ``embedding_dim``).
        attention_layers: self-attention blocks after StageNet.
        conv_size: StageNet convolution window.
        dropout: dropout after StageNet and inside attention blocks, in ``[0, 1)``.
        readout: ``"last"`` (the state at the last valid step, StageNet's readout) or
            ``"mean"`` (the mean of the states over valid steps, which does not privilege the
            last step; see ``benchmarks/RESULTS.md`` for what it does to explanations).

    Raises:
        TypeError / ValueError: a size that is not an int >= 1, heads that do not divide
            ``embedding_dim``, or a dropout outside ``[0, 1)``, naming the hyperparameter.

    Example:
        >>> model = StageAttentionNet(dataset, embedding_dim=64, chunk_size=32, levels=3)
        >>> out = model(**batch)
    """

    short_name = "stagenet"
    interpret_capabilities = ENCODER_MODEL_CAPABILITIES
    #: Hyperparameters counting repeated layers (see ``BaseModel.layer_count_hparams``).
    layer_count_hparams = frozenset({"attention_layers"})

    def __init__(
        self,
        dataset: SampleDataset | FittedSchema,
        embedding_dim: int = 128,
        chunk_size: int = 128,
        levels: int = 3,
        heads: int = 4,
        attention_layers: int = 1,
        conv_size: int = 10,
        dropout: float = 0.3,
        readout: str = "last",
    ) -> None:
        name = type(self).__name__
        if readout not in READOUTS:
            raise ValueError(
                f"{name}: readout must be one of {', '.join(READOUTS)}, got {readout!r}"
            )
        sizes = {
            "embedding_dim": embedding_dim,
            "chunk_size": chunk_size,
            "levels": levels,
            "heads": heads,
            "attention_layers": attention_layers,
            "conv_size": conv_size,
        }
        check_attention_hparams(name, sizes, dropout)
        super().__init__(dataset)
        self.hparams = {**sizes, "dropout": dropout, "readout": readout}
        processors = self.schema.input_processors
        keys = self.feature_keys
        self.embeddings = nn.ModuleDict(
            {k: FeatureEmbedding(k, processors[k], embedding_dim) for k in keys}
        )
        self.stagenets = nn.ModuleDict(
            {k: StageNetLayer(embedding_dim, chunk_size, levels, conv_size) for k in keys}
        )
        self.projections = nn.ModuleDict(
            {k: nn.Linear(chunk_size * levels, embedding_dim) for k in keys}
        )
        self.blocks = nn.ModuleDict(
            {
                k: nn.ModuleList(
                    EncoderBlock(embedding_dim, heads, dropout) for _ in range(attention_layers)
                )
                for k in keys
            }
        )
        self.norms = nn.ModuleDict({k: nn.LayerNorm(embedding_dim) for k in keys})
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(len(keys) * embedding_dim, self.output_size)

    def _intervals(self, key: str, times: Tensor | None, like: Tensor) -> Tensor:
        if times is None:
            return like.new_ones(like.shape[:2])
        gaps = torch.diff(times.to(like.dtype), dim=1, prepend=times[:, :1].to(like.dtype))
        return torch.log1p(gaps.clamp(min=0))

    def _step_mask(self, key: str, data: Mapping[str, Any]) -> Tensor:
        masks = data.get("masks") or {}
        embedding = cast(FeatureEmbedding, self.embeddings[key])
        return embedding.position_mask(feature_values(data, key), masks.get(key))

    def forward(self, **batch: Any) -> dict[str, Tensor]:
        self.check_batch(batch)
        masks = batch.get("masks") or {}
        times = batch.get("times") or {}
        pooled = []
        for key in self.feature_keys:
            tokens = self.embeddings[key](feature_values(batch, key), masks.get(key))
            emb = tokens.embeddings
            x = self.stagenets[key](emb, self._intervals(key, times.get(key), emb))
            x = self.projections[key](self.dropout(x))
            for block in cast(nn.ModuleList, self.blocks[key]):
                x = block(x, tokens.mask)
            x = self.norms[key](x)
            if x.shape[1] == 0:  # no step at all in this batch: nothing to attend over
                # Zeros, but summed from the (empty) embeddings so that they stay in the
                # autograd graph: gradient methods then score the feature 0 instead of failing.
                pooled.append(emb.sum(dim=1).to(x.dtype))
            else:
                # A patient with no step in this feature reads out zeros, as when scored alone.
                weights = self._readout(tokens.mask).to(x.dtype)  # [batch, T]
                pooled.append(torch.bmm(weights[:, None, :], x)[:, 0])
        return self.prepare_outputs(self.head(torch.cat(pooled, dim=-1)), batch)

    # ------------------------------------------------------------ interpretability
    def attention_modules(self) -> dict[str, list[MultiHeadAttention]]:
        blocks = {k: cast(nn.ModuleList, self.blocks[k]) for k in self.feature_keys}
        return {k: [cast(EncoderBlock, b).attention for b in v] for k, v in blocks.items()}

    def _readout(self, mask: Tensor) -> Tensor:
        """Readout weights ``[batch, T]`` over steps: one-hot at the last valid step
        (``readout="last"``) or uniform over the valid steps (``"mean"``); all 0 for a
        patient without a step."""
        w = torch.zeros(mask.shape, device=mask.device)
        if mask.shape[1] == 0:
            return w
        if self.hparams.get("readout", "last") == "mean":
            real = mask.to(w.dtype)
            return real / real.sum(dim=1, keepdim=True).clamp(min=1.0)
        w[torch.arange(mask.shape[0], device=mask.device), last_valid_index(mask)] = 1.0
        return w * mask.any(dim=1, keepdim=True).to(w.dtype)

    def get_readout_weights(self, **data: Any) -> dict[str, Tensor]:
        """``[batch, T]``: one-hot at each patient's last valid step (``readout="last"``), or
        uniform over its valid steps (``readout="mean"``)."""
        return {key: self._readout(self._step_mask(key, data)) for key in self.feature_keys}

    def get_relevance_tensor(self, R: Mapping[str, Tensor], **data: Any) -> dict[str, Tensor]:
        """The readout row of each ``[batch, T, T]`` matrix (``weights @ R``): ``[batch, T]``."""
        out = {}
        for key, r in R.items():
            w = self._readout(self._step_mask(key, data)).to(r.device, r.dtype)
            out[key] = torch.bmm(w[:, None, :], r)[:, 0]
        return out

    def select_input_positions(
        self, relevance: Mapping[str, Tensor], **data: Any
    ) -> dict[str, Tensor]:
        """Attention positions are the input steps: returned as they are."""
        return dict(relevance)
