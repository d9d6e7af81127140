"""Models written against PyHealth's interpretability interface, explained by ehrlens.

PyHealth's models implement the same three methods as ehrlens's interface
(``set_attention_hooks(enabled)``, ``get_attention_layers()``, ``get_relevance_tensor(R,
**data)``), but subclass PyHealth's own ``CheferInterpretable``, which ehrlens's interpreters
do not know. Two ways in, neither importing PyHealth:

- :func:`register`: declare the class an ehrlens :class:`~ehrlens.interpret.GradientInterpretable`
  (checked to have the three methods). The model is then passed to interpreters as it is.
- :class:`PyHealthModel`: wrap one model object (e.g. when its class must not be changed).

Everything else is handled by the interpreters for any model of this kind: the one-argument
``set_attention_hooks``, maps kept detached with gradients taken by the model's own tensor
hooks, head-averaged ``[batch, seq, seq]`` maps, tuple features ``(value, mask)`` /
``(time, value, mask)`` read by ``model.dataset.input_processors[key].schema()``, readout only
through ``get_relevance_tensor``, outputs ``{"logit", "y_prob"}``.

Example:
    >>> from ehrlens.integrations.pyhealth import register
    >>> register(type(pyhealth_model))            # once per class
    >>> with torch.no_grad():
    ...     scores = AttentionRollout(pyhealth_model).attribute(**batch)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, TypeVar, cast

from torch import Tensor, nn

from ..core.interpretable import Capabilities, GradientInterpretable

REQUIRED_METHODS = ("set_attention_hooks", "get_attention_layers", "get_relevance_tensor")

ModelClass = TypeVar("ModelClass", bound=type)


class PyHealthInterpretable(Protocol):
    """The three methods of PyHealth's interface, as a PyHealth model has them."""

    def set_attention_hooks(self, enabled: bool) -> None: ...

    def get_attention_layers(self) -> dict[str, list[tuple[Tensor, Tensor | None]]]: ...

    def get_relevance_tensor(self, R: Mapping[str, Tensor], **data: Any) -> dict[str, Tensor]: ...


def missing_methods(obj: Any) -> list[str]:
    """The required interface methods ``obj`` (a class or an instance) lacks."""
    return [name for name in REQUIRED_METHODS if not callable(getattr(obj, name, None))]


def register(cls: ModelClass) -> ModelClass:
    """Declare a PyHealth-style model class a :class:`~ehrlens.interpret.GradientInterpretable`.

    Usable as a class decorator; returns ``cls``.

    Raises:
        TypeError: ``cls`` is not a class, or lacks one of the three interface methods.

    Example:
        >>> register(PyHealthTransformer)
        >>> CheferRelevance(PyHealthTransformer(dataset))   # accepted
    """
    if not isinstance(cls, type):
        raise TypeError(f"register() takes a model class, got {type(cls).__name__}")
    missing = missing_methods(cls)
    if missing:
        raise TypeError(
            f"{cls.__name__} lacks {', '.join(missing)}: a PyHealth-style interpretable model "
            f"implements {', '.join(REQUIRED_METHODS)}"
        )
    GradientInterpretable.register(cls)
    return cls


class PyHealthModel(nn.Module, GradientInterpretable):
    """One PyHealth-style model object, seen through ehrlens's interface.

    Calls go to the wrapped model unchanged; ``feature_keys``, ``mode``, ``pad_ids`` and
    ``dataset`` (for tuple layouts) are read from it. The wrapper adds no capability the
    model lacks: capture follows the model's own one-argument ``set_attention_hooks``.

    Args:
        model: an ``nn.Module`` with the three interface methods, returning ``{"logit": ...}``
            (or the logit tensor) from ``forward(**batch)``.

    Example:
        >>> wrapped = PyHealthModel(pyhealth_model)
        >>> scores = CheferRelevance(wrapped).attribute(**batch)   # {"conditions": [b, s]}
    """

    #: Nothing beyond the three methods: capture is the model's own.
    interpret_capabilities = Capabilities()

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"PyHealthModel wraps an nn.Module, got {type(model).__name__}")
        missing = missing_methods(model)
        if missing:
            raise TypeError(
                f"{type(model).__name__} lacks {', '.join(missing)}: a PyHealth-style "
                f"interpretable model implements {', '.join(REQUIRED_METHODS)}"
            )
        self.model = model
        self._interface = cast(PyHealthInterpretable, model)  # checked just above
        self.feature_keys = list(getattr(model, "feature_keys", None) or [])
        self.mode = getattr(model, "mode", None)
        pad_ids = getattr(model, "pad_ids", None)
        self.pad_ids = dict(pad_ids) if isinstance(pad_ids, Mapping) else {}
        self.dataset = getattr(model, "dataset", None)

    def forward(self, **batch: Any) -> Any:
        return self.model(**batch)

    def set_attention_hooks(self, enabled: bool, capture_gradients: bool = True) -> None:
        """The model's own one-argument switch; its forward registers its gradient hooks,
        so ``capture_gradients`` cannot turn them off (the wrapper declares no forward-only
        capture, and interpreters never ask it for one)."""
        self._interface.set_attention_hooks(enabled)

    def get_attention_layers(self) -> dict[str, list[tuple[Tensor, Tensor | None]]]:
        return self._interface.get_attention_layers()

    def get_relevance_tensor(self, R: Mapping[str, Tensor], **data: Any) -> dict[str, Tensor]:
        return self._interface.get_relevance_tensor(R, **data)
