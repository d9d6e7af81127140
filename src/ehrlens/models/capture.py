"""Attention capture: the one store of captured maps, gradients and queries/keys.

:class:`AttentionSlot` keeps one layer's latest capture. It is fed by a hook on a
:class:`~ehrlens.models.attention.MultiHeadAttention` (:class:`AttentionCapture`) for ehrlens's
own models, and directly with the maps a wrapped model returns (the Hugging Face adapter), so
both follow the same rules:

- forward-only capture stores a detached map (optionally fused over heads, then block by
  block of query rows as the module computes them) and registers no autograd hook;
  gradient capture keeps the map in the graph and a tensor hook stores its gradient when a
  backward pass reaches it; with a gradient fusion, that hook stores only
  ``fn(map, gradient)`` ``[batch, seq, seq]`` and drops the per-head map, so neither the
  map nor its gradient outlives the layer's backward;
- each recorded forward replaces what the slot held before;
- switching capture off stops recording but keeps the last capture (and the gradient hook an
  outstanding backward needs) until the next enabled forward or an explicit clear;
- only forwards run by the thread that enabled capture are recorded, so plain inference in
  another thread neither overwrites nor mixes into a capture.

:class:`AttentionCaptureMixin` gives a model ``set_attention_hooks``,
``get_attention_layers``, ``get_attention_keys`` and ``clear_attention_capture`` from a single
method listing its attention modules per feature key.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor
from torch.utils.hooks import RemovableHandle

from ..core.fusion import check_head_fusion, fuse_heads
from ..core.interpretable import Capabilities, GradientFusion
from .fused_attention import weighted_rows_of_map

if TYPE_CHECKING:
    from .attention import MultiHeadAttention


@dataclass
class CapturedKeys:
    """One layer's queries and keys: enough to recompute its attention map in row blocks.

    Attributes:
        module: the attention module (its :meth:`~MultiHeadAttention.attention_weights`).
        query / key: ``[batch, heads, seq, head_dim]``, detached.
        mask: ``[batch, seq]`` key mask.
        logsumexp: ``[batch, heads, seq]``, each query row's log-sum-exp of its scores, from
            the forward's fused kernel (``None`` until the forward's attention ran).

    Example:
        >>> model.set_attention_hooks(True, capture_gradients=False, keys_only=True)
        >>> _ = model(**batch)
        >>> layer = model.get_attention_keys()["diagnoses"][0]
        >>> layer.weights(slice(0, 1)).shape        # [batch, heads, 1, seq]: the [CLS] rows
        torch.Size([8, 2, 1, 8])
        >>> model.set_attention_hooks(False)
    """

    module: MultiHeadAttention
    query: Tensor
    key: Tensor
    mask: Tensor
    logsumexp: Tensor | None = None

    @property
    def seq_len(self) -> int:
        return self.key.shape[2]

    def weights(self, rows: slice = slice(None)) -> Tensor:
        """Attention weights of the query ``rows``: ``[batch, heads, len(rows), seq]``."""
        return self.module.attention_weights(self.query[:, :, rows], self.key, self.mask)

    def weighted_rows(self, rows: Tensor) -> Tensor:
        """``sum_i rows[:, i] * A[:, h, i, :]`` per head without forming the map ``A``:
        ``[batch, seq]`` -> ``[batch, heads, seq]``
        (:func:`~ehrlens.models.fused_attention.weighted_rows_of_map`)."""
        if self.logsumexp is None:
            raise RuntimeError("no log-sum-exp captured: run a forward with keys_only capture")
        return weighted_rows_of_map(self.query, self.key, self.mask, self.logsumexp, rows)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the recomputed weights (the queries')."""
        return self.query.dtype

    def block_rows(self, requested: int | None = None) -> int:
        """Query rows to recompute at a time: ``requested``, else the module's block size."""
        if requested is not None:
            return requested
        return self.module.attention_block_rows(self.key.shape[0], self.seq_len)


