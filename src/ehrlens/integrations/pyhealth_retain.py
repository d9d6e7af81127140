"""RETAIN's own contribution scores (Choi et al., "RETAIN: An Interpretable Predictive Model
for Healthcare using Reverse Time Attention Mechanism", NeurIPS 2016, eq. 5).

RETAIN's context is linear in its inputs once the attentions are computed:
``c = sum_i alpha_i * (beta_i ⊙ x_i)``, ``x_i = sum_j e_ij`` (code embeddings of visit ``i``)
and ``logit = W c + b``. The contribution of code ``j`` of visit ``i`` to the explained logit
is therefore ``alpha_i * w · (beta_i ⊙ e_ij)``, with ``w`` the output weights of the feature's
slice of ``W`` (negated for a binary model's negative class). Time-series values ``v_ik``
embedded by a linear layer contribute ``alpha_i * w · (beta_i ⊙ W_e[:, k]) * v_ik``.

The scores of a sample, the output bias, the shares of the padding codes' embeddings and
the linear embeddings' biases add up to the explained logit exactly.

"RETAIN-shaped" means what PyHealth's ``RETAIN`` has: ``retain[key]`` layers whose
``alpha_li`` (``[batch, visits, 1]``, softmax over visits) and ``beta_li`` (``[batch,
visits, dim]``, tanh) are linear modules, an output layer ``fc`` over the features'
contexts concatenated in ``feature_keys`` order, and embedding layers
(``get_embedding_layers()``, e.g. through :class:`~ehrlens.integrations.pyhealth.
PyHealthGradientModel`). The attentions are read off those modules with forward hooks: one
forward pass, no gradients.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import Tensor, nn

from ..core.modes import eval_mode
from ..interpret.api import input_view, plain_tensors
from ..interpret.methods.base import (
    BaseInterpreter,
    TargetIndex,
    check_finite_scores,
    feature_processor,
    target_index,
)


def retain_parts(model: Any) -> tuple[Mapping[str, nn.Module], nn.Linear]:
    """The RETAIN layers ``{key: layer}`` and output layer of ``model`` (or of the model a
    wrapper holds in ``model.model``).

    Raises:
        TypeError: the model is not RETAIN-shaped, saying what is missing.
    """
    inner = getattr(model, "model", model)
    layers = getattr(inner, "retain", None)
    fc = getattr(inner, "fc", None)
    name = type(inner).__name__
    if not isinstance(layers, Mapping | nn.ModuleDict) or not isinstance(fc, nn.Linear):
        raise TypeError(
            f"RetainContributions needs a RETAIN-shaped model (retain[key] layers and an "
            f"output layer fc, as PyHealth's RETAIN); {name} has "
            f"{'no retain layers' if not isinstance(layers, Mapping | nn.ModuleDict) else 'no fc'}"
        )
    for key, layer in layers.items():
        for part in ("alpha_li", "beta_li"):
            if not isinstance(getattr(layer, part, None), nn.Linear):
                raise TypeError(
                    f"feature '{key}': {name}.retain[{key!r}] has no linear {part}: "
                    "RetainContributions reads RETAIN's alpha and beta attentions off them"
                )
    return {str(k): cast(nn.Module, v) for k, v in layers.items()}, fc


class RetainContributions(BaseInterpreter):
    """RETAIN's contribution of each code (or time-series value) to the explained logit.

    Signed: positive scores support the explained class. Scores are shaped like each
    feature's value tensor (``[batch, visits, codes]`` for visits of codes, ``[batch, seq]``
    for a code sequence, ``[batch, steps, values]`` for a time series), padding exactly 0;
    a float vector that is one position gets ``[batch, 1]``.

    Args:
        model: a RETAIN-shaped model with ``get_embedding_layers()`` (PyHealth's ``RETAIN``
            through :func:`~ehrlens.integrations.pyhealth.wrap`).

    Example:
        >>> scores = RetainContributions(wrap(pyhealth_retain)).attribute(**batch)
        >>> scores["visits"].shape                           # [batch, visits, codes]
        torch.Size([3, 4, 3])
    """

    name = "retain_contributions"
    gradient_free = True
    needs = (nn.Module,)
    summary = "RETAIN's own contributions: alpha * beta * embedding * output weights"
    requirement_reason = "it reads RETAIN's attentions and weights"
    per_unit = True
    model: nn.Module

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        retain_parts(model)
        if not self.capabilities.embedding_layers:
            raise TypeError(
                f"RetainContributions needs model.get_embedding_layers() "
                f"({type(model).__name__} has none); wrap a PyHealth model with "
                "ehrlens.integrations.pyhealth.wrap(model)"
            )

    def attribute(self, target_class_idx: TargetIndex = None, **batch: Any) -> dict[str, Tensor]:
        """``{feature: scores}``; ``target_class_idx`` as for ehrlens's other methods
        (binary: ``1``/``None`` the logit, ``0`` its negation)."""
        batch = plain_tensors(batch)
        layers, fc = retain_parts(self.model)
        embeddings = cast(Any, self.model).get_embedding_layers()
        keys = list(self.description.feature_keys or layers)
        captured: dict[tuple[str, str], Tensor] = {}

        def keep(key: str, part: str):
            def hook(module: nn.Module, inputs: Any, output: Tensor) -> None:
                captured[(key, part)] = output.detach()

            return hook

        handles = []
        try:
            for key in keys:
                layer = cast(Any, layers[key])  # alpha_li / beta_li checked by retain_parts
                handles.append(layer.alpha_li.register_forward_hook(keep(key, "alpha")))
                handles.append(layer.beta_li.register_forward_hook(keep(key, "beta")))
                handles.append(embeddings[key].register_forward_hook(keep(key, "embedding")))
            with eval_mode(self.model), torch.no_grad():
                logit = self.model(**batch)["logit"]
        finally:
            for handle in handles:
                handle.remove()
        index = target_index(logit, self.description.mode, target_class_idx)
        weights = fc.weight.detach()  # [outputs, features * dim]
        if weights.shape[0] == 1 and self.description.mode in ("binary", None):
            weights = torch.cat([-weights, weights])  # explained classes 0 (negated) and 1
        view = input_view(self.description, batch)
        out = {}
        for number, key in enumerate(keys):
            alpha = captured[(key, "alpha")].softmax(dim=1)[..., 0]  # [batch, visits]
            beta = captured[(key, "beta")].tanh()  # [batch, visits, dim]
            dim = beta.shape[-1]
            w = weights[index, number * dim : (number + 1) * dim]  # [batch, dim]
            scale = alpha[..., None] * beta * w[:, None, :]  # [batch, visits, dim]
            out[key] = self._unit_scores(
                key, scale, captured[(key, "embedding")], embeddings[key], view
            )
        check_finite_scores(out, batch)
        return out

    def _unit_scores(
        self,
        key: str,
        scale: Tensor,
        embedded: Tensor,
        layer: nn.Module,
        view: Mapping[str, Any],
    ) -> Tensor:
        """Each unit's share ``scale · e`` (``scale`` ``[batch, visits, dim]``), shaped like
        the feature's values, padding 0."""
        values = view[key]
        if isinstance(layer, nn.Linear) and values.dim() == 3:
            # time series: value k of step t contributes scale_t · W_e[:, k] * v_tk
            per_value = scale @ layer.weight.detach()  # [batch, steps, values]
            scores = per_value * values
        elif embedded.dim() == 4:  # visits of codes: [batch, visits, codes, dim]
            scores = (embedded * scale[:, :, None, :]).sum(dim=-1)
        elif embedded.dim() == 3:  # a code sequence: [batch, seq, dim]
            scores = (embedded * scale).sum(dim=-1)
        else:  # a vector, one position: [batch, dim]
            return (embedded * scale[:, 0]).sum(dim=-1, keepdim=True).to(torch.float32)
        processor = feature_processor(self.model, key, values)
        real = processor.unit_mask(values, view["masks"].get(key))
        return (scores * real).to(torch.float32)
