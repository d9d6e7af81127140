"""A visit's attention score split among its codes: a derived code-level attribution for
models that attend over visits.

A model that pools each visit into one token (``Transformer`` on ``"nested_sequence"``)
gives every attention method one score per visit. :class:`VisitScoreSplit` keeps that score
and divides it among the visit's codes by each code's share of the visit's effect on the
explained logit: ``|gradient . embedding|`` of the code's own embedding (gradient x input
inside the visit), or equally (the mean pooling's own weights). The codes of a visit sum
back to the visit's score. The split is the method's, not the attention's: attention never
saw the codes apart, and the name says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn

from ...core.modes import eval_mode
from ..api import AttentionInterpretable, EmbeddingLayers, input_view, plain_tensors
from .base import (
    BaseInterpreter,
    TargetIndex,
    check_finite_scores,
    feature_processor,
    register_method,
    require_autograd,
    select_target,
)
from .baselines import RawAttention
from .chefer import CheferRelevance
from .flow import AttentionFlow
from .rollout import AttentionRollout

#: Attention methods whose visit scores can be split, by name.
SPLIT_METHODS: dict[str, type[BaseInterpreter]] = {
    "rollout": AttentionRollout,
    "flow": AttentionFlow,
    "chefer": CheferRelevance,
    "raw_attention": RawAttention,
}
SHARES = ("gradient_x_input", "uniform")


@register_method
class VisitScoreSplit(BaseInterpreter):
    """An attention method's visit score, split among the visit's codes.

    For every position that holds several units (a visit of codes, a time step of values),
    the base method's score ``s_v`` is divided as ``s_v * w_{v,c}`` with

    - ``share="gradient_x_input"``: ``w_{v,c} = |g_{v,c} . e_{v,c}| / sum_c' |g_{v,c'} .
      e_{v,c'}|``, where ``e_{v,c}`` is code ``c``'s own embedding (``[batch, visits, codes,
      dim]``, the output of ``model.get_embedding_layers()[key]``) and ``g_{v,c}`` the
      gradient of the explained logit with respect to it; a visit whose codes all have 0
      gets equal shares;
    - ``share="uniform"``: ``w_{v,c} = 1 / n_v``, the weights of the mean pooling.

    Each visit's codes sum to the visit's score; padding is exactly 0. Features whose scores
    are already one per code (flat sequences, vectors, or a model whose attention runs over
    codes such as ``CodeTransformer``) are returned as the base method gives them.

    Args:
        model: an :class:`~ehrlens.interpret.AttentionInterpretable` model (with
            ``get_embedding_layers()`` for ``"gradient_x_input"``).
        method: the attention method whose visit scores are split: ``"rollout"``,
            ``"flow"``, ``"chefer"`` or ``"raw_attention"`` (default settings).
        share: ``"gradient_x_input"`` or ``"uniform"``.

    Example:
        >>> split = VisitScoreSplit(model, method="rollout")
        >>> scores = split.attribute(**batch)        # {"diagnoses": [batch, visits, codes]}
        >>> visit = AttentionRollout(model).attribute(**batch)["diagnoses"][:, :, 0]
        >>> torch.allclose(scores["diagnoses"].sum(-1), visit)   # each visit sums back
        True
    """

    name = "visit_split"
    gradient_free = False
    needs = (AttentionInterpretable,)
    per_unit = True
    model: AttentionInterpretable
    summary = "a visit's attention score split among its codes by gradient x input (derived)"
    split_methods: ClassVar[tuple[str, ...]] = tuple(SPLIT_METHODS)

    def __init__(
        self,
        model: AttentionInterpretable,
        method: str = "rollout",
        share: str = "gradient_x_input",
    ) -> None:
        super().__init__(model)
        if method not in SPLIT_METHODS:
            raise ValueError(
                f"VisitScoreSplit: method must be one of {', '.join(SPLIT_METHODS)}, got {method!r}"
            )
        if share not in SHARES:
            raise ValueError(
                f"VisitScoreSplit: share must be one of {', '.join(SHARES)}, got {share!r}"
            )
        if share == "gradient_x_input" and not self.capabilities.embedding_layers:
            raise TypeError(
                f"VisitScoreSplit(share='gradient_x_input') needs model.get_embedding_layers() "
                f"({type(model).__name__} has none); use share='uniform'"
            )
        self.method = method
        self.share = share
        self.base = SPLIT_METHODS[method](model)

    def attribute(self, target_class_idx: TargetIndex = None, **batch: Any) -> dict[str, Tensor]:
        """Code scores shaped like each feature's batch tensor; padding exactly 0.

        ``target_class_idx`` goes to the base method and, for ``"gradient_x_input"``, picks
        the logit whose gradient divides the visits (see
        :func:`~ehrlens.interpret.methods.base.select_target`).
        """
        if self.share == "gradient_x_input":
            require_autograd("VisitScoreSplit(share='gradient_x_input')")
        batch = plain_tensors(batch)
        with eval_mode(self.model):
            base = self.base.attribute(target_class_idx, **batch)
            contributions = (
                self._contributions(target_class_idx, batch)
                if self.share == "gradient_x_input"
                else {}
            )
        view = input_view(self.description, batch)
        masks = view["masks"]
        out = {}
        for key, scores in base.items():
            values = view[key]
            if values.dim() < 3 or key in self.description.unit_positions:
                out[key] = scores  # one unit per position already
                continue
            processor = feature_processor(self.model, key, values)
            real = processor.unit_mask(values, masks.get(key)).to(scores.dtype)
            weight = contributions.get(key)
            weight = real if weight is None else weight.to(scores.dtype)
            out[key] = split_positions(scores, weight, real)
        check_finite_scores(out, batch)
        return out

    def _contributions(self, target_class_idx: TargetIndex, batch: Mapping[str, Any]):
        """``|gradient . embedding|`` of every unit, ``{key: [batch, *units]}``."""
        layers = cast(EmbeddingLayers, self.model).get_embedding_layers()
        outputs: dict[str, Tensor] = {}
        handles = []

        def keep(key: str):
            def hook(module: nn.Module, inputs: Any, output: Tensor) -> None:
                outputs[key] = output

            return hook

        try:
            for key, module in layers.items():
                handles.append(cast(nn.Module, module).register_forward_hook(keep(key)))
            with torch.enable_grad():
                logit = self.model(**batch)["logit"]
                target = select_target(logit, self.description.mode, target_class_idx)
                keys = [k for k, o in outputs.items() if o.requires_grad]
                grads = torch.autograd.grad(
                    target.sum(), [outputs[k] for k in keys], allow_unused=True
                )
        finally:
            for handle in handles:
                handle.remove()
        return {
            key: (grad * outputs[key].detach()).sum(dim=-1).abs()
            for key, grad in zip(keys, grads, strict=True)
            if grad is not None
        }


def split_positions(scores: Tensor, weight: Tensor, real: Tensor) -> Tensor:
    """Each position's score ``scores[b, v, ...]`` (the same on all its real units) divided
    among its units in proportion to ``weight`` (``>= 0``, shaped like ``scores``); a
    position whose real units all weigh 0 is divided equally. Padding (``real == 0``) gets 0.

    Shapes: ``[batch, positions, *units]`` each -> the same.

    Example:
        >>> scores = torch.tensor([[[0.6, 0.6, 0.0]]])            # one visit of two codes
        >>> split_positions(scores, torch.tensor([[[3.0, 1.0, 5.0]]]),
        ...                 torch.tensor([[[1.0, 1.0, 0.0]]]))
        tensor([[[0.4500, 0.1500, 0.0000]]])
    """
    dims = tuple(range(2, scores.dim()))
    count = real.sum(dim=dims, keepdim=True)
    position = (scores * real).sum(dim=dims, keepdim=True) / count.clamp(min=1)
    weight = weight * real  # padding carries no share
    total = weight.sum(dim=dims, keepdim=True)
    equal = real / count.clamp(min=1)
    share = torch.where(total > 0, weight / torch.where(total > 0, total, 1), equal)
    return position * share * real
