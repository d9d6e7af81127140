"""BaseInterpreter and what every method shares: target selection and input-shape mapping.

Scores per attention position become scores shaped like each raw input by the feature's
processor (``processor.scores_to_inputs``): the model's fitted one where it was built from a
schema (``describe(model).processors``), else one read off the tensor's dtype and rank
(:func:`~ehrlens.data.processors.processor_for_tensor`, with the model's ``pad_ids``).
"""

from __future__ import annotations

import inspect
import re
from abc import ABC, ABCMeta, abstractmethod
from collections.abc import Callable, Mapping
from functools import wraps
from typing import Any, ClassVar

import torch
from torch import Tensor

from ...core.registry import Registry
from ...data.processors import PAD_ID, FeatureProcessor, processor_for_tensor
from ..api import (
    Capabilities,
    ModelDescription,
    capabilities,
    describe,
    input_view,
    mask_unscored_inputs,
)
from ..outputs import finite_outputs

TargetIndex = int | Tensor | None


class BaseInterpreter(ABC):
    """Base of every interpreter: declares the method, checks the model, maps scores to inputs.

    A concrete subclass declares, as class attributes:

    - ``name``: the registry and command-line name, e.g. ``"rollout"`` (lower case, digits,
      ``_``);
    - ``gradient_free``: ``True`` if :meth:`attribute` needs no autograd, so cohort runs call
      it under ``torch.inference_mode()``;
    - ``needs``: what it needs, a tuple of interface levels the model must be an instance of
      (checked with ``isinstance`` at construction, e.g.
      :class:`~ehrlens.interpret.GradientInterpretable`) and names of optional extras it
      imports when attributing (e.g. ``"captum"``);
    - ``summary``: one line for listings such as ``ehrlens explain --help``;

    and implements :meth:`attribute`. The declaration is checked when the class is defined.
    Constructor arguments after ``model`` are stored under their own names, so that
    :meth:`get_params` can rebuild the interpreter elsewhere. Calling the interpreter is the
    same as calling :meth:`attribute`.

    Example:
        >>> class Uniform(BaseInterpreter):
        ...     name, gradient_free, needs = "uniform", True, (AttentionInterpretable,)
        ...     summary = "the same score everywhere"
        ...     def attribute(self, target_class_idx=None, **batch):
        ...         return {k: torch.ones(batch[k].shape) for k in self.model.feature_keys}
    """

    #: Registry and command-line name, e.g. ``"rollout"``.
    name: ClassVar[str]
    #: Whether :meth:`attribute` runs without autograd (under ``torch.inference_mode()``).
    gradient_free: ClassVar[bool]
    #: Interface levels the model must implement (types) and optional extras used (strings).
    needs: ClassVar[tuple[type | str, ...]]
    #: One line describing the method.
    summary: ClassVar[str]
    #: Why the interface is needed, used in the TypeError of the constructor.
    requirement_reason: ClassVar[str] = "it reads attention maps captured in the forward pass"
    #: True when the method scores every input unit on its own (a gradient to each code's
    #: embedding, random scores), whatever the model's attention positions; False when it
    #: scores attention positions, so a visit pooled into one token gets one score for all
    #: its codes (see :func:`~ehrlens.interpret.levels.score_level`).
    per_unit: ClassVar[bool] = False
    #: True when :meth:`attribute` runs the model's own forward on the batch it is given (the
    #: same tensors, no rule or hook that changes the outputs) before any other forward, so
    #: that forward's probabilities are the model's predictions; cohort runs read them from
    #: it instead of running one more forward
    #: (:class:`~ehrlens.explain.predictions.ProbabilityRecorder`).
    plain_forward: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "attribute" in cls.__dict__:
            cls.attribute = _checking_outputs(cls.__dict__["attribute"])  # type: ignore[method-assign]
        if not is_abstract(cls):
            check_declaration(cls)

    def __init__(self, model: object) -> None:
        if isinstance(model, type):
            raise TypeError(
                f"{type(self).__name__} got the class {model.__name__} itself, not a model: "
                f"build (or load) one first, e.g. {model.__name__}(dataset, ...) or "
                "BaseModel.load(path)"
            )
        for interface in required_interfaces(type(self)):
            if not isinstance(model, interface):
                how = (
                    f"Subclass it, or declare a class that has the methods with "
                    f"{interface.__name__}.register(cls)."
                    if isinstance(interface, ABCMeta)
                    else f"Subclass {interface.__module__}.{interface.__qualname__}."
                )
                raise TypeError(
                    f"{type(self).__name__} needs a model implementing "
                    f"{interface.__name__} ({self.requirement_reason}); "
                    f"{type(model).__name__} does not. {how}"
                )
        self.model = model
        #: What the model says about itself (feature keys, mode, pad ids, tuple layouts).
        self.description: ModelDescription = describe(model)
        #: The optional parts of the contract the model offers.
        self.capabilities: Capabilities = capabilities(model)

    def get_params(self) -> dict[str, Any]:
        """The constructor arguments after ``model``, read from the attributes of the same
        names: ``type(self)(model, **self.get_params())`` builds an equal interpreter.

        Raises:
            TypeError: a constructor argument is not stored under its own name.

        Example:
            >>> AttentionRollout(model, head_fusion="max").get_params()["head_fusion"]
            'max'
        """
        params = {}
        for name in constructor_params(type(self)):
            if name not in vars(self):
                raise TypeError(
                    f"{type(self).__name__}.get_params: the constructor argument {name!r} is "
                    f"not stored as self.{name}; store it under its own name, or override "
                    "get_params"
                )
            params[name] = vars(self)[name]
        return params

    @abstractmethod
    def attribute(self, target_class_idx: TargetIndex = None, **batch: Any) -> dict[str, Tensor]:
        """Scores shaped like each raw input feature: ``{feature_key: Tensor}``."""

    def __call__(self, target_class_idx: TargetIndex = None, **batch: Any) -> dict[str, Tensor]:
        return self.attribute(target_class_idx, **batch)

    def _check_unused_target(self, target_class_idx: TargetIndex, batch: Mapping[str, Any]) -> None:
        """Class-agnostic methods ignore the target, but still refuse an invalid one."""
        size = batch_size_of(self.model, batch)
        if size is not None:
            check_target(self.model, target_class_idx, size)

    def _input_scores(
        self, relevance: Mapping[str, Tensor], batch: Mapping[str, Any]
    ) -> dict[str, Tensor]:
        """Per-position relevance ``{key: [batch, n_inputs]}`` spread over each feature's
        raw input (tuple features: over their value tensor), padding exactly 0, by each
        feature's processor (:func:`map_to_input_shapes` with the model's processors)."""
        view = input_view(self.description, batch)
        scores = map_to_input_shapes(
            relevance,
            view,
            self.description.pad_ids,
            self.description.processors,
            self.description.single_positions,
        )
        return mask_unscored_inputs(self.model, scores, batch)


