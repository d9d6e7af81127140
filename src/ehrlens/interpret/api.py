"""The two-level interpretability interface and the one capture context manager.

- :class:`AttentionInterpretable`: forward capture of post-softmax attention maps only. No
  autograd hook is involved, so capture works under ``torch.no_grad()`` and
  ``torch.inference_mode()``. Enough for attention rollout and attention flow.
- :class:`GradientInterpretable`: also captures each map's gradient after ``.backward()``.
  Needed by Chefer et al.'s relevance. :data:`CheferInterpretable` is the same class.

Interpreters check the level they need with ``isinstance``. A third-party class that has the
methods opts in with ``AttentionInterpretable.register(cls)`` (or ``GradientInterpretable``).

Every interpreter runs the model through :func:`capture_attention`, which enables capture at
the level asked for, runs the forward in eval mode, and always disables capture and restores
the caller's train/eval mode.

Threads: capture state lives on the model, so explanations of one model are serialised by a
per-model lock (:func:`model_lock`, taken by :func:`eval_mode` and so by
:func:`capture_attention`): two threads explaining the same model, with one interpreter each,
take turns and both get the results they would get alone. Different models run in parallel.
"""

from __future__ import annotations

import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

_MODEL_LOCKS: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
_MODEL_LOCKS_GUARD = threading.Lock()
#: Shared by objects that cannot be weakly referenced (rare): correct, only less parallel.
_FALLBACK_LOCK = threading.RLock()


def model_lock(model: Any) -> threading.RLock:
    """The re-entrant lock that serialises explanations (and :func:`eval_mode`) of ``model``.

    One lock per model object, created on first use and dropped with the model. Re-entrant,
    so a method may nest :func:`eval_mode` and :func:`capture_attention` in one thread.

    Example:
        >>> with model_lock(model):   # e.g. to change hooks by hand without racing ehrlens
        ...     model.set_attention_hooks(True)
    """
    with _MODEL_LOCKS_GUARD:
        try:
            lock = _MODEL_LOCKS.get(model)
            if lock is None:
                lock = _MODEL_LOCKS[model] = threading.RLock()
        except TypeError:  # not weakly referenceable, or not hashable
            lock = _FALLBACK_LOCK
    return lock


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


@dataclass
class CapturedForward:
    """What :func:`capture_attention` yields: the model's outputs of the captured forward."""

    outputs: Any


@contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """Run the block with ``model`` in eval mode; restore every submodule's own flag after.

    A caller may keep parts of a training model in eval mode, so each module's ``training``
    flag is saved and restored, not just the top module's. The block holds
    :func:`model_lock`, so another thread's ``eval_mode`` on the same model waits: it can
    neither save the eval flags set here nor restore its own in the middle of this block.

    Example:
        >>> with eval_mode(model):
        ...     probabilities = model(**batch)["y_prob"]   # dropout off
        >>> model.training   # as before the block
    """
    with model_lock(model):
        modules = list(model.modules()) if isinstance(model, nn.Module) else []
        modes = [(module, module.training) for module in modules]
        if modules:
            model.eval()
        try:
            yield
        finally:
            for module, training in modes:
                module.training = training


@contextmanager
def capture_attention(
    model: AttentionInterpretable,
    batch: Mapping[str, Any],
    gradients: bool = False,
    head_fusion: str | None = None,
    keys_only: bool = False,
) -> Iterator[CapturedForward]:
    """Enable capture, run ``model(**batch)`` in eval mode, and always clean up.

    Inside the block, ``model.get_attention_layers()`` returns the captured maps (and, with
    ``gradients=True``, their gradients once a backward pass has run). On exit - also on an
    exception - capture is disabled (every hook handle removed) and the model is put back in
    the train/eval mode the caller had (every submodule's own flag). The whole block holds
    the model's lock (:func:`model_lock`): captures of one model in several threads take
    turns instead of overwriting each other's hooks and maps.

    Args:
        model: an :class:`AttentionInterpretable` (a :class:`GradientInterpretable` when
            ``gradients=True``).
        batch: keyword arguments of the model's forward.
        gradients: also capture attention gradients.
        head_fusion: forward-only: ask for maps already fused over heads (``[batch, 1, seq,
            seq]``), which models declaring ``supports_capture_head_fusion`` store instead of
            every head's map; other models return per-head maps, to be fused by the caller.
        keys_only: forward-only: store each layer's queries and keys instead of its map
            (models declaring ``supports_key_capture``; read them with
            ``model.get_attention_keys()``).

    Example:
        >>> with capture_attention(model, batch) as captured:
        ...     layers = model.get_attention_layers()   # {key: [(attn, None), ...]}
    """
    if gradients and (head_fusion is not None or keys_only):
        raise ValueError(
            "head_fusion and keys_only at capture are for forward-only capture (gradients=False)"
        )
    if keys_only and not getattr(model, "supports_key_capture", False):
        raise TypeError(
            f"{type(model).__name__} cannot capture queries and keys (supports_key_capture); "
            "use the default capture of attention maps"
        )
    if gradients and not isinstance(model, GradientInterpretable):
        raise TypeError(
            f"{type(model).__name__} does not implement GradientInterpretable: "
            "gradient capture is not available"
        )
    with eval_mode(model):
        try:
            if keys_only:
                model.set_attention_hooks(True, capture_gradients=False, keys_only=True)
            elif head_fusion is not None and getattr(model, "supports_capture_head_fusion", False):
                model.set_attention_hooks(True, capture_gradients=False, head_fusion=head_fusion)
            elif isinstance(model, GradientInterpretable):
                model.set_attention_hooks(True, capture_gradients=gradients)
            else:
                model.set_attention_hooks(True)
            outputs = model(**batch)
            yield CapturedForward(outputs=outputs)
        finally:
            model.set_attention_hooks(False)