class AttentionSlot:
    """One layer's latest captured map ``[batch, heads, seq, seq]``, gradient or keys.

    Args:
        capture_gradients: keep the map in the graph and store its gradient after backward.
        head_fusion: forward-only: store ``fuse_heads(map)`` as ``[batch, 1, seq, seq]``.
        gradient_fusion: with ``capture_gradients``: when the gradient arrives, store
            ``gradient_fusion(map, gradient)`` (``[batch, seq, seq]``, :attr:`fused_gradient`)
            and drop the map; :attr:`gradient` stays ``None``.

    Example:
        >>> slot = AttentionSlot(capture_gradients=True)
        >>> attention = torch.softmax(torch.randn(1, 2, 3, 3, requires_grad=True), dim=-1)
        >>> slot.record(attention)          # inside the forward
        >>> logit = attention.sum()
        >>> logit.backward()
        >>> slot.attention.shape, slot.gradient.shape   # both [batch, heads, seq, seq]
        (torch.Size([1, 2, 3, 3]), torch.Size([1, 2, 3, 3]))
    """

    def __init__(
        self,
        capture_gradients: bool,
        head_fusion: str | None = None,
        gradient_fusion: GradientFusion | None = None,
    ) -> None:
        if head_fusion is not None and capture_gradients:
            raise ValueError("head_fusion at capture is for forward-only capture")
        if gradient_fusion is not None and not capture_gradients:
            raise ValueError("gradient_fusion at capture needs capture_gradients=True")
        self.capture_gradients = capture_gradients
        self.head_fusion = None if head_fusion is None else check_head_fusion(head_fusion)
        self.gradient_fusion = gradient_fusion
        self.attention: Tensor | None = None
        self.gradient: Tensor | None = None
        self.fused_gradient: Tensor | None = None
        #: With ``gradient_fusion``: what to differentiate so the backward reaches this map.
        self.anchor: Tensor | None = None
        self.keys: CapturedKeys | None = None
        #: Where fused gradient blocks go instead of a stored ``[batch, seq, seq]`` map
        #: (:meth:`route_fused_gradient`); reset by every new capture.
        self.block_sink: Callable[[slice, Tensor], None] | None = None
        #: Whether this capture's gradient has been fused (one backward per forward).
        self._fused = False
        self._fused_shape: tuple[torch.Size, torch.dtype, torch.device] | None = None
        self._gradient_handle: RemovableHandle | None = None
        self._thread = threading.get_ident()

    def records_this_thread(self) -> bool:
        """Whether a forward running now belongs to the capturing thread."""
        return threading.get_ident() == self._thread

    def record(self, attention: Tensor, anchor: Tensor | None = None) -> None:
        """Store ``attention`` (replacing the previous capture) as the capture mode says.

        ``anchor``: with ``gradient_fusion``, a tensor of the graph the map is computed from
        (its queries, or the layer's input); differentiating it runs the backward through the
        map. Without one (or if it needs no gradient) the map itself is the anchor.
        """
        if not self.records_this_thread():
            return
        self.clear()
        if self.capture_gradients and attention.requires_grad:
            self.attention = attention
            if self.gradient_fusion is not None:
                usable = anchor is not None and anchor.requires_grad
                self.anchor = anchor if usable else attention
                batch, _, rows, seq = attention.shape
                self._fused_shape = (
                    torch.Size((batch, rows, seq)),
                    attention.dtype,
                    attention.device,
                )
            self._gradient_handle = attention.register_hook(self._on_gradient)
        elif self.head_fusion is not None:
            self.attention = fuse_heads(attention.detach(), self.head_fusion)[:, None]
        else:
            self.attention = attention.detach()

    def record_block(self, rows: slice, attention: Tensor) -> None:
        """Store a block of query rows ``[batch, heads, len(rows), seq]`` of the map, fused
        over heads (forward-only capture with ``head_fusion``).

        The first block of a forward (``rows.start == 0``) replaces the previous capture with
        an empty ``[batch, 1, seq, seq]`` map that this and the following blocks fill.
        """
        if not self.records_this_thread():
            return
        if self.head_fusion is None or self.capture_gradients:
            raise RuntimeError("record_block is for forward-only capture with head_fusion")
        fused = fuse_heads(attention.detach(), self.head_fusion)
        if rows.start == 0:
            self.clear()
            batch, _, seq = fused.shape
            self.attention = fused.new_empty(batch, 1, seq, seq)
        if self.attention is None:
            raise RuntimeError("attention blocks must start at query row 0")
        self.attention[:, 0, rows] = fused

    def record_keys(self, keys: CapturedKeys) -> None:
        """Store one forward's queries and keys (replacing the previous capture)."""
        if not self.records_this_thread():
            return
        self.clear()
        self.keys = keys

    def record_output(self, output: Tensor) -> None:
        """Start a forward whose map's gradient comes block by block in the backward
        (:meth:`record_gradient_block`): ``output`` ``[batch, heads, seq, head_dim]`` is the
        attention output the backward starts from (the anchor)."""
        if not self.records_this_thread():
            return
        self.clear()
        if self.gradient_fusion is None:
            raise RuntimeError("record_output is for capture with a gradient_fusion")
        batch, _, seq, _ = output.shape
        self._fused_shape = (torch.Size((batch, seq, seq)), output.dtype, output.device)
        self.anchor = output if output.requires_grad else None

    def record_gradient_block(self, rows: slice, weights: Tensor, gradient: Tensor) -> None:
        """Store ``gradient_fusion(weights, gradient)`` for a block of query rows
        ``[batch, heads, len(rows), seq]`` (in the backward), into ``[batch, seq, seq]``."""
        if not self.records_this_thread() or self.gradient_fusion is None:
            return
        if rows.start == 0 and self._fused:
            raise RuntimeError(
                "gradient fusion at capture takes one backward per captured forward: this "
                "layer's map was already fused with its gradient"
            )
        self._fused = True
        fused = self.gradient_fusion(weights, gradient)
        if self.block_sink is not None:
            self.block_sink(rows, fused)
            return
        if self.fused_gradient is None:
            batch, _, seq = fused.shape
            self.fused_gradient = fused.new_zeros(batch, seq, seq)
        self.fused_gradient[:, rows] = fused

    def record_logsumexp(self, logsumexp: Tensor) -> None:
        """Add the forward's row log-sum-exp to the queries and keys just recorded."""
        if not self.records_this_thread():
            return
        if self.keys is None:
            raise RuntimeError("log-sum-exp arrived before this forward's queries and keys")
        self.keys.logsumexp = logsumexp.detach()

    def _on_gradient(self, gradient: Tensor) -> None:
        if self.gradient_fusion is None:
            self.gradient = gradient.detach()
            return
        if self.attention is None:
            raise RuntimeError(
                "gradient fusion at capture takes one backward per captured forward: this "
                "layer's map was already fused with its gradient and dropped"
            )
        fused = self.gradient_fusion(self.attention.detach(), gradient.detach())
        self._fused = True
        if self.block_sink is not None:
            self.block_sink(slice(0, fused.shape[1]), fused)
        else:
            self.fused_gradient = fused
        # The per-head map and gradient end here; autograd frees its own copy after this node.
        self.attention = None
        self.anchor = None

    def route_fused_gradient(self, sink: Callable[[slice, Tensor], None]) -> None:
        """Send this capture's fused gradient to ``sink(rows, fused_block)`` as the backward
        delivers it (``fused_block`` ``[batch, len(rows), seq]``), instead of storing the
        ``[batch, seq, seq]`` map. Set after the forward and before the backward; the next
        capture drops it."""
        if self.gradient_fusion is None:
            raise RuntimeError("only a capture with a gradient_fusion can route its gradient")
        self.block_sink = sink

    def fused_or_zeros(self) -> Tensor:
        """``gradient_fusion(map, gradient)`` ``[batch, seq, seq]``, or zeros when no gradient
        reached the map (the target does not depend on it)."""
        if self.block_sink is not None:
            raise RuntimeError(
                "this layer's fused gradient was routed to a sink (route_fused_gradients) "
                "and not stored"
            )
        if self.fused_gradient is not None:
            return self.fused_gradient
        if self._fused_shape is None:
            raise RuntimeError(
                "no map with a gradient was captured: run a forward with gradient capture "
                "(and gradient_fusion) enabled, with autograd on"
            )
        shape, dtype, device = self._fused_shape
        return torch.zeros(shape, dtype=dtype, device=device)

    def clear(self) -> None:
        """Drop the stored tensors and remove the gradient hook."""
        if self._gradient_handle is not None:
            self._gradient_handle.remove()
            self._gradient_handle = None
        self.attention = None
        self.gradient = None
        self.fused_gradient = None
        self.anchor = None
        self._fused_shape = None
        self.keys = None
        self.block_sink = None
        self._fused = False


