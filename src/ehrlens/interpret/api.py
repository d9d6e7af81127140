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

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..core.interpretable import (
    AttentionInterpretable,
    CheferInterpretable,
    GradientInterpretable,
)
from ..core.modes import eval_mode, model_lock


@dataclass
class CapturedForward:
    """What :func:`capture_attention` yields: the model's outputs of the captured forward."""

    outputs: Any


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


__all__ = [
    "AttentionInterpretable",
    "CapturedForward",
    "CheferInterpretable",
    "GradientInterpretable",
    "capture_attention",
    "eval_mode",
    "model_lock",
]
