"""AttnLRP (Achtibat et al., "AttnLRP: Attention-Aware Layer-Wise Relevance Propagation for
Transformers", ICML 2024): relevance through softmax, matrix products and normalisation in one
backward pass.

The model attaches the rules (``Capabilities.lrp_rules``, :func:`~ehrlens.interpret.api.
lrp_rules`); this interpreter runs one forward and one backward pass from the explained logit
and reads the relevance ``embedding * gradient`` at each feature's per-unit embedding
(``get_embedding_layers()``), summed over the embedding dimension.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import Tensor, nn

from ..api import EmbeddingLayers, lrp_rules, mask_unscored_inputs, plain_tensors
from .base import (
    BaseInterpreter,
    TargetIndex,
    check_finite_scores,
    feature_processor,
    register_method,
    require_autograd,
    select_target,
)


def _logit(outputs: Any) -> Tensor:
    if isinstance(outputs, Tensor):
        return outputs
    if isinstance(outputs, Mapping) and "logit" in outputs:
        return cast(Tensor, outputs["logit"])
    raise TypeError("AttnLRP needs the model to return a logit tensor or {'logit': ...}")


@register_method
class AttnLRP(BaseInterpreter):
    """Attention-aware layer-wise relevance propagation (AttnLRP), signed.

    The explained logit is distributed over the layers backwards by the paper's rules: the
    epsilon rule (epsilon -> 0) for linear layers and sums, the identity rule for layer norms
    (their standard deviation held constant) and element-wise activations, the uniform rule for
    the two matrix products of attention (each factor gets half), and the softmax rule of
    Proposition 3.1 (see :mod:`ehrlens.models.lrp`). It is one forward and one backward pass.

    Positive scores support the explained class, negative ones speak against it. The scores of
    a sample plus the shares kept by biases, position encodings, [CLS] tokens and the softmax
    bias terms sum to the explained logit (conservation; tested to float precision).

    Under ``torch.no_grad()`` gradients are enabled for this computation alone; under
    ``torch.inference_mode()`` a ``RuntimeError`` says so. Parameters' ``.grad`` are untouched.

    Args:
        model: a model with ``Capabilities.lrp_rules`` and ``embedding_layers`` (ehrlens's
            :class:`~ehrlens.models.Transformer`, the Hugging Face adapter for BERT-family
            encoders).

    Example:
        >>> lrp = AttnLRP(model)
        >>> scores = lrp.attribute(target_class_idx=None, **batch)   # {"diagnoses": [b, s]}
    """

    name = "attnlrp"
    gradient_free = False
    needs = (nn.Module,)
    summary = "attention-aware layer-wise relevance propagation (AttnLRP)"
    requirement_reason = "it runs the model's forward and backward passes"
    per_unit = True  # read at each unit's own embedding output
    model: nn.Module

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        missing = [
            flag
            for flag, present in (
                ("lrp_rules", self.capabilities.lrp_rules),
                ("embedding_layers", self.capabilities.embedding_layers),
            )
            if not present
        ]
        if missing:
            raise TypeError(
                f"AttnLRP needs a model with Capabilities.{' and '.join(missing)} "
                f"({type(model).__name__} lacks them): the AttnLRP rules for each of its layers "
                "(set_lrp_rules) and the per-unit embeddings where relevance is read "
                "(get_embedding_layers); ehrlens's Transformer and the Hugging Face adapter have "
                "both"
            )

    def attribute(self, target_class_idx: TargetIndex = None, **batch: Any) -> dict[str, Tensor]:
        """Relevance for the target logit (see :func:`~.base.select_target` for targets).

        Returns:
            ``{feature_key: scores}`` shaped like ``batch[feature_key]``, padding exactly 0.
        """
        require_autograd("AttnLRP")
        batch = plain_tensors(batch)
        layers = cast(EmbeddingLayers, self.model).get_embedding_layers()
        outputs: dict[str, Tensor] = {}

        def keep(key: str) -> Any:
            # The embedding output becomes a leaf of the graph: its gradient exists even when
            # the model's parameters are frozen, and no parameter's .grad is touched.
            def hook(module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
                leaf = output.detach().requires_grad_(True)
                outputs[key] = leaf
                return leaf

            return hook

        handles = [layer.register_forward_hook(keep(key)) for key, layer in layers.items()]
        try:
            with torch.enable_grad(), lrp_rules(self.model):
                logit = _logit(self.model(**batch))
                target = select_target(logit, self.description.mode, target_class_idx)
                keys = [k for k in layers if k in outputs]
                grads = torch.autograd.grad(
                    target.sum(), [outputs[k] for k in keys], allow_unused=True
                )
        finally:
            for handle in handles:
                handle.remove()
        masks = batch.get("masks") or {}
        out = {}
        for key in layers:
            values = batch[key]
            if key in keys:
                grad = grads[keys.index(key)]
                embedded = outputs[key].detach()
                relevance = (
                    (embedded * grad).sum(dim=-1)
                    if grad is not None
                    else torch.zeros(embedded.shape[:-1], device=embedded.device)
                )
            else:  # the feature's embedding did not run for this batch
                relevance = torch.zeros(values.shape[:2], device=values.device)
            processor = feature_processor(self.model, key, values)
            spread = processor.scores_to_inputs(key, relevance, values, masks.get(key))
            out[key] = spread.to(torch.float32)
        check_finite_scores(out, batch)
        return mask_unscored_inputs(self.model, out, batch)
