"""The contract a model implements to be explained: two interface levels and the optional
capabilities (re-exported, with the capture context manager, by :mod:`ehrlens.interpret.api`).

It lives in the leaf layer so that models (``ehrlens.models``), adapters
(``ehrlens.integrations``) and interpreters (``ehrlens.interpret``) all depend on the contract
and none of them on another: a model subclasses these classes without importing any
interpreter.

Required (:class:`AttentionInterpretable`): ``set_attention_hooks(enabled)``,
``get_attention_layers()``, ``get_relevance_tensor(R, **data)``. Gradient capture
(:class:`GradientInterpretable`) adds gradients after ``.backward()``.

Optional, each declared by one flag of :class:`Capabilities` in the class attribute
``interpret_capabilities`` (a class that declares nothing is inspected once, see
:func:`ehrlens.interpret.api.capabilities`):

- ``forward_only``: ``set_attention_hooks(True, capture_gradients=False)`` stores detached
  maps and registers no autograd hook (capture under ``torch.inference_mode()``).
- ``fusion_at_capture``: ``set_attention_hooks(True, capture_gradients=False,
  head_fusion="mean")`` stores maps already fused over heads, ``[batch, 1, seq, seq]``.
- ``key_capture``: ``set_attention_hooks(True, capture_gradients=False, keys_only=True)``
  stores queries and keys, read with ``get_attention_keys()``; with ``fusion_at_capture``,
  such a model also accepts ``whole_maps=True`` next to ``head_fusion`` (maps computed whole,
  not in blocks of query rows).
- ``stated_readout``: ``get_readout_weights(**data)`` and ``select_input_positions(...)``
  state the readout over attention positions up front (row propagation, flow's sink).
- ``embedding_layers``: ``get_embedding_layers()`` gives each feature's per-unit embedding
  module (gradient baselines attribute to its output).
- ``clear_capture``: ``clear_attention_capture()`` drops the maps kept after capture is
  switched off (the capture context manager calls it, so explanations keep no memory).
- ``gradient_fusion``: ``set_attention_hooks(True, capture_gradients=True,
  gradient_fusion=fn)`` reduces each layer's map and gradient with ``fn(attention, gradient)
  -> [batch, seq, seq]`` as the gradient arrives, in the backward, and drops the per-head map
  and gradient there; ``get_gradient_anchors()`` lists the tensors to differentiate so that
  the backward reaches every map, ``get_fused_gradients()`` the reduced maps.
- ``gradient_routing`` (with ``gradient_fusion``): ``route_fused_gradients(sinks)`` sends
  each layer's reduced blocks to ``sinks(feature_key, layer)(rows, block)`` as the backward
  delivers them, instead of storing ``[batch, seq, seq]`` per layer (Chefer carries its
  readout row through them, top layer first).
- ``lrp_rules``: ``set_lrp_rules(enabled)`` attaches the AttnLRP rules: forwards compute the
  same values, and their backward pass propagates relevance (``input * gradient``) layer by
  layer (:class:`~ehrlens.interpret.AttnLRP` reads it at ``get_embedding_layers()``).

Optional attributes (read by interpreters where present): ``feature_keys`` (list of feature
names), ``mode`` (``"binary"``, ``"multiclass"``, ``"multilabel"``, ``"regression"``),
``output_size`` (logit columns), ``pad_ids`` (``{feature: pad id | None}``, default 0),
``unit_position_keys`` (features whose every input unit, e.g. each code of a visit, is its own
attention position, so attention methods score units rather than visits).

Capture semantics every implementation follows: switching capture off keeps the last
forward's maps (and the gradient hooks an outstanding backward needs); the next enabled
forward replaces them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
from torch import Tensor


@dataclass(frozen=True)
class Capabilities:
    """The optional parts of the contract a model offers (see the module docstring).

    Example:
        >>> class MyModel(nn.Module, GradientInterpretable):
        ...     interpret_capabilities = Capabilities(forward_only=True, stated_readout=True)
        >>> MyModel.interpret_capabilities.forward_only
        True
    """

    forward_only: bool = False
    fusion_at_capture: bool = False
    key_capture: bool = False
    stated_readout: bool = False
    embedding_layers: bool = False
    clear_capture: bool = False
    gradient_fusion: bool = False
    gradient_routing: bool = False
    lrp_rules: bool = False


class AttentionInterpretable(ABC):
    """A model whose attention maps can be captured during the forward pass.

    Attention positions are what a layer attends over (e.g. ``[CLS]`` plus one token per
    input position); input positions are the entries of the raw feature tensor's second
    dimension (codes, visits, time steps).
    """

    #: What the class offers beyond the required methods; ``None``: not declared (then
    #: :func:`ehrlens.interpret.api.capabilities` inspects the class once).
    interpret_capabilities: ClassVar[Capabilities | None] = None

    if TYPE_CHECKING:  # models are called like modules: ``model(**batch)``

        def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

    @abstractmethod
    def set_attention_hooks(self, enabled: bool) -> None:
        """While enabled, each forward stores every layer's post-softmax map.

        Disabling stops capture but keeps the last forward's maps; the next enabled forward
        replaces them.
        """

    @abstractmethod
    def get_attention_layers(self) -> dict[str, list[tuple[Tensor, Tensor | None]]]:
        """``{feature_key: [(attn_map, attn_grad), ...]}``, input side first.

        ``attn_map`` is ``[batch, heads, seq, seq]`` (or head-averaged ``[batch, seq, seq]``);
        ``attn_grad`` has the same shape, or is ``None`` when gradients were not captured.
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