class AttentionCapture:
    """Hooks one :class:`~ehrlens.models.attention.MultiHeadAttention` into an
    :class:`AttentionSlot` (its map, or with ``keys_only`` its queries and keys).

    :meth:`stop` unregisters the module hook and keeps the slot's contents; :meth:`remove`
    also clears them.
    """

    def __init__(
        self,
        module: MultiHeadAttention,
        capture_gradients: bool,
        head_fusion: str | None = None,
        keys_only: bool = False,
        gradient_fusion: GradientFusion | None = None,
        whole_maps: bool = False,
    ) -> None:
        if (head_fusion is not None or keys_only) and capture_gradients:
            raise ValueError("head_fusion and keys_only at capture are for forward-only capture")
        self.slot = AttentionSlot(capture_gradients, head_fusion, gradient_fusion)
        self._handle: RemovableHandle | None
        self._second_handle: RemovableHandle | None = None
        self._query: Tensor | None = None
        if keys_only:
            self._handle = module.register_query_key_hook(self._on_query_key)
            self._second_handle = module.register_logsumexp_hook(self._on_logsumexp)
        elif head_fusion is not None and not whole_maps:  # no per-head map exists whole
            self._handle = module.register_attention_block_hook(self._on_attention_block)
        elif gradient_fusion is not None and capture_gradients and not whole_maps:
            # No map in the forward; each block's weights and gradient recomputed in backward.
            self._handle = module.register_attention_gradient_hook(
                self._on_gradient_block, self._on_output
            )
        else:
            self._handle = module.register_attention_hook(self._on_attention)
            if gradient_fusion is not None:  # the queries anchor the backward to this map
                self._second_handle = module.register_query_key_hook(self._on_query)

    @property
    def attention(self) -> Tensor | None:
        return self.slot.attention

    @property
    def gradient(self) -> Tensor | None:
        return self.slot.gradient

    @property
    def keys(self) -> CapturedKeys | None:
        return self.slot.keys

    def _on_query_key(self, module: MultiHeadAttention, q: Tensor, k: Tensor, mask: Tensor) -> None:
        # Contiguous copies: the fused kernel reads them faster than views into the
        # projection output, and that output ([batch, seq, 3 * dim]) is not kept alive.
        query, key = q.detach().contiguous(), k.detach().contiguous()
        self.slot.record_keys(CapturedKeys(module, query, key, mask.detach()))

    def _on_output(self, module: MultiHeadAttention, output: Tensor) -> None:
        self.slot.record_output(output)

    def _on_gradient_block(
        self, module: MultiHeadAttention, rows: slice, weights: Tensor, gradient: Tensor
    ) -> None:
        self.slot.record_gradient_block(rows, weights, gradient)

    def _on_logsumexp(self, module: MultiHeadAttention, logsumexp: Tensor) -> None:
        self.slot.record_logsumexp(logsumexp)

    def _on_query(self, module: MultiHeadAttention, q: Tensor, k: Tensor, mask: Tensor) -> None:
        self._query = q

    def _on_attention(self, module: MultiHeadAttention, attention: Tensor) -> None:
        query, self._query = self._query, None
        self.slot.record(attention, anchor=query)

    def _on_attention_block(self, module: MultiHeadAttention, rows: slice, block: Tensor) -> None:
        self.slot.record_block(rows, block)

    def stop(self) -> None:
        """Unregister the module hooks; keep the last capture."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
        if self._second_handle is not None:
            self._second_handle.remove()
            self._second_handle = None
        self._query = None

    def remove(self) -> None:
        """Unregister the module hook and any gradient hook; drop stored tensors."""
        self.stop()
        self.slot.clear()


#: Everything ehrlens's attention models offer: the capture of :class:`AttentionCaptureMixin`
#: plus a stated readout and per-unit embedding layers.
ENCODER_MODEL_CAPABILITIES = Capabilities(
    forward_only=True,
    fusion_at_capture=True,
    key_capture=True,
    stated_readout=True,
    embedding_layers=True,
    clear_capture=True,
    gradient_fusion=True,
    gradient_routing=True,
)


class AttentionCaptureMixin:
    """``set_attention_hooks`` / ``get_attention_layers`` for models built on this module.

    A model lists its attention modules per feature key, input side first, in
    :meth:`attention_modules`; everything else is shared.
    """

    #: Forward-only capture, fusion at capture (of maps and of gradients), key capture and
    #: clearing (see :class:`~ehrlens.core.interpretable.Capabilities`); models add what else
    #: they state.
    interpret_capabilities: ClassVar[Capabilities | None] = Capabilities(
        forward_only=True,
        fusion_at_capture=True,
        key_capture=True,
        clear_capture=True,
        gradient_fusion=True,
        gradient_routing=True,
    )

    #: Captured queries and keys carry rows through a layer's map by a fused kernel
    #: (:meth:`CapturedKeys.weighted_rows`), so rollout needs no map at all.
    fused_weighted_rows: ClassVar[bool] = True

    def attention_modules(self) -> dict[str, list[MultiHeadAttention]]:
        """``{feature_key: [MultiHeadAttention per layer, input side first]}``."""
        raise NotImplementedError

    def attention_heads(self) -> dict[str, list[int]]:
        """``{feature_key: [heads of each layer, input side first]}``."""
        modules = self.attention_modules()
        return {key: [module.heads for module in layers] for key, layers in modules.items()}

    def _captures(self) -> dict[str, list[AttentionCapture]]:
        return self.__dict__.setdefault("_attention_captures", {})

    def set_attention_hooks(
        self,
        enabled: bool,
        capture_gradients: bool = True,
        head_fusion: str | None = None,
        keys_only: bool = False,
        gradient_fusion: GradientFusion | None = None,
        whole_maps: bool = False,
    ) -> None:
        """Start (or stop) storing every layer's attention map [and its gradient].

        Args:
            enabled: True to capture on every following forward (what an earlier capture
                stored is dropped); False stops capturing and keeps the last forward's maps
                (and gradients, also those of a backward that runs later) until the next
                enabled forward or :meth:`clear_attention_capture`.
            capture_gradients: keep maps in the autograd graph and store their gradients
                after ``.backward()``; False stores detached maps only (works under
                ``torch.no_grad()`` and ``torch.inference_mode()``).
            head_fusion: forward-only: store each layer's map fused over heads
                (``"mean"``, ``"max"``, ``"min"``) as ``[batch, 1, seq, seq]`` instead of
                ``[batch, heads, seq, seq]``, a ``heads``-fold saving. The forward then
                computes attention in blocks of query rows
                (:meth:`~MultiHeadAttention.register_attention_block_hook`), so no layer's
                per-head map exists whole and the stored maps cost less than the per-head map
                the plain forward forms.
            whole_maps: with ``head_fusion``: compute each map whole, as the plain forward
                does, instead of in row blocks (the values then match the plain forward's bit
                for bit, where blocks may differ in the last bit).
            keys_only: forward-only: store each layer's queries and keys instead of its map
                (:meth:`get_attention_keys`), ``seq / head_dim`` times less again.
            gradient_fusion: with ``capture_gradients``: ``fn(attention, gradient) ->
                [batch, seq, seq]``, applied in the backward as each layer's gradient
                arrives; the per-head map and gradient are dropped there. Differentiate
                :meth:`get_gradient_anchors`, then read :meth:`get_fused_gradients`.
        """
        captures = self._captures()
        if not enabled:
            for layer_captures in captures.values():
                for capture in layer_captures:
                    capture.stop()
            return
        self.clear_attention_capture()
        self.__dict__["_attention_capture_used"] = True
        for key, modules in self.attention_modules().items():
            captures[key] = [
                AttentionCapture(
                    m, capture_gradients, head_fusion, keys_only, gradient_fusion, whole_maps
                )
                for m in modules
            ]

    def clear_attention_capture(self) -> None:
        """Remove every capture hook and drop what the last capture stored."""
        captures = self._captures()
        for layer_captures in captures.values():
            for capture in layer_captures:
                capture.remove()
        captures.clear()

    def _require_capture(self) -> dict[str, list[AttentionCapture]]:
        captures = self._captures()
        if not captures:
            if not self.__dict__.get("_attention_capture_used", False):
                raise RuntimeError(
                    "attention capture was never enabled: call set_attention_hooks(True) and "
                    "run a forward"
                )
            raise RuntimeError(
                "attention capture is off and its last result was cleared: call "
                "set_attention_hooks(True) and run a forward"
            )
        return captures

    def get_attention_keys(self) -> dict[str, list[CapturedKeys]]:
        """Captured queries and keys per layer and feature key (``keys_only`` capture)."""
        captures = self._require_capture()
        keys: dict[str, list[CapturedKeys]] = {}
        for key, layer_captures in captures.items():
            found = [c.keys for c in layer_captures]
            if any(k is None for k in found):
                raise RuntimeError(
                    "no queries/keys captured: call set_attention_hooks(True, "
                    "capture_gradients=False, keys_only=True) and run a forward"
                )
            keys[key] = [k for k in found if k is not None]
        return keys

    def get_gradient_anchors(self) -> list[Tensor]:
        """What to differentiate so that the backward reaches every captured map
        (``gradient_fusion`` capture): each layer's queries ``[batch, heads, seq, head_dim]``,
        or the map itself where the queries need no gradient. Empty when no map needs one.

        Example:
            >>> fn = lambda attention, gradient: (attention * gradient).clamp(min=0).mean(1)
            >>> model.set_attention_hooks(True, gradient_fusion=fn)
            >>> logit = model(**batch)["logit"]
            >>> _ = torch.autograd.grad(logit.sum(), model.get_gradient_anchors())
            >>> fused = model.get_fused_gradients()   # {"diagnoses": [[b, s, s], ...]}
            >>> model.set_attention_hooks(False)
            >>> fused["diagnoses"][0].shape
            torch.Size([8, 8, 8])
        """
        captures = self._require_capture()
        return [
            c.slot.anchor
            for layer_captures in captures.values()
            for c in layer_captures
            if c.slot.anchor is not None
        ]

    def get_fused_gradients(self) -> dict[str, list[Tensor]]:
        """``{feature_key: [gradient_fusion(map, gradient) per layer]}``, ``[batch, seq,
        seq]``, input side first; zeros for a map no gradient reached."""
        captures = self._require_capture()
        return {
            key: [c.slot.fused_or_zeros() for c in layer_captures]
            for key, layer_captures in captures.items()
        }

    def route_fused_gradients(
        self, sinks: Callable[[str, int], Callable[[slice, Tensor], None]]
    ) -> None:
        """Send each layer's fused gradient blocks to ``sinks(feature_key, layer)`` (layer 0:
        the input side) as the backward delivers them, instead of storing ``[batch, seq, seq]``
        per layer (``gradient_fusion`` capture; after the forward, before the backward). A
        sink is called as ``sink(rows, fused_block)`` with ``fused_block`` ``[batch,
        len(rows), seq]``. Chefer carries its readout rows down the layers this way.

        Example:
            >>> fn = lambda attention, gradient: (attention * gradient).clamp(min=0).mean(1)
            >>> model.set_attention_hooks(True, gradient_fusion=fn)
            >>> logit = model(**batch)["logit"]
            >>> seen = []
            >>> model.route_fused_gradients(lambda key, layer: lambda rows, b: seen.append(layer))
            >>> _ = torch.autograd.grad(logit.sum(), model.get_gradient_anchors())
            >>> model.set_attention_hooks(False)
            >>> seen[0] == len(model.attention_modules()["diagnoses"]) - 1   # top layer first
            True
        """
        for key, layer_captures in self._require_capture().items():
            for layer, capture in enumerate(layer_captures):
                capture.slot.route_fused_gradient(sinks(key, layer))

    def get_attention_layers(self) -> dict[str, list[tuple[Tensor, Tensor | None]]]:
        """Captured ``(attn_map, attn_grad)`` per layer and feature key, input side first.

        Maps are ``[batch, heads, seq, seq]``; ``attn_grad`` (same shape) is ``None`` until a
        backward pass reaches the map, or when gradients are not captured. Still available
        after capture is switched off, until the next enabled forward replaces them.
        """
        captures = self._require_capture()
        layers: dict[str, list[tuple[Tensor, Tensor | None]]] = {}
        for key, layer_captures in captures.items():
            pairs = []
            for capture in layer_captures:
                if capture.attention is None and capture.slot.gradient_fusion is not None:
                    raise RuntimeError(
                        f"feature '{key}': the maps are fused with their gradients in the "
                        "backward and not kept (gradient_fusion); read get_fused_gradients()"
                    )
                if capture.attention is None:
                    raise RuntimeError(
                        f"feature '{key}': no attention captured yet; run a forward after "
                        "set_attention_hooks(True)"
                    )
                pairs.append((capture.attention, capture.gradient))
            layers[key] = pairs
        return layers
