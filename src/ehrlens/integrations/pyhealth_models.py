"""PyHealth models seen through ehrlens's interface, whichever PyHealth release built them.

PyHealth's models come with one of three interfaces, recognised by what the model has (no
PyHealth import, no version string):

- ``"hooks"`` (PyHealth 2.0.0 and later): ``set_attention_hooks(enabled)``,
  ``get_attention_layers()`` and ``get_relevance_tensor(R, **data)``, the three methods of
  ehrlens's interface. Passed on unchanged.
- ``"register_hook"`` (PyHealth 2.0a13, the newest release for Python 3.10/3.11): the
  ``Transformer`` takes ``forward(..., register_hook=True)``, and each attention module
  ``model.transformer[key].transformer[i].attention`` keeps its live map and its gradient
  (``get_attn_map()``, ``get_attn_grad()``); the readout is row 0 (no ``[CLS]`` token).
  :class:`PyHealthModel` implements the three methods on top of them.
- ``"embeddings"``: no attention maps (StageNet, RETAIN, AdaCare, RNN, ...), but an
  embedding model (``model.embedding_model.embedding_layers[key]``) through which gradient
  methods reach every code: :class:`PyHealthGradientModel`.

Every wrapper also offers the embedding layers (``get_embedding_layers()``) and states that a
float vector ``[batch, features]`` is one attention position (PyHealth embeds it with one
``nn.Linear``): such a feature (a ``tensor`` or multi-hot input) gets one score per sample,
``[batch, 1]``, as PyHealth's interpreters give it.

Example:
    >>> model = wrap(pyhealth_transformer)    # PyHealthModel or PyHealthGradientModel
    >>> scores = CheferRelevance(model).attribute(**batch)   # attention models
    >>> scores = IntegratedGradients(model).attribute(**batch)   # every model
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Literal, Protocol, TypeVar, cast

from torch import Tensor, nn

from ..core.interpretable import Capabilities, GradientInterpretable

REQUIRED_METHODS = ("set_attention_hooks", "get_attention_layers", "get_relevance_tensor")

Interface = Literal["hooks", "register_hook", "embeddings"]

ModelClass = TypeVar("ModelClass", bound=type)


class PyHealthInterpretable(Protocol):
    """The three methods of PyHealth's interface, as a PyHealth model has them."""

    def set_attention_hooks(self, enabled: bool) -> None: ...

    def get_attention_layers(self) -> dict[str, list[tuple[Tensor, Tensor | None]]]: ...

    def get_relevance_tensor(self, R: Mapping[str, Tensor], **data: Any) -> dict[str, Tensor]: ...


def missing_methods(obj: Any) -> list[str]:
    """The required interface methods ``obj`` (a class or an instance) lacks."""
    return [name for name in REQUIRED_METHODS if not callable(getattr(obj, name, None))]


def attention_modules(model: Any) -> dict[str, list[Any]] | None:
    """PyHealth 2.0a13's attention modules ``{key: [module, ...]}`` (input side first): each
    ``model.transformer[key].transformer[i].attention`` with ``get_attn_map`` and
    ``get_attn_grad``; ``None`` when the model has none."""
    encoders = getattr(model, "transformer", None)
    keys = list(getattr(model, "feature_keys", None) or [])
    if not isinstance(encoders, Mapping | nn.ModuleDict) or not keys:
        return None
    found: dict[str, list[Any]] = {}
    for key in keys:
        blocks = getattr(encoders[key], "transformer", None) if key in encoders else None
        if not isinstance(blocks, Iterable):
            return None
        modules = [getattr(block, "attention", None) for block in blocks]
        if not modules or not all(
            callable(getattr(m, "get_attn_map", None))
            and callable(getattr(m, "get_attn_grad", None))
            for m in modules
        ):
            return None
        found[key] = modules
    return found


def interface_of(model: Any) -> Interface | None:
    """Which PyHealth interface ``model`` has: ``"hooks"`` (2.0.x), ``"register_hook"``
    (2.0a13), ``"embeddings"`` (no attention, an embedding model), or ``None``.

    Example:
        >>> interface_of(pyhealth_transformer)      # built by PyHealth 2.0a13
        'register_hook'
    """
    if not missing_methods(model):
        return "hooks"
    if attention_modules(model) is not None:
        return "register_hook"
    if embedding_layers_of(model) is not None:
        return "embeddings"
    return None


def embedding_layers_of(model: Any) -> Mapping[str, nn.Module] | None:
    """The per-feature embedding modules of a PyHealth model (``get_embedding_model()`` or
    ``embedding_model``, then its ``embedding_layers``), or ``None``."""
    getter = getattr(model, "get_embedding_model", None)
    embedding = getter() if callable(getter) else getattr(model, "embedding_model", None)
    layers = getattr(embedding, "embedding_layers", None)
    if not isinstance(layers, Mapping | nn.ModuleDict):
        return None
    return {str(k): v for k, v in layers.items() if isinstance(v, nn.Module)}


