"""Gradient baselines on the per-unit embeddings, computed by Captum (extra ``ehrlens[captum]``).

Captum's layer methods attribute to the output of each feature's per-unit embedding module
(``model.get_embedding_layers()``, ``[batch, *input_positions, dim]``); summing over ``dim``
gives one score per code, visit code, time step or vector element. The batch dict is handed
to Captum as a flat tuple of its tensors, so Captum can expand every one of them (masks and
times included) for its interpolation steps.
"""

from __future__ import annotations

import warnings
from abc import abstractmethod
from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import Tensor

from ...core.memory import check_fits
from ...core.modes import eval_mode
from ..api import (
    EmbeddingLayers,
    feature_layout,
    input_view,
    mask_unscored_inputs,
    plain_tensors,
)
from .base import (
    BaseInterpreter,
    TargetIndex,
    check_finite_scores,
    explained_logits,
    feature_processor,
    is_single_position,
    register_method,
    require_autograd,
    single_position_scores,
    target_index,
)


def _captum():
    try:
        import captum.attr
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("gradient baselines use Captum: pip install 'ehrlens[captum]'") from error
    return captum.attr


Path = tuple[str, str | int | None]


def _flatten(batch: Mapping[str, Any]) -> tuple[list[Path], tuple[Tensor, ...]]:
    """The batch's tensors as a tuple, with the path of each: ``(key, None)``, a mapping's
    ``(key, name)`` or a tuple feature's ``(key, index)``."""
    paths: list[Path] = []
    tensors: list[Tensor] = []
    for key, value in batch.items():
        if isinstance(value, Tensor):
            paths.append((key, None))
            tensors.append(value)
        elif isinstance(value, Mapping):
            for inner, tensor in value.items():
                if isinstance(tensor, Tensor):
                    paths.append((key, inner))
                    tensors.append(tensor)
        elif isinstance(value, tuple):
            for index, tensor in enumerate(value):
                if isinstance(tensor, Tensor):
                    paths.append((key, index))
                    tensors.append(tensor)
    return paths, tuple(tensors)


def _rebuild(
    batch: Mapping[str, Any], paths: list[Path], tensors: tuple[Tensor, ...]
) -> dict[str, Any]:
    out: dict[str, Any] = {
        k: (dict(v) if isinstance(v, Mapping) else list(v) if isinstance(v, tuple) else v)
        for k, v in batch.items()
    }
    for (key, inner), tensor in zip(paths, tensors, strict=True):
        if inner is None:
            out[key] = tensor
        else:
            out[key][inner] = tensor
    return {k: tuple(v) if isinstance(batch[k], tuple) else v for k, v in out.items()}


class _LayerGradientMethod(BaseInterpreter):
    """Shared set-up of the Captum layer methods."""

    gradient_free = False
    needs = (torch.nn.Module, "captum")
    per_unit = True  # each unit's own embedding output
    model: torch.nn.Module
    requirement_reason = "it differentiates the model's forward"
    captum_name = ""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__(model)
        if not self.capabilities.embedding_layers:
            raise TypeError(
                f"{type(self).__name__} needs model.get_embedding_layers() "
                f"({type(model).__name__} has none): the per-unit embedding modules whose "
                "outputs are attributed"
            )

    @abstractmethod
    def _run(
        self,
        method: Any,
        batch: dict[str, Any],
        tensors: tuple[Tensor, ...],
        paths: list[Path],
        target: Tensor,
    ) -> list[Tensor]:
        """Call the Captum method; one attribution ``[batch, *positions, dim]`` per layer."""

    def attribute(self, target_class_idx: TargetIndex = None, **batch: Any) -> dict[str, Tensor]:
        """Signed scores shaped like each feature's batch tensor; padding exactly 0.

        Positive scores support the explained class. ``target_class_idx`` as for
        :class:`~ehrlens.interpret.CheferRelevance`.
        """
        require_autograd(type(self).__name__)
        batch = plain_tensors(batch)
        mode = self.description.mode
        layers = cast(EmbeddingLayers, self.model).get_embedding_layers()  # checked at init
        keys = list(layers)
        paths, tensors = _flatten(batch)

        def forward(*inputs: Tensor) -> Tensor:
            logit = self.model(**_rebuild(batch, paths, inputs))["logit"]
            return explained_logits(logit, mode)

        with eval_mode(self.model), torch.enable_grad():
            with torch.no_grad():
                target = target_index(self.model(**batch)["logit"], mode, target_class_idx)
            with warnings.catch_warnings():
                # Captum warns whenever several layers are given; ours are independent (one
                # embedding per feature, none fed by another).
                warnings.filterwarnings("ignore", message="Multiple layers provided")
                method = getattr(_captum(), self.captum_name)(forward, [layers[k] for k in keys])
                attributions = self._run(method, batch, tensors, paths, target)
        view = input_view(self.description, batch)  # tuple features: their value tensor
        masks = view["masks"]
        out = {}
        for key, attribution in zip(keys, attributions, strict=True):
            values = view[key]
            scores = attribution.detach().sum(dim=-1)  # [batch, *input_positions]
            if key in self.description.single_positions and is_single_position(values):
                out[key] = single_position_scores(key, scores, values).to(torch.float32)
                continue
            processor = feature_processor(self.model, key, values)
            # e.g. a time step's score on each of its values; padding 0
            spread = processor.scores_to_inputs(key, scores, values, masks.get(key))
            out[key] = spread.to(torch.float32)
        check_finite_scores(out, batch)
        return mask_unscored_inputs(self.model, out, batch)