def _checking_outputs(attribute: Callable[..., Any]) -> Callable[..., Any]:
    """``attribute`` run inside :func:`~ehrlens.interpret.outputs.finite_outputs`: every
    forward it makes has the model's outputs checked, whatever the method or engine."""

    @wraps(attribute)
    def checked(self: Any, target_class_idx: TargetIndex = None, **batch: Any) -> Any:
        with finite_outputs(self.model, batch):
            return attribute(self, target_class_idx, **batch)

    return checked


_NAME = re.compile(r"[a-z][a-z0-9_]*")


def is_abstract(cls: type) -> bool:
    """Whether ``cls`` still has abstract methods (``ABCMeta`` records them only after
    ``__init_subclass__`` has run, so they are looked up here)."""
    return any(getattr(getattr(cls, n, None), "__isabstractmethod__", False) for n in dir(cls))


def check_declaration(cls: type[BaseInterpreter]) -> None:
    """Refuse an interpreter class whose ``name``, ``gradient_free``, ``needs`` or
    ``summary`` is missing or malformed, naming the class and the attribute."""
    where = f"{cls.__module__}.{cls.__qualname__}"
    missing = [a for a in ("name", "gradient_free", "needs", "summary") if not hasattr(cls, a)]
    if missing:
        raise TypeError(
            f"interpreter class {where} does not declare {', '.join(missing)}: every method "
            "states name (str), gradient_free (bool), needs (tuple of interface classes and "
            "extra names) and summary (one line) as class attributes"
        )
    if not isinstance(cls.name, str) or not _NAME.fullmatch(cls.name):
        raise TypeError(
            f"{where}.name must be lower case letters, digits and '_' starting with a letter "
            f"(it is a command-line name), got {cls.name!r}"
        )
    if not isinstance(cls.gradient_free, bool):
        raise TypeError(f"{where}.gradient_free must be True or False, got {cls.gradient_free!r}")
    if not isinstance(cls.needs, tuple) or not all(isinstance(n, (type, str)) for n in cls.needs):
        raise TypeError(
            f"{where}.needs must be a tuple of interface classes and extra names, e.g. "
            f"(AttentionInterpretable,) or (torch.nn.Module, 'captum'), got {cls.needs!r}"
        )
    if not isinstance(cls.summary, str) or not cls.summary.strip() or "\n" in cls.summary:
        raise TypeError(f"{where}.summary must be one non-empty line, got {cls.summary!r}")
    if "get_params" not in _defined_by(cls, BaseInterpreter):
        constructor_params(cls)  # refuses *args / **kwargs, which get_params cannot rebuild


