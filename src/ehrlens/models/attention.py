"""The one multi-head attention module of ehrlens, its encoder block, and attention capture.

Every model computes attention here, so capture is written once: :class:`MultiHeadAttention`
passes each post-softmax, pre-dropout map ``[batch, heads, seq, seq]`` to its attention hooks
(registered with :meth:`MultiHeadAttention.register_attention_hook`, removable handles as in
PyTorch), and :class:`AttentionCapture` is the hook that stores a map and, on request, its
gradient. :class:`AttentionCaptureMixin` gives a model ``set_attention_hooks`` and
``get_attention_layers`` from a single method listing its attention modules per feature key.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from ..core.fusion import check_head_fusion, fuse_heads

AttentionHook = Callable[["MultiHeadAttention", Tensor], None]
QueryKeyHook = Callable[["MultiHeadAttention", Tensor, Tensor, Tensor], None]


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention with key padding and attention hooks.

    Args:
        dim: model width ``D``; must be divisible by ``heads``.
        heads: number of heads ``H``.
        dropout: dropout on the attention weights (applied after hooks see them).

    Shapes:
        ``x``: ``[batch, seq, D]``; ``mask``: ``[batch, seq]`` bool, True = real position.
        Hooks receive ``[batch, H, seq, seq]`` post-softmax weights; padded keys get exactly 0.

    Example:
        >>> mha = MultiHeadAttention(dim=8, heads=2)
        >>> handle = mha.register_attention_hook(lambda module, attn: print(attn.shape))
        >>> _ = mha(torch.randn(1, 3, 8), torch.ones(1, 3, dtype=torch.bool))
        torch.Size([1, 2, 3, 3])
        >>> handle.remove()
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"embedding dim {dim} must be divisible by heads {heads}")
        self.dim = dim
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        self._attention_hooks: OrderedDict[int, AttentionHook] = OrderedDict()
        self._query_key_hooks: OrderedDict[int, QueryKeyHook] = OrderedDict()

    def register_attention_hook(self, hook: AttentionHook) -> RemovableHandle:
        """Call ``hook(module, attention)`` on every forward; returns a removable handle."""
        handle = RemovableHandle(self._attention_hooks)
        self._attention_hooks[handle.id] = hook
        return handle

    def register_query_key_hook(self, hook: QueryKeyHook) -> RemovableHandle:
        """Call ``hook(module, q, k, mask)`` on every forward, before attention is formed.

        ``q``/``k`` are ``[batch, heads, seq, head_dim]``; with :meth:`attention_weights` they
        reproduce the attention map, in row blocks if wanted. Returns a removable handle.

        Example:
            >>> kept = {}
            >>> handle = mha.register_query_key_hook(lambda m, q, k, mask: kept.update(q=q))
            >>> _ = mha(x, mask)
            >>> handle.remove()
        """
        handle = RemovableHandle(self._query_key_hooks)
        self._query_key_hooks[handle.id] = hook
        return handle

    @property
    def has_attention_hooks(self) -> bool:
        """Whether any attention or query-key hook is registered."""
        return bool(self._attention_hooks) or bool(self._query_key_hooks)

    def attention_weights(self, q: Tensor, k: Tensor, mask: Tensor) -> Tensor:
        """Post-softmax weights ``[batch, heads, rows, seq]`` of queries ``q`` over keys ``k``.

        The forward pass computes its attention with this function, so a recomputation from
        captured queries and keys (all rows, or a block of rows) gives the same map.
        """
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        # The dtype's most negative value rather than -inf: exp() gives exactly 0 for padded
        # keys, and a row with no real key stays finite instead of NaN.
        scores = scores.masked_fill(~mask[:, None, None, :], torch.finfo(scores.dtype).min)
        return scores.softmax(dim=-1)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        batch, seq, _ = x.shape
        q, k, v = self.qkv(x).view(batch, seq, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        for hook in tuple(self._query_key_hooks.values()):
            hook(self, q, k, mask)
        attention = self.attention_weights(q, k, mask)
        for hook in tuple(self._attention_hooks.values()):
            hook(self, attention)
        out = self.dropout(attention) @ v  # [batch, heads, seq, head_dim]
        return self.proj(out.transpose(1, 2).reshape(batch, seq, self.dim))


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(LN(x))``, then ``x + FFN(LN(x))``.

    Shapes: ``x`` ``[batch, seq, D]``, ``mask`` ``[batch, seq]`` -> ``[batch, seq, D]``.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.1, ffn_mult: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = MultiHeadAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_mult * dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(ffn_mult * dim, dim),
        )
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x + self.dropout(self.attention(self.norm1(x), mask))
        return x + self.dropout(self.ffn(self.norm2(x)))


@dataclass
class CapturedKeys:
    """One layer's queries and keys: enough to recompute its attention map in row blocks.

    Attributes:
        module: the attention module (its :meth:`~MultiHeadAttention.attention_weights`).
        query / key: ``[batch, heads, seq, head_dim]``, detached.
        mask: ``[batch, seq]`` key mask.

    Example:
        >>> model.set_attention_hooks(True, capture_gradients=False, keys_only=True)
        >>> _ = model(**batch)
        >>> layer = model.get_attention_keys()["diagnoses"][0]
        >>> layer.weights(slice(0, 1)).shape        # [batch, heads, 1, seq]: the [CLS] rows
        >>> model.set_attention_hooks(False)
    """

    module: MultiHeadAttention
    query: Tensor
    key: Tensor
    mask: Tensor

    @property
    def seq_len(self) -> int:
        return self.key.shape[2]

    def weights(self, rows: slice = slice(None)) -> Tensor:
        """Attention weights of the query ``rows``: ``[batch, heads, len(rows), seq]``."""
        return self.module.attention_weights(self.query[:, :, rows], self.key, self.mask)


class AttentionCapture:
    """Attention hook that keeps one module's latest map and, optionally, its gradient.

    Forward-only (``capture_gradients=False``) stores a detached map and registers no autograd
    hook; with ``head_fusion`` it stores only the fused map ``[batch, 1, seq, seq]``, so the
    per-head map is freed with the layer's other temporaries. With gradients, the map is kept
    in the graph and a tensor hook stores its gradient when a backward pass reaches it. Each
    forward clears what the previous one stored.

    Only forwards run by the thread that created the capture are stored: a forward of the
    same model in another thread (e.g. plain inference while an explanation runs) can
    neither overwrite nor mix into the captured maps.
    """

    def __init__(
        self,
        module: MultiHeadAttention,
        capture_gradients: bool,
        head_fusion: str | None = None,
        keys_only: bool = False,
    ) -> None:
        if (head_fusion is not None or keys_only) and capture_gradients:
            raise ValueError("head_fusion and keys_only at capture are for forward-only capture")
        self.capture_gradients = capture_gradients
        self.head_fusion = None if head_fusion is None else check_head_fusion(head_fusion)
        self.attention: Tensor | None = None
        self.gradient: Tensor | None = None
        self.keys: CapturedKeys | None = None
        self._gradient_handle: RemovableHandle | None = None
        self._thread = threading.get_ident()
        if keys_only:
            self._handle = module.register_query_key_hook(self._on_query_key)
        else:
            self._handle = module.register_attention_hook(self._on_attention)

    def _on_query_key(self, module: MultiHeadAttention, q: Tensor, k: Tensor, mask: Tensor):
        if threading.get_ident() != self._thread:
            return
        self._clear()
        self.keys = CapturedKeys(module, q.detach(), k.detach(), mask.detach())

    def _on_attention(self, module: MultiHeadAttention, attention: Tensor) -> None:
        if threading.get_ident() != self._thread:
            return
        self._clear()
        if self.capture_gradients and attention.requires_grad:
            self.attention = attention
            self._gradient_handle = attention.register_hook(self._on_gradient)
        elif self.head_fusion is not None:
            self.attention = fuse_heads(attention.detach(), self.head_fusion)[:, None]
        else:
            self.attention = attention.detach()

    def _on_gradient(self, gradient: Tensor) -> None:
        self.gradient = gradient.detach()

    def _clear(self) -> None:
        if self._gradient_handle is not None:
            self._gradient_handle.remove()
            self._gradient_handle = None
        self.attention = None
        self.gradient = None
        self.keys = None

    def remove(self) -> None:
        """Unregister the attention hook and any gradient hook; drop stored tensors."""
        self._handle.remove()
        self._clear()


class AttentionCaptureMixin:
    """``set_attention_hooks`` / ``get_attention_layers`` for models built on this module.

    A model lists its attention modules per feature key, input side first, in
    :meth:`attention_modules`; everything else is shared.
    """

    #: ``set_attention_hooks`` takes ``head_fusion`` (see :func:`capture_attention`).
    supports_capture_head_fusion = True
    #: ``set_attention_hooks`` takes ``keys_only``; see :meth:`get_attention_keys`.
    supports_key_capture = True

    def attention_modules(self) -> dict[str, list[MultiHeadAttention]]:
        """``{feature_key: [MultiHeadAttention per layer, input side first]}``."""
        raise NotImplementedError

    def _captures(self) -> dict[str, list[AttentionCapture]]:
        return self.__dict__.setdefault("_attention_captures", {})

    def set_attention_hooks(
        self,
        enabled: bool,
        capture_gradients: bool = True,
        head_fusion: str | None = None,
        keys_only: bool = False,
    ) -> None:
        """Start (or stop) storing every layer's attention map [and its gradient].

        Args:
            enabled: True to capture on every following forward; False removes every hook.
            capture_gradients: keep maps in the autograd graph and store their gradients
                after ``.backward()``; False stores detached maps only (works under
                ``torch.no_grad()`` and ``torch.inference_mode()``).
            head_fusion: forward-only: store each layer's map fused over heads
                (``"mean"``, ``"max"``, ``"min"``) as ``[batch, 1, seq, seq]`` instead of
                ``[batch, heads, seq, seq]``, a ``heads``-fold saving.
            keys_only: forward-only: store each layer's queries and keys instead of its map
                (:meth:`get_attention_keys`), ``seq / head_dim`` times less again.
        """
        captures = self._captures()
        for layer_captures in captures.values():
            for capture in layer_captures:
                capture.remove()
        captures.clear()
        if enabled:
            for key, modules in self.attention_modules().items():
                captures[key] = [
                    AttentionCapture(m, capture_gradients, head_fusion, keys_only) for m in modules
                ]

    def get_attention_keys(self) -> dict[str, list[CapturedKeys]]:
        """Captured queries and keys per layer and feature key (``keys_only`` capture)."""
        captures = self._captures()
        if not captures or any(c.keys is None for cs in captures.values() for c in cs):
            raise RuntimeError(
                "no queries/keys captured: call set_attention_hooks(True, "
                "capture_gradients=False, keys_only=True) and run a forward"
            )
        return {key: [c.keys for c in cs] for key, cs in captures.items()}

    def get_attention_layers(self) -> dict[str, list[tuple[Tensor, Tensor | None]]]:
        """Captured ``(attn_map, attn_grad)`` per layer and feature key, input side first.

        Maps are ``[batch, heads, seq, seq]``; ``attn_grad`` (same shape) is ``None`` until a
        backward pass reaches the map, or when gradients are not captured.
        """
        captures = self._captures()
        if not captures:
            raise RuntimeError(
                "attention capture is off: call set_attention_hooks(True) and run a forward"
            )
        layers: dict[str, list[tuple[Tensor, Tensor | None]]] = {}
        for key, layer_captures in captures.items():
            if any(c.attention is None for c in layer_captures):
                raise RuntimeError(
                    f"feature '{key}': no attention captured yet; run a forward after "
                    "set_attention_hooks(True)"
                )
            layers[key] = [(c.attention, c.gradient) for c in layer_captures]
        return layers