def processor_layout(model: Any, key: str) -> tuple[str, ...]:
    """The element names of feature ``key``'s tuples: its PyHealth processor's ``schema()``
    (2.0.x), else ``("time", "value")``, PyHealth 2.0a13's temporal pairs."""
    processors = getattr(getattr(model, "dataset", None), "input_processors", None)
    schema = (
        getattr(processors.get(key), "schema", None) if isinstance(processors, Mapping) else None
    )
    names = schema() if callable(schema) else None
    if isinstance(names, (list, tuple)) and all(isinstance(n, str) for n in names):
        return tuple(names)
    return ("time", "value")


class PyHealthGradientModel(nn.Module):
    """Any PyHealth model with an embedding model, for ehrlens's gradient methods.

    Gradient methods (``IntegratedGradients``, ``InputXGradient``, ``AttnLRP`` where the model
    has rules) attribute to the output of each feature's embedding layer
    (``model.embedding_model.embedding_layers[key]``): one score per code, per visit code
    (nested sequences) or per time step (time series, spread over its values), and one per
    sample for a float vector. Calls go to the wrapped model unchanged.

    Args:
        model: a PyHealth model (``forward(**batch)`` returning ``{"logit": ...}``) with an
            embedding model.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``, or has no embedding layers.

    Example:
        >>> scores = IntegratedGradients(PyHealthGradientModel(pyhealth_retain)).attribute(
        ...     **batch)
        >>> scores["visits"].shape                      # [batch, visits, codes]
        torch.Size([3, 4, 3])
    """

    #: Gradient methods only: the model's embedding layers.
    interpret_capabilities: ClassVar[Capabilities] = Capabilities(embedding_layers=True)

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"{type(self).__name__} wraps an nn.Module, got {type(model).__name__}")
        self.model = model
        self.feature_keys = list(getattr(model, "feature_keys", None) or [])
        mode = getattr(model, "mode", None)
        self.mode = mode if isinstance(mode, str) else None
        self.output_size = _output_size(model)
        pad_ids = getattr(model, "pad_ids", None)
        self.pad_ids = dict(pad_ids) if isinstance(pad_ids, Mapping) else {}
        self.dataset = getattr(model, "dataset", None)
        #: PyHealth embeds a float vector ``[batch, features]`` with one ``nn.Linear``: one
        #: attention position, one score per sample.
        self.single_position_keys = frozenset(self.feature_keys)
        #: Tuple layouts: each processor's ``schema()`` (2.0.x); PyHealth 2.0a13's processors
        #: have none, and its temporal features are ``(time, value)`` pairs.
        self.feature_layouts = {key: processor_layout(model, key) for key in self.feature_keys}
        if type(self) is PyHealthGradientModel and embedding_layers_of(model) is None:
            raise TypeError(
                f"{type(model).__name__} has no embedding layers (model.embedding_model."
                "embedding_layers): gradient methods attribute to each feature's embedding"
            )

    def forward(self, **batch: Any) -> Any:
        return self.model(**batch)

    def get_embedding_layers(self) -> dict[str, nn.Module]:
        """``{feature: embedding module}``, whose outputs ``[batch, *units, dim]`` gradient
        methods attribute to.

        Raises:
            TypeError: the model has no embedding layers, or none for one of its features.
        """
        layers = embedding_layers_of(self.model)
        if layers is None:
            raise TypeError(
                f"{type(self.model).__name__} has no embedding layers (model.embedding_model."
                "embedding_layers): gradient methods attribute to each feature's embedding"
            )
        missing = [key for key in self.feature_keys if key not in layers]
        if missing:
            raise TypeError(
                f"feature '{missing[0]}': {type(self.model).__name__}'s embedding model has no "
                f"layer for it (it has {sorted(layers)})"
            )
        return {key: layers[key] for key in self.feature_keys}