def _defined_by(cls: type, base: type) -> set[str]:
    """Names defined by ``cls`` or its ancestors below ``base``."""
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is base:
            break
        names.update(vars(klass))
    return names


def required_interfaces(cls: type[BaseInterpreter]) -> list[type]:
    """The interface levels of ``cls.needs`` (its types), checked at construction."""
    return [n for n in cls.needs if isinstance(n, type)]


def constructor_params(cls: type[BaseInterpreter]) -> list[str]:
    """Names of the constructor arguments after ``model``, in order.

    Raises:
        TypeError: the constructor takes ``*args`` or ``**kwargs``.
    """
    parameters = list(inspect.signature(cls.__init__).parameters.values())[2:]  # self, model
    variadic = [p.name for p in parameters if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if variadic:
        raise TypeError(
            f"{cls.__qualname__}.__init__ takes *{variadic[0]}: name every constructor argument "
            "(and store it under its own name) so get_params can rebuild the interpreter, or "
            "override get_params"
        )
    return [p.name for p in parameters]


def _check_method(cls: type[BaseInterpreter]) -> None:
    """What :data:`METHOD_REGISTRY` asks of a class before it registers it."""
    if not (isinstance(cls, type) and issubclass(cls, BaseInterpreter)):
        raise TypeError(f"register_method takes a BaseInterpreter subclass, got {cls!r}")
    if is_abstract(cls):
        raise TypeError(f"{cls.__qualname__} is abstract (it does not implement attribute)")
    check_declaration(cls)
    if "name" not in vars(cls):
        raise TypeError(
            f"{cls.__qualname__} inherits name {cls.name!r} from a parent class; declare its "
            "own name to register it"
        )


#: Method classes by their ``name``, in registration order: the built-ins register at their
#: definition (the order of imports in ``interpret/methods/__init__.py``), others after them.
METHOD_REGISTRY: Registry[type[BaseInterpreter]] = Registry(
    "method", key=lambda cls: cls.name, check=_check_method
)


def register_method(cls: type[BaseInterpreter]) -> type[BaseInterpreter]:
    """Make ``cls`` available by its ``name``; usable as a class decorator.

    Registering the same class again does nothing.

    Raises:
        TypeError: ``cls`` is not a concrete :class:`BaseInterpreter` subclass with its own
            ``name`` and a valid declaration.
        ValueError: another class is registered under the same name.
    """
    return METHOD_REGISTRY.register(cls)


def unregister_method(name: str) -> type[BaseInterpreter]:
    """Remove the method called ``name``; returns its class.

    Raises:
        ValueError: no method has that name (an :class:`~ehrlens.core.registry.UnknownNameError`).
    """
    return METHOD_REGISTRY.unregister(name)


def feature_processor(model: Any, key: str, values: Tensor) -> FeatureProcessor:
    """The processor that lays out ``values`` (``batch[key]``) for ``model``: its fitted one,
    or one read off the tensor with the model's pad id for ``key``."""
    description = describe(model)
    processor = description.processors.get(key)
    if processor is None:
        processor = processor_for_tensor(values, description.pad_id(key))
    return processor


def input_unit_mask(
    values: Tensor, step_mask: Tensor | None = None, pad_id: int | None = PAD_ID
) -> Tensor:
    """``bool`` shaped like ``values``: True at real input units (not padding), for a tensor
    without a fitted processor (:func:`~ehrlens.data.processors.processor_for_tensor`).

    Codes are real where the id is not ``pad_id`` (``None``: every id is real); time-series
    values where their step is in ``step_mask`` ``[batch, steps]``; vector elements always.
    """
    return processor_for_tensor(values, pad_id).unit_mask(values, step_mask)


def working_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype relevance is propagated and returned in: at least float32.

    A float16/bfloat16 model's maps are combined in float32, so low precision costs only
    the rounding of the maps themselves, not of every product over the layers.
    """
    return torch.promote_types(dtype, torch.float32)


def require_autograd(method: str) -> None:
    """Raise a clear error under ``torch.inference_mode()``, where autograd cannot run."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            f"{method} needs gradients, which torch.inference_mode() disables; call it "
            "outside inference mode (torch.no_grad() is fine), or use AttentionRollout, "
            "which needs only the forward pass"
        )


