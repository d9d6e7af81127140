"""The two interface levels a model implements to be explained (re-exported, and documented
for users, by :mod:`ehrlens.interpret.api`).

They live in the leaf layer so that models (``ehrlens.models``), adapters
(``ehrlens.integrations``) and interpreters (``ehrlens.interpret``) all depend on the contract
and none of them on another: a model subclasses these classes without importing any
interpreter.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor


class AttentionInterpretable(ABC):
    """A model whose attention maps can be captured during the forward pass.

    Attention positions are what a layer attends over (e.g. ``[CLS]`` plus one token per
    input position); input positions are the entries of the raw feature tensor's second
    dimension (codes, visits, time steps).
    """

    @abstractmethod
    def set_attention_hooks(self, enabled: bool) -> None:
        """While enabled, each forward stores every layer's post-softmax map, detached."""

    @abstractmethod
    def get_attention_layers(self) -> dict[str, list[tuple[Tensor, Tensor | None]]]:
        """``{feature_key: [(attn_map, attn_grad), ...]}``, input side first.

        ``attn_map`` is ``[batch, heads, seq, seq]``; ``attn_grad`` is ``None`` when gradients
        were not captured.
        """

    @abstractmethod
    def get_relevance_tensor(self, R: Mapping[str, Tensor], **data: Any) -> dict[str, Tensor]:
        """Reduce each ``[batch, seq, seq]`` relevance matrix to the readout row over inputs.

        Returns ``{feature_key: [batch, n_inputs]}`` aligned with the input positions.
        """

    def get_readout_weights(self, **data: Any) -> dict[str, Tensor] | None:
        """Weights ``[batch, seq]`` over attention positions with which the model reads out.

        ``get_relevance_tensor(R)`` must equal ``(weights @ R)`` restricted to the input
        positions, for every ``R``. Knowing the weights up front lets an interpreter
        propagate one row vector through the layers (``O(layers * seq^2)``) instead of
        multiplying full matrices (``O(layers * seq^3)``). ``None`` (the default) means the
        model does not state them; interpreters then fall back to full products read out by
        :meth:`get_relevance_tensor`.
        """
        return None

    def select_input_positions(
        self, relevance: Mapping[str, Tensor], **data: Any
    ) -> dict[str, Tensor]:
        """Map a relevance row ``[batch, seq]`` over attention positions to ``[batch, n_inputs]``.

        The default derives the answer from :meth:`get_relevance_tensor` by linearity (it
        builds ``[batch, seq, seq]`` matrices); models override it with a cheap selection.
        """
        weights = self.get_readout_weights(**data)
        if weights is None:
            raise NotImplementedError("select_input_positions needs get_readout_weights")
        matrices = {}
        for key, row in relevance.items():
            w = weights[key].to(row.dtype)
            scale = (w * w).sum(dim=-1).clamp(min=torch.finfo(row.dtype).tiny)
            # weights @ (w row^T / |w|^2) == row, so the model's own readout recovers `row`.
            matrices[key] = (w[:, :, None] * row[:, None, :]) / scale[:, None, None]
        return self.get_relevance_tensor(matrices, **data)


class GradientInterpretable(AttentionInterpretable):
    """An :class:`AttentionInterpretable` that also captures attention gradients."""

    @abstractmethod
    def set_attention_hooks(self, enabled: bool, capture_gradients: bool = True) -> None:
        """Capture maps; with ``capture_gradients``, also their gradients after backward.

        ``capture_gradients=False`` is the forward-only mode of
        :class:`AttentionInterpretable`.
        """


#: The earlier name of :class:`GradientInterpretable` (same object).
CheferInterpretable = GradientInterpretable