class PyHealthModel(PyHealthGradientModel, GradientInterpretable):
    """One PyHealth attention model object, seen through ehrlens's interface.

    Works for both PyHealth interfaces (see :func:`interface_of`): a 2.0.x model's three
    methods are called as they are; a 2.0a13 ``Transformer`` is run with
    ``register_hook=True`` while capture is on, and its attention modules' live maps and
    gradients are read detached, with row 0 as the readout. Calls go to the wrapped model
    unchanged; ``feature_keys``, ``mode``, ``pad_ids`` and ``dataset`` (for tuple layouts)
    are read from it. Gradient methods reach its embedding layers as for
    :class:`PyHealthGradientModel`.

    Args:
        model: an ``nn.Module`` with either interface, returning ``{"logit": ...}`` from
            ``forward(**batch)``.

    Raises:
        TypeError: the model has neither interface (naming what it lacks).

    Example:
        >>> wrapped = PyHealthModel(pyhealth_transformer)
        >>> scores = CheferRelevance(wrapped).attribute(**batch)   # {"diagnoses": [b, s], ...}
        >>> scores["diagnoses"].shape
        torch.Size([3, 5])
    """

    #: The model's own capture (one-argument switch, gradient hooks in its forward), dropped
    #: after each capture, and its embedding layers for gradient methods.
    interpret_capabilities: ClassVar[Capabilities] = Capabilities(
        embedding_layers=True, clear_capture=True
    )

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        interface = interface_of(model)
        if interface not in ("hooks", "register_hook"):
            why = (
                "it has no attention maps; use PyHealthGradientModel(model) for gradient methods"
                if interface == "embeddings"
                else "a PyHealth-style interpretable model implements "
                f"{', '.join(REQUIRED_METHODS)} (PyHealth 2.0.x), or keeps its maps on "
                "transformer[key].transformer[i].attention (PyHealth 2.0a13)"
            )
            raise TypeError(
                f"{type(model).__name__} lacks {', '.join(missing_methods(model))}: {why}"
            )
        self.interface: Interface = interface
        self._register_hook = False

    def forward(self, **batch: Any) -> Any:
        if self._register_hook:
            batch = {**batch, "register_hook": True}
        return self.model(**batch)

    def set_attention_hooks(self, enabled: bool, capture_gradients: bool = True) -> None:
        """The model's own switch; its forward registers its gradient hooks, so
        ``capture_gradients`` cannot turn them off (the wrapper declares no forward-only
        capture, and interpreters never ask it for one)."""
        if self.interface == "hooks":
            cast(PyHealthInterpretable, self.model).set_attention_hooks(enabled)
        else:
            self._register_hook = bool(enabled)

    def get_attention_layers(self) -> dict[str, list[tuple[Tensor, Tensor | None]]]:
        """Per feature, ``(map, gradient)`` per layer; 2.0a13 maps ``[batch, heads, seq,
        seq]`` detached from the model's graph (the model keeps them live)."""
        if self.interface == "hooks":
            return cast(PyHealthInterpretable, self.model).get_attention_layers()
        modules = attention_modules(self.model) or {}
        return {
            key: [(_detached(m.get_attn_map()), _detached(m.get_attn_grad())) for m in blocks]
            for key, blocks in modules.items()
        }

    def clear_attention_capture(self) -> None:
        """Drop what a 2.0a13 model kept of the last captured forward: its live maps hold the
        whole graph (and make the model impossible to ``deepcopy``). 2.0.x models keep
        detached maps, left as they are."""
        if self.interface == "register_hook":
            for blocks in (attention_modules(self.model) or {}).values():
                for module in blocks:
                    for name in ("attn_map", "attn_gradients"):
                        if hasattr(module, name):
                            setattr(module, name, None)

    def get_relevance_tensor(self, R: Mapping[str, Tensor], **data: Any) -> dict[str, Tensor]:
        """The model's readout of ``R`` ``{key: [batch, seq, seq]}``: its own (2.0.x), or
        row 0 over every position (2.0a13, whose first position is the first input)."""
        if self.interface == "hooks":
            return cast(PyHealthInterpretable, self.model).get_relevance_tensor(R, **data)
        return {key: r[:, 0] for key, r in R.items()}


def _output_size(model: Any) -> int | None:
    """PyHealth's ``get_output_size()`` (logit columns), where the model answers it."""
    getter = getattr(model, "get_output_size", None)
    try:
        size = getter() if callable(getter) else None
    except Exception:  # an unfitted label processor: the size is unknown, not an error here
        return None
    return size if isinstance(size, int) and not isinstance(size, bool) else None


def _detached(tensor: Any) -> Any:
    return tensor.detach() if isinstance(tensor, Tensor) else tensor


def wrap(model: nn.Module) -> PyHealthGradientModel:
    """The wrapper that fits ``model``: :class:`PyHealthModel` for attention models (either
    interface), :class:`PyHealthGradientModel` for the others.

    Raises:
        TypeError: the model has neither attention nor embedding layers.

    Example:
        >>> type(wrap(pyhealth_rnn)).__name__          # attention-free: gradient methods only
        'PyHealthGradientModel'
    """
    if interface_of(model) in ("hooks", "register_hook"):
        return PyHealthModel(model)
    return PyHealthGradientModel(model)


def register(cls: ModelClass) -> ModelClass:
    """Declare a PyHealth 2.0.x model class a :class:`~ehrlens.interpret.GradientInterpretable`.

    Usable as a class decorator; returns ``cls``. Models of PyHealth 2.0a13 (attention kept on
    their modules) and models without attention are wrapped instead (:func:`wrap`).

    Raises:
        TypeError: ``cls`` is not a class, or lacks one of the three interface methods.

    Example:
        >>> register(PyHealthTransformer)     # a class with the three methods, as PyHealth's
        <class '...PyHealthTransformer'>
        >>> relevance = CheferRelevance(PyHealthTransformer())   # accepted
    """
    if not isinstance(cls, type):
        raise TypeError(f"register() takes a model class, got {type(cls).__name__}")
    missing = missing_methods(cls)
    if missing:
        raise TypeError(
            f"{cls.__name__} lacks {', '.join(missing)}: a PyHealth-style interpretable model "
            f"implements {', '.join(REQUIRED_METHODS)}; wrap a PyHealth 2.0a13 model, or one "
            "without attention, with ehrlens.integrations.pyhealth.wrap(model)"
        )
    GradientInterpretable.register(cls)
    return cls