def scores_to_inputs(
    key: str,
    scores: Tensor,
    values: Tensor,
    step_mask: Tensor | None = None,
    pad_id: int | None = PAD_ID,
) -> Tensor:
    """Spread per-position scores ``[batch, n_inputs]`` over the raw input ``values`` of a
    tensor without a fitted processor (laid out by dtype and rank):

    - codes ``[batch, seq]``: one score per code;
    - nested codes ``[batch, visits, codes]``: each visit's score on each of its codes;
    - time series ``[batch, steps, features]``: each step's score on each of its values;
    - vectors ``[batch, features]``: one score per element.

    Padding (code id ``pad_id``, or steps outside ``step_mask``) gets exactly 0.
    """
    processor = processor_for_tensor(values, pad_id)
    return processor.scores_to_inputs(key, scores, values, step_mask)


def map_to_input_shapes(
    token_scores: Mapping[str, Tensor],
    batch: Mapping[str, Any],
    pad_ids: Mapping[str, int | None] | None = None,
    processors: Mapping[str, FeatureProcessor] | None = None,
    single_positions: frozenset[str] = frozenset(),
) -> dict[str, Tensor]:
    """Scores shaped like each feature of ``token_scores``: ``processors[key]``'s
    ``scores_to_inputs``, or for keys without a processor :func:`scores_to_inputs` with the
    feature's pad id from ``pad_ids`` (default :data:`~ehrlens.data.PAD_ID`). A feature of
    ``single_positions`` given as a float vector ``[batch, features]`` is one attention
    position: its score stays one per sample, ``[batch, 1]`` (:func:`single_position_scores`).

    Raises a ``ValueError`` naming the feature and sample if any score is NaN or infinite.

    Example:
        >>> relevance = {"diagnoses": torch.rand(8, 7)}          # [batch, visits]
        >>> mapped = map_to_input_shapes(relevance, batch, processors=model.schema.input_processors)
        >>> mapped["diagnoses"].shape                           # like the input: each code
        torch.Size([8, 7, 5])
    """
    masks = batch.get("masks") or {}
    out = {}
    for key, scores in token_scores.items():
        values = batch[key]
        if key in single_positions and is_single_position(values):
            out[key] = single_position_scores(key, scores, values)
            continue
        processor = (processors or {}).get(key)
        if processor is None:
            processor = processor_for_tensor(values, (pad_ids or {}).get(key, PAD_ID))
        out[key] = processor.scores_to_inputs(key, scores, values, masks.get(key))
    check_finite_scores(out, batch)
    return out


