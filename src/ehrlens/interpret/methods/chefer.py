"""Gradient-weighted relevance (Chefer, Gur & Wolf, "Generic Attention-model Explainability
for Interpreting Bi-Modal and Encoder-Decoder Transformers", ICCV 2021), self-attention rule."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, cast

import torch
from torch import Tensor, nn

from ...core.interpretable import GradientRoutingCapture
from ..api import (
    GradientFusionCapture,
    GradientInterpretable,
    attention_layers,
    capabilities,
    capture_attention,
    check_attention_layers,
    plain_tensors,
    readout_weights,
    select_input_positions,
)
from .base import (
    BaseInterpreter,
    TargetIndex,
    register_method,
    require_autograd,
    select_target,
    working_dtype,
)
from .propagation import readout_relevance


def chefer_step(rows: Tensor, cam: Tensor) -> Tensor:
    """``rows @ (I + cam)`` for rows ``[batch, r, seq]`` and ``cam`` ``[batch, seq, seq]``."""
    return rows + torch.bmm(rows, cam)


def gradient_weighted_attention(attention: Tensor, gradient: Tensor | None) -> Tensor:
    """``mean_heads(clamp(grad * A, min=0))``: ``[batch, heads, s, s]`` -> ``[batch, s, s]``.

    Computed in at least float32 (:func:`~.base.working_dtype`).
    """
    dtype = working_dtype(attention.dtype)
    if gradient is None:  # the target does not depend on this map
        return torch.zeros_like(attention[:, 0], dtype=dtype)
    product = gradient.to(dtype) * attention.to(dtype)
    return product.clamp_(min=0).mean(dim=1)  # in place on the fresh product: one pass less


class ReadoutRowCarrier:
    """Chefer's readout rows carried down one feature's layers as the backward delivers
    each layer's fused gradient, top layer first: ``rows <- rows + rows @ cam_l``.

    ``cam_l`` (``[batch, seq, seq]``, :func:`gradient_weighted_attention`) arrives in blocks
    of query rows; ``rows[:, block] @ cam_l[:, block]`` is added to the layer's sum at once,
    and the rows are updated when a lower layer's first block arrives (or at
    :meth:`result`), so no layer's map is kept. A layer that no gradient reaches adds
    nothing (its ``cam`` is 0). Layers must arrive top-down, as a backward delivers them.

    Args:
        readout: ``[batch, seq]``, the model's readout weights of this feature.

    Example:
        >>> carrier = ReadoutRowCarrier(torch.tensor([[1.0, 0.0]]))
        >>> sink = carrier.sink(0)                          # the only layer
        >>> sink(slice(0, 1), torch.tensor([[[0.5, 0.5]]]))  # row 0 of its cam
        >>> sink(slice(1, 2), torch.tensor([[[0.0, 1.0]]]))  # row 1
        >>> carrier.result()                                # [1, 0] + [1, 0] @ cam
        tensor([[1.5000, 0.5000]])
    """

    def __init__(self, readout: Tensor) -> None:
        self.rows = readout.to(working_dtype(readout.dtype))
        self._sum: Tensor | None = None
        self._layer: int | None = None  # the layer whose blocks are being summed

    def sink(self, layer: int) -> Callable[[slice, Tensor], None]:
        """``sink(rows, fused_block)`` for layer ``layer`` (0: the input side);
        ``fused_block`` is ``[batch, len(rows), seq]``."""

        def add(rows: slice, fused: Tensor) -> None:
            self._add(layer, rows, fused)

        return add

    def _add(self, layer: int, rows: slice, fused: Tensor) -> None:
        if self._layer is not None and layer > self._layer:
            raise RuntimeError(
                f"the fused gradient of layer {layer} arrived after layer {self._layer}'s: "
                "Chefer carries its rows top-down, as a backward delivers the layers"
            )
        if layer != self._layer:
            self._close()
            self._layer = layer
        part = torch.bmm(self.rows[:, None, rows], fused.to(self.rows.dtype))[:, 0]
        self._sum = part if self._sum is None else self._sum + part

    def _close(self) -> None:
        if self._sum is not None:
            self.rows = self.rows + self._sum
            self._sum = None

    def result(self) -> Tensor:
        """The rows after every delivered layer: ``[batch, seq]``."""
        self._close()
        return self.rows


def _logit(outputs: Any) -> Tensor:
    if isinstance(outputs, Tensor):
        return outputs
    if isinstance(outputs, Mapping) and "logit" in outputs:
        return outputs["logit"]
    raise TypeError("CheferRelevance needs the model to return a logit tensor or {'logit': ...}")


@register_method
class CheferRelevance(BaseInterpreter):
    """Chefer et al. relevance: attention weighted by its gradient, accumulated over layers.

    From ``R = I``, each layer (input side first) updates
    ``R <- R + mean_heads(clamp(grad * A, min=0)) @ R``, where ``grad`` is the gradient of
    the target logit with respect to the post-softmax map ``A``. The result is read out at
    the model's readout row, carried down the layers as one row vector.

    Models that fuse gradients at capture (``Capabilities.gradient_fusion``: ehrlens's models
    and the Hugging Face adapter) compute ``mean_heads(clamp(grad * A, min=0))`` in the
    backward, as each layer's gradient arrives, so no per-head map or gradient outlives its
    layer's backward; where the model states its readout row and routes the fused blocks
    (``route_fused_gradients``: ehrlens's models), the readout row is carried through each
    layer right there, top layer first (:class:`ReadoutRowCarrier`), so no ``[batch, seq,
    seq]`` map is kept for any layer either (memory near a plain forward + backward).
    Otherwise the gradient is taken with :func:`torch.autograd.grad` with respect to the
    captured maps,
    or, for a model that stores its maps detached and takes their gradients with its own
    tensor hooks (as PyHealth's models do), with respect to its parameters so that those
    hooks fire; either way parameters' ``.grad`` are untouched. Under ``torch.no_grad()``
    gradients are enabled for this computation alone (as Captum does); under
    ``torch.inference_mode()`` autograd cannot run and a ``RuntimeError`` says so.

    Args:
        model: a :class:`~ehrlens.interpret.GradientInterpretable` model.

    Example:
        >>> chefer = CheferRelevance(model)
        >>> scores = chefer.attribute(target_class_idx=None, **batch)  # {"diagnoses": [b, s]}
    """

    name = "chefer"
    gradient_free = False
    plain_forward = True
    needs = (GradientInterpretable,)
    model: GradientInterpretable
    summary = "gradient-weighted relevance (Chefer et al.)"
    requirement_reason = (
        "this method needs attention gradients; AttentionRollout needs only forward maps"
    )

    def attribute(self, target_class_idx: TargetIndex = None, **batch: Any) -> dict[str, Tensor]:
        """Relevance for the target logit (see :func:`~.base.select_target` for targets).

        Returns:
            ``{feature_key: scores}`` shaped like ``batch[feature_key]``, padding exactly 0.
        """
        require_autograd("CheferRelevance")
        batch = plain_tensors(batch)
        offered = capabilities(self.model)
        if offered.gradient_fusion:
            readout = readout_weights(self.model, batch)
            if readout is not None and offered.gradient_routing:
                rows = self._carried_in_backward(target_class_idx, batch, readout)
                return self._input_scores(select_input_positions(self.model, rows, batch), batch)
            cams = self._fused_in_backward(target_class_idx, batch)
            relevance = readout_relevance(self.model, cams, chefer_step, batch)
            return self._input_scores(relevance, batch)
        with torch.enable_grad(), capture_attention(self.model, batch, gradients=True) as run:
            target = select_target(_logit(run.outputs), self.description.mode, target_class_idx)
            raw = self.model.get_attention_layers()
            layers = check_attention_layers(raw, type(self.model).__name__)
            maps = [a for per_key in raw.values() for a, _ in per_key]
            if all(a.requires_grad for a in maps):
                # Maps in the graph: differentiate with respect to them (their hooks fire too).
                gradients = iter(torch.autograd.grad(target.sum(), maps, allow_unused=True))
                with_grads = {k: [(a, next(gradients)) for a, _ in v] for k, v in raw.items()}
                layers = check_attention_layers(with_grads, type(self.model).__name__)
            else:
                layers = self._gradients_through_model_hooks(target)
            cams = {
                key: [gradient_weighted_attention(a.detach(), g) for a, g in per_key]
                for key, per_key in layers.items()
            }
        relevance = readout_relevance(self.model, cams, chefer_step, batch)
        return self._input_scores(relevance, batch)

    @contextmanager
    def _fusing_backward(
        self, target_class_idx: TargetIndex, batch: Mapping[str, Any]
    ) -> Iterator[tuple[Tensor, list[Tensor]]]:
        """A captured forward with gradient fusion: yields ``(target, anchors)``, what to
        differentiate and with respect to what, so the backward fuses every layer."""
        model = cast(GradientFusionCapture, self.model)
        with (
            torch.enable_grad(),
            capture_attention(
                self.model, batch, gradients=True, gradient_fusion=gradient_weighted_attention
            ) as run,
        ):
            target = select_target(_logit(run.outputs), self.description.mode, target_class_idx)
            anchors = model.get_gradient_anchors()
            if not anchors:
                raise RuntimeError(
                    f"{type(self.model).__name__}: no captured attention map requires grad "
                    "(are all parameters frozen?), so no attention gradient exists; "
                    "CheferRelevance needs trainable parameters"
                )
            yield target, anchors

    def _carried_in_backward(
        self, target_class_idx: TargetIndex, batch: Mapping[str, Any], readout: Mapping[str, Tensor]
    ) -> dict[str, Tensor]:
        """The readout rows carried down every layer inside the backward, ``{key: [b, s]}``:
        each layer's ``mean_heads(clamp(grad * A, min=0))`` arrives block by block, top layer
        first, and is folded into the rows at once (:class:`ReadoutRowCarrier`), so no
        ``[batch, seq, seq]`` map is kept for any layer."""
        with self._fusing_backward(target_class_idx, batch) as (target, anchors):
            dtype = working_dtype(anchors[0].dtype)  # the maps' dtype, at least float32
            carriers = {key: ReadoutRowCarrier(w.to(dtype)) for key, w in readout.items()}
            cast(GradientRoutingCapture, self.model).route_fused_gradients(
                lambda key, layer: carriers[key].sink(layer)
            )
            torch.autograd.grad(target.sum(), anchors, allow_unused=True)
            return {key: carrier.result() for key, carrier in carriers.items()}

    def _fused_in_backward(
        self, target_class_idx: TargetIndex, batch: Mapping[str, Any]
    ) -> dict[str, list[Tensor]]:
        """Per-layer ``mean_heads(clamp(grad * A, min=0))``, computed by the model's capture as
        each gradient arrives in one backward to the anchors (queries), ``{key: [[b, s, s]]}``."""
        with self._fusing_backward(target_class_idx, batch) as (target, anchors):
            torch.autograd.grad(target.sum(), anchors, allow_unused=True)
            fused = cast(GradientFusionCapture, self.model).get_fused_gradients()
            return {key: list(maps) for key, maps in fused.items()}

    def _gradients_through_model_hooks(self, target: Tensor) -> dict[str, list]:
        """Maps stored detached, gradients taken by the model's own tensor hooks: run the
        backward to the parameters with ``autograd.grad`` (so every hook on the path fires and
        no ``.grad`` is touched), then read the gradients the model stored."""
        model = self.model
        parameters = (
            [p for p in model.parameters() if p.requires_grad]
            if isinstance(model, nn.Module)
            else []
        )
        if not parameters:
            raise RuntimeError(
                f"{type(model).__name__} stores its attention maps detached from the graph and "
                "none of its parameters requires grad, so no attention gradient can reach its "
                "hooks; CheferRelevance needs trainable parameters or maps kept in the graph"
            )
        torch.autograd.grad(target.sum(), parameters, allow_unused=True)
        layers = attention_layers(model)
        if all(g is None for pairs in layers.values() for _, g in pairs):
            raise RuntimeError(
                f"{type(model).__name__} captured no attention gradient after the backward: its "
                "maps are detached, so set_attention_hooks(True) must register a tensor hook "
                "that stores each map's gradient (as get_attention_layers()'s second element)"
            )
        return layers