@register_method
class InputXGradient(_LayerGradientMethod):
    """Gradient × activation on each unit's embedding (Captum ``LayerGradientXActivation``).

    Args:
        model: a model with ``get_embedding_layers()`` (every ehrlens model).

    Example:
        >>> scores = InputXGradient(model).attribute(**batch)   # {"diagnoses": [b, s]}
    """

    name = "input_x_gradient"
    summary = "embedding x gradient (Captum)"
    captum_name = "LayerGradientXActivation"

    def _run(self, method, batch, tensors, paths, target):
        return method.attribute(tensors, target=target)


@register_method
class IntegratedGradients(_LayerGradientMethod):
    """Integrated gradients on each unit's embedding (Captum ``LayerIntegratedGradients``).

    The baseline is the batch with every code set to the pad id (whose embedding is 0) and
    every numeric value set to 0; masks and times are kept. The path integral is
    approximated with ``n_steps`` points (Gauss-Legendre by default, as in Captum).

    Args:
        model: a model with ``get_embedding_layers()`` (every ehrlens model).
        n_steps: integration points.
        internal_batch_size: samples per forward inside Captum (bounds memory).

    Example:
        >>> scores = IntegratedGradients(model, n_steps=50).attribute(**batch)
    """

    name = "integrated_gradients"
    summary = "integrated gradients on embeddings (Captum)"
    captum_name = "LayerIntegratedGradients"

    def __init__(
        self, model: torch.nn.Module, n_steps: int = 50, internal_batch_size: int | None = None
    ) -> None:
        super().__init__(model)
        if n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {n_steps}")
        self.n_steps = int(n_steps)
        self.internal_batch_size = internal_batch_size

    def _is_value(self, batch: Mapping[str, Any], key: str, inner: str | int | None) -> bool:
        """Whether the tensor at ``(key, inner)`` is a feature's value (set to the baseline):
        a plain feature tensor, or a tuple feature's ``"value"`` element (times and masks are
        kept)."""
        if inner is None:
            return True
        if not isinstance(inner, int):
            return False
        layout = feature_layout(self.description, key, len(batch[key]))
        return inner < len(layout) and layout[inner] == "value"

    def _run(self, method, batch, tensors, paths, target):
        size = len(target) if target.dim() else 1
        steps_at_once = self.n_steps
        if self.internal_batch_size is not None:
            steps_at_once = min(self.n_steps, max(1, self.internal_batch_size // max(size, 1)))
        check_fits(  # Captum's step weights, and the inputs repeated once per step at a time
            16 * self.n_steps + steps_at_once * sum(t.numel() * t.element_size() for t in tensors),
            f"integrated_gradients with n_steps={self.n_steps:,} on a batch of {size} (at least)",
        )
        features = set(self.description.feature_keys or ())
        baselines = tuple(
            torch.zeros_like(t) if key in features and self._is_value(batch, key, inner) else t
            for (key, inner), t in zip(paths, tensors, strict=True)
        )
        return method.attribute(
            tensors,
            baselines=baselines,
            target=target,
            n_steps=self.n_steps,
            internal_batch_size=self.internal_batch_size,
        )