def is_single_position(values: Tensor) -> bool:
    """Whether ``values`` is a float vector per sample ``[batch, features]``: embedded as a
    whole, it is one attention position for a model that states it (``single_positions``)."""
    return values.is_floating_point() and values.dim() == 2


def single_position_scores(key: str, scores: Tensor, values: Tensor) -> Tensor:
    """One score per sample ``[batch, 1]`` for a feature that is one attention position.

    Args:
        key: the feature (for the error).
        scores: ``[batch, 1]`` per position, or ``[batch]``.
        values: the feature's batch tensor ``[batch, features]``.

    Raises:
        ValueError: ``scores`` hold more than one score per sample, naming the feature.

    Example:
        >>> single_position_scores("labs", torch.ones(4, 1), torch.rand(4, 3)).shape
        torch.Size([4, 1])
    """
    batch = values.shape[0]
    if scores.numel() != batch or scores.shape[0] != batch:
        raise ValueError(
            f"feature '{key}': one attention position per sample expected for its vector "
            f"{tuple(values.shape)}, got relevance of shape {tuple(scores.shape)}"
        )
    return scores.reshape(batch, 1)


def check_finite_scores(
    scores: Mapping[str, Tensor], batch: Mapping[str, Any], what: str = "scores"
) -> None:
    """Refuse NaN or infinite ``scores`` (``{key: [batch, ...]}``), naming key and sample.

    Inputs are checked at the model boundary, so a non-finite score means the model itself
    produced NaN/inf (weights that diverged in training, overflow in low precision): an
    explanation of it would be meaningless, so it is an error rather than a number.
    """
    ids = batch.get("patient_id")
    for key, tensor in scores.items():
        if tensor.numel() == 0 or tensor.device.type == "meta":
            continue
        finite = torch.isfinite(tensor.reshape(tensor.shape[0], -1)).all(dim=1)
        if not bool(finite.all()):
            index = int((~finite).nonzero()[0, 0])
            who = f" (patient_id={ids[index]!r})" if isinstance(ids, list) else ""
            raise ValueError(
                f"feature '{key}': sample {index}{who} has NaN or infinite {what}; the "
                "model's outputs are not finite for it (weights with NaN/inf, e.g. diverged "
                "training, or overflow in low precision)"
            )


def check_target(model: Any, target_class_idx: TargetIndex, batch_size: int) -> None:
    """Validate ``target_class_idx`` for a class-agnostic method, which otherwise ignores it.

    A target that no class of the model matches (out of range, wrong type or shape) is an
    error everywhere, so a typo is not silently explained as something else. Models that do
    not state ``mode`` and ``output_size`` are not checked.
    """
    if target_class_idx is None:
        return
    description = describe(model)
    mode, outputs = description.mode, description.output_size
    if mode is None or outputs is None:
        return
    classes = {"binary": 2, "regression": 1}.get(mode, outputs)
    _as_index(target_class_idx, batch_size, classes, mode)


def batch_size_of(model: Any, batch: Mapping[str, Any]) -> int | None:
    """The batch size read off the first feature tensor of ``batch`` (``None`` if none)."""
    for key in describe(model).feature_keys or list(batch):
        value = batch.get(key)
        if isinstance(value, (tuple, list)) and value and isinstance(value[0], Tensor):
            value = value[0]
        if isinstance(value, Tensor) and value.dim() > 0:
            return int(value.shape[0])
    return None