#: ``fn(attention, gradient) -> [batch, seq, seq]``: one layer's per-head map and its gradient
#: (both ``[batch, heads, seq, seq]``, detached) reduced as the gradient arrives.
GradientFusion = Callable[[Tensor, Tensor], Tensor]


class ForwardOnlyCapture(Protocol):
    """``set_attention_hooks`` of a model with ``Capabilities.forward_only`` (and, where
    declared, ``fusion_at_capture`` and ``key_capture``)."""

    def set_attention_hooks(
        self,
        enabled: bool,
        capture_gradients: bool = True,
        head_fusion: str | None = None,
        keys_only: bool = False,
        whole_maps: bool = False,
    ) -> None: ...


class GradientFusionCapture(Protocol):
    """A model with ``Capabilities.gradient_fusion``.

    ``get_gradient_anchors()``: tensors of the last captured forward, in the autograd graph, such
    that differentiating the target with respect to them runs the backward through every
    captured map that needs a gradient (a layer's queries, or its input). ``get_fused_gradients()``:
    after that backward, ``{feature_key: [fn(attention, gradient) per layer, input side first]}``,
    ``[batch, seq, seq]``, zeros for a map no gradient reached.
    """

    def set_attention_hooks(
        self,
        enabled: bool,
        capture_gradients: bool = True,
        gradient_fusion: GradientFusion | None = None,
    ) -> None: ...

    def get_gradient_anchors(self) -> list[Tensor]: ...

    def get_fused_gradients(self) -> Mapping[str, list[Tensor]]: ...


class GradientRoutingCapture(Protocol):
    """A model with ``Capabilities.gradient_routing``: after a ``gradient_fusion`` forward
    and before its backward, ``route_fused_gradients(sinks)`` sends each layer's reduced
    blocks ``[batch, rows, seq]`` to ``sinks(feature_key, layer)(rows, block)`` (layer 0: the
    input side) instead of storing ``[batch, seq, seq]`` per layer."""

    def route_fused_gradients(
        self, sinks: Callable[[str, int], Callable[[slice, Tensor], None]]
    ) -> None: ...


class ClearableCapture(Protocol):
    """A model with ``Capabilities.clear_capture``."""

    def clear_attention_capture(self) -> None: ...


class KeyCapture(Protocol):
    """A model with ``Capabilities.key_capture``: queries and keys per layer and feature."""

    def get_attention_keys(self) -> Mapping[str, list[Any]]: ...


class AttentionHeads(Protocol):
    """A model with ``Capabilities.key_capture`` that lists its attention heads:
    ``attention_heads()`` -> ``{feature_key: [heads of each layer, input side first]}``
    (read by rollout's ``low_memory="auto"``)."""

    def attention_heads(self) -> Mapping[str, list[int]]: ...


class LRPRulesModel(Protocol):
    """A model with ``Capabilities.lrp_rules``: the AttnLRP rules on and off."""

    def set_lrp_rules(self, enabled: bool) -> None: ...


class EmbeddingLayers(Protocol):
    """A model with ``Capabilities.embedding_layers``: each feature's per-unit embedding."""

    def get_embedding_layers(self) -> Mapping[str, Any]: ...