def explained_logits(logit: Tensor, mode: str | None) -> Tensor:
    """Logits indexed by explainable class: ``[batch, classes]``.

    A binary model's single logit becomes two columns ``(-logit, logit)``, so class 0 is
    explained by the negated logit and class 1 by the logit.
    """
    if logit.dim() != 2:
        raise ValueError(f"expected logits [batch, outputs], got shape {tuple(logit.shape)}")
    if mode == "binary" or (mode is None and logit.shape[1] == 1):
        return torch.cat([-logit[:, :1], logit[:, :1]], dim=1)
    return logit


def target_index(logit: Tensor, mode: str | None, target_class_idx: TargetIndex) -> Tensor:
    """The explained class of every sample, ``LongTensor [batch]``, into
    :func:`explained_logits`.

    ``None`` picks the single logit (binary: class 1; regression: output 0), the predicted
    class (multiclass) or the most probable label (multilabel); an ``int`` or a
    ``LongTensor [batch]`` is checked against the number of classes.
    """
    if logit.dim() != 2:
        raise ValueError(f"expected logits [batch, outputs], got shape {tuple(logit.shape)}")
    batch, outputs = logit.shape
    binary = mode == "binary" or (mode is None and outputs == 1)
    if target_class_idx is None:
        if binary:
            return torch.ones(batch, dtype=torch.long, device=logit.device)
        if mode == "regression":
            return torch.zeros(batch, dtype=torch.long, device=logit.device)
        return logit.argmax(dim=1)
    if binary:
        return _as_index(target_class_idx, batch, 2, "binary").to(logit.device)
    if mode == "regression":
        return _as_index(target_class_idx, batch, 1, "regression").to(logit.device)
    return _as_index(target_class_idx, batch, outputs, mode or "multi-output").to(logit.device)


def select_target(logit: Tensor, mode: str | None, target_class_idx: TargetIndex) -> Tensor:
    """The logit to explain for every sample: ``[batch]``.

    Args:
        logit: ``[batch, outputs]``.
        mode: ``"binary"``, ``"multiclass"``, ``"multilabel"``, ``"regression"`` or ``None``.
        target_class_idx: ``None`` (binary/regression: the single logit; multiclass: the
            predicted class; multilabel: the most probable label), an ``int``, or a
            ``LongTensor [batch]`` with one target per sample. For binary models, ``1`` (or
            ``None``) explains the positive class and ``0`` the negative class (the negated
            logit).
    """
    index = target_index(logit, mode, target_class_idx)
    return explained_logits(logit, mode).gather(1, index[:, None])[:, 0]


def _as_index(target: int | Tensor, batch: int, classes: int, mode: str) -> Tensor:
    if isinstance(target, bool) or not isinstance(target, (int, Tensor)):
        raise TypeError(
            f"target_class_idx must be None, an int or a LongTensor [batch], "
            f"got {type(target).__name__}"
        )
    if isinstance(target, Tensor):
        if target.is_inference() and not torch.is_inference_mode_enabled():
            target = target.clone()  # autograd may not save inference tensors
        if target.is_floating_point() or target.dim() > 1:
            raise TypeError(
                f"target_class_idx tensor must be integer and [batch], got {target.dtype} "
                f"with shape {tuple(target.shape)}"
            )
        index = target.reshape(-1) if target.dim() == 1 else target.expand(batch)
        if index.numel() != batch:
            raise ValueError(f"target_class_idx has {index.numel()} entries for a batch of {batch}")
    else:
        index = torch.full((batch,), target, dtype=torch.long)
    bad = (index < 0) | (index >= classes)
    if bool(bad.any()):
        raise ValueError(
            f"target_class_idx {index[bad][0].item()} is out of range for a {mode} model "
            f"with {classes} class(es): expected 0..{classes - 1}"
        )
    return index.long()
